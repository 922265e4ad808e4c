"""GLUE TSV reading, errors with file and line, the offline tokenizer, dynamic padding."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from netdiet.data import (
    DataError,
    DataSpec,
    TextLoader,
    build_data,
    glue_task,
    load_glue,
    load_tokenizer,
    read_glue_tsv,
    save_tokenizer,
    train_wordpiece,
)

SENTENCES = [
    "a good film",
    "a bad film",
    "truly wonderful acting in a moving film with a fine score and a great cast",
    "dull and boring",
    "great fun",
    "awful mess",
]


def write_sst2(root: Path, header: str = "label\tsentence", rows: list[str] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rows = rows or [f"{i % 2}\t{s}" for i, s in enumerate(SENTENCES * 4)]
    (root / "train.tsv").write_text(header + "\n" + "\n".join(rows) + "\n")
    (root / "dev.tsv").write_text("label\tcontent\n" + "\n".join(rows[:4]) + "\n")
    return root


def test_sst2_both_header_variants(tmp_path: Path) -> None:
    write_sst2(tmp_path / "sst2")
    splits = load_glue(tmp_path, "sst-2")  # the parent directory is accepted too
    assert set(splits) == {"train", "dev"}
    assert len(splits["train"]) == 24 and splits["train"].text_b is None
    assert splits["dev"].text_a[0] == SENTENCES[0]
    official = write_sst2(tmp_path / "official", header="sentence\tlabel", rows=["a fine film\t1"])
    assert read_glue_tsv(official / "train.tsv", glue_task("sst2")).labels == [1]


def test_malformed_row_names_file_and_line(tmp_path: Path) -> None:
    root = write_sst2(tmp_path / "s", rows=["0\tfine", "1\tgood", "1\tone\textra field"])
    with pytest.raises(DataError, match=r"train\.tsv:4: malformed row"):
        load_glue(root, "sst2")


def test_label_out_of_range_names_file_and_line(tmp_path: Path) -> None:
    root = write_sst2(tmp_path / "s", rows=["0\tfine", "2\tgood"])
    with pytest.raises(DataError, match=r"train\.tsv:3: label '2' out of range"):
        load_glue(root, "sst2")


def test_missing_file_and_unknown_task(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="train.tsv"):
        load_glue(tmp_path / "empty", "sst2")
    with pytest.raises(ValueError, match="valid"):
        glue_task("squad")


def test_pair_task_with_named_labels(tmp_path: Path) -> None:
    root = tmp_path / "rte"
    root.mkdir()
    rows = ["index\tsentence1\tsentence2\tlabel", "0\tA man eats.\tSomeone eats.\tentailment",
            "1\tIt rains.\tIt is sunny.\tnot_entailment"]  # fmt: skip
    (root / "train.tsv").write_text("\n".join(rows) + "\n")
    ex = load_glue(root, "rte")["train"]
    assert ex.labels == [0, 1] and ex.text_b == ["Someone eats.", "It is sunny."]


def test_tokenizer_round_trip_and_pair_type_ids(tmp_path: Path) -> None:
    tok = train_wordpiece(SENTENCES * 10, vocab_size=200, max_len=16)
    save_tokenizer(tok, tmp_path / "tokenizer.json")
    again = load_tokenizer(tmp_path / "tokenizer.json", max_len=16)
    for s in SENTENCES:
        assert tok.encode(s).ids == again.encode(s).ids
    enc = again.encode("a good film", "a bad film")
    assert enc.tokens[0] == "[CLS]" and enc.tokens.count("[SEP]") == 2
    assert set(enc.type_ids) == {0, 1}
    assert len(again.encode("good " * 100).ids) == 16  # truncation at max_len


def test_dynamic_padding_pads_each_batch_to_its_longest(tmp_path: Path) -> None:
    root = write_sst2(tmp_path / "s")
    ex = load_glue(root, "sst2")["train"]
    tok = train_wordpiece(ex.text_a, vocab_size=200)
    loader = TextLoader(ex, tok, batch_size=3)
    widths = set()
    for batch in loader:
        ids, mask, _ = batch.inputs
        lengths = mask.sum(1)
        assert int(lengths.max()) == ids.shape[1]  # no column of pure padding
        assert bool((ids[mask == 0] == 0).all())
        widths.add(ids.shape[1])
    assert len(widths) > 1


def test_build_data_trains_then_reuses_the_saved_tokenizer(tmp_path: Path) -> None:
    root = write_sst2(tmp_path / "s")
    spec = DataSpec("sst2", data_dir=str(root), batch_size=4, val_size=4, vocab_size=200)
    path = tmp_path / "run" / "tokenizer.json"
    first = build_data(spec, tokenizer_path=path)
    assert path.is_file() and set(first.eval) == {"val", "dev"}
    path.write_text(path.read_text())  # unchanged file is loaded, not retrained
    second = build_data(spec, tokenizer_path=path)
    a, b = next(iter(first.eval["dev"])), next(iter(second.eval["dev"]))
    assert torch.equal(a.inputs[0], b.inputs[0])


def test_cola_files_have_no_header(tmp_path: Path) -> None:
    root = tmp_path / "CoLA"
    root.mkdir()
    (root / "train.tsv").write_text("gj04\t1\t\tThe book was read.\ngj04\t0\t*\tBook the read was.\n")
    ex = load_glue(root, "cola")["train"]
    assert ex.labels == [1, 0] and ex.text_a == ["The book was read.", "Book the read was."]
