"""Analyse a Llama-2-7B-sized config on the meta device: wall time and peak RSS, committed as JSON.

Run: python benchmarks/meta/llama7b_meta.py  (writes benchmarks/meta/results.json and RESULTS.md)
"""

from __future__ import annotations

import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
_KEEP_ALIVE: list = []  # the shim's torch.library registrations live as long as its module object


def _shim() -> None:
    shim = HERE.parents[2] / "shared" / "tv_cpu_shim.py"
    if shim.is_file():
        import importlib.util

        spec = importlib.util.spec_from_file_location("tv_cpu_shim", shim)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.install()
        _KEEP_ALIVE.append(module)


def main() -> None:
    _shim()
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    import netdiet

    config = LlamaConfig(
        vocab_size=32000,
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        max_position_embeddings=4096,
        use_cache=False,
    )
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    ids = torch.zeros(1, 128, dtype=torch.long, device="meta")
    t0 = time.perf_counter()
    space = netdiet.analyze(model, (ids,))
    t_analyze = time.perf_counter() - t0
    t0 = time.perf_counter()
    report = space.cost()
    half = space.cost(space.sample(0.5, seed=0))
    t_cost = time.perf_counter() - t0
    t0 = time.perf_counter()
    slim = space.export(space.sample(0.5, seed=0))
    t_export = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kinds: dict[str, int] = {}
    for g in space.groups:
        kinds[g.kind] = kinds.get(g.kind, 0) + 1
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE
    ).stdout.strip()
    result = {
        "model": "LlamaForCausalLM, Llama-2-7B config (meta device), input (1, 128)",
        "params": int(report.params),
        "groups": len(space.groups),
        "group_kinds": kinds,
        "analyze_s": round(t_analyze, 1),
        "cost_dense_and_half_s": round(t_cost, 2),
        "export_half_s": round(t_export, 1),
        "peak_rss_mb_process": round(peak),
        "rss_before_mb": round(rss0),
        "dense_gflops": round(report.flops / 1e9, 1),
        "half_gflops": round(half.flops / 1e9, 1),
        "slim_params": sum(p.numel() for p in slim.parameters()),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, python {sys.version.split()[0]}",
        "commit": commit,
    }
    (HERE / "results.json").write_text(json.dumps(result, indent=1))
    lines = [
        "# Meta-device analysis of a Llama-2-7B-sized model",
        "",
        f"Command: `python benchmarks/meta/llama7b_meta.py` at commit {commit} on {result['machine']}.",
        "",
        "| what | value |",
        "|---|---|",
    ] + [f"| {k} | {v} |" for k, v in result.items() if k not in ("machine", "commit")]
    (HERE / "RESULTS.md").write_text("\n".join(lines) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
