"""The training loop: learns, leaves the input alone, is deterministic, resumes exactly, checkpoints atomically."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from netdiet import zoo
from netdiet.data import Batch
from netdiet.errors import RecipeError
from netdiet.train import TrainConfig, fit, fit_inplace, load_checkpoint, load_model, save_model
from netdiet.train import checkpoint as ckpt_mod


def tiny_resnet() -> torch.nn.Module:
    torch.manual_seed(0)
    return zoo.build("resnet20", widths=(4, 8, 8))


CFG = TrainConfig(epochs=3, lr=0.05, warmup_epochs=1, progress=False, tensorboard=False)


def states_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_fit_learns_and_does_not_touch_the_input_model(digits8) -> None:
    model = tiny_resnet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = fit(model, digits8.train, digits8.eval, CFG)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert result.model is not model
    assert len(result.history) == 3
    assert result.final["val_accuracy"] > 0.5  # 10 classes: chance is 0.1
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


def test_fit_inplace_modifies_the_given_model(digits8) -> None:
    model = tiny_resnet()
    before = model.conv1.weight.detach().clone()
    result = fit_inplace(model, digits8.train, None, TrainConfig(epochs=1, progress=False))
    assert result.model is model
    assert not torch.equal(before, model.conv1.weight)


def test_same_seed_same_result(digits8) -> None:
    a = fit(tiny_resnet(), digits8.train, None, CFG).model
    b = fit(tiny_resnet(), digits8.train, None, CFG).model
    assert states_equal(a, b)


class Killed(Exception):
    pass


def test_killed_run_resumes_to_the_same_result(digits8, tmp_path: Path) -> None:
    full = fit(tiny_resnet(), digits8.train, digits8.eval, CFG, run_dir=tmp_path / "full")

    def kill_after_first_epoch(epoch: int, record: dict) -> None:
        if epoch == 1:
            raise Killed

    with pytest.raises(Killed):
        fit(
            tiny_resnet(),
            digits8.train,
            digits8.eval,
            CFG,
            run_dir=tmp_path / "r",
            callbacks=[kill_after_first_epoch],
        )
    resumed = fit(tiny_resnet(), digits8.train, digits8.eval, CFG, run_dir=tmp_path / "r", resume=True)
    assert states_equal(full.model, resumed.model)
    assert [r["val_accuracy"] for r in resumed.history] == [r["val_accuracy"] for r in full.history]
    assert len((tmp_path / "r" / "metrics.jsonl").read_text().splitlines()) == 3


def test_interrupted_checkpoint_write_keeps_the_previous_one(digits8, tmp_path: Path, monkeypatch) -> None:
    calls = {"n": 0}
    real = ckpt_mod.atomic_write_json

    def crash_on_second_index(path, data):
        calls["n"] += 1
        if calls["n"] == 2:
            raise Killed  # killed after epoch 2's weight files were written, before the index switched
        real(path, data)

    monkeypatch.setattr(ckpt_mod, "atomic_write_json", crash_on_second_index)
    with pytest.raises(Killed):
        fit(tiny_resnet(), digits8.train, None, CFG, run_dir=tmp_path)
    state = load_checkpoint(tmp_path / "checkpoint", tiny_resnet())
    assert state.epoch == 1
    assert not [p for p in (tmp_path / "checkpoint").iterdir() if p.name.endswith(".tmp")]


def test_corrupt_checkpoint_is_refused(digits8, tmp_path: Path) -> None:
    fit(tiny_resnet(), digits8.train, None, TrainConfig(epochs=1, progress=False), run_dir=tmp_path)
    (weights,) = (tmp_path / "checkpoint").glob("model-*.safetensors")
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(RecipeError, match="checksum"):
        load_checkpoint(tmp_path / "checkpoint", tiny_resnet())


def test_resume_without_checkpoint_is_an_error(digits8, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        fit(tiny_resnet(), digits8.train, None, CFG, run_dir=tmp_path, resume=True)


def test_distillation_pulls_student_towards_teacher(digits8) -> None:
    teacher = fit(tiny_resnet(), digits8.train, None, CFG).model.eval()
    cfg = TrainConfig(epochs=2, lr=0.05, kd_alpha=1.0, kd_temperature=2.0, progress=False)
    torch.manual_seed(1)
    student = fit(tiny_resnet(), digits8.train, None, cfg, teacher=teacher).model.eval()
    batch = next(iter(digits8.eval["val"]))
    with torch.no_grad():
        agree = (student(*batch.inputs).argmax(-1) == teacher(*batch.inputs).argmax(-1)).float().mean()
    assert agree > 0.5
    with pytest.raises(ValueError, match="kd_alpha"):
        fit(tiny_resnet(), digits8.train, None, TrainConfig(epochs=1, progress=False), teacher=teacher)


def test_adamw_label_smoothing_and_clipping_run(digits8) -> None:
    cfg = TrainConfig(
        epochs=1, optimizer="adamw", lr=3e-3, label_smoothing=0.1, grad_clip=1.0, progress=False
    )
    result = fit(tiny_resnet(), digits8.train, digits8.eval, cfg)
    assert torch.isfinite(torch.tensor(result.final["train_loss"]))


def test_model_save_load_round_trip(digits8, tmp_path: Path) -> None:
    model = fit(tiny_resnet(), digits8.train, None, TrainConfig(epochs=1, progress=False)).model.eval()
    save_model(tmp_path, model, "resnet20", {"note": "x"})
    loaded, meta = load_model(tmp_path)
    x = next(iter(digits8.eval["val"])).inputs
    torch.testing.assert_close(loaded(*x), model(*x))
    assert meta["model"] == "resnet20" and meta["note"] == "x"
    assert not list(tmp_path.glob("*.pt"))  # weights are safetensors, never a pickle


def test_amp_and_channels_last_paths_run_on_cpu(digits8) -> None:
    """The GPU options (autocast, channels_last) take the same code path on CPU with bf16."""
    cfg = TrainConfig(epochs=2, lr=0.05, amp=True, channels_last=True, progress=False)
    result = fit(tiny_resnet(), digits8.train, digits8.eval, cfg)
    assert result.model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert result.model.conv1.weight.dtype == torch.float32  # autocast never changes stored weights
    assert result.final["val_accuracy"] > 0.3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_amp_training(digits8) -> None:
    cfg = TrainConfig(epochs=2, lr=0.05, device="cuda", progress=False)
    result = fit(tiny_resnet(), digits8.train, digits8.eval, cfg)
    assert result.final["val_accuracy"] > 0.3


# ----- fractional epochs, step hooks, input layout --------------------------------------------------------


class Batches:
    """`n` batches of 4 tiny images; `channels_last` hands them out NHWC-strided, as the image loaders do."""

    def __init__(self, n: int = 8, channels_last: bool = False) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(4 * n, 3, 6, 6, generator=g)
        self.y = torch.randint(0, 3, (4 * n,), generator=g)
        self.n, self.channels_last, self.num_examples = n, channels_last, 4 * n

    def set_epoch(self, epoch: int) -> None:
        pass

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        for i in range(0, 4 * self.n, 4):
            x = self.x[i : i + 4]
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield Batch((x,), self.y[i : i + 4])


class Recorder(torch.nn.Module):
    """A small CNN that records the memory layout of every input it is given."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.fc = torch.nn.Linear(4, 3)
        self.layouts: list[tuple[bool, bool]] = []  # (contiguous, channels-last contiguous)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.layouts.append((x.is_contiguous(), x.is_contiguous(memory_format=torch.channels_last)))
        return self.fc(self.conv(x).mean((2, 3)))


class CountingHook:
    """A step hook that counts optimizer steps and checks when `before_step` runs."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.total: int | None = None
        self.before: list[bool] = []  # per call: every parameter had a gradient
        self.after: list[bool] = []  # per call: the weights moved since the matching before_step
        self._weights: list[torch.Tensor] = []

    def begin(self, total_steps: int) -> None:
        self.total = total_steps

    def penalty(self) -> torch.Tensor:
        return torch.zeros(())

    def before_step(self) -> None:
        self.before.append(all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in self.params))
        self._weights = [p.detach().clone() for p in self.params]

    def after_step(self, loss: float) -> None:
        moved = len(self._weights) == len(self.params) and all(
            not torch.equal(w, p) for w, p in zip(self._weights, self.params)
        )
        self.after.append(moved)
        self._weights = []

    def status(self) -> dict[str, float]:
        return {}


@pytest.mark.parametrize("epochs, steps, records", [(0.25, 2, [2]), (1.5, 12, [8, 12]), (2, 16, [8, 16])])
def test_fractional_epochs_stop_mid_epoch_at_the_step_count(
    epochs: float, steps: int, records: list[int]
) -> None:
    model = Recorder()
    hook = CountingHook(model)
    cfg = TrainConfig(epochs=epochs, lr=0.01, progress=False, tensorboard=False)
    result = fit_inplace(model, Batches(8), None, cfg, step_hook=hook)
    assert hook.total == steps  # begin() was told the run's length
    assert len(hook.after) == steps and len(model.layouts) == steps  # one forward per optimizer step
    assert len(result.history) == math.ceil(epochs)
    assert [r["step"] for r in result.history] == records


def test_before_step_runs_once_per_step_after_backward_and_before_the_optimizer() -> None:
    model = Recorder()
    hook = CountingHook(model)
    cfg = TrainConfig(epochs=1.5, lr=0.05, progress=False, tensorboard=False)
    fit_inplace(model, Batches(4), None, cfg, step_hook=hook)
    assert len(hook.before) == len(hook.after) == 6
    assert all(hook.before)  # every parameter held a (nonzero) gradient when before_step ran
    assert all(hook.after)  # and the optimizer stepped after it, before after_step


@pytest.mark.parametrize("channels_last", [False, True])
def test_the_model_gets_contiguous_inputs_from_channels_last_batches(channels_last: bool) -> None:
    loader = Batches(3, channels_last=True)
    x = next(iter(loader)).inputs[0]
    assert not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    model = Recorder()
    cfg = TrainConfig(epochs=1, lr=0.01, channels_last=channels_last, progress=False, tensorboard=False)
    fit_inplace(model, loader, None, cfg)
    assert len(model.layouts) == 3
    if channels_last:  # asked for: the model and its inputs are channels-last
        assert all(cl for _, cl in model.layouts)
    else:  # NCHW-contiguous, so backward never sees NHWC-strided input (torch 2.13 oneDNN heap bug)
        assert all(contiguous for contiguous, _ in model.layouts)
