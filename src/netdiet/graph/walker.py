"""Walk an ExportedProgram node by node, giving every tensor dimension a layout.

The walker owns the bookkeeping (placeholders, module scopes, exclusions, records); the meaning of each
op lives in `rules_*` modules, one rule per op family, registered in `RULES`.
"""

from __future__ import annotations

import fnmatch
import operator
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import fx, nn

from netdiet.errors import ConfigError, UnsupportedModelError
from netdiet.graph.blocks import find_blocks
from netdiet.graph.layout import AtomTable, Layout, LayoutConflict
from netdiet.graph.records import (
    AttentionRecord,
    CostTerm,
    GraphAnalysis,
    GroupsRecord,
    LayerShape,
    NormRecord,
    ParamInfo,
    TensorValue,
)

Rule = Callable[["Walker", fx.Node], Any]
RULES: dict[str, Rule] = {}


def rule(*names: str) -> Callable[[Rule], Rule]:
    """Register a rule for ops named like `aten.linear` (overload packet names, in-place `_` stripped)."""

    def deco(fn: Rule) -> Rule:
        for name in names:
            RULES[name] = fn
        return fn

    return deco


def op_name(node: fx.Node) -> str:
    target = node.target
    if target is operator.getitem:
        return "getitem"
    packet = getattr(target, "overloadpacket", None)
    if packet is not None:
        name = str(packet)
        if name.endswith("_") and not name.endswith("__"):
            name = name[:-1]
        return name
    return getattr(target, "__name__", str(target))


class Walker:
    """State of one analysis: the atom table, the value of every node and the records being built."""

    def __init__(self, model: nn.Module, program: torch.export.ExportedProgram, exclude: Sequence[Any]):
        self.model = model
        self.program = program
        self.table = AtomTable()
        self.values: dict[fx.Node, Any] = {}
        self.params: dict[str, ParamInfo] = {}
        self.cost_terms: list[CostTerm] = []
        self.layer_shapes: list[LayerShape] = []
        self.groups: dict[str, GroupsRecord] = {}
        self.attentions: dict[str, AttentionRecord] = {}
        self.norms: dict[str, NormRecord] = {}
        self.roles: dict[tuple[str, int], str] = {}
        self.scope_inputs: dict[str, TensorValue] = {}
        self.opaque: list[tuple[fx.Node, str, list[Layout]]] = []
        self.node: fx.Node | None = None
        self._exclude_paths = _exclusion_paths(model, exclude)
        self._module_types = {name: type(m) for name, m in model.named_modules()}

    # ----- helpers used by rules -----------------------------------------------------------------
    def val(self, arg: Any) -> Any:
        return self.values.get(arg) if isinstance(arg, fx.Node) else None

    def tensor(self, arg: Any) -> TensorValue | None:
        v = self.val(arg)
        return v if isinstance(v, TensorValue) else None

    def fresh(self, shape: Sequence[int], reason: str | None) -> TensorValue:
        return TensorValue(tuple(shape), [self.table.new(int(s), frozen=reason) for s in shape])

    def out_shape(self, node: fx.Node | None = None) -> tuple[int, ...]:
        node = node or self.node
        assert node is not None
        meta = node.meta.get("val")
        if not isinstance(meta, torch.Tensor):
            raise UnsupportedModelError(
                f"op {op_name(node)} did not produce a single tensor", op=op_name(node)
            )
        return tuple(int(s) for s in meta.shape)

    def unify(self, a: Layout, b: Layout) -> None:
        """Tie two dimensions; if their structures cannot be aligned, freeze both (never guess)."""
        try:
            self.table.unify(a, b)
        except LayoutConflict as exc:
            reason = f"layouts could not be aligned at {self.where()} ({exc})"
            self.table.freeze(a, reason)
            self.table.freeze(b, reason)

    def freeze(self, layout: Layout, reason: str) -> None:
        self.table.freeze(layout, f"{reason} at {self.where()}")

    def tag(self, layout: Layout, tag: str) -> None:
        self.table.tag(layout, tag)

    def module_path(self, node: fx.Node | None = None) -> str:
        node = node or self.node
        stack = node.meta.get("nn_module_stack") if node is not None else None
        if not stack:
            return ""
        path = list(stack.values())[-1][0]
        return _clean_path(path)

    def module_stack(self, node: fx.Node | None = None) -> list[tuple[str, str]]:
        node = node or self.node
        stack = node.meta.get("nn_module_stack") if node is not None else None
        if not stack:
            return []
        return [(_clean_path(p), str(t)) for p, t in stack.values()]

    def where(self) -> str:
        if self.node is None:
            return "graph input"
        path = self.module_path()
        return f"{op_name(self.node)} in '{path or '<top>'}'"

    def add_cost(self, op: str, layouts: list[Layout], coeff: int = 1, weight: str | None = None) -> None:
        layer = self.module_path() or "<top>"
        self.cost_terms.append(
            CostTerm(layer=layer, op=op, coeff=coeff, layouts=list(layouts), weight=weight)
        )

    def add_layer_shape(self, shape: LayerShape) -> None:
        self.layer_shapes.append(shape)

    def role(self, value: TensorValue, dim: int, role: str) -> None:
        """Name what a weight dimension is (in/out) so groups get readable names."""
        if value.param is not None:
            self.roles.setdefault((value.param, dim % len(value.shape)), role)

    def add_groups(self, path: str, groups: Layout) -> None:
        self.groups[path] = GroupsRecord(module_path=path, groups=groups)

    def add_attention(self, q_heads: Layout, kv_heads: Layout, head_dim: int, replace: bool = True) -> None:
        path = self._attention_owner()
        if replace or path not in self.attentions:
            self.attentions[path] = AttentionRecord(path, q_heads, kv_heads, head_dim)

    def add_norm(self, path: str, layout: Layout) -> None:
        value = self.scope_inputs.get(path)
        self.norms[path] = NormRecord(path, layout, list(value.dims) if value is not None else None)

    def _note_scope_inputs(self, node: fx.Node) -> None:
        """Remember, per module scope, the first tensor that enters it from outside (its input)."""
        paths = [p for p, _ in self.module_stack(node)]
        for path in paths:
            if path in self.scope_inputs:
                continue
            for arg in node.args:
                if not isinstance(arg, fx.Node):
                    continue
                value = self.tensor(arg)
                if value is None or value.param is not None:
                    continue
                inside = arg.op == "call_function" and path in [p for p, _ in self.module_stack(arg)]
                if not inside:
                    self.scope_inputs[path] = value
                    break

    def norm_scope(self) -> str | None:
        """The innermost enclosing module that is a last-dim normaliser (RMSNorm-like), if any."""
        for path, type_name in reversed(self.module_stack()):
            cls = type_name.rsplit(".", 1)[-1].rstrip("'>")
            if cls.endswith(("RMSNorm", "LayerNorm", "RmsNorm", "LayerNorm2d")) or cls in {
                "RMSNorm",
                "LayerNorm",
            }:
                return path
        return None

    def excluded(self, path: str) -> bool:
        return any(path == p or path.startswith(p + ".") for p in self._exclude_paths)

    def _attention_owner(self) -> str:
        """The module that owns head-count attributes: the innermost scope that is not a plain leaf."""
        for path, _type in reversed(self.module_stack()):
            return path
        return ""

    # ----- the walk -------------------------------------------------------------------------------
    def run(self) -> GraphAnalysis:
        sig = self.program.graph_signature
        to_param = dict(sig.inputs_to_parameters)
        to_buffer = dict(sig.inputs_to_buffers)
        to_const = dict(getattr(sig, "inputs_to_lifted_tensor_constants", {}) or {})
        user_inputs = set(sig.user_inputs)
        input_spec: list[dict] = []
        for node in self.program.graph.nodes:
            self.node = None
            if node.op == "placeholder":
                meta = node.meta.get("val")
                if not isinstance(meta, torch.Tensor):
                    self.values[node] = None
                    continue
                shape = tuple(int(s) for s in meta.shape)
                if node.name in to_param or node.name in to_buffer:
                    fqn = to_param.get(node.name) or to_buffer[node.name]
                    value = self.fresh(shape, None)
                    value.param = fqn
                    module_path, _, attr = fqn.rpartition(".")
                    self.params[fqn] = ParamInfo(
                        fqn, module_path, attr, node.name in to_buffer, shape, list(value.dims)
                    )
                    if self.excluded(module_path):
                        for d in value.dims:
                            self.table.freeze(d, f"module '{module_path}' excluded by the user")
                    self.values[node] = value
                elif node.name in user_inputs:
                    self.values[node] = self.fresh(shape, "model input")
                    input_spec.append({"shape": list(shape), "dtype": str(meta.dtype).replace("torch.", "")})
                else:
                    reason = "tensor constant" if node.name in to_const else "graph input"
                    self.values[node] = self.fresh(shape, reason)
                continue
            if node.op == "output":
                for leaf in _flatten(node.args):
                    v = self.tensor(leaf)
                    if v is not None:
                        for d in v.dims:
                            self.table.freeze(d, "model output")
                continue
            if node.op != "call_function":
                self.values[node] = None
                continue
            self.node = node
            self._note_scope_inputs(node)
            self.values[node] = self._apply(node)
        self.node = None
        aliases = _param_aliases(self.model)
        self._tie_aliases(aliases)
        self._apply_module_constraints()
        self._check_opaque()
        calls = [n for n in self.program.graph.nodes if n.op == "call_function"]
        blocks = find_blocks(
            calls,
            {n: [p for p, _ in self.module_stack(n)] for n in calls},
            self.values,
            self.table,
            self._layer_candidates(),
        )
        return GraphAnalysis(
            table=self.table,
            params=self.params,
            cost_terms=self.cost_terms,
            groups=self.groups,
            attentions=self.attentions,
            norms=self.norms,
            input_spec=input_spec,
            param_aliases=aliases,
            layer_shapes=self.layer_shapes,
            roles=self.roles,
            blocks=blocks,
        )

    def _apply(self, node: fx.Node) -> Any:
        meta = node.meta.get("val")
        if meta is None or not _has_tensor(meta):
            return None
        name = op_name(node)
        fn = RULES.get(name)
        path = self.module_path()
        if fn is None:
            return self._opaque(node, name)
        value = fn(self, node)
        if self.excluded(path):
            for leaf in [value, *[self.val(a) for a in _flatten(node.args)]]:
                for v in _tensors(leaf):
                    for d in v.dims:
                        self.table.freeze(d, f"inside module '{path}' excluded by the user")
        return value

    def _opaque(self, node: fx.Node, name: str) -> Any:
        """An op without a rule: its outputs are frozen fresh dims; touching a prunable input is an error."""
        layouts: list[Layout] = []
        for arg in _flatten((node.args, node.kwargs)):
            for v in _tensors(self.val(arg)):
                layouts.extend(v.dims)
        path = self.module_path()
        if self.excluded(path):
            for d in layouts:
                self.table.freeze(d, f"inside module '{path}' excluded by the user")
        else:
            self.opaque.append((node, name, layouts))
        return _fresh_like(self, node.meta.get("val"), f"output of {name} (no rule)")

    def _check_opaque(self) -> None:
        for node, name, layouts in self.opaque:
            for layout in layouts:
                for leaf in self.table.leaves(layout):
                    if self.table.atom_size(leaf) > 1 and not self.table.is_frozen(leaf):
                        path = self.module_path(node) or "<top>"
                        raise UnsupportedModelError(
                            f"netdiet has no rule for op '{name}' (node '{node.name}') in module '{path}', "
                            f"and it touches a prunable dimension of size {self.table.atom_size(leaf)}. "
                            f"Exclude that module with analyze(..., exclude=('{path}',)) so its dimensions "
                            "are kept whole, or report the op so a rule can be added.",
                            op=name,
                            module_path=path,
                        )

    def _layer_candidates(self) -> set[str]:
        """Children of a ModuleList/Sequential (repeated layers), not excluded by the user."""
        out: set[str] = set()
        for path, module in self.model.named_modules():
            if isinstance(module, (nn.ModuleList, nn.Sequential)):
                for name, sub in module.named_children():
                    child = f"{path}.{name}" if path else name
                    if not isinstance(sub, (nn.ModuleList, nn.Sequential)) and not self.excluded(child):
                        out.add(child)
        return out

    def _tie_aliases(self, aliases: dict[str, list[str]]) -> None:
        """Tied parameters are one tensor: torch.export may lift each name as its own placeholder and use
        only one of them (GPT-2's wte / lm_head), so the unused name must share the used one's layouts."""
        for name, names in aliases.items():
            info = self.params.get(name)
            if info is None or names[0] != name:
                continue
            for other in names[1:]:
                twin = self.params.get(other)
                if twin is not None and twin.shape == info.shape:
                    for a, b in zip(info.dims, twin.dims):
                        self.unify(a, b)

    def _apply_module_constraints(self) -> None:
        """Module contracts the graph alone does not show (nn.MultiheadAttention with extra key/value
        biases: heads x head_dim == E, since only the plain packed form is replaced at export)."""
        for path, module in self.model.named_modules():
            if isinstance(module, nn.MultiheadAttention):
                self._constrain_mha(path, module)

    def _constrain_mha(self, path: str, module: nn.MultiheadAttention) -> None:
        prefix = f"{path}." if path else ""
        in_w = self.params.get(prefix + "in_proj_weight")
        out_w = self.params.get(prefix + "out_proj.weight")
        if in_w is None or out_w is None:
            for name, info in self.params.items():
                if name.startswith(prefix):
                    for d in info.dims:
                        self.table.freeze(d, f"nn.MultiheadAttention '{path}' with separate q/k/v weights")
            return
        self.node = None
        if module.bias_k is None and module.bias_v is None and not module.add_zero_attn:
            # The exporter replaces such a module by one whose q/k/v width is free (heads x head_dim
            # need not equal the stream), so the traced layouts stand as they are.
            return
        embed = in_w.dims[1]
        from netdiet.graph.layout import Cat, Prod

        if isinstance(self.table.resolve(in_w.dims[0]), Prod):
            # Self-attention path: the packed projection was unflattened to (3, E) and q, k, v selected.
            e = self.table.new(module.embed_dim)
            self.unify(in_w.dims[0], Prod((self.table.new(3), e)))
            self.unify(e, embed)
        else:
            q, k, v = (self.table.new(module.embed_dim) for _ in range(3))
            for a, b in ((in_w.dims[0], Cat((q, k, v))), (q, embed), (k, embed), (v, embed)):
                self.unify(a, b)
        self.unify(out_w.dims[0], embed)
        self.unify(out_w.dims[1], embed)


def _clean_path(path: str) -> str:
    path = path.replace("L['self'].", "").replace("L['self']", "")
    return path


def _exclusion_paths(model: nn.Module, exclude: Sequence[Any]) -> list[str]:
    names = {id(m): n for n, m in model.named_modules()}
    all_paths = list(names.values())
    out: list[str] = []
    for item in exclude:
        if isinstance(item, nn.Module):
            if id(item) not in names:
                raise ConfigError(f"exclude: module {type(item).__name__} is not part of the model")
            out.append(names[id(item)])
        elif isinstance(item, type) and issubclass(item, nn.Module):
            out.extend(n for n, m in model.named_modules() if isinstance(m, item))
        elif isinstance(item, str):
            hits = [p for p in all_paths if p == item or fnmatch.fnmatchcase(p, item)]
            if not hits:
                raise ConfigError(
                    f"exclude: no module path matches '{item}'; paths look like "
                    f"{[p for p in all_paths if p][:5]} (glob patterns such as 'layers.*.mlp' work)"
                )
            out.extend(hits)
        else:
            raise ConfigError(f"exclude entries must be module paths, modules or module types, got {item!r}")
    return out


def _param_aliases(model: nn.Module) -> dict[str, list[str]]:
    """Tied parameters (GPT-2's lm_head and wte): every name that refers to the same tensor."""
    by_id: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        by_id.setdefault(id(p), []).append(name)
    for name, b in model.named_buffers(remove_duplicate=False):
        by_id.setdefault(id(b), []).append(name)
    out: dict[str, list[str]] = {}
    for names in by_id.values():
        for n in names:
            out[n] = names
    return out


def _has_tensor(meta: Any) -> bool:
    if isinstance(meta, torch.Tensor):
        return True
    if isinstance(meta, (tuple, list)):
        return any(_has_tensor(m) for m in meta)
    return False


def _flatten(obj: Any) -> Iterable[Any]:
    if isinstance(obj, (tuple, list)):
        for o in obj:
            yield from _flatten(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _flatten(o)
    else:
        yield obj


def _tensors(value: Any) -> Iterable[TensorValue]:
    if isinstance(value, TensorValue):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _tensors(v)


def _fresh_like(w: Walker, meta: Any, reason: str) -> Any:
    if isinstance(meta, torch.Tensor):
        return w.fresh([int(s) for s in meta.shape], reason)
    if isinstance(meta, (tuple, list)):
        return tuple(_fresh_like(w, m, reason) for m in meta)
    return None
