"""Which model families netdiet compresses: analyze (with the export probe) -> random setting -> export ->
equivalence -> FLOPs vs FlopCounterMode, and a dropped block where the family has one.

Writes benchmarks/coverage/coverage.json and COVERAGE.md (the table README shows). Random weights
(no downloads); torchvision and timm are optional and imported through ../shared/tv_cpu_shim.py where
that exists. Run: PYTHONPATH=src python benchmarks/coverage/run_coverage.py [--only NAME ...]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
SHIM = HERE.parents[2] / "shared" / "tv_cpu_shim.py"


def install_shim() -> None:
    if SHIM.is_file():
        spec = importlib.util.spec_from_file_location("tv_cpu_shim", SHIM)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["tv_cpu_shim"] = module
        spec.loader.exec_module(module)
        module.install()


def tv(name: str, size: int = 64, **kw: Any) -> Any:
    def build() -> tuple[torch.nn.Module, Any]:
        import torchvision

        return getattr(torchvision.models, name)(weights=None, **kw), torch.randn(1, 3, size, size)

    return build


def timm_model(name: str, size: int = 32, **kw: Any) -> Any:
    def build() -> tuple[torch.nn.Module, Any]:
        import timm

        return timm.create_model(name, pretrained=False, num_classes=10, **kw), torch.randn(1, 3, size, size)

    return build


def hf(kind: str) -> Any:
    def build() -> tuple[torch.nn.Module, Any]:
        import transformers as t

        ids = torch.randint(0, 64, (1, 8), generator=torch.Generator().manual_seed(0))
        if kind == "bert":
            cfg = t.BertConfig(
                vocab_size=64,
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=4,
                intermediate_size=64,
                max_position_embeddings=32,
                num_labels=3,
            )
            return t.BertForSequenceClassification(cfg), {"input_ids": ids}
        if kind == "gpt2":
            cfg = t.GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=4, n_positions=32, use_cache=False)
            return t.GPT2LMHeadModel(cfg), {"input_ids": ids}
        if kind == "llama":
            cfg = t.LlamaConfig(
                vocab_size=64,
                hidden_size=64,
                intermediate_size=96,
                num_hidden_layers=2,
                num_attention_heads=8,
                num_key_value_heads=2,
                use_cache=False,
            )
            return t.LlamaForCausalLM(cfg), {"input_ids": ids}
        if kind == "t5":
            cfg = t.T5Config(
                vocab_size=64,
                d_model=32,
                d_kv=8,
                d_ff=64,
                num_layers=2,
                num_decoder_layers=2,
                num_heads=4,
                use_cache=False,
            )
            return t.T5ForConditionalGeneration(cfg), {"input_ids": ids, "decoder_input_ids": ids[:, :5]}
        if kind == "vit":
            cfg = t.ViTConfig(
                image_size=32,
                patch_size=8,
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=4,
                intermediate_size=64,
                num_labels=10,
            )
            return t.ViTForImageClassification(cfg), {"pixel_values": torch.randn(1, 3, 32, 32)}
        raise ValueError(kind)

    return build


FAMILIES: dict[str, Any] = {
    "torchvision resnet18": tv("resnet18"),
    "torchvision mobilenet_v3_small": tv("mobilenet_v3_small"),
    "torchvision shufflenet_v2_x0_5": tv("shufflenet_v2_x0_5"),
    "torchvision squeezenet1_0": tv("squeezenet1_0"),
    "torchvision efficientnet_b0": tv("efficientnet_b0"),
    "torchvision regnet_y_400mf": tv("regnet_y_400mf"),
    "torchvision densenet121": tv("densenet121"),
    "torchvision googlenet": tv("googlenet", init_weights=True),
    "torchvision convnext_tiny": tv("convnext_tiny"),
    "torchvision vit_b_16": tv("vit_b_16", 32, image_size=32),
    "torchvision swin_t": tv("swin_t"),
    "torchvision swin_v2_t": tv("swin_v2_t"),
    "torchvision maxvit_t": tv("maxvit_t", 224),
    "timm vit_tiny_patch16_224": timm_model("vit_tiny_patch16_224", img_size=32),
    "timm deit_tiny_patch16_224": timm_model("deit_tiny_patch16_224", img_size=32),
    "timm resnet18": timm_model("resnet18"),
    "timm convnext_atto": timm_model("convnext_atto"),
    "HF BERT": hf("bert"),
    "HF GPT-2": hf("gpt2"),
    "HF Llama (GQA)": hf("llama"),
    "HF T5": hf("t5"),
    "HF ViT": hf("vit"),
}


def run_one(name: str) -> dict[str, Any]:
    import netdiet
    from netdiet.export import export_assignment

    row: dict[str, Any] = {"family": name}
    t0 = time.perf_counter()
    try:
        torch.manual_seed(0)
        model, inputs = FAMILIES[name]()
        model.eval()
    except Exception as exc:
        row.update(status="not available", reason=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
        return row
    try:
        space = netdiet.analyze(model, inputs)
        kinds: dict[str, int] = {}
        for g in space.groups:
            kinds[g.kind] = kinds.get(g.kind, 0) + 1
        probe = space.probe.to_dict()
        row.update(
            groups=kinds,
            blocks=len(space.knobs_of("block")),
            probe_s=round(probe["seconds"], 2),
            probe_exports=probe["exports"],
            frozen=probe["frozen"],
        )
        dense = space.cost().flops
        measured = netdiet.measured_flops(model, inputs)
        assert abs(dense - measured) <= 0.01 * measured, (dense, measured)
        keep = space.sample(seed=0)
        slim = space.export(keep)  # verified against the masked model
        flops = space.cost(keep).flops
        assert abs(flops - netdiet.measured_flops(slim, inputs)) <= 0.01 * flops
        row["random_setting_flops"] = round(flops / dense, 3)
        if space.knobs_of("block"):
            knob = space.knobs_of("block")[0]
            export_assignment(space, netdiet.Assignment({knob.id: 0}))
        row["status"] = "passes" if space.groups else "refused"
        if not space.groups:
            row["reason"] = "no group can shrink"
    except Exception as exc:
        row.update(status="fails", reason=f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
        row["traceback"] = traceback.format_exc()[-2000:]
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def frozen_summary(frozen: dict[str, str]) -> str:
    if not frozen:
        return "-"
    heads = sum(1 for k in frozen if k.endswith(("heads", "dim1")))
    blocks = sum(1 for k in frozen if k.startswith("block:"))
    other = len(frozen) - heads - blocks
    parts = [
        f"{heads} head groups" if heads else "",
        f"{blocks} blocks" if blocks else "",
        f"{other} other" if other else "",
    ]
    example = next(iter(frozen.values()))
    return ", ".join(p for p in parts if p) + f" (e.g. {example[:90]})"


def write(rows: list[dict[str, Any]], wall: float) -> None:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE
    ).stdout.strip()
    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    (HERE / "coverage.json").write_text(
        json.dumps({"commit": commit, "machine": machine, "wall_s": round(wall, 1), "rows": rows}, indent=1)
    )
    lines = [
        f"Commit {commit}; {machine}; {wall:.0f} s wall. `PYTHONPATH=src python benchmarks/coverage/run_coverage.py`",
        "",
        "| family | status | prunable groups | droppable blocks | probe (s / exports) | frozen by the probe |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        groups = ", ".join(f"{v} {k}" for k, v in sorted((r.get("groups") or {}).items())) or "-"
        status = r["status"] if r["status"] == "passes" else f"{r['status']}: {r.get('reason', '')[:120]}"
        probe = f"{r['probe_s']} / {r['probe_exports']}" if "probe_s" in r else "-"
        lines.append(
            f"| {r['family']} | {status} | {groups} | {r.get('blocks', '-')} | {probe} | "
            f"{frozen_summary(r.get('frozen') or {})} |"
        )
    (HERE / "COVERAGE.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", nargs="*", default=None)
    args = parser.parse_args()
    install_shim()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    rows = []
    for name in args.only or list(FAMILIES):
        row = run_one(name)
        print(json.dumps({k: v for k, v in row.items() if k != "traceback"})[:400], flush=True)
        rows.append(row)
    write(rows, time.perf_counter() - t0)


if __name__ == "__main__":
    main()
