"""Datasets of the study, all returned in one in-memory format (:class:`ImageDataset`).

``load_dataset(name, split, root=None)`` looks the name up in :data:`LOADERS` (a registry,
name -> loader function):

===============  ===============================  ==========================================
name             splits                           source
===============  ===============================  ==========================================
``shapes``       train (10,000) / test (2,000)    synthetic, generated from a seed, exact
                                                  object masks (offline stand-in for the
                                                  ImageNet-S50 masks; the data of the tests)
``fashion_mnist`` train (60,000) / test (10,000)  IDX files: ``root``, Debian's package
                                                  ``dataset-fashion-mnist``, or torchvision
``cifar10``      train (50,000) / test (10,000)   torchvision's ``cifar-10-batches-py``
``imagenet_s50`` train (streamed) / val (+masks)  a folder the user supplies (see
                                                  :func:`load_imagenet_s50`)
===============  ===============================  ==========================================

``test`` and ``val`` both name the held-out evaluation split of every dataset (so a profile's
``eval_split: val`` works on CIFAR and ``test`` works on ImageNet-S50).

Images are stored as uint8 ``[N, 3, H, W]`` (3 channels everywhere, so one model family fits
all datasets); :meth:`ImageDataset.batch` turns an index set into float pixels in [0, 1] on a
device. Models normalise internally with the dataset's ``mean``/``std``.

Loaded datasets are cached in-process (``functools.lru_cache`` on ``(name, split, root)``):
a second call costs one memory copy, because every call returns *fresh copies* of the cached
tensors — a caller that edits its images in place cannot corrupt what the next caller gets.
Missing data raises one :class:`DatasetNotFoundError` that lists every place looked at and
how to get the data; nothing is written to disk on failure.
"""
from __future__ import annotations

import dataclasses
import functools
import gzip
import math
import os
import pickle
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch

PathLike = Union[str, Path]
Index = Union[torch.Tensor, np.ndarray, Sequence[int], slice, int]

# --------------------------------------------------------------------------------------
# the in-memory dataset
# --------------------------------------------------------------------------------------


@dataclass
class ImageDataset:
    """A whole split in memory: uint8 images, int64 labels, optional boolean object masks."""

    name: str
    split: str
    images: torch.Tensor                 # uint8 [N, C, H, W]
    labels: torch.Tensor                 # int64 [N]
    masks: Optional[torch.Tensor]        # bool [N, 1, H, W] or None
    mean: tuple[float, ...]              # per channel, for pixels in [0, 1]
    std: tuple[float, ...]
    num_classes: int
    class_names: list[str]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batch(self, idx: Index, device: Union[str, torch.device, None] = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``idx`` as float [B, C, H, W] in [0, 1] and their labels, on ``device``.

        The uint8 images travel to the device first and are converted there (4x less to copy).
        """
        i = _as_index(idx)
        x = self.images[i].to(device, non_blocking=True).float().div_(255.0)
        return x, self.labels[i].to(device, non_blocking=True)

    def mask_batch(self, idx: Index, device: Union[str, torch.device, None] = None) -> torch.Tensor:
        """Object masks ``idx`` as bool [B, 1, H, W] on ``device`` (error if the split has none)."""
        if self.masks is None:
            raise ValueError(f"dataset {self.name!r} split {self.split!r} has no masks "
                             f"(masks exist for 'shapes' and for 'imagenet_s50' val)")
        return self.masks[_as_index(idx)].to(device, non_blocking=True)

    def copy(self) -> "ImageDataset":
        """A copy whose tensors share no memory with this one."""
        return dataclasses.replace(
            self, images=self.images.clone(), labels=self.labels.clone(),
            masks=None if self.masks is None else self.masks.clone(),
            mean=tuple(self.mean), std=tuple(self.std), class_names=list(self.class_names))


def _as_index(idx: Index) -> Union[torch.Tensor, slice, int]:
    if isinstance(idx, (slice, int)):
        return idx
    if isinstance(idx, torch.Tensor):
        return idx.to("cpu", torch.long)
    return torch.as_tensor(np.asarray(idx, dtype=np.int64))


class DatasetNotFoundError(FileNotFoundError):
    """The files of a dataset are nowhere to be found; the message says where we looked and how
    to get them."""


def _not_found(name: str, looked: Sequence[PathLike], how: Sequence[str]) -> DatasetNotFoundError:
    lines = [f"dataset {name!r} not found. Looked in:"]
    lines += [f"  - {p}" for p in looked]
    lines += ["How to get it:"] + [f"  - {h}" for h in how]
    return DatasetNotFoundError("\n".join(lines))


# --------------------------------------------------------------------------------------
# fixed index subsets (identical for every model of a study)
# --------------------------------------------------------------------------------------


def eval_indices(n_total: int, n: Optional[int], seed: int = 0) -> np.ndarray:
    """A fixed random subset of ``n`` of ``range(n_total)``, sorted (all of it when ``n`` is
    None or ``n >= n_total``), int64. Depends only on (n_total, n, seed): same for all models."""
    if n_total < 0 or (n is not None and n < 0):
        raise ValueError(f"eval_indices: n_total and n must be >= 0, got {n_total}, {n}")
    if n is None or n >= n_total:
        return np.arange(n_total, dtype=np.int64)
    perm = np.random.default_rng(seed).permutation(n_total)
    return np.sort(perm[:n]).astype(np.int64)


def train_indices(n_total: int, subset: Optional[int], seed: int = 0) -> np.ndarray:
    """The first ``subset`` entries of a fixed permutation of ``range(n_total)`` (int64), or
    all indices in order when ``subset`` is None / >= n_total. Growing ``subset`` only adds
    images (the smaller subset is a prefix of the larger one)."""
    if n_total < 0 or (subset is not None and subset < 0):
        raise ValueError(f"train_indices: n_total and subset must be >= 0, got {n_total}, {subset}")
    if subset is None or subset >= n_total:
        return np.arange(n_total, dtype=np.int64)
    perm = np.random.default_rng(seed).permutation(n_total)
    return perm[:subset].astype(np.int64)


# --------------------------------------------------------------------------------------
# shapes: synthetic 32x32 images with exact object masks
# --------------------------------------------------------------------------------------

SHAPE_CLASSES: tuple[str, ...] = (
    "circle", "square", "triangle", "x_cross", "ring",
    "diamond", "h_bar", "v_bar", "plus", "frame",
)
SHAPES_SIZE = 32
SHAPES_SPLITS: dict[str, tuple[int, int]] = {"train": (10_000, 1234), "test": (2_000, 5678)}  # (n, seed)
SHAPES_HALF_EXTENT = (5.0, 11.0)   # object half-size in pixels, uniform
# Per-channel mean/std of the 'train' split pixels in [0, 1]: computed with
# ``load_dataset('shapes', 'train').images.float().div(255)`` -> ``.mean((0, 2, 3))`` and
# ``.std((0, 2, 3))``; tests/test_data.py recomputes them (tolerance 1e-3).
SHAPES_MEAN = (0.5, 0.5, 0.5)
SHAPES_STD = (0.25, 0.25, 0.25)


@dataclass(frozen=True)
class ShapesParams:
    """Everything random about a shapes split, drawn from one seed (float32 CPU tensors).

    Each image is ``where(mask, object_layer, background_layer)``; both layers are rendered
    from these parameters on their own (see :func:`render_shapes_background`,
    :func:`render_shapes_objects`) so a test can check the composition independently.
    """

    seed: int
    size: int
    labels: torch.Tensor       # int64 [N], exactly balanced over the 10 classes
    cx: torch.Tensor           # [N] object centre, pixel coordinates (pixel j covers [j, j+1))
    cy: torch.Tensor
    half: torch.Tensor         # [N] half-extent in pixels
    fg: torch.Tensor           # [N, 3] object colour
    bg: torch.Tensor           # [N, 3] background base colour (every channel >= 0.25 from fg)
    stripe_freq: torch.Tensor  # [N] cycles per pixel of the background stripes
    stripe_theta: torch.Tensor  # [N] stripe orientation
    stripe_phase: torch.Tensor  # [N]
    stripe_amp: torch.Tensor   # [N] stripe amplitude
    shade: torch.Tensor        # [N, 2] linear shading gradient of the object (x, y)


def shapes_params(n: int, seed: int, size: int = SHAPES_SIZE) -> ShapesParams:
    """Draw the parameters of ``n`` shapes images from ``seed`` (CPU generator)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % len(SHAPE_CLASSES)
    labels = labels[torch.randperm(n, generator=g)]
    lo, hi = SHAPES_HALF_EXTENT
    half = lo + (hi - lo) * torch.rand(n, generator=g)
    # centre such that the whole bounding box [c - half, c + half] lies in the image
    cx = half + (size - 2 * half) * torch.rand(n, generator=g)
    cy = half + (size - 2 * half) * torch.rand(n, generator=g)
    # colours independent of the class; background differs from the object by 0.25..0.75
    # (circularly) in every channel, so the object is always visible
    fg = torch.rand(n, 3, generator=g)
    bg = torch.remainder(fg + 0.25 + 0.5 * torch.rand(n, 3, generator=g), 1.0)
    return ShapesParams(
        seed=seed, size=size, labels=labels.long(), cx=cx, cy=cy, half=half, fg=fg, bg=bg,
        stripe_freq=0.08 + 0.17 * torch.rand(n, generator=g),
        stripe_theta=math.pi * torch.rand(n, generator=g),
        stripe_phase=2 * math.pi * torch.rand(n, generator=g),
        stripe_amp=0.04 + 0.10 * torch.rand(n, generator=g),
        shade=0.15 * (2 * torch.rand(n, 2, generator=g) - 1),
    )


def _unit_coords(cx: torch.Tensor, cy: torch.Tensor, half: torch.Tensor, size: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates relative to the object, in units of its half-extent: [N,H,W]."""
    c = torch.arange(size, dtype=torch.float32) + 0.5
    u = (c.view(1, 1, size) - cx.view(-1, 1, 1)) / half.view(-1, 1, 1)
    v = (c.view(1, size, 1) - cy.view(-1, 1, 1)) / half.view(-1, 1, 1)
    return u.expand(-1, size, size), v.expand(-1, size, size)


# Each shape is a predicate on (u, v) = pixel-centre offset / half-extent; v grows downwards.
_SHAPE_TESTS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "circle": lambda u, v: u * u + v * v <= 1.0,
    "square": lambda u, v: torch.maximum(u.abs(), v.abs()) <= 0.8,
    "triangle": lambda u, v: (v >= -0.9) & (v <= 0.8) & (u.abs() <= 0.95 * (v + 0.9) / 1.7),
    "x_cross": lambda u, v: (((u - v).abs() <= 0.35) | ((u + v).abs() <= 0.35))
    & (torch.maximum(u.abs(), v.abs()) <= 0.85),
    "ring": lambda u, v: ((u * u + v * v) <= 1.0) & ((u * u + v * v) >= 0.55 ** 2),
    "diamond": lambda u, v: u.abs() + v.abs() <= 1.0,
    "h_bar": lambda u, v: (u.abs() <= 1.0) & (v.abs() <= 0.3),
    "v_bar": lambda u, v: (u.abs() <= 0.3) & (v.abs() <= 1.0),
    "plus": lambda u, v: ((u.abs() <= 0.25) & (v.abs() <= 1.0)) | ((v.abs() <= 0.25) & (u.abs() <= 1.0)),
    "frame": lambda u, v: (torch.maximum(u.abs(), v.abs()) <= 0.85)
    & (torch.maximum(u.abs(), v.abs()) >= 0.5),
}


def shape_masks(labels: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor, half: torch.Tensor,
                size: int = SHAPES_SIZE) -> torch.Tensor:
    """Boolean masks [N, 1, size, size] of the shapes: a pixel is in when its centre is."""
    u, v = _unit_coords(cx, cy, half, size)
    out = torch.zeros(labels.shape[0], size, size, dtype=torch.bool)
    for k, name in enumerate(SHAPE_CLASSES):          # 10 vectorised predicates, not a pixel loop
        sel = labels == k
        if sel.any():
            out[sel] = _SHAPE_TESTS[name](u[sel], v[sel])
    return out.unsqueeze(1)


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return x.clamp_(0.0, 1.0).mul_(255.0).round_().to(torch.uint8)


def render_shapes_background(p: ShapesParams) -> torch.Tensor:
    """Background layer, uint8 [N, 3, H, W]: base colour + oriented stripes + pixel noise."""
    n, s = p.labels.shape[0], p.size
    g = torch.Generator().manual_seed(p.seed + 1_000_003)
    c = torch.arange(s, dtype=torch.float32)
    proj = (c.view(1, 1, s) * torch.cos(p.stripe_theta).view(-1, 1, 1)
            + c.view(1, s, 1) * torch.sin(p.stripe_theta).view(-1, 1, 1))
    stripes = p.stripe_amp.view(-1, 1, 1) * torch.sin(
        2 * math.pi * p.stripe_freq.view(-1, 1, 1) * proj + p.stripe_phase.view(-1, 1, 1))
    x = torch.randn(n, 3, s, s, generator=g).mul_(0.05)
    x += stripes.unsqueeze(1)
    x += p.bg.view(n, 3, 1, 1)
    return _to_uint8(x)


def render_shapes_objects(p: ShapesParams) -> tuple[torch.Tensor, torch.Tensor]:
    """Object layer (uint8 [N, 3, H, W], defined everywhere) and the object masks (bool
    [N, 1, H, W]). The layer is the object colour with a linear shading and a little
    luminance noise."""
    n, s = p.labels.shape[0], p.size
    g = torch.Generator().manual_seed(p.seed + 2_000_003)
    u, v = _unit_coords(p.cx, p.cy, p.half, s)
    shading = p.shade[:, 0].view(-1, 1, 1) * u + p.shade[:, 1].view(-1, 1, 1) * v
    lum = torch.randn(n, 1, s, s, generator=g).mul_(0.03)   # luminance noise, same in R, G, B
    lum += shading.unsqueeze(1)
    x = lum + p.fg.view(n, 3, 1, 1)
    return _to_uint8(x), shape_masks(p.labels, p.cx, p.cy, p.half, s)


def make_shapes(n: int, seed: int, size: int = SHAPES_SIZE
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` shapes images (uint8 [N,3,H,W]), labels (int64 [N]) and exact masks (bool
    [N,1,H,W]): the image is the object layer where the mask is set, the background elsewhere."""
    p = shapes_params(n, seed, size)
    background = render_shapes_background(p)
    objects, masks = render_shapes_objects(p)
    return torch.where(masks, objects, background), p.labels, masks


def load_shapes(split: str, root: Optional[PathLike] = None) -> ImageDataset:
    """Synthetic shapes: 10 classes (:data:`SHAPE_CLASSES`), random size, position and colour
    (colour independent of the class) on striped, noisy backgrounds; exact object masks.
    No files: ``root`` is ignored."""
    n, seed = SHAPES_SPLITS[split]
    images, labels, masks = make_shapes(n, seed)
    return ImageDataset("shapes", split, images, labels, masks, SHAPES_MEAN, SHAPES_STD,
                        len(SHAPE_CLASSES), list(SHAPE_CLASSES))


# --------------------------------------------------------------------------------------
# registry and entry point
# --------------------------------------------------------------------------------------

LOADERS: dict[str, Callable[[str, Optional[PathLike]], ImageDataset]] = {
    "shapes": load_shapes,
}
SPLITS: dict[str, tuple[str, ...]] = {
    "shapes": ("train", "test"),
}
# 'test' and 'val' both mean "the held-out split" of a dataset
_SPLIT_ALIASES = {"val": "test", "test": "val"}


def _resolve_split(name: str, split: str) -> str:
    valid = SPLITS[name]
    if split in valid:
        return split
    alias = _SPLIT_ALIASES.get(split)
    if alias in valid:
        return alias
    raise ValueError(f"unknown split {split!r} for dataset {name!r}; valid: {', '.join(valid)}"
                     f" ('test' and 'val' are aliases of the held-out split)")


def load_dataset(name: str, split: str, root: Optional[PathLike] = None) -> ImageDataset:
    """Load split ``split`` of dataset ``name`` (see the module docstring for names/splits).

    ``root`` is where the dataset's files are (ignored by ``shapes``). Cached per process;
    every call returns fresh tensor copies, safe to modify.
    """
    if name not in LOADERS:
        raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(sorted(LOADERS))}")
    split = _resolve_split(name, split)
    root_key = None if root is None else str(Path(root).expanduser().resolve())
    ds = _load_cached(name, split, root_key)
    return ds.copy() if isinstance(ds, ImageDataset) else ds


@functools.lru_cache(maxsize=8)
def _load_cached(name: str, split: str, root: Optional[str]) -> Any:
    return LOADERS[name](split, root)
