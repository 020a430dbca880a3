"""Binary tasks of protocol.md ("Tasks"): class pairs, nested training sets, normalization.

A task is two classes of a dataset, N training images (N/2 per class) and ALL test images of the
two classes, normalized per channel with statistics of the dataset's full training split.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from benchsuite import provenance
from benchsuite.errors import BenchsuiteError
from benchsuite.protocol import DEFAULT_TRAINING_DRAW, TRAINING_DRAWS
from benchsuite.records import DataOptions, DatasetSpec, ImageSplits

NUMBER_OF_PAIR_CANDIDATES = 10  # protocol.md draws pairs with randperm(10), whatever the dataset
STATISTICS_CHUNK = 4096  # images per chunk when summing, so that statistics need little memory


# ---------------------------------------------------------------------------------------------
# Class pairs and training sets


def class_pair_from_seed(seed: int) -> tuple[int, int]:
    """`torch.manual_seed(seed); torch.randperm(10)[:2]` without touching the global RNG.

    The first class gets label 0. MNIST seed 202 gives (7, 0), protocol.md's main pair.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        first, second = torch.randperm(NUMBER_OF_PAIR_CANDIDATES)[:2].tolist()
    return int(first), int(second)


def class_permutations(
    train_labels: torch.Tensor,
    test_labels: torch.Tensor | None,
    classes: Sequence[int],
    training_set_seed: int,
    draw: str = DEFAULT_TRAINING_DRAW,
    class_pair_seed: int | None = None,
) -> list[torch.Tensor]:
    """Per class (label 0 first), that class's training-split indices in the order of `draw`
    (benchsuite.protocol.TRAINING_DRAWS says how each draw works)."""
    if draw not in TRAINING_DRAWS:
        raise BenchsuiteError(f"unknown training draw {draw!r}; valid: {', '.join(TRAINING_DRAWS)}")
    generator = torch.Generator()
    if draw == "reference":
        if test_labels is None:
            raise ValueError("the reference draw needs the test labels (it permutes them too)")
        generator.manual_seed(int(class_pair_seed if class_pair_seed is not None else training_set_seed))
        if class_pair_seed is not None:
            torch.randperm(NUMBER_OF_PAIR_CANDIDATES, generator=generator)  # the class pair
            if class_pair_seed != training_set_seed:
                generator.manual_seed(int(training_set_seed))
    permutations = []
    for label in classes:
        of_class = (train_labels == label).nonzero().flatten()
        if draw == "per-class":
            generator.manual_seed(int(training_set_seed))
        permutations.append(of_class[torch.randperm(of_class.numel(), generator=generator)])
        if draw == "reference":
            torch.randperm(int((test_labels == label).sum()), generator=generator)
    return permutations


def training_indices(
    train_labels: torch.Tensor,
    classes: Sequence[int],
    n_train: int,
    training_set_seed: int,
    holdout_per_class: int,
    dataset: str = "dataset",
    *,
    draw: str = DEFAULT_TRAINING_DRAW,
    test_labels: torch.Tensor | None = None,
    class_pair_seed: int | None = None,
) -> torch.Tensor:
    """Indices into the training split of the task's N training images, class 0's first.

    Per class, in the order of `class_permutations` (TRAINING_DRAWS): skip the first
    `holdout_per_class` indices (held out, never used) and keep the next N/2. Growing N only
    appends, so the training sets are nested in N.
    """
    if n_train < 2 or n_train % 2:
        raise BenchsuiteError(f"n_train must be even and at least 2, got {n_train}")
    per_class = n_train // 2
    needed = holdout_per_class + per_class
    permutations = class_permutations(
        train_labels, test_labels, classes, training_set_seed, draw, class_pair_seed
    )
    for label, permuted in zip(classes, permutations):
        if permuted.numel() < needed:
            raise BenchsuiteError(
                f"{dataset}: class {label} has {permuted.numel()} training images but N={n_train} "
                f"needs {needed} ({holdout_per_class} held out + {per_class} for training)"
            )
    return torch.cat([permuted[holdout_per_class:needed] for permuted in permutations])


def validation_indices(
    train_labels: torch.Tensor,
    classes: Sequence[int],
    training_set_seed: int,
    holdout_per_class: int,
    per_class: int | None = None,
    *,
    draw: str = DEFAULT_TRAINING_DRAW,
    test_labels: torch.Tensor | None = None,
    class_pair_seed: int | None = None,
) -> torch.Tensor:
    """Indices into the training split of a training set's validation split (docs/tuning.md),
    class 0's first: per class, the first `per_class` (None: all) of the `holdout_per_class`
    indices that training_indices skips in the same draw. So it is disjoint from the training set
    at every N (training takes the positions after the held-out ones) and from the test split."""
    per_class = holdout_per_class if per_class is None else per_class
    if not 1 <= per_class <= holdout_per_class:
        raise BenchsuiteError(f"a validation split takes 1 to {holdout_per_class} held-out images per class, got {per_class}")
    permutations = class_permutations(
        train_labels, test_labels, classes, training_set_seed, draw, class_pair_seed
    )
    for label, permuted in zip(classes, permutations):
        if permuted.numel() < holdout_per_class:
            raise BenchsuiteError(f"class {label} has {permuted.numel()} training images, fewer than the {holdout_per_class} held out")
    return torch.cat([permuted[:per_class] for permuted in permutations])


# ---------------------------------------------------------------------------------------------
# Normalization


@dataclass(frozen=True)
class ChannelStatistics:
    """Per-channel mean and (population) standard deviation of [0, 1] images, float64 [C]."""

    mean: torch.Tensor
    std: torch.Tensor


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 images divided by 255, float images as they are; float64 for exact statistics."""
    if images.dtype == torch.uint8:
        return images.to(torch.float64) / 255.0
    if not images.is_floating_point():
        raise BenchsuiteError(f"images must be uint8 or floating point, got {images.dtype}")
    return images.to(torch.float64)


def channel_statistics(images: torch.Tensor) -> ChannelStatistics:
    """Mean and population std per channel over all images and pixels, accumulated in float64.

    Chunks are merged with Chan et al.'s pairwise update (exact as a two-pass computation), so a
    whole CIFAR-10 training split is never converted to float64 at once.
    """
    channels = images.shape[1]
    count = 0
    mean = torch.zeros(channels, dtype=torch.float64)
    squared_deviations = torch.zeros(channels, dtype=torch.float64)
    for start in range(0, images.shape[0], STATISTICS_CHUNK):
        chunk = to_unit_range(images[start : start + STATISTICS_CHUNK].cpu())
        chunk_count = chunk.shape[0] * chunk.shape[2] * chunk.shape[3]
        chunk_mean = chunk.mean(dim=(0, 2, 3))
        chunk_squared_deviations = (
            (chunk - chunk_mean.view(1, -1, 1, 1)).square().sum(dim=(0, 2, 3))
        )
        total = count + chunk_count
        delta = chunk_mean - mean
        mean = mean + delta * (chunk_count / total)
        squared_deviations += chunk_squared_deviations + delta.square() * (
            count * chunk_count / total
        )
        count = total
    std = (squared_deviations / count).sqrt()
    if (std == 0).any():
        raise BenchsuiteError("a channel of the training images is constant; cannot normalize")
    return ChannelStatistics(mean, std)


_statistics_cache: dict[str, tuple[torch.Tensor, ChannelStatistics]] = {}


def training_statistics(name: str, splits: ImageSplits) -> ChannelStatistics:
    """Statistics of the full training split, computed once per dataset (and per loaded tensor)."""
    cached = _statistics_cache.get(name)
    if cached is not None and cached[0] is splits.train_images:
        return cached[1]
    statistics = channel_statistics(splits.train_images)
    _statistics_cache[name] = (splits.train_images, statistics)
    return statistics


def normalize(images: torch.Tensor, statistics: ChannelStatistics) -> torch.Tensor:
    """[0, 1] images standardized per channel, as float32."""
    mean = statistics.mean.view(1, -1, 1, 1)
    std = statistics.std.view(1, -1, 1, 1)
    return ((to_unit_range(images.cpu()) - mean) / std).to(torch.float32)


# ---------------------------------------------------------------------------------------------
# Loading


_splits_cache: dict[tuple[str, str | None, bool], ImageSplits] = {}


def load_splits(spec: DatasetSpec, options: DataOptions | None = None) -> ImageSplits:
    """The dataset's full splits, loaded once per (name, root, download) in this process."""
    options = options if options is not None else DataOptions()
    root = str(Path(options.root).expanduser()) if options.root is not None else None
    key = (spec.name, root, bool(options.download))
    if key not in _splits_cache:
        with provenance.capturing() as files:
            splits = spec.load(options)
        _splits_cache[key] = check_declared_shape(spec, checked_splits(spec.name, splits))
        _files_cache[key] = files
    return _splits_cache[key]


_files_cache: dict[tuple[str, str | None, bool], list[dict]] = {}


def dataset_files(spec: DatasetSpec, options: DataOptions | None = None) -> list[dict]:
    """The files (path, bytes, sha256) the dataset's loader read: where its data came from."""
    options = options if options is not None else DataOptions()
    root = str(Path(options.root).expanduser()) if options.root is not None else None
    load_splits(spec, options)
    return list(_files_cache.get((spec.name, root, bool(options.download)), []))


def check_declared_shape(spec: DatasetSpec, splits: ImageSplits) -> ImageSplits:
    """Images of another shape than the dataset declares (validation built the architectures for
    that shape) are an error, not a run of networks that fit nothing."""
    if spec.input_shape is None:
        return splits
    for split in ("train", "test"):
        shape = tuple(getattr(splits, f"{split}_images").shape[1:])
        if shape != tuple(spec.input_shape):
            raise BenchsuiteError(
                f"dataset {spec.name!r}: {split} images have shape {shape}, but the dataset declares "
                f"{tuple(spec.input_shape)} (C, H, W); the files read are not {spec.name}"
            )
    return splits


def checked_splits(name: str, splits: ImageSplits) -> ImageSplits:
    """Reject loader output of the wrong shape here, with the dataset's name, not later."""
    for split in ("train", "test"):
        images = getattr(splits, f"{split}_images")
        labels = getattr(splits, f"{split}_labels")
        if images.dim() != 4 or labels.dim() != 1 or images.shape[0] != labels.shape[0]:
            raise BenchsuiteError(
                f"dataset {name!r}: loader returned {split} images {tuple(images.shape)} and "
                f"labels {tuple(labels.shape)}; expected [n, C, H, W] and [n]"
            )
    return dataclasses.replace(
        splits,
        train_labels=splits.train_labels.to(torch.int64),
        test_labels=splits.test_labels.to(torch.int64),
    )


def clear_caches() -> None:
    """Forget loaded splits and statistics (tests, or freeing memory between suites)."""
    _splits_cache.clear()
    _files_cache.clear()
    _statistics_cache.clear()


# ---------------------------------------------------------------------------------------------
# Tasks


@dataclass(frozen=True, eq=False)
class Task:
    """One binary task. Label 0 is `classes[0]`, label 1 is `classes[1]`.

    eq=False: tasks compare by identity, since comparing tensor fields with == is ambiguous.

    x_train holds the class-0 images first, then the class-1 images, each in permuted order (see
    training_indices); `train_indices` are their positions in the dataset's training split.
    `draw` and `class_pair_seed` say how they were drawn (TRAINING_DRAWS).
    x_test/y_test hold ALL test images of the two classes in test-split order.
    """

    dataset: str
    classes: tuple[int, int]
    n_train: int
    training_set_seed: int
    x_train: torch.Tensor  # [N, C, H, W] float32, normalized
    y_train: torch.Tensor  # [N] int64 in {0, 1}
    x_test: torch.Tensor
    y_test: torch.Tensor
    train_indices: torch.Tensor | None = None
    draw: str = DEFAULT_TRAINING_DRAW
    class_pair_seed: int | None = None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        channels, height, width = self.x_train.shape[1:]
        return int(channels), int(height), int(width)

    def to(self, device: str | torch.device) -> Task:
        """The same task with its images and labels on `device`."""
        return dataclasses.replace(
            self,
            x_train=self.x_train.to(device),
            y_train=self.y_train.to(device),
            x_test=self.x_test.to(device),
            y_test=self.y_test.to(device),
        )


def check_classes(spec: DatasetSpec, classes: Sequence[int]) -> tuple[int, int]:
    """Two distinct class labels of the dataset."""
    pair = tuple(int(label) for label in classes)
    if len(pair) != 2 or pair[0] == pair[1]:
        raise BenchsuiteError(
            f"{spec.name}: a task needs two distinct classes, got {list(classes)}"
        )
    for label in pair:
        if not 0 <= label < spec.num_classes:
            raise BenchsuiteError(
                f"{spec.name}: class {label} out of range 0..{spec.num_classes - 1}"
            )
    return pair


def binary_labels(labels: torch.Tensor, classes: tuple[int, int]) -> torch.Tensor:
    """0 where the label is classes[0], 1 where it is classes[1] (int64)."""
    return (labels == classes[1]).to(torch.int64)


def build_task(
    spec: DatasetSpec,
    splits: ImageSplits,
    classes: Sequence[int],
    n_train: int,
    training_set_seed: int,
    device: str | torch.device = "cpu",
    draw: str = DEFAULT_TRAINING_DRAW,
    class_pair_seed: int | None = None,
) -> Task:
    """The task of protocol.md for one class pair, N and training-set seed."""
    pair = check_classes(spec, classes)
    statistics = training_statistics(spec.name, splits)
    indices = training_indices(
        splits.train_labels, pair, n_train, training_set_seed, spec.holdout_per_class, spec.name,
        draw=draw, test_labels=splits.test_labels, class_pair_seed=class_pair_seed,
    )  # fmt: skip
    is_test = (splits.test_labels == pair[0]) | (splits.test_labels == pair[1])
    task = Task(
        dataset=spec.name,
        classes=pair,
        n_train=n_train,
        training_set_seed=training_set_seed,
        x_train=normalize(splits.train_images[indices], statistics),
        y_train=binary_labels(splits.train_labels[indices], pair),
        x_test=normalize(splits.test_images[is_test], statistics),
        y_test=binary_labels(splits.test_labels[is_test], pair),
        train_indices=indices,
        draw=draw,
        class_pair_seed=class_pair_seed,
    )
    return task.to(device)


@dataclass(frozen=True, eq=False)
class ValidationSplit:
    """A task's validation split: held-out training-split images (indices), normalized as the
    task's, labelled 0/1 as the task's."""

    x: torch.Tensor
    y: torch.Tensor
    indices: torch.Tensor


def build_validation(
    spec: DatasetSpec,
    splits: ImageSplits,
    task: Task,
    per_class: int | None = None,
    device: str | torch.device = "cpu",
) -> ValidationSplit:
    """The validation split of `task`'s training set (validation_indices), on `device`."""
    indices = validation_indices(
        splits.train_labels, task.classes, task.training_set_seed, spec.holdout_per_class, per_class,
        draw=task.draw, test_labels=splits.test_labels, class_pair_seed=task.class_pair_seed,
    )  # fmt: skip
    statistics = training_statistics(spec.name, splits)
    x = normalize(splits.train_images[indices], statistics)
    y = binary_labels(splits.train_labels[indices], task.classes)
    return ValidationSplit(x.to(device), y.to(device), indices)


class TaskCache:
    """Builds each task once per run; splits come from load_splits' process-wide cache."""

    def __init__(self) -> None:
        self._tasks: dict[tuple, Task] = {}

    def get(
        self,
        spec: DatasetSpec,
        options: DataOptions,
        classes: Sequence[int],
        n_train: int,
        seed: int,
        device: str | torch.device = "cpu",
        draw: str = DEFAULT_TRAINING_DRAW,
        class_pair_seed: int | None = None,
    ) -> Task:
        """The task for (dataset, classes, N, training-set seed, draw) on `device`."""
        root = str(options.root) if options.root is not None else None
        key = (
            spec.name,
            root,
            bool(options.download),
            tuple(int(c) for c in classes),
            int(n_train),
            int(seed),
            draw,
            class_pair_seed,
            str(torch.device(device)),
        )
        if key not in self._tasks:
            splits = load_splits(spec, options)
            self._tasks[key] = build_task(
                spec, splits, classes, n_train, seed, device, draw, class_pair_seed
            )
        return self._tasks[key]

    def clear(self) -> None:
        self._tasks.clear()
