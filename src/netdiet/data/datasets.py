"""One entry point from a data spec to loaders: `build_data(DataSpec(...))`.

The trainer, the CLI and the benchmarks all go through here, so a data set is named and configured the
same way everywhere and its spec can be stored in a run directory and replayed by `netdiet eval`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netdiet.data.arrays import ImageArrays, channel_stats, split_train
from netdiet.data.augment import AugmentConfig
from netdiet.data.batch import Loader
from netdiet.data.cifar10 import CIFAR10_MEAN, CIFAR10_STD, load_cifar10
from netdiet.data.digits import load_digits
from netdiet.data.errors import DataError
from netdiet.data.glue import GLUE_TASKS, TextExamples, glue_task, load_glue
from netdiet.data.image_folder import ImageFolderConfig, load_image_folder
from netdiet.data.image_loader import ImageLoader
from netdiet.data.synthetic import synthetic_images
from netdiet.data.text_loader import TextLoader
from netdiet.data.tokenizer import load_tokenizer, save_tokenizer, train_wordpiece

IMAGE_DATASETS = ("cifar10", "imagefolder", "digits", "synthetic")
TEXT_DATASETS = tuple(sorted(GLUE_TASKS))


def dataset_names() -> list[str]:
    """Every name `DataSpec.name` accepts."""
    return [*IMAGE_DATASETS, *TEXT_DATASETS]


@dataclass
class DataSpec:
    """What to load and how to batch it. JSON-serialisable so a run can record and replay it.

    `val_size` examples are held out of the training split (a fixed shuffle) for per-epoch validation;
    `subset` keeps the first N of the remaining training examples. `augment` applies to images only.
    """

    name: str
    data_dir: str | None = None
    batch_size: int = 128
    eval_batch_size: int = 512
    val_size: int | None = None
    subset: int | None = None
    augment: bool = True
    seed: int = 0
    cache_dir: str | None = None
    image_size: int = 32
    max_len: int = 128
    vocab_size: int = 8192
    synthetic_size: int = 512

    def __post_init__(self) -> None:
        if self.name not in dataset_names():
            raise ValueError(f"unknown data set {self.name!r}; valid: {', '.join(dataset_names())}")
        if self.data_dir is None and self.name not in ("digits", "synthetic"):
            raise ValueError(
                f"data set {self.name!r} needs data_dir (on the command line --data-dir DIR): the folder or "
                "archive that holds it, e.g. ../shared/data"
            )
        for key in ("batch_size", "eval_batch_size", "image_size", "max_len", "vocab_size", "synthetic_size"):
            if getattr(self, key) <= 0:
                raise ValueError(f"DataSpec.{key} must be > 0, got {getattr(self, key)}")
        if self.subset is not None and self.subset <= 0:
            raise ValueError(f"DataSpec.subset must be > 0, got {self.subset}")
        if self.val_size is not None and self.val_size < 0:
            raise ValueError(f"DataSpec.val_size must be >= 0, got {self.val_size}")

    @property
    def input_kind(self) -> str:
        return "tokens" if self.name in TEXT_DATASETS else "image"

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DataSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class DataBundle:
    """Loaders for training and evaluation plus what a model needs to know about the data.

    `eval` maps split names to loaders: always "val" (held out of train) when val_size > 0, and the
    reported split ("test" for images, "dev" and "test" where present for GLUE).
    """

    train: Loader
    eval: dict[str, Loader]
    num_classes: int
    input_kind: str
    info: dict[str, Any] = field(default_factory=dict)


DEFAULT_VAL_SIZE = {"cifar10": 5000, "imagefolder": 0, "digits": 150, "synthetic": 64}
TEXT_DEFAULT_VAL_SIZE = 872  # the size of SST-2 dev: enough to compare epochs, small next to 67k train


def _image_splits(spec: DataSpec) -> dict[str, ImageArrays]:
    if spec.name == "cifar10":
        assert spec.data_dir is not None
        return load_cifar10(spec.data_dir, spec.cache_dir)
    if spec.name == "imagefolder":
        assert spec.data_dir is not None
        cfg = ImageFolderConfig(
            image_size=spec.image_size, cache_dir=Path(spec.cache_dir) if spec.cache_dir else None
        )
        return load_image_folder(spec.data_dir, cfg)
    if spec.name == "digits":
        return load_digits(image_size=spec.image_size)
    n = spec.synthetic_size
    full = synthetic_images(n + n // 4, image_size=spec.image_size, seed=1234)
    return {"train": full.take(slice(0, n)), "test": full.take(slice(n, None))}


def _report_name(split: str, splits: dict[str, ImageArrays]) -> str:
    """Name of a source split among the eval loaders. "val" means the part held out of train, so an
    ImageNet-style val/ directory (the reported split there) is called "test", or "val_dir" beside a test/."""
    if split != "val":
        return split
    return "val_dir" if "test" in splits else "test"


def _build_images(spec: DataSpec, rank: int, world_size: int) -> DataBundle:
    splits = _image_splits(spec)
    val_size = DEFAULT_VAL_SIZE[spec.name] if spec.val_size is None else spec.val_size
    train, val = split_train(splits["train"], val_size, spec.subset)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    if spec.name == "cifar10":
        mean, std = CIFAR10_MEAN, CIFAR10_STD
    else:
        # from the whole training part, not the subset: a --subset run (a quick fine-tune of a model trained
        # on everything) must normalise the inputs exactly as the model's training did
        mean, std = channel_stats(split_train(splits["train"], val_size, None)[0] if spec.subset else train)
    common: dict[str, Any] = {"mean": mean, "std": std, "rank": rank, "world_size": world_size}
    train_loader = ImageLoader(
        train,
        spec.batch_size,
        shuffle=True,
        drop_last=True,
        augment=AugmentConfig() if spec.augment else None,
        seed=spec.seed,
        **common,
    )
    evals: dict[str, Loader] = {}
    if len(val):
        evals["val"] = ImageLoader(val, spec.eval_batch_size, **common)
    for name, data in splits.items():
        if name != "train":
            evals[_report_name(name, splits)] = ImageLoader(data, spec.eval_batch_size, **common)
    info = {"mean": list(mean), "std": list(std), "classes": train.classes, "num_train": len(train)}
    return DataBundle(train_loader, evals, len(train.classes), "image", info)


def _split_text(data: TextExamples, val_size: int, subset: int | None) -> tuple[TextExamples, TextExamples]:
    import numpy as np

    if not 0 <= val_size < len(data):
        raise ValueError(f"val_size must be in [0, {len(data)}), got {val_size}")
    order = np.random.default_rng(0).permutation(len(data)).tolist()
    train_idx = sorted(order[val_size:][:subset] if subset else order[val_size:])
    return data.take(train_idx), data.take(sorted(order[:val_size]))


def _build_text(spec: DataSpec, rank: int, world_size: int, tokenizer_path: Path | None) -> DataBundle:
    task = glue_task(spec.name)
    assert spec.data_dir is not None
    splits = load_glue(spec.data_dir, task)
    val_size = TEXT_DEFAULT_VAL_SIZE if spec.val_size is None else spec.val_size
    train, val = _split_text(splits["train"], min(val_size, len(splits["train"]) // 2), spec.subset)
    if tokenizer_path is not None and tokenizer_path.is_file():
        tok = load_tokenizer(tokenizer_path, spec.max_len)
    else:
        texts = train.text_a + (train.text_b or [])
        tok = train_wordpiece(texts, spec.vocab_size, spec.max_len)
        if tokenizer_path is not None:
            tokenizer_path.parent.mkdir(parents=True, exist_ok=True)
            save_tokenizer(tok, tokenizer_path)
    common: dict[str, Any] = {"rank": rank, "world_size": world_size}
    train_loader = TextLoader(
        train, tok, spec.batch_size, shuffle=True, drop_last=True, seed=spec.seed, **common
    )
    evals: dict[str, Loader] = {}
    if len(val):
        evals["val"] = TextLoader(val, tok, spec.eval_batch_size, **common)
    for name, data in splits.items():
        if name != "train":
            evals[name] = TextLoader(data, tok, spec.eval_batch_size, **common)
    info = {
        "task": task.name,
        "label_names": list(task.label_names),
        "vocab_size": tok.get_vocab_size(),
        "num_train": len(train),
        "tokenizer": str(tokenizer_path) if tokenizer_path else None,
    }
    return DataBundle(train_loader, evals, task.num_classes, "tokens", info)


def build_data(
    spec: DataSpec, *, rank: int = 0, world_size: int = 1, tokenizer_path: str | Path | None = None
) -> DataBundle:
    """Load, split and batch the data set named by `spec`.

    For text, `tokenizer_path` is reused when it exists and otherwise trained on the training split and
    written there (the run directory), so evaluation later uses the same vocabulary.
    """
    if spec.data_dir is not None and not Path(spec.data_dir).exists():
        raise DataError("data path does not exist", path=spec.data_dir)
    if spec.input_kind == "tokens":
        return _build_text(spec, rank, world_size, Path(tokenizer_path) if tokenizer_path else None)
    return _build_images(spec, rank, world_size)
