"""The held-out score of a candidate sub-network, as search methods (AMC, evolutionary search) need it.

A masked sub-network keeps the dense model's BatchNorm statistics, which describe the dense model's
activations, not its own: scored as it is, a good candidate can look like chance. AMC and the
once-for-all/APQ line of work re-estimate the statistics on a few training batches before scoring;
so does this scorer. Batches are read once and reused, so every candidate is scored on the same
examples and a fixed seed gives the same search.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from netdiet.data.batch import Batch, Loader
from netdiet.errors import ConfigError
from netdiet.train.evaluate import evaluate

NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


class BatchList:
    """A list of batches as a Loader (the same batches every epoch)."""

    def __init__(self, batches: list[Batch]) -> None:
        self.batches = batches
        self.num_examples = sum(len(b) for b in batches)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)

    def set_epoch(self, epoch: int) -> None:
        pass


def take(loader: Iterable[Batch], max_examples: int) -> list[Batch]:
    """The first batches of `loader` holding up to `max_examples` examples (the last one cut)."""
    out: list[Batch] = []
    n = 0
    for batch in loader:
        if n >= max_examples:
            break
        keep = min(len(batch), max_examples - n)
        if keep < len(batch):
            batch = Batch(tuple(t[:keep] for t in batch.inputs), batch.target[:keep])
        out.append(batch)
        n += keep
    return out


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, batches: Iterable[Any]) -> int:
    """Replace every BatchNorm's running statistics by their average over `batches` (in place; the
    model is a throw-away masked copy). Returns the number of BatchNorm layers reset."""
    norms = [m for m in model.modules() if isinstance(m, NORMS) and m.track_running_stats]
    if not norms:
        return 0
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches, not an EMA
    was = model.training
    model.train()
    try:
        for batch in batches:  # Batch objects, or model inputs as calibration holds them
            inputs = batch.inputs if isinstance(batch, Batch) else batch
            model(*(inputs if isinstance(inputs, (tuple, list)) else (inputs,)))
    finally:
        model.train(was)
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
    return len(norms)


class SubnetScorer:
    """Accuracy of a (masked) model on up to `max_examples` held-out examples, after its BatchNorm
    statistics are re-estimated on `bn_batches` training batches. Called by search methods once per
    candidate: `max_examples` bounds what a candidate costs (a ResNet-20 scores 1,000 CIFAR images, with
    the re-estimation, in about 2 s on one CPU thread)."""

    def __init__(
        self, held_out: Loader, train_data: Loader, *, max_examples: int = 1000, bn_batches: int = 4
    ) -> None:
        if max_examples < 1 or bn_batches < 0:
            raise ConfigError(
                f"max_examples must be >= 1 and bn_batches >= 0, got {max_examples}, {bn_batches}"
            )
        self.held_out = BatchList(take(held_out, max_examples))
        if self.held_out.num_examples == 0:
            raise ConfigError(
                "the held-out data for scoring candidates is empty: pass a non-empty eval_data (a split held out "
                "of the training data)"
            )
        bn: list[Batch] = []
        for i, batch in enumerate(train_data):
            if i >= bn_batches:
                break
            bn.append(batch)
        self.bn = bn

    def __call__(self, model: nn.Module) -> float:
        reestimate_batchnorm(model, self.bn)
        return float(evaluate(model, self.held_out)["accuracy"])
