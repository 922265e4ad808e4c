"""ImageFolder (directory and tar), the CIFAR python format, the cache, and clear errors on bad data."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from netdiet.data import (
    DataError,
    ImageFolderConfig,
    load_cifar10,
    load_digits,
    load_image_folder,
    split_train,
)
from netdiet.data.cache import load_cached
from netdiet.data.cifar10 import CIFAR10_CLASSES


def _jpeg(color: tuple[int, int, int], size: int = 8) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


def make_tree(root: Path, classes=("a", "b"), per_class=2, splits=("train", "test"), size=8) -> Path:
    for s in splits:
        for ci, c in enumerate(classes):
            d = root / s / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                (d / f"{i:04d}.png").write_bytes(_jpeg((40 * ci, 10 * i, 200), size))
    return root


def make_tar(tree: Path, out: Path) -> Path:
    with tarfile.open(out, "w:gz") as tf:
        tf.add(tree, arcname="prefix")
    return out


def test_directory_and_tar_give_the_same_arrays(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    archive = make_tar(tree, tmp_path / "data.tar.gz")
    cfg = ImageFolderConfig(image_size=8, cache_dir=tmp_path / "cache")
    a, b = load_image_folder(tree, cfg), load_image_folder(archive, cfg)
    assert set(a) == set(b) == {"train", "test"}
    for s in a:
        np.testing.assert_array_equal(a[s].images, b[s].images)
        np.testing.assert_array_equal(a[s].labels, b[s].labels)
    assert a["train"].classes == ["a", "b"]
    assert a["train"].images.shape == (4, 8, 8, 3) and a["train"].images.dtype == np.uint8
    assert list(a["train"].labels) == [0, 0, 1, 1]


def test_larger_images_are_resized_and_centre_cropped(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree", size=20, splits=("train",))
    data = load_image_folder(tree, ImageFolderConfig(image_size=8, cache_dir=tmp_path / "c"))
    assert data["train"].images.shape == (4, 8, 8, 3)


def test_corrupt_or_partial_cache_is_rebuilt(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    cfg = ImageFolderConfig(image_size=8, cache_dir=tmp_path / "cache")
    first = load_image_folder(tree, cfg)["train"].images.copy()  # the loaded arrays are memory-mapped
    (entry,) = [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]
    assert load_cached(entry) is not None
    npy = entry / "x_train.npy"
    raw = bytearray(npy.read_bytes())
    raw[-1] ^= 0xFF
    npy.write_bytes(bytes(raw))
    assert load_cached(entry) is None  # checksum catches the flipped byte
    with pytest.warns(UserWarning, match="rebuilding"):
        again = load_image_folder(tree, cfg)
    np.testing.assert_array_equal(again["train"].images, first)
    (entry / "manifest.json").unlink()  # a build killed before the manifest
    assert load_cached(entry) is None
    with pytest.warns(UserWarning, match="rebuilding"):
        load_image_folder(tree, cfg)
    assert load_cached(entry) is not None


def test_corrupt_jpeg_error_names_the_file(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    bad = tree / "train" / "b" / "0001.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(DataError, match="0001.png"):
        load_image_folder(tree, ImageFolderConfig(image_size=8, cache_dir=tmp_path / "c"))


def test_missing_path_and_wrong_layout(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_image_folder(tmp_path / "nope", ImageFolderConfig(cache_dir=tmp_path / "c"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="ImageFolder layout"):
        load_image_folder(tmp_path / "empty", ImageFolderConfig(cache_dir=tmp_path / "c"))
    with pytest.raises(DataError, match="no CIFAR-10 data"):
        load_cifar10(tmp_path / "empty")


def test_split_with_unknown_class_is_rejected(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    make_tree(tree, classes=("zebra",), splits=("test",))
    with pytest.raises(DataError, match="zebra"):
        load_image_folder(tree, ImageFolderConfig(image_size=8, cache_dir=tmp_path / "c"))


def _write_cifar_batches(root: Path, n: int = 6, bad_label: bool = False) -> None:
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [c.encode() for c in CIFAR10_CLASSES]
    with open(root / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": names}, f)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = [int(v) for v in rng.integers(0, 10, n)]
        if bad_label and name == "data_batch_3":
            labels[0] = 10
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": labels}
        with open(root / name, "wb") as f:
            pickle.dump(batch, f)


def test_cifar_python_format(tmp_path: Path) -> None:
    _write_cifar_batches(tmp_path / "cifar-10-batches-py")
    splits = load_cifar10(tmp_path)  # finds cifar-10-batches-py inside the directory
    assert splits["train"].images.shape == (30, 32, 32, 3)
    assert splits["test"].images.shape == (6, 32, 32, 3)
    raw = pickle.load(open(tmp_path / "cifar-10-batches-py" / "test_batch", "rb"))  # noqa: SIM115
    np.testing.assert_array_equal(splits["test"].images[0, :, :, 0], raw[b"data"][0, :1024].reshape(32, 32))


def test_cifar_python_format_label_out_of_range(tmp_path: Path) -> None:
    _write_cifar_batches(tmp_path / "c", bad_label=True)
    with pytest.raises(DataError, match="data_batch_3"):
        load_cifar10(tmp_path / "c")


def test_cifar_unpickler_refuses_arbitrary_globals(tmp_path: Path) -> None:
    _write_cifar_batches(tmp_path / "c")
    with open(tmp_path / "c" / "test_batch", "wb") as f:
        pickle.dump({b"data": Path("x"), b"labels": [0]}, f)  # references pathlib.PosixPath
    with pytest.raises(DataError, match="not allowed"):
        load_cifar10(tmp_path / "c")


def test_digits_are_real_and_split_without_overlap() -> None:
    d = load_digits(image_size=8)
    assert len(d["train"]) == 1500 and len(d["test"]) == 297
    assert set(np.unique(d["train"].labels)) == set(range(10))
    train, val = split_train(d["train"], val_size=100, subset=50)
    assert len(train) == 50 and len(val) == 100
    again, val2 = split_train(d["train"], val_size=100, subset=500)
    np.testing.assert_array_equal(val.images, val2.images)  # val does not depend on subset


SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "cifar10-jpg.tar.gz"


@pytest.mark.skipif(not SHARED.is_file(), reason="shared CIFAR-10 archive not present")
def test_shared_cifar10_archive_loads(tmp_path: Path) -> None:
    splits = load_cifar10(SHARED.parent)
    assert splits["train"].images.shape == (50000, 32, 32, 3)
    assert splits["test"].images.shape == (10000, 32, 32, 3)
    assert np.bincount(splits["test"].labels).tolist() == [1000] * 10


def test_build_data_on_a_users_image_folder(tmp_path: Path) -> None:
    from netdiet.data import DataSpec, build_data

    tree = make_tree(tmp_path / "tree", per_class=6, splits=("train", "val"))
    spec = DataSpec("imagefolder", data_dir=str(tree), image_size=8, batch_size=4, val_size=2,
                    cache_dir=str(tmp_path / "c"))  # fmt: skip
    bundle = build_data(spec)
    assert set(bundle.eval) == {"val", "test"}  # ImageNet-style val/ is the reported split, "val" is held out
    assert bundle.eval["val"].num_examples == 2 and bundle.eval["test"].num_examples == 12
    assert bundle.num_classes == 2 and bundle.info["num_train"] == 10
    x = next(iter(bundle.train)).inputs[0]
    assert x.shape == (4, 3, 8, 8)
    assert abs(float(x.mean())) < 1.5  # normalised with the training split's own statistics
