"""Quantization benchmark: fp32, post-training int8 and quantization-aware int8, dense and l1l2-pruned.

Every row starts from the same committed dense checkpoint and the same training subset and
augmentation as the compression benchmark. Rows per model:

- fp32: the dense model;
- ptq: `netdiet.compress(method="ptq")` (BN folded, 8-bit weights and activations everywhere, ranges
  calibrated on 8 training batches, no training), exported as static int8 QDQ ONNX with the learned
  scales; for the BERT-style model, dynamic int8 (ONNX Runtime `quantize_dynamic`: int8 weights,
  activations quantized per batch) of the dense model instead, since its linears export as MatMuls
  netdiet's static QDQ writer does not cover;
- qat: ptq followed by `qat_epochs` of distilled quantization-aware fine-tuning (CNNs);
- l1l2-50%: `netdiet.compress(flops=0.5)` as in the compression benchmark (1 gated + 2 fine-tune epochs);
- l1l2-50%+ptq / +qat: the same on the pruned model;
- l1l2 bops=0.03125 (CNNs): the one-call product path, `compress(budget=bops)`: 8 bits fixed, channel
  counts in multiples of 8, float fine-tune, then quantized.
- `--part latency` (static-int8 CNNs): l1l2 to measured-latency budgets at batch 64 on a latency table
  with the int8 precision axis (benchmarks/quantization/tables): `latency=0.45` with 8 bits (priced
  from int8 timings) and in fp32, and `latency=0.385` in fp32 (below what int8 can reach on ResNet-20:
  the table puts the smallest int8 model at 0.397 of dense fp32 and the smallest fp32 one at 0.369;
  measured 0.40 int8 and 0.33 fp32 at quarter width), each with the predicted and measured ratio.

Accuracy is measured twice: the PyTorch model (fake-quant for int8 rows) on val and test, and the ONNX
file in ONNX Runtime on the test split (what deploys). Latency: ONNX Runtime CPU, 1 thread, every file
timed in the same process, interleaved, medians of rounds, at batch 1 and 64. BOPs are
MACs x weight bits x activation bits relative to fp32 x fp32 (attention matmuls without weights stay
32 x 32).

    PYTHONPATH=src python benchmarks/quantization/run_quantization.py --models resnet20
    PYTHONPATH=src python benchmarks/quantization/run_quantization.py --models resnet20 --part latency
    PYTHONPATH=src python benchmarks/quantization/run_quantization.py --markdown-only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT / "src"))

import netdiet  # noqa: E402
from netdiet.cost import price  # noqa: E402
from netdiet.data import DataSpec, build_data  # noqa: E402
from netdiet.export.int8 import to_onnx_dynamic_int8, to_onnx_int4_weights, to_onnx_int8  # noqa: E402
from netdiet.export.onnx import to_onnx  # noqa: E402
from netdiet.quant import quantized_layers, strip_quantizers  # noqa: E402
from netdiet.space import Assignment  # noqa: E402
from netdiet.train import TrainConfig, evaluate  # noqa: E402
from netdiet.train.model_io import load_model  # noqa: E402

TABLES = HERE / "tables"
LATENCY_BATCH = 64
# (budget as a fraction of the dense fp32 latency at LATENCY_BATCH, bits)
LATENCY_ROWS = ((0.45, 8), (0.45, 32), (0.385, 32))
SGD = {"optimizer": "sgd", "lr": 0.02, "weight_decay": 5e-4}
ADAMW = {"optimizer": "adamw", "lr": 1e-4, "weight_decay": 0.01}
PROFILES: dict[str, dict[str, Any]] = {
    "cpu-quick": {
        "threads": 1,
        "seed": 0,
        "models": {
            "resnet20": {
                "checkpoint": "benchmarks/baselines/checkpoints/resnet20-cpu-quick",
                "subset": 5000,
                "qat_epochs": 2,
                "int8": "static",
                **SGD,
            },
            "mobilenetv2": {
                "checkpoint": "benchmarks/baselines/checkpoints/mobilenetv2-cpu-quick",
                "subset": 5000,
                "qat_epochs": 0,  # fake-quant training of MobileNetV2 did not fit this session's CPU time
                "int8": "static",
                **SGD,
            },
            "bert": {
                "checkpoint": "benchmarks/baselines/checkpoints/bert-sst2-cpu-quick",
                "subset": 10000,
                "qat_epochs": 0,
                "int8": "dynamic",
                **ADAMW,
            },
        },
        "prune": {"budget": 0.5, "gated_epochs": 1, "finetune_epochs": 2},
    }
}


def ort_accuracy(path: Path, loader: Any) -> float:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    right = total = 0
    for batch in loader:
        feed = {n: t.numpy() for n, t in zip(names, batch.inputs)}
        logits = session.run(None, feed)[0]
        right += int((logits.argmax(1) == batch.target.numpy()).sum())
        total += int(batch.target.numel())
    return right / max(total, 1)


def time_files(files: dict[str, Path], example: tuple[torch.Tensor, ...], batch: int) -> dict[str, float]:
    """Median ms per run of every file, interleaved round by round in one process (1 thread)."""
    import onnxruntime as ort

    sessions = {}
    for name, path in files.items():
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        sessions[name] = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    x = [t[:1].expand(batch, *t.shape[1:]).contiguous().numpy() for t in example]
    feeds = {n: {i.name: a for i, a in zip(s.get_inputs(), x)} for n, s in sessions.items()}
    inner = 20 if batch == 1 else 2
    rounds = 15 if batch == 1 else 7
    times: dict[str, list[float]] = {n: [] for n in sessions}
    for n, s in sessions.items():
        for _ in range(3):
            s.run(None, feeds[n])
    for _ in range(rounds):
        for n, s in sessions.items():
            t0 = time.perf_counter()
            for _ in range(inner):
                s.run(None, feeds[n])
            times[n].append((time.perf_counter() - t0) / inner * 1e3)
    return {n: statistics.median(v) for n, v in times.items()}


def relative_bops(
    model: torch.nn.Module, example: tuple[torch.Tensor, ...], bits: int, dense_bops: float
) -> float:
    if quantized_layers(model):  # analysis sees parametrized weights as no layer: price the float twin
        model, _ = strip_quantizers(model)
    space = netdiet.analyze(model, example)
    a = Assignment.uniform_bits(space.knobs, bits) if bits < 32 else Assignment()
    return float(price(space, a).bops) / dense_bops


def run_model(
    profile: str,
    name: str,
    spec: dict[str, Any],
    prune: dict[str, Any],
    seed: int,
    data_dir: str,
    part: str = "main",
) -> dict[str, Any]:
    t_all = time.perf_counter()
    ckpt = ROOT / spec["checkpoint"]
    dense, meta = load_model(ckpt)
    dense.eval()
    data_spec = dict(meta["data"])
    data_spec.update(data_dir=data_dir, subset=spec["subset"])
    tok = ckpt / meta["tokenizer"] if meta.get("tokenizer") else None
    data = build_data(DataSpec.from_json(data_spec), tokenizer_path=tok)
    data.train.seed = 1_000 + seed  # type: ignore[attr-defined]
    report_split = "test" if data.input_kind == "image" else "dev"
    example = tuple(t[:1] for t in next(iter(data.train)).inputs)

    def cfg() -> TrainConfig:
        return TrainConfig(
            optimizer=spec["optimizer"],
            lr=spec["lr"],
            weight_decay=spec["weight_decay"],
            seed=seed,
            epochs=1,
            progress=False,
            tensorboard=False,
        )

    dense_bops = float(price(netdiet.analyze(dense, example)).bops)
    rows: list[dict[str, Any]] = []
    files: dict[str, Path] = {}
    work = Path(tempfile.mkdtemp(prefix=f"quant-{name}-"))

    def record(
        label: str,
        model: torch.nn.Module,
        bits: int,
        epochs: float,
        wall: float,
        base: torch.nn.Module | None = None,
        mode: str | None = None,
    ) -> None:
        model.eval()
        mode = mode or (spec["int8"] if bits < 32 else None)
        path = work / f"{label}.onnx"
        notes: list[str] = []
        batches = [b.inputs if len(b.inputs) > 1 else b.inputs[0] for _, b in zip(range(4), data.train)]
        if bits == 32:
            to_onnx(model, example, path)
            kernels: dict[str, int] = {}
        elif mode == "int4-weights":
            res = to_onnx_int4_weights(base if base is not None else model, example, path, batches)
            kernels, notes = res.int8_kernels, res.notes
        elif mode == "dynamic":
            res = to_onnx_dynamic_int8(base if base is not None else model, example, path, batches)
            kernels, notes = res.int8_kernels, res.notes
        else:
            res = to_onnx_int8(model, example, path, batches)
            kernels, notes = res.int8_kernels, res.notes
            notes = notes + [f"max rel. error vs fake-quant {res.max_rel_error:.4f}"]
        files[label] = path
        torch_model = base if (bits < 32 and mode != "static" and base is not None) else model
        row = {
            "model": name,
            "row": label,
            "bits": bits,
            "int8_mode": mode,
            "train_epochs": epochs,
            "val_accuracy": evaluate(torch_model, data.eval["val"])["accuracy"],
            "torch_test_accuracy": evaluate(torch_model, data.eval[report_split])["accuracy"],
            "onnx_test_accuracy": ort_accuracy(path, data.eval[report_split]),
            "report_split": report_split,
            "file_bytes": path.stat().st_size,
            # int4 weight-only computes in float: its BOPs are the float model's
            "relative_bops": relative_bops(
                torch_model, example, 32 if mode == "int4-weights" else bits, dense_bops
            ),
            "flops": netdiet.measured_flops(torch_model, example),
            "int8_kernels": kernels,
            "notes": notes,
            "wall_s": wall,
        }
        print(json.dumps(row), flush=True)
        rows.append(row)

    record("fp32", dense, 32, 0, 0.0)
    if part == "latency":
        latency_rows(name, spec, prune, seed, dense, data, example, cfg, record, rows)
        return finish(profile, name, seed, spec, prune, rows, files, example, t_all)

    def quantize(label: str, source: torch.nn.Module, epochs: float) -> None:
        t = time.perf_counter()
        if spec["int8"] == "dynamic":
            record(label, source, 8, 0, time.perf_counter() - t, base=source)
            record(label.replace("ptq", "int4-weights"), source, 4, 0, 0.0, base=source, mode="int4-weights")
            return
        torch.manual_seed(seed)
        res = netdiet.compress(
            source,
            data.train,
            "bops=1.0",
            method="ptq",
            finetune_epochs=epochs,
            train_config=cfg(),
            example_inputs=example,
            latency_batches=(),
            progress=False,
        )
        record(label, res.model, 8, epochs, time.perf_counter() - t)

    quantize("ptq", dense, 0)
    if spec["qat_epochs"]:
        quantize("qat", dense, spec["qat_epochs"])
    t = time.perf_counter()
    torch.manual_seed(seed)
    pruned = netdiet.compress(
        dense,
        data.train,
        netdiet.Budget(flops=prune["budget"]),
        method="l1l2",
        epochs=prune["gated_epochs"],
        finetune_epochs=prune["finetune_epochs"],
        train_config=cfg(),
        example_inputs=example,
        latency_batches=(),
        progress=False,
    ).model.eval()
    pruned_epochs = prune["gated_epochs"] + prune["finetune_epochs"]
    tag = f"l1l2-{int(prune['budget'] * 100)}%"
    record(tag, pruned, 32, pruned_epochs, time.perf_counter() - t)
    quantize(f"{tag}+ptq", pruned, 0)
    if spec["qat_epochs"]:
        quantize(f"{tag}+qat", pruned, spec["qat_epochs"])
    if spec["int8"] == "static":  # the product path: one call to a BOPs budget (int8 channel multiples)
        t = time.perf_counter()
        torch.manual_seed(seed)
        target = prune["budget"] * 0.0625
        joint = netdiet.compress(
            dense,
            data.train,
            netdiet.Budget(bops=target),
            method="l1l2",
            epochs=prune["gated_epochs"],
            finetune_epochs=prune["finetune_epochs"],
            train_config=cfg(),
            example_inputs=example,
            latency_batches=(),
            progress=False,
        ).model
        record(f"l1l2 bops={target:.4g} (int8)", joint, 8, pruned_epochs, time.perf_counter() - t)
    return finish(profile, name, seed, spec, prune, rows, files, example, t_all)


def latency_rows(
    name: str,
    spec: dict[str, Any],
    prune: dict[str, Any],
    seed: int,
    dense: torch.nn.Module,
    data: Any,
    example: tuple[torch.Tensor, ...],
    cfg: Any,
    record: Any,
    rows: list[dict[str, Any]],
) -> None:
    """l1l2 to measured-latency budgets at batch 64 on a table with the int8 precision axis (profiled
    into benchmarks/quantization/tables if missing): with 8 bits the budget is priced from the int8
    timings, so the method prunes only what int8 kernels alone do not reach; the fp32 row at the same
    budget shows what pruning alone must remove."""
    table = TABLES / f"{name}-ort-b{LATENCY_BATCH}-int8.json"
    for budget, bits in LATENCY_ROWS:
        t = time.perf_counter()
        torch.manual_seed(seed)
        res = netdiet.compress(
            dense,
            data.train,
            netdiet.Budget(latency=budget),
            method="l1l2",
            bits=bits,
            epochs=prune["gated_epochs"],
            finetune_epochs=prune["finetune_epochs"],
            train_config=cfg(),
            example_inputs=example,
            latency_table=table,
            latency_batch=LATENCY_BATCH,
            latency_batches=(),
            progress=False,
        )
        label = f"l1l2 latency={budget:g} ({'int8' if bits <= 8 else 'fp32'} table)"
        record(
            label, res.model, bits, prune["gated_epochs"] + prune["finetune_epochs"], time.perf_counter() - t
        )
        lat = res.report["latency"]
        rows[-1]["latency_budget"] = {
            k: lat[k]
            for k in ("precision", "predicted_ratio", "measured_ratio", "batch", "calibrated")
            if k in lat
        }
        rows[-1]["flops_ratio"] = res.report["compressed"]["flops"] / res.report["dense"]["flops"]


def finish(
    profile: str,
    name: str,
    seed: int,
    spec: dict[str, Any],
    prune: dict[str, Any],
    rows: list[dict[str, Any]],
    files: dict[str, Path],
    example: tuple[torch.Tensor, ...],
    t_all: float,
) -> dict[str, Any]:
    latency = {f"b{b}": time_files(files, example, b) for b in (1, 64)}
    for row in rows:
        for b in (1, 64):
            row[f"ort_ms_b{b}"] = latency[f"b{b}"][row["row"]]
            row[f"speedup_b{b}"] = latency[f"b{b}"]["fp32"] / row[f"ort_ms_b{b}"]
    return {
        "profile": profile,
        "model": name,
        "seed": seed,
        "spec": spec,
        "prune": prune,
        "rows": rows,
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch thread(s), "
        f"{os.cpu_count()} cores (shared with the other benchmark processes of this run)",
        "torch": torch.__version__,
        "onnxruntime": __import__("onnxruntime").__version__,
        "part": "latency" if any("latency_budget" in r for r in rows) else "main",
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
        ).stdout.strip(),
        "wall_s": time.perf_counter() - t_all,
    }


def render(profile: str) -> str:
    parts = sorted(HERE.glob(f"results-{profile}-*.json"))
    lines = [
        f"# Quantization benchmark ({profile})",
        "",
        "Generated by `benchmarks/quantization/run_quantization.py` (see its docstring for what every row is).",
        "ONNX Runtime CPU, 1 thread, medians of interleaved rounds in one process; speed-up against the",
        "dense fp32 ONNX file of the same run. Accuracy in %: PyTorch (fake-quant for int8 rows) and the ONNX",
        "file in ONNX Runtime, on the reported split. BOPs relative to fp32 x fp32.",
        "",
    ]
    for path in parts:
        data = json.loads(path.read_text())
        lines += [
            f"## {data['model']}{' - latency budgets' if data.get('part') == 'latency' else ''} (seed {data['seed']}; {data['machine']}; torch {data['torch']}, onnxruntime "
            f"{data['onnxruntime']}; commit {data['commit']}; wall {data['wall_s'] / 60:.1f} min)",
            "",
            "| row | bits | epochs | val acc | torch acc | ONNX acc | file KB | rel. BOPs | ms b1 | ms b64 | speed-up b1 | speed-up b64 | int8 kernels |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in data["rows"]:
            kernels = ", ".join(f"{k} {v}" for k, v in sorted(r["int8_kernels"].items())) or "-"
            mode = f" ({r['int8_mode']})" if r["int8_mode"] else ""
            lines.append(
                f"| {r['row']} | {r['bits']}{mode} | {r['train_epochs']:g} | {100 * r['val_accuracy']:.2f} | "
                f"{100 * r['torch_test_accuracy']:.2f} | {100 * r['onnx_test_accuracy']:.2f} | "
                f"{r['file_bytes'] / 1024:.0f} | {r['relative_bops']:.4f} | {r['ort_ms_b1']:.3f} | "
                f"{r['ort_ms_b64']:.2f} | {r['speedup_b1']:.2f}x | {r['speedup_b64']:.2f}x | {kernels} |"
            )
        budget_rows = [r for r in data["rows"] if "latency_budget" in r]
        if budget_rows:
            lines += [
                "",
                f"Latency budgets (fraction of the dense fp32 latency at batch {LATENCY_BATCH}, priced on the "
                "table; measured: the exported file against the dense fp32 one, interleaved):",
                "",
                "| row | priced as | predicted ratio | measured ratio | FLOPs ratio |",
                "|---|---|---|---|---|",
            ]
            for r in budget_rows:
                b = r["latency_budget"]
                lines.append(
                    f"| {r['row']} | {b['precision']} | {b['predicted_ratio']:.3f} | {b['measured_ratio']:.3f} | "
                    f"{r['flops_ratio']:.3f} |"
                )
        lines.append("")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profile", default="cpu-quick", choices=sorted(PROFILES))
    parser.add_argument("--models", nargs="*")
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--markdown-only", action="store_true")
    parser.add_argument("--subset", type=int, help="smoke test: fewer training examples; writes nothing")
    parser.add_argument(
        "--part",
        default="main",
        choices=("main", "latency"),
        help="main: the fp32/ptq/qat/pruned rows; latency: l1l2 to measured-latency budgets on an int8 table",
    )
    args = parser.parse_args()
    profile = PROFILES[args.profile]
    if not args.markdown_only:
        torch.set_num_threads(profile["threads"])
        for name in args.models or list(profile["models"]):
            spec = dict(profile["models"][name], **({"subset": args.subset} if args.subset else {}))
            result = run_model(
                args.profile, name, spec, profile["prune"], profile["seed"], args.data_dir, args.part
            )
            if args.subset:
                print(json.dumps(result["rows"], indent=1))
                return
            suffix = "" if args.part == "main" else f"-{args.part}"
            out = HERE / f"results-{args.profile}-{name}{suffix}.json"
            tmp = out.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(result, indent=1))
            tmp.replace(out)
    md = HERE / f"RESULTS-{args.profile}.md"
    md.write_text(render(args.profile))
    print(md.read_text())


if __name__ == "__main__":
    main()
