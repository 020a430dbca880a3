"""Tasks of protocol.md: class pairs, nested training sets, holdout, test sets, normalization."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch

from benchsuite.builtins import datasets
from benchsuite.errors import BenchsuiteError
from benchsuite.records import DataOptions, DatasetSpec, ImageSplits
from benchsuite.tasks import (
    Task,
    TaskCache,
    build_task,
    channel_statistics,
    class_pair_from_seed,
    load_splits,
    training_indices,
    training_statistics,
)

SPECS = {spec.name: spec for spec in datasets.benchsuite_datasets()}
DEBIAN_FILES = [
    datasets.DEBIAN_FASHION_MNIST / f"{stem}.gz" for stem in datasets.IDX_FILES.values()
]
needs_fashion_mnist = pytest.mark.skipif(
    not all(path.is_file() for path in DEBIAN_FILES),
    reason="Debian package dataset-fashion-mnist not installed",
)


@pytest.fixture(scope="module")
def digits() -> tuple[DatasetSpec, ImageSplits]:
    spec = SPECS["digits"]
    return spec, load_splits(spec, DataOptions())


@pytest.fixture(scope="module")
def fashion() -> tuple[DatasetSpec, ImageSplits]:
    if not all(path.is_file() for path in DEBIAN_FILES):
        pytest.skip("Debian package dataset-fashion-mnist not installed")
    spec = SPECS["fashion-mnist"]
    return spec, load_splits(spec, DataOptions(root=datasets.DEBIAN_FASHION_MNIST))


# ---------------------------------------------------------------------------------------------
# Class pairs


@pytest.mark.parametrize(
    "seed, pair",
    [
        (202, (7, 0)),  # MNIST main pair, "0 vs 7"
        (204, (3, 5)),
        (200, (2, 5)),
        (201, (2, 8)),  # also CIFAR-10 (bird, ship)
        (203, (0, 8)),
        (219, (9, 4)),  # CIFAR-10 (truck, deer)
        (224, (0, 6)),  # CIFAR-10 (plane, frog)
    ],
)
def test_class_pair_from_seed_matches_protocol(seed, pair):
    assert class_pair_from_seed(seed) == pair


def test_class_pair_names_match_protocol_for_cifar10():
    names = SPECS["cifar10"].class_names
    assert [names[c] for c in class_pair_from_seed(201)] == ["bird", "ship"]
    assert [names[c] for c in class_pair_from_seed(219)] == ["truck", "deer"]
    assert [names[c] for c in class_pair_from_seed(224)] == ["airplane", "frog"]


def test_class_pair_from_seed_leaves_global_rng_alone():
    torch.manual_seed(12345)
    expected = torch.rand(5)
    torch.manual_seed(12345)
    class_pair_from_seed(202)
    assert torch.equal(torch.rand(5), expected)


# ---------------------------------------------------------------------------------------------
# Training sets


def test_training_sets_are_nested_in_n(digits):
    _, splits = digits
    small = training_indices(splits.train_labels, (3, 5), 4, 200, 16)
    large = training_indices(splits.train_labels, (3, 5), 8, 200, 16)
    assert set(small.tolist()) <= set(large.tolist())
    # class 0 first, then class 1; each class's N=4 part is the prefix of its N=8 part
    assert large[:2].tolist() == small[:2].tolist() and large[4:6].tolist() == small[2:].tolist()


def test_training_indices_follow_the_documented_rule(digits):
    _, splits = digits
    labels = splits.train_labels
    indices = training_indices(labels, (7, 0), 10, 201, 16)
    for position, label in enumerate((7, 0)):
        of_class = (labels == label).nonzero().flatten()
        permutation = torch.randperm(of_class.numel(), generator=torch.Generator().manual_seed(201))
        expected = of_class[permutation[16:21]]
        assert indices[5 * position : 5 * position + 5].tolist() == expected.tolist()


@needs_fashion_mnist
def test_holdout_indices_are_never_used(fashion):
    spec, splits = fashion
    labels = splits.train_labels
    indices = set(training_indices(labels, (7, 0), 128, 200, spec.holdout_per_class).tolist())
    for label in (7, 0):
        of_class = (labels == label).nonzero().flatten()
        permutation = torch.randperm(of_class.numel(), generator=torch.Generator().manual_seed(200))
        held_out = set(of_class[permutation[:128]].tolist())
        assert not held_out & indices
    assert len(indices) == 128


def test_training_indices_are_deterministic_and_depend_on_seed(digits):
    _, splits = digits
    first = training_indices(splits.train_labels, (1, 2), 16, 200, 16)
    again = training_indices(splits.train_labels, (1, 2), 16, 200, 16)
    other = training_indices(splits.train_labels, (1, 2), 16, 201, 16)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


@pytest.mark.parametrize("n_train", [0, 3, -2])
def test_n_train_must_be_even_and_positive(digits, n_train):
    _, splits = digits
    with pytest.raises(BenchsuiteError, match="even"):
        training_indices(splits.train_labels, (1, 2), n_train, 0, 16)


def test_too_few_images_names_dataset_class_and_counts(digits):
    spec, splits = digits
    available = int((splits.train_labels == 8).sum())
    with pytest.raises(BenchsuiteError) as raised:
        build_task(spec, splits, (8, 1), 400, 0)
    message = str(raised.value)
    assert "digits" in message and "class 8" in message
    assert f"has {available}" in message and "needs 216" in message


# ---------------------------------------------------------------------------------------------
# Tasks


def test_task_contents(digits):
    spec, splits = digits
    task = build_task(spec, splits, (7, 0), 16, 200)
    assert isinstance(task, Task)
    assert task.input_shape == (1, 8, 8)
    assert task.x_train.shape == (16, 1, 8, 8) and task.x_train.dtype == torch.float32
    assert task.y_train.tolist() == [0] * 8 + [1] * 8
    assert splits.train_labels[task.train_indices].tolist() == [7] * 8 + [0] * 8
    statistics = training_statistics(spec.name, splits)
    expected = (splits.train_images[task.train_indices].double() - statistics.mean) / statistics.std
    torch.testing.assert_close(task.x_train, expected.float())


def test_test_set_is_all_test_images_of_the_pair(digits):
    spec, splits = digits
    task = build_task(spec, splits, (3, 9), 4, 0)
    is_pair = (splits.test_labels == 3) | (splits.test_labels == 9)
    assert task.x_test.shape[0] == int(is_pair.sum())
    assert task.y_test.tolist() == (splits.test_labels[is_pair] == 9).long().tolist()


@needs_fashion_mnist
def test_fashion_mnist_task_uses_all_2000_test_images(fashion):
    spec, splits = fashion
    task = build_task(spec, splits, class_pair_from_seed(202), 16, 200)
    assert task.x_test.shape == (2000, 1, 28, 28)
    assert int(task.y_test.sum()) == 1000
    assert task.x_train.shape == (16, 1, 28, 28)


def direct_statistics(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and population std per channel of the whole split in one float64 tensor, two passes.

    (torch's own float64 `std(dim=(0, 2, 3))` is off by ~1e-10 relative on Fashion-MNIST; the
    two-pass form agrees with exact integer arithmetic, see the test below.)
    """
    unit = images.double() / 255.0 if images.dtype == torch.uint8 else images.double()
    mean = unit.mean(dim=(0, 2, 3))
    deviations = unit - mean.view(1, -1, 1, 1)
    return mean, deviations.square().mean(dim=(0, 2, 3)).sqrt()


def exact_statistics(images: torch.Tensor) -> tuple[float, float]:
    """Mean and std of a one-channel uint8 split from exact integer sums (Fractions)."""
    values = images.long()
    count = values.numel()
    mean = Fraction(int(values.sum()), count)
    variance = Fraction(int(values.square().sum()), count) - mean**2
    return float(mean) / 255.0, math.sqrt(variance) / 255.0


def test_statistics_match_direct_float64_computation_on_digits(digits):
    spec, splits = digits
    mean, std = direct_statistics(splits.train_images)
    statistics = training_statistics(spec.name, splits)
    torch.testing.assert_close(statistics.mean, mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(statistics.std, std, rtol=1e-10, atol=1e-12)


@needs_fashion_mnist
def test_statistics_match_direct_float64_computation_on_fashion_mnist(fashion):
    spec, splits = fashion
    mean, std = direct_statistics(splits.train_images)
    statistics = training_statistics(spec.name, splits)
    torch.testing.assert_close(statistics.mean, mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(statistics.std, std, rtol=1e-10, atol=1e-12)
    assert statistics is training_statistics(spec.name, splits)  # cached per dataset
    exact_mean, exact_std = exact_statistics(splits.train_images)
    assert statistics.mean.item() == pytest.approx(exact_mean, rel=1e-13)
    assert statistics.std.item() == pytest.approx(exact_std, rel=1e-13)


def test_statistics_per_channel_of_colour_images():
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (9000, 3, 4, 4), dtype=torch.uint8, generator=generator)
    images[:, 1] //= 2  # channels differ, and 9000 > one chunk
    statistics = channel_statistics(images)
    mean, std = direct_statistics(images)
    torch.testing.assert_close(statistics.mean, mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(statistics.std, std, rtol=1e-10, atol=1e-12)


def test_load_splits_is_cached(digits):
    spec, splits = digits
    assert load_splits(spec, DataOptions()) is splits


def test_task_cache_builds_each_task_once(digits):
    spec, _ = digits
    cache = TaskCache()
    first = cache.get(spec, DataOptions(), (7, 0), 8, 200, "cpu")
    assert cache.get(spec, DataOptions(), [7, 0], 8, 200, torch.device("cpu")) is first
    assert cache.get(spec, DataOptions(), (7, 0), 8, 201, "cpu") is not first


def test_task_to_moves_tensors(digits):
    spec, splits = digits
    task = build_task(spec, splits, (1, 2), 4, 0).to("meta")
    assert task.x_train.device.type == "meta" and task.y_test.device.type == "meta"
    assert task.classes == (1, 2) and task.input_shape == (1, 8, 8)


@pytest.mark.parametrize("classes", [(1, 1), (1, 10), (1,), (-1, 2)])
def test_invalid_classes_raise(digits, classes):
    spec, splits = digits
    with pytest.raises(BenchsuiteError, match="digits"):
        build_task(spec, splits, classes, 4, 0)
