"""The Hugging Face Trainer callback drives l1l2 on a tiny BERT and the export meets the budget."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import netdiet
from netdiet.compressor import Compressor
from netdiet.methods import Budget

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")


class TinyTokens(torch.utils.data.Dataset):
    def __init__(self, n: int = 32) -> None:
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, 100, (n, 12), generator=g)
        self.labels = (self.ids[:, 0] > 50).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {
            "input_ids": self.ids[i],
            "attention_mask": torch.ones(12, dtype=torch.long),
            "labels": self.labels[i],
        }


def tiny_bert() -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64
    )
    example = {
        "input_ids": torch.zeros(2, 12, dtype=torch.long),
        "attention_mask": torch.ones(2, 12, dtype=torch.long),
    }
    return BertForSequenceClassification(config), example


def tiny_args(tmp_path) -> Any:  # type: ignore[no-untyped-def]
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=20,
        per_device_train_batch_size=8,
        learning_rate=1e-3,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
    )


def test_trainer_callback_steers_gates_and_export_meets_budget(tmp_path) -> None:
    from transformers import Trainer

    from netdiet.integrations.hf import NetdietCallback

    model, example = tiny_bert()
    comp = Compressor(model, example, Budget(flops=0.5), gate_lr=0.05)  # begin() from on_train_begin
    callback = NetdietCallback(comp)
    args = tiny_args(tmp_path)
    Trainer(model=comp.model, args=args, train_dataset=TinyTokens(), callbacks=[callback]).train()
    assert len(callback.log) == 20
    assert callback.log[0]["lam"] > 0  # the controller acted: the cost started above the annealed target
    # on_train_begin passed the Trainer's max_steps: the schedule ran to its end and hardened
    assert comp.method.total_steps == 20
    assert callback.log[0]["hardening"] == 0.0 and callback.log[-1]["hardening"] == 1.0
    assert callback.log[-1]["target_ratio"] == pytest.approx(0.5)
    assert callback.log[-1]["surrogate"] < callback.log[0]["surrogate"]
    result = comp.export()
    dense = netdiet.measured_flops(model, example)
    flops = netdiet.measured_flops(result.model, example)
    assert 0.49 * dense <= flops <= 0.5 * dense
    assert result.model.config.hidden_size <= 32


def test_trainer_callback_runs_geta_with_the_gradients_and_keeps_its_bounds(tmp_path) -> None:
    from transformers import Trainer

    from netdiet.integrations.hf import NetdietCallback

    model, example = tiny_bert()
    comp = Compressor(model, example, Budget(bops=0.04), method="geta", observe_steps=2)
    callback = NetdietCallback(comp)
    args = tiny_args(tmp_path)
    Trainer(model=comp.model, args=args, train_dataset=TinyTokens(), callbacks=[callback]).train()
    method = comp.method
    assert method.steps == 20 and method.stage(20) == "cooldown"
    # the callback stepped before the Trainer zeroed the gradients: the Taylor sums saw them
    assert all(float(v.sum()) > 0 for v in method.taylor.values())
    assert method.max_bound_violation <= 1e-3
    assignment = method.read_off()
    assert all(4 <= v <= 8 for k, v in assignment.items() if k.startswith("weight_bits:"))
    from netdiet.cost import price

    assert float(price(method.space, assignment).bops) <= 0.04 * float(price(method.space).bops) * (1 + 1e-9)
