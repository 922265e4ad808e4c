"""GLUE classification tasks read from their TSV files (single-sentence and sentence-pair).

The files use no quoting: fields are split on the tab only. Columns are found by header name, which
also covers the SST-2 copy in ../shared/data (header `label<TAB>sentence` / `label<TAB>content`).
Every malformed row or unknown label is an error naming the file and line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from netdiet.data.errors import DataError


@dataclass(frozen=True)
class GlueTask:
    """Where a task's texts and label live, and how labels map to class indices."""

    name: str
    text_a: tuple[str, ...]
    text_b: tuple[str, ...] | None
    label: tuple[str, ...]
    label_names: tuple[str, ...]
    files: dict[str, str]
    # CoLA's train/dev have no header; these are its fixed column names.
    headerless_columns: tuple[str, ...] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.label_names)


_NLI = ("entailment", "not_entailment")
GLUE_TASKS: dict[str, GlueTask] = {
    t.name: t
    for t in (
        GlueTask("sst2", ("sentence", "content"), None, ("label",), ("0", "1"),
                 {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}),
        GlueTask("cola", ("sentence",), None, ("label",), ("0", "1"),
                 {"train": "train.tsv", "dev": "dev.tsv"},
                 headerless_columns=("source", "label", "original_label", "sentence")),
        GlueTask("mrpc", ("#1 String",), ("#2 String",), ("Quality",), ("0", "1"),
                 {"train": "train.tsv", "dev": "dev.tsv"}),
        GlueTask("qqp", ("question1",), ("question2",), ("is_duplicate",), ("0", "1"),
                 {"train": "train.tsv", "dev": "dev.tsv"}),
        GlueTask("mnli", ("sentence1",), ("sentence2",), ("gold_label",),
                 ("contradiction", "entailment", "neutral"),
                 {"train": "train.tsv", "dev": "dev_matched.tsv", "dev_mismatched": "dev_mismatched.tsv"}),
        GlueTask("qnli", ("question",), ("sentence",), ("label",), _NLI,
                 {"train": "train.tsv", "dev": "dev.tsv"}),
        GlueTask("rte", ("sentence1",), ("sentence2",), ("label",), _NLI,
                 {"train": "train.tsv", "dev": "dev.tsv"}),
        GlueTask("wnli", ("sentence1",), ("sentence2",), ("label",), ("0", "1"),
                 {"train": "train.tsv", "dev": "dev.tsv"}),
    )
}  # fmt: skip


@dataclass
class TextExamples:
    """Parallel lists of texts (and second texts for pair tasks) and integer labels."""

    text_a: list[str]
    text_b: list[str] | None
    labels: list[int]

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: list[int]) -> TextExamples:
        """The examples at `index`, in that order."""
        return TextExamples(
            [self.text_a[i] for i in index],
            None if self.text_b is None else [self.text_b[i] for i in index],
            [self.labels[i] for i in index],
        )


def glue_task(name: str) -> GlueTask:
    """Look up a task by name (case-insensitive, `sst-2` == `sst2`)."""
    key = name.lower().replace("-", "")
    if key not in GLUE_TASKS:
        raise ValueError(f"unknown GLUE task {name!r}; valid: {', '.join(sorted(GLUE_TASKS))}")
    return GLUE_TASKS[key]


def _find(header: list[str], candidates: tuple[str, ...], path: Path) -> int:
    for name in candidates:
        if name in header:
            return header.index(name)
    raise DataError(
        f"header has none of the columns {list(candidates)} (header: {header})", path=path, line=1
    )


def read_glue_tsv(path: str | Path, task: GlueTask) -> TextExamples:
    """Read one labelled TSV split of `task`."""
    path = Path(path)
    if not path.is_file():
        raise DataError("GLUE TSV file does not exist", path=path)
    with open(path, encoding="utf-8", newline="\n") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise DataError("TSV file is empty", path=path)
    if task.headerless_columns is not None and lines[0].split("\t")[0] not in ("index", "source"):
        header, first = list(task.headerless_columns), 0
    else:
        header, first = lines[0].rstrip("\r").split("\t"), 1
    ia = _find(header, task.text_a, path)
    ib = None if task.text_b is None else _find(header, task.text_b, path)
    il = _find(header, task.label, path)
    label_index = {name: i for i, name in enumerate(task.label_names)}
    a: list[str] = []
    b: list[str] = []
    labels: list[int] = []
    for lineno, raw in enumerate(lines[first:], start=first + 1):
        fields = raw.rstrip("\r").split("\t")
        if len(fields) != len(header):
            raise DataError(
                f"malformed row: {len(fields)} tab-separated fields, expected {len(header)}",
                path=path,
                line=lineno,
            )
        label = fields[il].strip()
        if label not in label_index:
            raise DataError(
                f"label {label!r} out of range; valid labels: {list(task.label_names)}",
                path=path,
                line=lineno,
            )
        a.append(fields[ia])
        if ib is not None:
            b.append(fields[ib])
        labels.append(label_index[label])
    return TextExamples(a, b if ib is not None else None, labels)


def load_glue(data_dir: str | Path, task: str | GlueTask) -> dict[str, TextExamples]:
    """Every labelled split of `task` present in `data_dir` (train is required)."""
    t = task if isinstance(task, GlueTask) else glue_task(task)
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"{t.name} data directory does not exist", path=root)
    if (root / t.name).is_dir() and not (root / t.files["train"]).is_file():
        root = root / t.name  # accept the parent directory too (../shared/data -> ../shared/data/sst2)
    out = {}
    for split, fname in t.files.items():
        if (root / fname).is_file() or split == "train":
            out[split] = read_glue_tsv(root / fname, t)
    return out
