"""What the graph stage hands to the stages after it: parameter layouts, cost terms and module facts.

Everything here is plain data over layouts; later stages evaluate layouts at kept counts (exact or
relaxed) and never look at the fx graph again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from netdiet.graph.layout import AtomTable, Layout


@dataclass
class TensorValue:
    """The layout of each dimension of one traced tensor."""

    shape: tuple[int, ...]
    dims: list[Layout]
    param: str | None = None  # the parameter this tensor is (or is an elementwise function of)


@dataclass
class ParamInfo:
    """A parameter or buffer of the model and the layout of each of its dimensions."""

    name: str  # fully qualified, as in model.state_dict()
    module_path: str
    attr: str
    is_buffer: bool
    shape: tuple[int, ...]
    dims: list[Layout]


@dataclass
class CostTerm:
    """MACs of one op = coeff * product of the sizes of `layouts` (a multiply-add counts as 2 FLOPs).

    `weight` names the parameter whose bit width scales the BOPs of this term (None for
    activation x activation products such as attention scores).
    """

    layer: str
    op: str
    coeff: int
    layouts: list[Layout]
    weight: str | None = None


@dataclass
class LayerShape:
    """The static shape of one conv or linear call: what a latency table needs to time it in isolation.

    Channel counts are layouts (they shrink with the keep-setting); everything else is fixed by the model
    and the example input (kernel, stride, padding, dilation, input spatial size, tokens per example).
    `groups` is the dense group count; `depthwise` marks groups == input channels with one input channel
    per group, where the channel count is a single axis (input = output = groups).
    """

    layer: str
    op: str  # "conv" or "linear"
    weight: str | None
    in_layout: Layout
    out_layout: Layout
    in_channels: int
    out_channels: int
    groups: int = 1
    depthwise: bool = False
    kernel: tuple[int, ...] = ()
    stride: tuple[int, ...] = ()
    padding: tuple[int, ...] = ()
    dilation: tuple[int, ...] = ()
    in_spatial: tuple[int, ...] = ()
    tokens: int = 1  # linear: positions per example that share the weight (sequence length)
    transposed: bool = False


@dataclass
class GroupsRecord:
    """A module's `groups` count (grouped conv, GroupNorm) as a layout, so export can recompute it."""

    module_path: str
    groups: Layout


@dataclass
class AttentionRecord:
    """Head layouts seen at a scaled-dot-product attention call, for export of head-count attributes."""

    module_path: str
    q_heads: Layout
    kv_heads: Layout
    head_dim: int


@dataclass
class NormRecord:
    """A normalisation over one feature dimension (LayerNorm, RMSNorm): its statistics span the units kept.

    `input_dims` are the layouts of the module's input tensor, so the masked reference can find which
    input dimension is normalised even when the module permutes first (ConvNeXt's LayerNorm2d).
    """

    module_path: str
    layout: Layout
    input_dims: list[Layout] | None = None


@dataclass(frozen=True)
class BlockRecord:
    """A droppable module: its path, and the graph nodes where its stream enters and leaves."""

    module_path: str
    input_node: str
    output_node: str


@dataclass
class GraphAnalysis:
    """The result of walking the exported graph."""

    table: AtomTable
    params: dict[str, ParamInfo]
    cost_terms: list[CostTerm]
    groups: dict[str, GroupsRecord]
    attentions: dict[str, AttentionRecord]
    norms: dict[str, NormRecord]
    input_spec: list[dict]
    param_aliases: dict[str, list[str]] = field(default_factory=dict)
    layer_shapes: list[LayerShape] = field(default_factory=list)
    roles: dict[tuple[str, int], str] = field(default_factory=dict)
    blocks: list[BlockRecord] = field(default_factory=list)  # modules that can be dropped whole
