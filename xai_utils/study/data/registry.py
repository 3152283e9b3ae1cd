"""The dataset registry (:data:`DATASETS`): the single source of dataset names, splits,
split sizes and masks, and :func:`load_dataset`, the one entry point."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Union

from ...errors import DatasetNotFoundError
from .base import ImageDataset, PathLike
from .cifar10 import count_cifar10, locate_cifar10, load_cifar10
from .fashion_mnist import count_fashion_mnist, locate_fashion_mnist, load_fashion_mnist
from .generated import write_cifar10, write_imagenet_s50
from .imagefolder import count_imagefolder, has_imagefolder_masks, load_imagefolder, locate_imagefolder
from .imagenet import count_imagenet_s50, imagenet_mask_dir, locate_imagenet_s50, load_imagenet_s50
from .planted import PLANTED_RATES, PLANTED_SPLITS, base_split, load_planted, planted_name
from .shapes import SHAPES_SPLITS, load_shapes
from .streaming import StreamingImageDataset


# the number of images of a split, counted without decoding one; None when it cannot be known yet
SplitCount = Callable[[str, Optional[PathLike]], Optional[int]]


def _count_shapes(split: str, root: Optional[PathLike]) -> int:
    """Shapes are generated: the size is the split's entry of :data:`~.shapes.SHAPES_SPLITS`."""
    return SHAPES_SPLITS[split][0]


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: how to load a split, which splits exist, how many images a split holds
    (``count``, from the files' headers, labels or names, never by loading it: the
    validation bounds sizes with it before any work), the side of its (square) images and
    their channels, whether a split has object masks, how to check that its files are there
    without loading them, and how to write stand-in files in its real format (:mod:`.generated`)."""

    label: str
    load: Callable[[str, Optional[PathLike]], Any]
    splits: tuple[str, ...]
    count: SplitCount
    image_size: int
    channels: int = 3                                          # every dataset is stored as RGB
    locate: Optional[Callable[[str, Optional[PathLike], bool], Any]] = None   # None: generated in memory
    masks: Callable[[str, Optional[PathLike]], bool] = lambda split, root: False
    generate: Optional[Callable[[PathLike], Path]] = None    # writes stand-in files under a root
    kind: str = "registered"                                  # or "imagefolder": a folder a user brings
    cue_rate: Optional[float] = None                          # planted datasets: the share of cued training images


DATASETS: dict[str, DatasetSpec] = {
    "shapes": DatasetSpec("Shapes", load_shapes, ("train", "test"), _count_shapes, 32,
                          masks=lambda split, root: True),
    "fashion_mnist": DatasetSpec("Fashion-MNIST", load_fashion_mnist, ("train", "test"), count_fashion_mnist, 32,
                                 locate=locate_fashion_mnist),
    "cifar10": DatasetSpec("CIFAR-10", load_cifar10, ("train", "test"), count_cifar10, 32, locate=locate_cifar10,
                           generate=write_cifar10),
    "imagenet_s50": DatasetSpec("ImageNet-S50", load_imagenet_s50, ("train", "val"), count_imagenet_s50, 224,
                                locate=locate_imagenet_s50,
                                masks=lambda split, root: split == "val" and imagenet_mask_dir(root) is not None,
                                generate=write_imagenet_s50),
}


def _planted(base: str, cue_rate: float) -> DatasetSpec:
    """The planted version of a registered 32-px dataset (:mod:`.planted`): the base's files,
    counts and stand-ins, its splits made into the planted ones, every split with cue masks."""
    b = DATASETS[base]
    locate = None if b.locate is None else (lambda split, root, download: b.locate(base_split(split), root, download))
    return DatasetSpec(f"Planted {b.label} (cue {cue_rate:.0%})",
                       functools.partial(load_planted, b.load, base, cue_rate), PLANTED_SPLITS,
                       lambda split, root: b.count(base_split(split), root), b.image_size, locate=locate,
                       masks=lambda split, root: True, generate=b.generate, cue_rate=cue_rate)


DATASETS.update({planted_name(base, rate): _planted(base, rate)
                 for base in ("fashion_mnist", "cifar10") for rate in PLANTED_RATES})


def is_planted(name: str) -> bool:
    """Whether dataset ``name`` carries planted evidence (:mod:`.planted`: a cue rate)."""
    spec = DATASETS.get(name)
    return spec is not None and spec.cue_rate is not None


DATA_KINDS = ("imagefolder",)     # what a profile's ``data:`` may declare (the registered datasets aside)


def register_imagefolder(name: str, image_size: int) -> DatasetSpec:
    """Register ``name`` as a folder of images a user brings (:mod:`.imagefolder`), read at
    ``image_size``; its root is given where it is loaded (``data_root``). Registering it again
    with another size replaces it; a name of a registered dataset is refused."""
    old = DATASETS.get(name)
    if old is not None and old.kind != "imagefolder":
        raise ValueError(f"dataset name '{name}' is taken by a registered dataset; name the image folder otherwise")
    if old is not None and old.image_size == image_size:
        return old
    spec = DatasetSpec(name, functools.partial(load_imagefolder, image_size=image_size, name=name), ("train", "test"),
                       count_imagefolder, image_size, locate=locate_imagefolder,
                       masks=has_imagefolder_masks, kind="imagefolder")
    DATASETS[name] = spec
    _load_cached.cache_clear()
    return spec


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


def files_present(name: str, split: str, root: Optional[PathLike] = None) -> bool:
    """Whether ``split`` of ``name`` is on disk where ``root`` (or the default places) says:
    in memory datasets always are; nothing is downloaded and no image is read."""
    spec = DATASETS[name]
    if spec.locate is None:
        return True
    try:
        return spec.locate(resolve_split(name, split), root, False) is not None
    except DatasetNotFoundError:
        return False


def split_sizes(name: str, root: Optional[PathLike] = None) -> Optional[dict[str, int]]:
    """Images in each split of ``name`` whose files are where ``root`` (or the default places)
    says, counted without loading any (:attr:`DatasetSpec.count`): the stand-in files of a
    rehearsal are counted as they are. A split whose files are absent is left out (nothing is
    downloaded); None when no split can be counted."""
    spec = DATASETS[name]
    sizes = {}
    for split in spec.splits:
        try:
            n = spec.count(split, root)
        except DatasetNotFoundError:
            n = None
        if n is not None:
            sizes[split] = int(n)
    return sizes or None


def write_stand_in_data(roots: dict[str, PathLike]) -> list[str]:
    """Write stand-in files in its real format (:mod:`.generated`) for each dataset of ``roots``
    (name -> data root) whose files are not there yet; one line per dataset written."""
    lines = []
    for name, root in roots.items():
        spec = DATASETS[name]
        if spec.generate is None or all(files_present(name, split, root) for split in spec.splits):
            continue
        spec.generate(root)
        lines.append(f"{spec.label}: not found; wrote stand-in files in its real on-disk format to {root} "
                     f"(read by the real loaders)")
    return lines


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
