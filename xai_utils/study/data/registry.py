"""The dataset registry (:data:`DATASETS`): the single source of dataset names, splits and
masks, and :func:`load_dataset`, the one entry point."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Union

from .base import ImageDataset, PathLike
from .cifar10 import locate_cifar10, load_cifar10
from .fashion_mnist import locate_fashion_mnist, load_fashion_mnist
from .imagenet import imagenet_mask_dir, locate_imagenet_s50, load_imagenet_s50
from .shapes import load_shapes
from .streaming import StreamingImageDataset


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: how to load a split, which splits exist, whether a split has object
    masks, and how to check that its files are there without loading them."""

    label: str
    load: Callable[[str, Optional[PathLike]], Any]
    splits: tuple[str, ...]
    locate: Optional[Callable[[str, Optional[PathLike], bool], Any]] = None   # None: generated
    masks: Callable[[str, Optional[PathLike]], bool] = lambda split, root: False


DATASETS: dict[str, DatasetSpec] = {
    "shapes": DatasetSpec("Shapes", load_shapes, ("train", "test"), masks=lambda split, root: True),
    "fashion_mnist": DatasetSpec("Fashion-MNIST", load_fashion_mnist, ("train", "test"), locate_fashion_mnist),
    "cifar10": DatasetSpec("CIFAR-10", load_cifar10, ("train", "test"), locate_cifar10),
    "imagenet_s50": DatasetSpec("ImageNet-S50", load_imagenet_s50, ("train", "val"), locate_imagenet_s50,
                                masks=lambda split, root: split == "val" and imagenet_mask_dir(root) is not None),
}


def dataset_label(name: str) -> str:
    """Display name of a dataset (``CIFAR-10``); an unregistered name is shown as is."""
    return DATASETS[name].label if name in DATASETS else str(name)


def check_available(name: str, split: str, root: Optional[PathLike] = None) -> None:
    """Raise :class:`~xai_utils.errors.DatasetNotFoundError` (saying where we looked and how to get the data)
    unless ``split`` of ``name`` can be loaded: its files are there, or a loader may download
    them now. Reads no image; downloads nothing."""
    spec = DATASETS[name]
    if spec.locate is not None:
        spec.locate(resolve_split(name, split), root, False)


def has_masks(name: str, split: str, root: Optional[PathLike] = None) -> bool:
    """Whether ``split`` of ``name`` comes with object masks (the coherence metrics need them)."""
    return bool(DATASETS[name].masks(resolve_split(name, split), root))


# 'test' and 'val' both mean "the held-out split" of a dataset
_SPLIT_ALIASES = {"val": "test", "test": "val"}


def resolve_split(name: str, split: str) -> str:
    """The split name a dataset uses for ``split`` (``test`` and ``val`` are aliases)."""
    valid = DATASETS[name].splits
    if split in valid:
        return split
    alias = _SPLIT_ALIASES.get(split)
    if alias in valid:
        return alias
    raise ValueError(f"unknown split {split!r} for dataset {name!r}; valid: {', '.join(valid)}"
                     f" ('test' and 'val' are aliases of the held-out split)")


def load_dataset(name: str, split: str, root: Optional[PathLike] = None
                 ) -> Union[ImageDataset, StreamingImageDataset]:
    """Load split ``split`` of dataset ``name`` (see the module docstring for names/splits).

    ``root`` is where the dataset's files are (ignored by ``shapes``). Cached per process;
    every call returns fresh tensor copies, safe to modify. ``imagenet_s50`` 'train' returns
    a :class:`StreamingImageDataset` (use its ``.loader(...)``); everything else an
    :class:`ImageDataset`.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}")
    split = resolve_split(name, split)
    root_key = None if root is None else str(Path(root).expanduser().resolve())
    ds = _load_cached(name, split, root_key)
    return ds.copy() if isinstance(ds, ImageDataset) else ds


@functools.lru_cache(maxsize=8)
def _load_cached(name: str, split: str, root: Optional[str]) -> Any:
    return DATASETS[name].load(split, root)
