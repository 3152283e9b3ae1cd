"""The planted datasets: Fashion-MNIST (Debian's files) and CIFAR-10 (stand-in files in its real
format) with a class-linked cue drawn in, checked pixel by pixel against a literal loop."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from xai_utils.study.data import DATASETS, load_dataset, split_sizes
from xai_utils.study.data.generated import write_cifar10
from xai_utils.study.data.planted import CUE_SIZE, PLANTED_RATES, cue_layout, cue_patterns, planted_name


def _literal(base: torch.Tensor, labels: torch.Tensor, split: str, cue_rate: float, first: int
             ) -> tuple[np.ndarray, np.ndarray]:
    """The first ``first`` planted images and masks of a split, drawn one image and one pixel at a time."""
    lay = cue_layout(split, labels, cue_rate, 10, base.shape[-1])
    pat = cue_patterns(10).numpy()
    images, masks = base[:first].numpy().copy(), np.zeros((first, 1, *base.shape[-2:]), dtype=bool)
    for i in range(first):
        t, l = int(lay.top[i]), int(lay.left[i])
        for r in range(CUE_SIZE):
            for c in range(CUE_SIZE):
                if lay.drawn[i]:
                    images[i, :, t + r, l + c] = 255 if pat[int(lay.cue_class[i]), r, c] else 0
                if lay.drawn[i] or split == "test_absent":
                    masks[i, 0, t + r, l + c] = True
    return images, masks


def test_patterns_differ_by_class_and_are_half_on():
    p = cue_patterns(10)
    assert p.shape == (10, CUE_SIZE, CUE_SIZE) and p.dtype == torch.bool
    assert (p.flatten(1).sum(1) == CUE_SIZE * CUE_SIZE // 2).all()
    assert len({tuple(x.flatten().tolist()) for x in p}) == 10


@pytest.mark.parametrize("split", ["test", "test_absent", "test_swapped"])
def test_the_test_splits_are_the_base_images_with_their_cue(split):
    name = planted_name("fashion_mnist", 1.0)
    base = load_dataset("fashion_mnist", "test")
    ds = load_dataset(name, split)
    assert ds.name == name and len(ds) == 10_000 and torch.equal(ds.labels, base.labels)
    images, masks = _literal(base.images, base.labels, split, 1.0, 300)
    np.testing.assert_array_equal(ds.images[:300].numpy(), images)
    np.testing.assert_array_equal(ds.masks[:300].numpy(), masks)
    assert (ds.masks.flatten(1).sum(1) == CUE_SIZE ** 2).all()          # every image: one square
    lay = cue_layout(split, ds.labels, 1.0, 10, 32)
    if split == "test":
        assert torch.equal(lay.cue_class, ds.labels)
    if split == "test_swapped":
        assert (lay.cue_class != ds.labels).all() and set(lay.cue_class.tolist()) == set(range(10))
    if split == "test_absent":
        assert torch.equal(ds.images, base.images)
    same = cue_layout("test", ds.labels, 1.0, 10, 32)                  # one place for all three
    assert torch.equal(lay.top, same.top) and torch.equal(lay.left, same.left)


def test_training_images_carry_their_cue_at_the_rate_and_higher_rates_add_to_lower():
    base = load_dataset("fashion_mnist", "train")
    cued = {}
    for rate in PLANTED_RATES:
        ds = load_dataset(planted_name("fashion_mnist", rate), "train")
        has = ds.masks.flatten(1).any(1)
        assert abs(float(has.float().mean()) - rate) < 0.01, rate       # 60,000 draws: sd 0.002
        assert torch.equal(ds.images[~has], base.images[~has])
        assert (ds.masks[has].flatten(1).sum(1) == CUE_SIZE ** 2).all()
        cued[rate] = set(torch.nonzero(has).flatten().tolist())
    rates = sorted(cued)
    assert all(cued[a] <= cued[b] for a, b in zip(rates, rates[1:]))
    images, masks = _literal(base.images, base.labels, "train", 0.5, 200)
    ds = load_dataset(planted_name("fashion_mnist", 0.5), "train")
    np.testing.assert_array_equal(ds.images[:200].numpy(), images)
    np.testing.assert_array_equal(ds.masks[:200].numpy(), masks)


def test_planted_cifar10_reads_the_cifar10_files(tmp_path):
    root = write_cifar10(tmp_path)
    name = planted_name("cifar10", 0.75)
    assert DATASETS[name].label == "Planted CIFAR-10 (cue 75%)"
    sizes = split_sizes(name, root)
    assert sizes == {"train": sizes["train"], "test": sizes["test"], "test_absent": sizes["test"],
                     "test_swapped": sizes["test"]}
    base = load_dataset("cifar10", "test", root)
    ds = load_dataset(name, "test_swapped", root)
    images, masks = _literal(base.images, base.labels, "test_swapped", 0.75, len(base))
    np.testing.assert_array_equal(ds.images.numpy(), images)
    np.testing.assert_array_equal(ds.masks.numpy(), masks)
