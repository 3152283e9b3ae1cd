"""A folder of images a user brings, in torchvision's ImageFolder layout::

    <root>/train/<class>/*.png|jpg|jpeg      (optional: the data's normalisation, a probe)
    <root>/test/<class>/*.png|jpg|jpeg       (the evaluation split)
    <root>/masks/<split>/<class>/<stem>.png  (optional: object masks, for the coherence metrics)

Classes are the sub-folders of ``test`` in sorted order (class ``i`` is the ``i``-th name), the
images of a class are in sorted file-name order, and a split's images follow class by class.
Every image is square (a non-square one is refused: resizing it would distort it), converted
to RGB and resized to ``image_size`` (bilinear, antialiased; an image already that size is
read as it is), then held as uint8 like every dataset of the study (:class:`ImageDataset`).
A mask is a greyscale PNG of its image's size; a pixel > 127 is the object.

:func:`check_imagefolder` reads every file's header (and checks its data) without decoding
it into a tensor, so a bad folder is refused before any work, naming the file.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ...errors import ConfigError, DatasetNotFoundError
from .base import ImageDataset, PathLike

EXTENSIONS = (".png", ".jpg", ".jpeg")
SPLITS = ("train", "test")
MASKS = "masks"


def _split_dir(root: Optional[PathLike], split: str) -> Path:
    if root is None:
        raise DatasetNotFoundError("an image folder needs its root (data: <name>: {root: ...} in the profile)")
    return Path(root).expanduser() / split


def class_names(root: Optional[PathLike]) -> list[str]:
    """The class folders of the ``test`` split, sorted (class ``i`` is the ``i``-th)."""
    test = _split_dir(root, "test")
    if not test.is_dir():
        raise DatasetNotFoundError(f"image folder {Path(root)}: no test/ folder (expected test/<class>/<image>)")
    return sorted(p.name for p in test.iterdir() if p.is_dir() and not p.name.startswith("."))


def image_files(root: Optional[PathLike], split: str) -> list[tuple[Path, int]]:
    """(file, class index) of every image of ``split``, class by class, files sorted."""
    names = class_names(root)
    folder = _split_dir(root, split)
    if not folder.is_dir():
        raise DatasetNotFoundError(f"image folder {Path(root)}: no {split}/ folder")
    extra = sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name not in names)
    if extra:
        raise ConfigError(f"image folder {folder}: class folder '{extra[0]}' is not a class of test/ "
                          f"({', '.join(names)})")
    out = []
    for label, name in enumerate(names):
        d = folder / name
        files = sorted(p for p in d.iterdir() if p.suffix.lower() in EXTENSIONS) if d.is_dir() else []
        out += [(p, label) for p in files]
    return out


def count_imagefolder(split: str, root: Optional[PathLike]) -> Optional[int]:
    return len(image_files(root, split)) if _split_dir(root, split).is_dir() else None


def locate_imagefolder(split: str, root: Optional[PathLike], download: bool = False) -> Path:
    folder = _split_dir(root, split)
    if not folder.is_dir():
        raise DatasetNotFoundError(f"image folder {Path(root)}: no {split}/ folder "
                                   f"(expected {split}/<class>/<image>.png)")
    return folder


def mask_file(root: PathLike, split: str, image: Path) -> Path:
    return Path(root).expanduser() / MASKS / split / image.parent.name / (image.stem + ".png")


def has_imagefolder_masks(split: str, root: Optional[PathLike]) -> bool:
    return root is not None and (Path(root).expanduser() / MASKS / split).is_dir()


def check_imagefolder(root: PathLike, split: str) -> int:
    """The number of classes, after checking every image of ``split`` (and its mask, where the
    folder has masks): a class folder without images, an unreadable or non-square image, a
    missing mask or one of another size is a one-line :class:`ConfigError` naming the file."""
    from PIL import Image, UnidentifiedImageError   # reason: PIL loads only where image folders are read

    names = class_names(root)
    if not names:
        raise ConfigError(f"image folder {_split_dir(root, 'test')}: no class folder")
    entries = image_files(root, split)
    counts = np.bincount([label for _, label in entries], minlength=len(names))
    empty = [n for n, c in zip(names, counts) if c == 0]
    if empty:
        raise ConfigError(f"image folder {_split_dir(root, split) / empty[0]}: the class folder holds no image "
                          f"({', '.join(EXTENSIONS)})")
    masks = has_imagefolder_masks(split, root)
    for path, _ in entries:
        try:
            with Image.open(path) as img:
                size = img.size
                img.verify()
        except (OSError, UnidentifiedImageError, SyntaxError) as e:
            raise ConfigError(f"image {path} is unreadable ({type(e).__name__}: {e})") from None
        if size[0] != size[1]:
            raise ConfigError(f"image {path} is {size[0]}x{size[1]}: images must be square (crop it first)")
        if masks:
            m = mask_file(root, split, path)
            if not m.is_file():
                raise ConfigError(f"image {path} has no mask {m} (the folder has {MASKS}/{split}/)")
            with Image.open(m) as mask:
                if mask.size != size:
                    raise ConfigError(f"mask {m} is {mask.size[0]}x{mask.size[1]}, its image {size[0]}x{size[1]}")
    return len(names)


def _read(path: Path, image_size: int, mode: str) -> np.ndarray:
    from PIL import Image   # reason: PIL loads only where image folders are read

    with Image.open(path) as img:
        img = img.convert(mode)
        if img.size != (image_size, image_size):
            resample = Image.Resampling.NEAREST if mode == "L" else Image.Resampling.BILINEAR
            img = img.resize((image_size, image_size), resample)
        return np.asarray(img)


def _images(paths: list[Path], image_size: int) -> torch.Tensor:
    """uint8 [N, 3, image_size, image_size]."""
    return torch.from_numpy(np.stack([_read(p, image_size, "RGB") for p in paths])).permute(0, 3, 1, 2)


def _pixel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 images, in [0, 1]."""
    pixels = images.double().div(255.0)
    return (tuple(float(v) for v in pixels.mean(dim=(0, 2, 3))), tuple(float(v) for v in pixels.std(dim=(0, 2, 3))))


@functools.lru_cache(maxsize=8)
def _train_stats(root: str, image_size: int, files: tuple[tuple[str, int], ...]
                 ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The train split's pixel statistics, read once per process for files unchanged since
    (``files``: each path with its mtime)."""
    return _pixel_stats(_images([Path(p) for p, _ in files], image_size))


def load_imagefolder(split: str, root: Optional[PathLike], image_size: int, name: str = "imagefolder"
                     ) -> ImageDataset:
    """Split ``split`` of the image folder at ``root``, resized to ``image_size``; ``mean`` and
    ``std`` are those of its ``train`` split's pixels (of ``split``'s where there is no train/)."""
    entries = image_files(root, split)
    if not entries:
        raise DatasetNotFoundError(f"image folder {_split_dir(root, split)}: no image")
    images = _images([p for p, _ in entries], image_size)
    labels = torch.tensor([label for _, label in entries], dtype=torch.int64)
    masks = None
    if has_imagefolder_masks(split, root):
        m = np.stack([_read(mask_file(root, split, p), image_size, "L") > 127 for p, _ in entries])
        masks = torch.from_numpy(m).unsqueeze(1)
    if split == "train" or count_imagefolder("train", root) is None:
        mean, std = _pixel_stats(images)
    else:
        train = image_files(root, "train")
        mean, std = _train_stats(str(root), image_size, tuple((str(p), p.stat().st_mtime_ns) for p, _ in train))
    names = class_names(root)
    return ImageDataset(name, split, images.contiguous(), labels, masks, mean, std, len(names), names)
