"""IDX reader and dataset loaders: real Fashion-MNIST, tiny files in the exact on-disk formats."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from benchsuite.builtins import datasets
from benchsuite.errors import BenchsuiteError
from benchsuite.idx import read_idx
from benchsuite.plugins import BUILTIN_MODULES
from benchsuite.records import DataOptions

DEBIAN_FILES = [
    datasets.DEBIAN_FASHION_MNIST / f"{stem}.gz" for stem in datasets.IDX_FILES.values()
]
needs_fashion_mnist = pytest.mark.skipif(
    not all(path.is_file() for path in DEBIAN_FILES),
    reason="Debian package dataset-fashion-mnist not installed",
)

IDX_CODES = {
    np.uint8: 0x08,
    np.int8: 0x09,
    np.int16: 0x0B,
    np.int32: 0x0C,
    np.float32: 0x0D,
    np.float64: 0x0E,
}


def idx_bytes(array: np.ndarray) -> bytes:
    """An array in IDX format: magic (0, 0, dtype code, ndim), big-endian sizes, big-endian data."""
    code = IDX_CODES[array.dtype.type]
    header = struct.pack(">BBBB", 0, 0, code, array.ndim)
    sizes = struct.pack(f">{array.ndim}I", *array.shape)
    return header + sizes + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    content = idx_bytes(array)
    path.write_bytes(gzip.compress(content) if compress else content)
    return path


def fake_images(count: int, height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, height, width), dtype=np.uint8)


def write_mnist_format(directory: Path, train: int, test: int, compress: bool, size: int = 28):
    """The four IDX files of an MNIST-format dataset with labels cycling 0..9."""
    arrays = {
        "train_images": fake_images(train, size, size, 1),
        "train_labels": (np.arange(train) % 10).astype(np.uint8),
        "test_images": fake_images(test, size, size, 2),
        "test_labels": (np.arange(test) % 10).astype(np.uint8),
    }
    suffix = ".gz" if compress else ""
    for role, stem in datasets.IDX_FILES.items():
        write_idx(directory / f"{stem}{suffix}", arrays[role], compress)
    return arrays


# ---------------------------------------------------------------------------------------------
# IDX reader


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("dtype", list(IDX_CODES))
def test_idx_round_trip(tmp_path, compress, dtype):
    array = (np.arange(2 * 3 * 4) - 7).reshape(2, 3, 4).astype(dtype)
    if dtype is np.uint8:
        array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4) * 10
    path = write_idx(tmp_path / "data.idx", array, compress)
    tensor = read_idx(path)
    assert tuple(tensor.shape) == (2, 3, 4)
    np.testing.assert_array_equal(tensor.numpy(), array)
    assert tensor.numpy().dtype == np.dtype(dtype)


def test_idx_detects_gzip_by_content_not_name(tmp_path):
    array = np.arange(5, dtype=np.uint8)
    path = tmp_path / "labels-without-gz-suffix"
    path.write_bytes(gzip.compress(idx_bytes(array)))
    np.testing.assert_array_equal(read_idx(path).numpy(), array)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"\x00\x00", "only 2 bytes"),
        (b"\x01\x00\x08\x01\x00\x00\x00\x01\x05", "two zero bytes"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x05", "unknown dtype code 0x07"),
        (b"\x00\x00\x08\x00", "zero dimensions"),
        (b"\x00\x00\x08\x03\x00\x00\x00\x02", "truncated header"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x03\x05\x06", "holds 2 data bytes"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x01\x05\x06", "holds 2 data bytes"),
    ],
)
def test_idx_malformed_files_raise(tmp_path, content, message):
    path = tmp_path / "bad.idx"
    path.write_bytes(content)
    with pytest.raises(BenchsuiteError, match=message) as raised:
        read_idx(path)
    assert str(path) in str(raised.value)


def test_idx_truncated_gzip_raises(tmp_path):
    path = tmp_path / "bad.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.arange(1000, dtype=np.uint8)))[:40])
    with pytest.raises(BenchsuiteError, match="corrupt gzip"):
        read_idx(path)


def test_idx_missing_file_raises(tmp_path):
    with pytest.raises(BenchsuiteError, match="not found"):
        read_idx(tmp_path / "nothing")


@needs_fashion_mnist
def test_idx_reads_real_fashion_mnist_files():
    images = read_idx(datasets.DEBIAN_FASHION_MNIST / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(datasets.DEBIAN_FASHION_MNIST / "t10k-labels-idx1-ubyte.gz")
    assert images.shape == (10000, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (10000,)
    assert torch.bincount(labels.long()).tolist() == [1000] * 10


@needs_fashion_mnist
def test_fashion_mnist_declares_its_class_sizes():
    labels = read_idx(datasets.DEBIAN_FASHION_MNIST / "train-labels-idx1-ubyte.gz")
    spec = {s.name: s for s in datasets.benchsuite_datasets()}["fashion-mnist"]
    assert tuple(torch.bincount(labels.long()).tolist()) == spec.train_class_sizes


def test_digits_declares_its_class_sizes():
    """Validation refuses an N a class cannot supply from the declared sizes, without loading."""
    splits = datasets.load_digits_splits(DataOptions())
    spec = {s.name: s for s in datasets.benchsuite_datasets()}["digits"]
    assert tuple(torch.bincount(splits.train_labels).tolist()) == spec.train_class_sizes
    assert sum(datasets.MNIST_TRAIN_CLASS_SIZES) == 60_000


# ---------------------------------------------------------------------------------------------
# Registry


def test_builtin_datasets_plugin_provides_the_four_datasets():
    assert "benchsuite.builtins.datasets" in BUILTIN_MODULES
    specs = {spec.name: spec for spec in datasets.benchsuite_datasets()}
    expected_shapes = {
        "digits": (1, 8, 8),
        "fashion-mnist": (1, 28, 28),
        "mnist": (1, 28, 28),
        "cifar10": (3, 32, 32),
    }
    assert {name: spec.input_shape for name, spec in specs.items()} == expected_shapes
    for spec in specs.values():
        assert len(spec.class_names) == spec.num_classes == 10
    assert specs["cifar10"].class_names[9] == "truck"
    assert specs["fashion-mnist"].class_names[0] == "T-shirt/top"
    assert specs["digits"].holdout_per_class == 16 and specs["mnist"].holdout_per_class == 128


# ---------------------------------------------------------------------------------------------
# digits


def test_digits_split_is_every_third_image_per_class():
    splits = datasets.load_digits_splits(DataOptions())
    from sklearn.datasets import load_digits

    bunch = load_digits()
    assert splits.train_images.shape[1:] == (1, 8, 8)
    assert splits.train_images.shape[0] + splits.test_images.shape[0] == len(bunch.target)
    assert 0.0 <= splits.train_images.min() and splits.train_images.max() == 1.0
    for label in range(10):
        positions = np.flatnonzero(bunch.target == label)
        expected_test = bunch.images[positions[2::3]] / 16.0
        got_test = splits.test_images[splits.test_labels == label, 0].numpy()
        np.testing.assert_allclose(got_test, expected_test, rtol=0, atol=1e-7)
        assert (splits.train_labels == label).sum() >= 16 + 80  # N=160 fits after holdout


# ---------------------------------------------------------------------------------------------
# Fashion-MNIST


@needs_fashion_mnist
def test_fashion_mnist_from_debian_package(tmp_path, monkeypatch):
    monkeypatch.delenv(datasets.FASHION_MNIST_VARIABLE, raising=False)
    splits = datasets.load_fashion_mnist(DataOptions(root=tmp_path))
    assert splits.train_images.shape == (60000, 1, 28, 28)
    assert splits.test_images.shape == (10000, 1, 28, 28)
    assert splits.train_images.dtype == torch.uint8 and splits.train_labels.dtype == torch.int64
    assert torch.bincount(splits.train_labels).tolist() == [6000] * 10


def test_fashion_mnist_prefers_torchvision_layout_under_root(tmp_path, monkeypatch):
    monkeypatch.setenv(datasets.FASHION_MNIST_VARIABLE, str(tmp_path / "elsewhere"))
    write_mnist_format(tmp_path / "elsewhere", 10, 10, compress=True)
    arrays = write_mnist_format(tmp_path / "FashionMNIST" / "raw", 30, 20, compress=False)
    splits = datasets.load_fashion_mnist(DataOptions(root=tmp_path))
    assert splits.train_images.shape == (30, 1, 28, 28)
    np.testing.assert_array_equal(splits.test_images[:, 0].numpy(), arrays["test_images"])
    np.testing.assert_array_equal(splits.train_labels.numpy(), arrays["train_labels"])


def test_fashion_mnist_files_directly_in_root(tmp_path):
    write_mnist_format(tmp_path, 12, 6, compress=True)
    splits = datasets.load_fashion_mnist(DataOptions(root=tmp_path))
    assert splits.train_images.shape == (12, 1, 28, 28)


def test_fashion_mnist_from_environment_variable(tmp_path, monkeypatch):
    write_mnist_format(tmp_path / "fashion", 14, 8, compress=True)
    monkeypatch.setenv(datasets.FASHION_MNIST_VARIABLE, str(tmp_path / "fashion"))
    splits = datasets.load_fashion_mnist(DataOptions(root=tmp_path / "empty-root"))
    assert splits.train_images.shape == (14, 1, 28, 28)
    assert splits.test_labels.tolist() == [0, 1, 2, 3, 4, 5, 6, 7]


def test_fashion_mnist_missing_says_where_and_how(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian-package")
    monkeypatch.delenv(datasets.FASHION_MNIST_VARIABLE, raising=False)
    with pytest.raises(BenchsuiteError) as raised:
        datasets.load_fashion_mnist(DataOptions(root=tmp_path / "root"))
    message = str(raised.value)
    assert "apt-get install dataset-fashion-mnist" in message
    assert str(tmp_path / "root" / "FashionMNIST" / "raw") in message
    assert str(tmp_path / "no-debian-package") in message


def test_idx_splits_with_mismatched_counts_raise(tmp_path):
    write_mnist_format(tmp_path, 12, 6, compress=False)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(5, dtype=np.uint8))
    with pytest.raises(BenchsuiteError, match="test files do not match"):
        datasets.load_fashion_mnist(DataOptions(root=tmp_path))


# ---------------------------------------------------------------------------------------------
# MNIST (torchvision reads root/MNIST/raw/*-ubyte; it checks only that the files exist)


def test_mnist_reads_torchvision_layout(tmp_path):
    arrays = write_mnist_format(tmp_path / "MNIST" / "raw", 20, 10, compress=False)
    splits = datasets.load_mnist(DataOptions(root=tmp_path, download=False))
    assert splits.train_images.shape == (20, 1, 28, 28)
    assert splits.train_images.dtype == torch.uint8 and splits.train_labels.dtype == torch.int64
    np.testing.assert_array_equal(splits.train_images[:, 0].numpy(), arrays["train_images"])
    np.testing.assert_array_equal(splits.test_labels.numpy(), arrays["test_labels"])


def test_mnist_missing_without_download_says_how(tmp_path):
    with pytest.raises(BenchsuiteError, match=r"MNIST not found.*download: true"):
        datasets.load_mnist(DataOptions(root=tmp_path, download=False))


# ---------------------------------------------------------------------------------------------
# CIFAR-10 (torchvision's CIFAR10 checks each batch's md5, so the loader reads the pickles)


def write_cifar10(root: Path, per_batch: int) -> tuple[np.ndarray, list[int]]:
    """cifar-10-batches-py with 5 training batches, a test batch and batches.meta; returns the
    concatenated training rows and labels."""
    folder = root / datasets.CIFAR10_FOLDER
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows, labels = [], []
    for name in datasets.CIFAR10_TRAIN_BATCHES + datasets.CIFAR10_TEST_BATCHES:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        batch_labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        entry = {
            "batch_label": name,
            "labels": batch_labels,
            "data": data,
            "filenames": [f"{name}_{i}.png" for i in range(per_batch)],
        }
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
        if name != "test_batch":
            rows.append(data)
            labels += batch_labels
    meta = {
        "num_cases_per_batch": per_batch,
        "label_names": list(datasets.CIFAR10_NAMES),
        "num_vis": 3072,
    }
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return np.concatenate(rows), labels


def test_cifar10_reads_pickled_batches_as_chw(tmp_path):
    rows, labels = write_cifar10(tmp_path, per_batch=4)
    splits = datasets.load_cifar10(DataOptions(root=tmp_path, download=False))
    assert splits.train_images.shape == (20, 3, 32, 32)
    assert splits.test_images.shape == (4, 3, 32, 32)
    assert splits.train_images.dtype == torch.uint8
    assert splits.train_labels.tolist() == labels
    # torchvision's convention: reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1) is HWC
    torchvision_hwc = rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(splits.train_images.permute(0, 2, 3, 1).numpy(), torchvision_hwc)


def test_cifar10_missing_without_download_says_how(tmp_path):
    with pytest.raises(BenchsuiteError, match=r"CIFAR-10 not found.*data_batch_1.*download: true"):
        datasets.load_cifar10(DataOptions(root=tmp_path, download=False))


def test_cifar10_corrupt_batch_raises(tmp_path):
    write_cifar10(tmp_path, per_batch=2)
    (tmp_path / datasets.CIFAR10_FOLDER / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(BenchsuiteError, match="data_batch_3: not a CIFAR batch"):
        datasets.load_cifar10(DataOptions(root=tmp_path))
