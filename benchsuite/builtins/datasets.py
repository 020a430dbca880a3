"""Built-in image datasets: digits (bundled with scikit-learn), Fashion-MNIST, MNIST, CIFAR-10.

Each loader returns the full train and test splits of all classes; tasks.py draws class pairs,
training sets and normalization from them. Images stay uint8 where the source is uint8 so that
whole datasets take little memory.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np
import torch

from benchsuite import hookimpl, provenance
from benchsuite.errors import BenchsuiteError
from benchsuite.idx import read_idx
from benchsuite.records import DataOptions, DatasetSpec, ImageSplits

DEFAULT_DATA_ROOT = Path("~/.cache/benchsuite/data")
FASHION_MNIST_VARIABLE = "BENCHSUITE_FASHION_MNIST"
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")  # package dataset-fashion-mnist

DIGIT_NAMES = tuple(str(digit) for digit in range(10))
# Training images per class, known without loading: validation refuses an N a class cannot supply
# (tests/test_datasets.py checks these against the loaded splits where the files are present).
DIGITS_TRAIN_CLASS_SIZES = (119, 122, 118, 122, 121, 122, 121, 120, 116, 120)  # two thirds of each class
MNIST_TRAIN_CLASS_SIZES = (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949)
FASHION_MNIST_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
CIFAR10_NAMES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{number}" for number in range(1, 6))
CIFAR10_TEST_BATCHES = ("test_batch",)
CIFAR10_IMAGE_SHAPE = (3, 32, 32)

DIGITS_TEST_EVERY = 3  # within each class, every third image (positions 2, 5, 8, ...) is test


def data_root(options: DataOptions) -> Path:
    """The directory torchvision-style datasets live in: the configured root or the user cache."""
    root = options.root if options.root is not None else DEFAULT_DATA_ROOT
    return Path(root).expanduser()


# ---------------------------------------------------------------------------------------------
# digits


def load_digits_splits(options: DataOptions) -> ImageSplits:
    """scikit-learn's 8x8 digits as floats in [0, 1], split deterministically by class position.

    Within each class, in the order load_digits returns the images, positions 2, 5, 8, ... (every
    third image) form the test split and the rest the training split (about 120 train / 60 test per
    class). No randomness, so the split never changes.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    provenance.record(_digits_file())
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    is_test = digits_test_mask(labels)
    return ImageSplits(images[~is_test], labels[~is_test], images[is_test], labels[is_test])


def _digits_file() -> Path:
    """The file scikit-learn reads the digits from (for the run's provenance)."""
    from importlib import resources

    return Path(str(resources.files("sklearn.datasets") / "data" / "digits.csv.gz"))


def digits_test_mask(labels: torch.Tensor) -> torch.Tensor:
    """True for every DIGITS_TEST_EVERY-th image of each class (counting from 1)."""
    mask = torch.zeros(labels.numel(), dtype=torch.bool)
    for label in labels.unique():
        positions = (labels == label).nonzero().flatten()
        mask[positions[DIGITS_TEST_EVERY - 1 :: DIGITS_TEST_EVERY]] = True
    return mask


# ---------------------------------------------------------------------------------------------
# IDX-file datasets (Fashion-MNIST, and reading MNIST-format directories in general)


def find_idx_files(directory: Path) -> dict[str, Path] | None:
    """The four IDX files in `directory` (raw or .gz), or None when none is there.

    Some but not all is an error: reading the missing ones from another copy (or the whole set
    from another folder) would silently mix or swap the data the suite pointed at.
    """
    found, missing = {}, []
    for role, stem in IDX_FILES.items():
        candidates = [directory / stem, directory / f"{stem}.gz"]
        existing = [path for path in candidates if path.is_file()]
        if existing:
            found[role] = existing[0]
        else:
            missing.append(stem)
    if found and missing:
        raise BenchsuiteError(
            f"{directory}: holds {', '.join(p.name for p in found.values())} but not {', '.join(missing)}[.gz]; "
            "add the missing files (a dataset is never completed from another folder)"
        )
    return None if missing else found


def read_idx_splits(files: dict[str, Path]) -> ImageSplits:
    """Read the four IDX files into [n, 1, H, W] uint8 images and int64 labels, checking counts."""
    splits = {}
    for split in ("train", "test"):
        images = read_idx(files[f"{split}_images"])
        labels = read_idx(files[f"{split}_labels"])
        if images.dim() != 3 or labels.dim() != 1 or images.shape[0] != labels.shape[0]:
            raise BenchsuiteError(
                f"IDX {split} files do not match: images {tuple(images.shape)} in "
                f"{files[f'{split}_images']}, labels {tuple(labels.shape)} in "
                f"{files[f'{split}_labels']} (expected [n, H, W] images and [n] labels)"
            )
        splits[f"{split}_images"] = images.unsqueeze(1)
        splits[f"{split}_labels"] = labels.to(torch.int64)
    return ImageSplits(**splits)


def fashion_mnist_directories(options: DataOptions) -> list[Path]:
    """Where Fashion-MNIST is looked for, in order: data root, $BENCHSUITE_FASHION_MNIST, Debian."""
    directories = []
    root = data_root(options)
    directories += [root / "FashionMNIST" / "raw", root]
    variable = os.environ.get(FASHION_MNIST_VARIABLE)
    if variable:
        directory = Path(variable).expanduser()
        directories += [directory, directory / "FashionMNIST" / "raw"]
    directories.append(DEBIAN_FASHION_MNIST)
    return directories


def load_fashion_mnist(options: DataOptions) -> ImageSplits:
    """Fashion-MNIST from the first directory holding all four IDX files; download if allowed."""
    directories = fashion_mnist_directories(options)
    for directory in directories:
        files = find_idx_files(directory)
        if files is not None:
            return read_idx_splits(files)
    if options.download:
        return download_fashion_mnist(options)
    looked = ", ".join(str(directory) for directory in directories)
    raise BenchsuiteError(
        f"Fashion-MNIST not found (looked in {looked}); install it with "
        f"`apt-get install dataset-fashion-mnist`, point {FASHION_MNIST_VARIABLE} or the suite's "
        "`data: {root: ...}` at a directory holding train-images-idx3-ubyte[.gz] and the other "
        "three IDX files, or set `data: {download: true}`"
    )


def download_fashion_mnist(options: DataOptions) -> ImageSplits:
    """Fetch Fashion-MNIST with torchvision into the data root, then read its IDX files."""
    from torchvision.datasets import FashionMNIST

    root = data_root(options)
    try:
        FashionMNIST(str(root), train=True, download=True)
    except Exception as error:  # noqa: BLE001 - network errors come in many types
        raise BenchsuiteError(f"could not download Fashion-MNIST into {root}: {error}") from None
    files = find_idx_files(root / "FashionMNIST" / "raw")
    if files is None:
        raise BenchsuiteError(f"Fashion-MNIST download into {root} left no IDX files")
    return read_idx_splits(files)


# ---------------------------------------------------------------------------------------------
# torchvision datasets


def missing_data_error(name: str, root: Path, error: Exception) -> BenchsuiteError:
    """The message for a torchvision dataset that is not on disk and may not be downloaded."""
    return BenchsuiteError(
        f"{name} not found under {root} ({error}); set `data: {{download: true}}` in the suite to "
        f"fetch it, or `data: {{root: ...}}` to a directory that already holds it"
    )


def load_mnist(options: DataOptions) -> ImageSplits:
    """MNIST through torchvision (root/MNIST/raw/*-ubyte) as uint8 [n, 1, 28, 28]."""
    from torchvision.datasets import MNIST

    root = data_root(options)
    splits = {}
    for split, train in (("train", True), ("test", False)):
        try:
            dataset = MNIST(str(root), train=train, download=options.download)
        except RuntimeError as error:
            if options.download:
                raise BenchsuiteError(f"could not download MNIST into {root}: {error}") from None
            raise missing_data_error("MNIST", root, error) from None
        except OSError as error:  # download failures (URLError is an OSError)
            raise BenchsuiteError(f"could not download MNIST into {root}: {error}") from None
        splits[f"{split}_images"] = dataset.data.unsqueeze(1).contiguous()
        splits[f"{split}_labels"] = dataset.targets.to(torch.int64)
    raw = Path(MNIST(str(root), train=True, download=False).raw_folder)
    for stem in IDX_FILES.values():  # what torchvision read
        if (raw / stem).is_file():
            provenance.record(raw / stem)
    return ImageSplits(**splits)


def load_cifar10(options: DataOptions) -> ImageSplits:
    """CIFAR-10 as uint8 [n, 3, 32, 32], read from root/cifar-10-batches-py.

    torchvision's CIFAR10 verifies the md5 of every batch file, so it is used only to download;
    the pickled batches are read here with the same layout (rows of 3072 bytes, channel-major,
    i.e. already CHW).
    """
    root = data_root(options)
    folder = root / CIFAR10_FOLDER
    batches = CIFAR10_TRAIN_BATCHES + CIFAR10_TEST_BATCHES
    missing = [name for name in batches if not (folder / name).is_file()]
    if missing and options.download:
        download_cifar10(root)
    elif missing:
        error = FileNotFoundError(f"missing {', '.join(missing)} in {folder}")
        raise missing_data_error("CIFAR-10", root, error)
    train_images, train_labels = read_cifar_batches(folder, CIFAR10_TRAIN_BATCHES)
    test_images, test_labels = read_cifar_batches(folder, CIFAR10_TEST_BATCHES)
    return ImageSplits(train_images, train_labels, test_images, test_labels)


def download_cifar10(root: Path) -> None:
    """Fetch and unpack CIFAR-10 with torchvision (it checks the archive's md5)."""
    from torchvision.datasets import CIFAR10

    try:
        CIFAR10(str(root), train=True, download=True)
    except Exception as error:  # noqa: BLE001 - network and archive errors come in many types
        raise BenchsuiteError(f"could not download CIFAR-10 into {root}: {error}") from None


def read_cifar_batches(folder: Path, names: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate pickled CIFAR batches into uint8 [n, 3, 32, 32] images and int64 labels."""
    images, labels = [], []
    for name in names:
        batch_images, batch_labels = read_cifar_batch(folder / name)
        images.append(batch_images)
        labels.append(batch_labels)
    return torch.cat(images), torch.cat(labels)


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, lists, dicts and strings only: a batch file from elsewhere must not
    run code (a plain pickle.load would call whatever the file names)."""

    ALLOWED = frozenset({
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    })  # fmt: skip

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")
        return super().find_class(module, name)


def read_cifar_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch file: a latin1 pickle of {'data': uint8 [n, 3072], 'labels': [n]}."""
    try:
        content = path.read_bytes()
        provenance.record(path, content)
        entry = _BatchUnpickler(io.BytesIO(content), encoding="latin1").load()
        data = np.asarray(entry["data"], dtype=np.uint8)
        labels = np.asarray(entry["labels"] if "labels" in entry else entry["fine_labels"])
    except Exception as error:  # noqa: BLE001 - unpickling failures have no common type
        raise BenchsuiteError(f"{path}: not a CIFAR batch file ({type(error).__name__}: {error})")
    pixels = int(np.prod(CIFAR10_IMAGE_SHAPE))
    if data.ndim != 2 or data.shape[1] != pixels or len(labels) != data.shape[0]:
        raise BenchsuiteError(
            f"{path}: malformed CIFAR batch: data {data.shape} and {len(labels)} labels "
            f"(expected [n, {pixels}] and n labels)"
        )
    images = torch.from_numpy(data.reshape(-1, *CIFAR10_IMAGE_SHAPE).copy())
    return images, torch.from_numpy(labels.astype(np.int64))


# ---------------------------------------------------------------------------------------------


@hookimpl
def benchsuite_datasets():
    return [
        DatasetSpec(
            name="digits",
            load=load_digits_splits,
            description="scikit-learn 8x8 digits (bundled, no download); every third image per class is test",
            class_names=DIGIT_NAMES,
            holdout_per_class=16,
            input_shape=(1, 8, 8),
            train_class_sizes=DIGITS_TRAIN_CLASS_SIZES,
        ),
        DatasetSpec(
            name="fashion-mnist",
            load=load_fashion_mnist,
            description="Fashion-MNIST 28x28 grayscale (IDX files; apt-get install dataset-fashion-mnist)",
            class_names=FASHION_MNIST_NAMES,
            holdout_per_class=128,
            input_shape=(1, 28, 28),
            train_class_sizes=(6000,) * 10,
        ),
        DatasetSpec(
            name="mnist",
            load=load_mnist,
            description="MNIST 28x28 grayscale (torchvision)",
            class_names=DIGIT_NAMES,
            holdout_per_class=128,
            input_shape=(1, 28, 28),
            train_class_sizes=MNIST_TRAIN_CLASS_SIZES,
        ),
        DatasetSpec(
            name="cifar10",
            load=load_cifar10,
            description="CIFAR-10 32x32 colour (torchvision download, pickled batches)",
            class_names=CIFAR10_NAMES,
            holdout_per_class=128,
            input_shape=CIFAR10_IMAGE_SHAPE,
            train_class_sizes=(5000,) * 10,
        ),
    ]
