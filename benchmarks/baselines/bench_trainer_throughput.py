"""Trainer images/s against a bare hand-written torch loop, side by side in one process.

    python benchmarks/baselines/bench_trainer_throughput.py [--model resnet20] [--batch-size 128]

Both train the same model at the same batch size on the same images. The bare loop gets pre-normalised
float batches, identical to the trainer's (channels_last-strided, as a permuted NHWC array is), and
for reference the same batches made NCHW-contiguous (what a torchvision-style pipeline would give);
the trainer builds its batches from uint8 arrays as in real use (with
and, separately, without crop/flip augmentation). Each variant is warmed up, then the variants are
timed in alternation (order reversed every other repeat) `--repeats` times; the table reports
medians and the median of the per-repeat trainer/bare ratios (robust to load drifting between repeats).
Writes throughput.json next to this script.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from netdiet import zoo
from netdiet.data import AugmentConfig, ImageLoader, synthetic_images
from netdiet.train import TrainConfig, fit_inplace

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def bare_loop(model: torch.nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """The reference: forward, loss, backward, SGD step; nothing else."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    model.train()
    t0 = time.perf_counter()
    for x, y in batches:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return sum(len(y) for _, y in batches) / (time.perf_counter() - t0)


def trainer_loop(model: torch.nn.Module, loader: ImageLoader) -> float:
    cfg = TrainConfig(epochs=1, lr=0.01, progress=False, tensorboard=False, device="cpu")
    result = fit_inplace(model, loader, None, cfg)
    return float(result.final["train_images_per_s"])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet20")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=10, help="training steps per timed measurement")
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "throughput.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    n = args.batch_size * args.steps
    data = synthetic_images(n, image_size=32, seed=0)
    plain = ImageLoader(data, args.batch_size, mean=MEAN, std=STD, shuffle=True, drop_last=True)
    augmented = ImageLoader(
        data, args.batch_size, mean=MEAN, std=STD, shuffle=True, drop_last=True, augment=AugmentConfig()
    )
    plain.set_epoch(0)
    batches = [(b.inputs[0].clone(), b.target.clone()) for b in plain]
    nchw = [(x.contiguous(), y) for x, y in batches]
    variants = {
        "bare": lambda m: bare_loop(m, batches),
        "bare-nchw-contiguous": lambda m: bare_loop(m, nchw),
        "trainer": lambda m: trainer_loop(m, plain),
        "trainer+augment": lambda m: trainer_loop(m, augmented),
    }
    models = {k: zoo.build(args.model) for k in variants}
    for k, fn in variants.items():  # warm-up (oneDNN primitive creation, allocator)
        fn(models[k])
    samples: dict[str, list[float]] = {k: [] for k in variants}
    ratios: dict[str, list[float]] = {"trainer": [], "trainer+augment": [], "bare-nchw-contiguous": []}
    order = list(variants)
    for r in range(args.repeats):
        # alternate the order so slow drifts in machine load hit every variant alike
        this = {k: variants[k](models[k]) for k in (order if r % 2 == 0 else order[::-1])}
        for k, v in this.items():
            samples[k].append(v)
        for k in ratios:
            ratios[k].append(this[k] / this["bare"])
    med = {k: statistics.median(v) for k, v in samples.items()}
    result = {
        "model": args.model,
        "batch_size": args.batch_size,
        "steps_per_measurement": args.steps,
        "repeats": args.repeats,
        "threads": args.threads,
        "torch": torch.__version__,
        "images_per_s_median": med,
        "images_per_s_samples": samples,
        "paired_ratio_samples": ratios,
        "trainer_over_bare": statistics.median(ratios["trainer"]),
        "trainer_augment_over_bare": statistics.median(ratios["trainer+augment"]),
        "bare_nchw_over_bare": statistics.median(ratios["bare-nchw-contiguous"]),
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for k, v in med.items():
        print(f"{k:>20}: {v:7.1f} images/s (median of {args.repeats})")
    print(
        f"trainer / bare = {result['trainer_over_bare']:.3f}; with augmentation "
        f"{result['trainer_augment_over_bare']:.3f} (medians of paired per-repeat ratios)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
