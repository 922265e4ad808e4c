# ruff: noqa: E402, E702
"""One-off: record the pre-change l1l2 dynamics on ResNet-20 (cpu-quick checkpoint), as the benchmark ran it."""

import json
import sys
from pathlib import Path

import torch

torch.set_num_threads(1)
ROOT = Path("/tmp/oldtree")
import netdiet
from netdiet.compressor import Compressor
from netdiet.data import DataSpec, build_data
from netdiet.methods.relaxed import relaxed_count
from netdiet.train import TrainConfig, evaluate, fit_inplace, load_model

budget = float(sys.argv[1])
subset = int(sys.argv[2])
epochs = int(sys.argv[3])
dense, meta = load_model(ROOT / "benchmarks/baselines/checkpoints/resnet20-cpu-quick")
spec = dict(meta["data"])
spec.update(data_dir="/work/shared/data", subset=subset)
data = build_data(DataSpec.from_json(spec))
example = tuple(t[:1] for t in next(iter(data.train)).inputs)
comp = Compressor(dense, example, netdiet.Budget(flops=budget), lambda_lr=0.2)
trace = []


class Hook:
    def penalty(self):
        return comp.penalty()

    def after_step(self):
        comp.step()
        m = comp.method
        counts = {n: float(relaxed_count(m.gates.group(n)).detach()) for n in m.gates.group_names}
        trace.append(
            {
                "step": len(trace) + 1,
                "cost_ratio": m.last_surrogate / m.dense,
                "budget": budget,
                "lam": m.lam,
                "counts": counts,
            }
        )

    def status(self):
        return {}


cfg = TrainConfig(
    optimizer="sgd", lr=0.02, weight_decay=5e-4, epochs=epochs, progress=False, tensorboard=False
)
res = fit_inplace(comp.model, data.train, {}, cfg, step_hook=Hook())
ex = comp.export()
out = {
    "budget": budget,
    "subset": subset,
    "epochs": epochs,
    "trace": trace,
    "kept": {k: int(v.numel()) for k, v in ex.setting.keep.items()},
    "sizes": {g.name: g.size for g in comp.space.groups},
    "readoff_flops_ratio": ex.cost["flops"] / ex.dense_cost["flops"],
    "val_acc_after_readoff": evaluate(ex.model, data.eval["val"])["accuracy"],
    "val_acc_dense": evaluate(dense, data.eval["val"])["accuracy"],
    "history": res.history,
}
Path(f"/tmp/diag/old_{budget}_{subset}_{epochs}.json").write_text(json.dumps(out))
print(json.dumps({k: v for k, v in out.items() if k not in ("trace",)}, indent=0))
print("last trace", trace[-1])
