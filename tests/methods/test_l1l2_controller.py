"""l1l2's gated phase as the user sees it: the cost schedule and controller land in the budget window for
short and long phases, hardening makes the read-off lossless (rewind=False), rewind (the default) exports
the learned setting on the dense weights, a NaN stops the run before anything is written, the user's
model is never touched, the importance is deterministic, and the defaults are safe on a trained
residual + concat + depthwise CNN. Small models built here, CPU only.

Data are plain contiguous (NCHW) tensors; how the trainer handles NHWC-strided batches is tested in
tests/train/test_trainer.py.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

import netdiet
from netdiet.compressor import Compressor
from netdiet.errors import NonFiniteError
from netdiet.methods import METHODS
from netdiet.methods.importance import TaylorAccumulator, combine
from netdiet.train import TrainConfig, fit, fit_inplace
from small_models import conv_stack

# ----- small models and data --------------------------------------------------------------------------


def small_cnn(dropout: float = 0.0) -> nn.Module:
    return conv_stack((16, 32, 32), dropout=dropout)


def small_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 4))


class ResCatDW(nn.Module):
    """A residual block around a depthwise-separable conv, then two branches concatenated."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False)
        self.dw_bn = nn.BatchNorm2d(16)
        self.pw = nn.Conv2d(16, 16, 1, bias=False)
        self.pw_bn = nn.BatchNorm2d(16)
        self.a = nn.Conv2d(16, 12, 1)
        self.b = nn.Conv2d(16, 12, 3, padding=1)
        self.down = nn.Sequential(
            nn.Conv2d(24, 32, 3, padding=1, stride=2, bias=False), nn.BatchNorm2d(32), nn.ReLU()
        )
        self.fc = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = F.relu(x + self.pw_bn(self.pw(F.relu(self.dw_bn(self.dw(x))))))
        x = torch.cat([F.relu(self.a(x)), F.relu(self.b(x))], dim=1)
        return self.fc(self.down(x).mean((2, 3)))


def data(kind: str, n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and labels of a fixed random linear rule (learnable, so the task loss has a signal)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 3, 8, 8, generator=g) if kind == "cnn" else torch.randn(n, 32, generator=g)
    w = torch.randn(x[0].numel(), 4, generator=g)
    return x, (x.flatten(1) @ w).argmax(1)


def loader(x: torch.Tensor, y: torch.Tensor, batch: int = 16, shuffle: bool = False, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y), batch_size=batch, shuffle=shuffle, generator=gen
    )


def gated_loop(comp: Compressor, x: torch.Tensor, y: torch.Tensor, steps: int, batch: int = 16) -> None:
    opt = torch.optim.SGD(comp.model.parameters(), lr=0.01, momentum=0.9)
    comp.model.train()
    for k in range(steps):
        i = (k * batch) % len(x)
        loss = F.cross_entropy(comp.model(x[i : i + batch]), y[i : i + batch]) + comp.penalty()
        opt.zero_grad()
        loss.backward()
        opt.step()
        comp.step(loss.item())


def dropped_gate_values(comp: Compressor) -> torch.Tensor:
    """Every gate value of a unit or direction that the hardened setting drops."""
    m = comp.method
    setting = m.hard_setting
    assert setting is not None
    out = []
    pairs = [(m.gates.group(n), idx) for n, idx in setting.keep.items()]
    pairs += [(m.gates.rank(w), idx) for w, idx in setting.ranks.items()]
    for gate, keep in pairs:
        drop = torch.ones(gate.numel(), dtype=torch.bool)
        drop[keep] = False
        out.append(gate.detach()[drop])
    return torch.cat(out)


# ----- a. the controller lands in the window for short and long phases --------------------------------


@pytest.mark.parametrize("kind", ["cnn", "mlp"])
@pytest.mark.parametrize("steps, budget", [(20, 0.5), (100, 0.5), (100, 0.3), (600, 0.5)])
def test_gated_phase_of_any_length_ends_in_the_budget_window_and_reads_off_losslessly(
    kind: str, steps: int, budget: float
) -> None:
    model = small_cnn() if kind == "cnn" else small_mlp()
    x, y = data(kind)
    # the gated weights are kept and hardened (rewind=False): the model trained is the model exported
    comp = Compressor(model, (x[:1],), f"flops={budget}", total_steps=steps, rewind=False)
    gated_loop(comp, x, y, steps)
    trace = comp.trace
    assert len(trace) == steps and trace[-1]["step"] == steps
    start = comp.method.schedule.harden_start(steps)
    assert [t["phase"] for t in trace] == ["anneal"] * (start - 1) + ["harden"] * (steps - start + 1)
    # the relaxed cost followed the annealed target down to the budget (measured: 0.89x..1.28x of it at
    # the start of hardening on these models, for 20..600 steps)
    at_hardening = trace[start - 1]["cost_ratio"]
    assert 0.7 * budget <= at_hardening <= 1.4 * budget, [round(t["cost_ratio"], 3) for t in trace]
    assert trace[0]["cost_ratio"] == pytest.approx(1.0)  # it started dense
    assert trace[start - 1]["target_ratio"] == pytest.approx(budget)

    # the hardened setting's dropped units faded to exactly zero by the last step
    assert comp.method.hard_setting is not None
    dropped = dropped_gate_values(comp)
    assert dropped.numel() > 0 and torch.count_nonzero(dropped) == 0

    result = comp.export()
    dense = netdiet.measured_flops(model, (x[:1],))
    flops = netdiet.measured_flops(result.model, (x[:1],))
    assert budget * 0.99 * dense <= flops <= budget * dense
    assert result.assignment.keep.keys() == comp.method.hard_setting.keep.keys()
    for name, idx in comp.method.hard_setting.keep.items():
        assert torch.equal(result.assignment.keep[name], idx), name
    # the model that was trained is the model exported: same outputs in eval mode
    comp.model.eval()
    result.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), comp.model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["cnn", "mlp"])
def test_rewind_exports_the_learned_setting_on_the_dense_weights(kind: str) -> None:
    model = small_cnn() if kind == "cnn" else small_mlp()
    x, y = data(kind)
    before = snapshot(model)
    comp = Compressor(model, (x[:1],), "flops=0.5", total_steps=20)  # rewind is the default
    method = comp.method
    assert method.config.rewind and method.config.harden_fraction == 0.0
    assert method.gates.rank_names == []  # rewound weights are not low-rank: no singular-value gates
    gated_loop(comp, x, y, 20)
    # no hardening phase: the setting is fixed at the very last step only
    assert [t["phase"] for t in comp.trace] == ["anneal"] * 19 + ["harden"]
    result = comp.export()
    assert method.hard_setting is not None and result.assignment.ranks == {} and result.factorized == {}
    assert result.assignment.keep.keys() == method.hard_setting.keep.keys()
    assert all(torch.equal(result.assignment.keep[k], v) for k, v in method.hard_setting.keep.items())
    dense = netdiet.measured_flops(model, (x[:1],))
    assert 0.495 * dense <= netdiet.measured_flops(result.model, (x[:1],)) <= 0.5 * dense
    # the exported model is the *original* model cut to the learned setting, not the gated one
    reference = netdiet.analyze(model, (x[:1],)).export(result.assignment.keep)
    result.model.eval()
    reference.eval()
    comp.model.eval()
    with torch.no_grad():
        out = result.model(x)
        torch.testing.assert_close(out, reference(x), rtol=1e-5, atol=1e-6)
        assert not torch.allclose(out, comp.model(x), rtol=1e-3, atol=1e-3)  # the gated model differs
    assert_unchanged(model, before)


# ----- b. NaN / inf stop the run and nothing is written ----------------------------------------------


def test_step_refuses_a_non_finite_loss() -> None:
    model = small_mlp()
    x, y = data("mlp", 16)
    comp = Compressor(model, (x[:1],), "flops=0.5", total_steps=10)
    gated_loop(comp, x, y, 2)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(NonFiniteError, match="non-finite loss") as err:
            comp.step(bad)
        assert err.value.what == "loss" and err.value.step is not None
        assert math.isnan(err.value.value) if math.isnan(bad) else err.value.value == bad
    assert err.value.step == 4  # the 1-based step count of the call that saw it


def nan_at(x: torch.Tensor, index: int) -> torch.Tensor:
    x = x.clone()
    x[index] = float("nan")
    return x


def snapshot(model: nn.Module) -> dict[str, Any]:
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "training": {n: m.training for n, m in model.named_modules()},
        "device": {k: v.device for k, v in model.state_dict().items()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
    }


def assert_unchanged(model: nn.Module, before: dict[str, Any]) -> None:
    now = snapshot(model)
    assert now["state"].keys() == before["state"].keys()
    for k, v in now["state"].items():
        assert torch.equal(v, before["state"][k]), f"{k} changed"
    assert now["training"] == before["training"]
    assert now["device"] == before["device"]
    assert now["requires_grad"] == before["requires_grad"]


def test_compress_stops_at_the_first_nan_batch_and_leaves_the_model_alone() -> None:
    model = small_cnn()
    x, y = data("cnn")
    before = snapshot(model)
    bad = loader(nan_at(x, 2 * 16 + 3), y)  # batch 3 of 4 holds a NaN: step 3 of the gated phase
    with pytest.raises(NonFiniteError) as err:
        netdiet.compress(
            model, bad, "flops=0.5", epochs=1, finetune_epochs=1, progress=False, latency_batches=()
        )
    assert err.value.step == 3 and err.value.what == "loss"
    assert "step 3" in str(err.value) and "nan" in str(err.value) and "learning rate" in str(err.value)
    assert_unchanged(model, before)


def test_compress_with_an_exploding_learning_rate_stops_with_a_non_finite_error() -> None:
    model = small_cnn()
    x, y = data("cnn")
    before = snapshot(model)
    with pytest.raises(NonFiniteError) as err:
        netdiet.compress(
            model,
            loader(x, y),
            "flops=0.5",
            epochs=3,
            finetune_epochs=1,
            train_config=TrainConfig(lr=1e6, progress=False),
            progress=False,
            latency_batches=(),
        )
    assert err.value.step is not None and err.value.step >= 1
    message = str(err.value)
    # the loss, a gradient or (checked at the epoch's end) a weight, whichever overflows first
    assert f"step {err.value.step}" in message and "lower the learning rate" in message
    assert_unchanged(model, before)


def checkpoints_are_finite(run_dir: Path) -> list[Path]:
    files = sorted(run_dir.rglob("*.safetensors"))
    for f in files:
        for k, v in load_file(str(f)).items():
            assert not v.is_floating_point() or torch.isfinite(v).all(), f"{f.name}: {k} holds NaN/inf"
    return files


def test_fit_inplace_never_writes_a_checkpoint_after_a_nan_step(tmp_path: Path) -> None:
    from netdiet.train import load_checkpoint

    x, y = data("cnn", 32)

    class NaNInEpoch2:
        """A loader whose second epoch has a NaN in its second batch."""

        num_examples = 32

        def __init__(self) -> None:
            self.epoch = 0

        def set_epoch(self, epoch: int) -> None:
            self.epoch = epoch

        def __len__(self) -> int:
            return 2

        def __iter__(self):
            from netdiet.data import Batch

            xs = nan_at(x, 20) if self.epoch == 1 else x
            for i in (0, 16):
                yield Batch((xs[i : i + 16],), y[i : i + 16])

    model = small_cnn()
    cfg = TrainConfig(epochs=3, lr=0.01, progress=False, tensorboard=False)
    with pytest.raises(NonFiniteError) as err:
        fit_inplace(model, NaNInEpoch2(), {}, cfg, run_dir=tmp_path)
    assert err.value.step == 4 and err.value.what == "loss"
    files = checkpoints_are_finite(tmp_path)
    assert len(files) == 1  # epoch 1's, and nothing after it
    state = load_checkpoint(tmp_path / "checkpoint", small_cnn())
    assert state.epoch == 1 and state.step == 2


def test_fit_inplace_refuses_to_checkpoint_inf_weights(tmp_path: Path) -> None:
    """The loss and gradient of the only step are finite; the step itself makes the weights inf."""
    x, y = data("mlp", 16)
    x = x * 1e3  # finite logits and gradients, but lr * gradient overflows float32
    model = small_mlp()
    cfg = TrainConfig(epochs=2, lr=1e37, momentum=0.0, progress=False, tensorboard=False)
    with pytest.raises(NonFiniteError, match="holds NaN/inf at step 1") as err:
        fit_inplace(model, netdiet.data.adapt.as_loader(loader(x, y)), {}, cfg, run_dir=tmp_path)
    assert err.value.step == 1
    assert checkpoints_are_finite(tmp_path) == []


# ----- c. the user's model is never modified ----------------------------------------------------------


def budget_for(method: str) -> str:
    """A budget the method can meet: quantization alone does not change FLOPs."""
    return "bops=0.1" if method == "ptq" else "flops=0.5"


def user_model(train: bool) -> nn.Module:
    model = small_cnn(dropout=0.2)
    model[0].bias.requires_grad_(False)  # a frozen parameter must stay frozen
    model.train(train)
    if train:
        model[12].eval()  # and a mixed-mode model stays mixed
    return model


# search methods at a few candidates: what is checked is that scoring them leaves the model alone
SEARCH_OPTIONS: dict[str, dict[str, Any]] = {
    "amc": {"episodes": 3, "warmup": 1, "hidden": 8},
    "evolution": {
        "population": 4,
        "parents": 2,
        "mutations": 1,
        "crossovers": 1,
        "generations": 1,
        "predictor_samples": 8,
    },
}


@pytest.mark.parametrize("train", [True, False], ids=["train-mode", "eval-mode"])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_compress_leaves_the_user_model_unchanged(method: str, train: bool) -> None:
    model = user_model(train)
    x, y = data("cnn", 32)
    before = snapshot(model)
    search = METHODS[method].needs_evaluator
    result = netdiet.compress(
        model,
        loader(x, y),
        budget_for(method),
        method=method,
        epochs=1 if METHODS[method].needs_training else 0,
        finetune_epochs=1,
        train_config=TrainConfig(lr=0.01, progress=False),
        progress=False,
        latency_batches=(1,),
        eval_data=loader(x, y) if search else None,
        method_options=SEARCH_OPTIONS.get(method),
    )
    assert_unchanged(model, before)
    assert result.model is not model


@pytest.mark.parametrize("train", [True, False], ids=["train-mode", "eval-mode"])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_compressor_and_export_leave_the_user_model_unchanged(method: str, train: bool) -> None:
    model = user_model(train)
    x, y = data("cnn", 32)
    before = snapshot(model)
    evaluator = (lambda m: float(m(x[:8]).abs().mean())) if METHODS[method].needs_evaluator else None
    comp = Compressor(
        model,
        (x[:2],),
        budget_for(method),
        method=method,
        total_steps=4,
        calibration=[x[:16]],
        evaluator=evaluator,
        **SEARCH_OPTIONS.get(method, {}),
    )
    assert_unchanged(model, before)
    if comp.needs_training:  # baselines' comp.model *is* the user's model: one trains nothing there
        gated_loop(comp, x, y, 4)
    result = comp.export()
    assert_unchanged(model, before)
    assert result.model is not model


# ----- d. the importance is deterministic -------------------------------------------------------------


def test_importance_and_export_are_deterministic_for_a_seed() -> None:
    def run() -> tuple[Any, Any]:
        model = small_cnn(dropout=0.3)  # dropout: the seed matters
        x, y = data("cnn")
        torch.manual_seed(123)
        comp = Compressor(model, (x[:1],), "flops=0.4", total_steps=12)
        opt = torch.optim.SGD(comp.model.parameters(), lr=0.01, momentum=0.9)
        comp.model.train()
        for _ in range(3):
            for xb, yb in loader(x, y, shuffle=True, seed=7):
                loss = F.cross_entropy(comp.model(xb), yb) + comp.penalty()
                opt.zero_grad()
                loss.backward()
                opt.step()
                comp.step(loss.item())
        assert comp.method.taylor.count > 0  # the task gradient entered the scores
        return comp.method.importance(), comp.export().assignment

    (groups1, ranks1), setting1 = run()
    (groups2, ranks2), setting2 = run()
    assert groups1.keys() == groups2.keys() and ranks1.keys() == ranks2.keys()
    for name in groups1:
        assert torch.equal(groups1[name], groups2[name]), name
    for name in ranks1:
        assert torch.equal(ranks1[name], ranks2[name]), name
    assert setting1.keep.keys() == setting2.keep.keys()
    assert all(torch.equal(setting1.keep[k], setting2.keep[k]) for k in setting1.keep)
    assert setting1.ranks.keys() == setting2.ranks.keys()
    assert all(torch.equal(setting1.ranks[k], setting2.ranks[k]) for k in setting1.ranks)


def test_combine_normalises_per_group_and_takes_the_geometric_mean() -> None:
    magnitude = {"a": torch.tensor([1.0, 3.0]), "b": torch.tensor([10.0, 30.0, 20.0])}
    taylor = {"a": torch.tensor([4.0, 0.0]), "b": torch.tensor([1.0, 1.0, 1.0])}
    mag = combine("magnitude", magnitude, taylor)
    torch.testing.assert_close(mag["a"], torch.tensor([0.5, 1.5], dtype=torch.float64))
    torch.testing.assert_close(mag["b"], torch.tensor([0.5, 1.5, 1.0], dtype=torch.float64))
    tay = combine("taylor", magnitude, taylor)
    torch.testing.assert_close(tay["a"], torch.tensor([2.0, 0.0], dtype=torch.float64))
    both = combine("combined", magnitude, taylor)
    torch.testing.assert_close(both["a"], torch.tensor([1.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(both["b"], mag["b"].sqrt())
    alone = combine("combined", magnitude, None)  # no gradients seen: magnitude alone
    assert alone.keys() == mag.keys() and all(torch.equal(alone[k], mag[k]) for k in mag)
    acc = TaylorAccumulator()
    acc.add({"a": torch.tensor([-1.0, 2.0])})
    acc.add({"a": torch.tensor([3.0, 0.0])})
    torch.testing.assert_close(acc.mean()["a"], torch.tensor([2.0, 1.0], dtype=torch.float64))
    assert acc.count == 2 and TaylorAccumulator().mean() == {}


# ----- e. the defaults are safe on a trained residual + concat + depthwise CNN -------------------------


def test_defaults_compress_a_trained_residual_concat_depthwise_cnn() -> None:
    torch.manual_seed(0)
    x, y = data("cnn", 128)
    train = loader(x, y, batch=16, shuffle=True)
    trained = fit(
        ResCatDW(), netdiet.data.adapt.as_loader(train), {}, TrainConfig(epochs=3, lr=0.05, progress=False)
    )
    model = trained.model.eval()
    # it learned something (chance is ln 4 = 1.39): the defaults fine-tune a trained model
    assert trained.final["train_loss"] < min(1.35, trained.history[0]["train_loss"])
    result = netdiet.compress(model, train, "flops=0.5", epochs=1, finetune_epochs=1)
    slim = result.model
    assert all(torch.isfinite(p).all() for p in slim.state_dict().values() if p.is_floating_point())
    with torch.no_grad():
        assert torch.isfinite(slim.eval()(x)).all()
    dense = netdiet.measured_flops(model, (x[:1],))
    flops = netdiet.measured_flops(slim, (x[:1],))
    assert 0.49 * dense <= flops <= 0.5 * dense
    assert result.report["dynamics"]["hardened"] is True
