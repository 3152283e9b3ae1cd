"""shapes: synthetic 32x32 images with exact object masks (the data of the tests, and an
offline stand-in for ImageNet-S50's masks)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from .base import ImageDataset, PathLike


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
SHAPES_MEAN = (0.2583, 0.2593, 0.2592)
SHAPES_STD = (0.2401, 0.2402, 0.2397)


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
    bg: torch.Tensor           # [N, 3] background base colour (every channel >= 0.25 below fg)
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
    # colours independent of the class: a light object (every channel in [0.6, 1]) on a dark
    # background (every channel in [0, 0.35]), so the object is always visible and salient.
    # With fully random colours a randomly initialised network's features carry almost no
    # class information (1-NN accuracy 12-14 % on them, against 23-24 % here), and SCL and
    # the triplet loss collapse to one point before any shape feature forms.
    fg = 0.6 + 0.4 * torch.rand(n, 3, generator=g)
    bg = 0.35 * torch.rand(n, 3, generator=g)
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
    """Pixel-centre coordinates relative to the object, in units of its half-extent:
    u [N, 1, W] (columns) and v [N, H, 1] (rows), which broadcast to [N, H, W]."""
    c = torch.arange(size, dtype=torch.float32) + 0.5
    u = (c.view(1, 1, size) - cx.view(-1, 1, 1)) / half.view(-1, 1, 1)
    v = (c.view(1, size, 1) - cy.view(-1, 1, 1)) / half.view(-1, 1, 1)
    return u, v


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
    out = torch.zeros(labels.shape[0], size, size, dtype=torch.bool)
    for k, name in enumerate(SHAPE_CLASSES):          # 10 vectorised predicates, not a pixel loop
        sel = (labels == k).nonzero().squeeze(1)
        if sel.numel():
            u, v = _unit_coords(cx[sel], cy[sel], half[sel], size)
            out[sel] = _SHAPE_TESTS[name](u, v).expand(-1, size, size)
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
    (colour independent of the class; light objects on dark, striped, noisy backgrounds);
    exact object masks.
    No files: ``root`` is ignored."""
    n, seed = SHAPES_SPLITS[split]
    images, labels, masks = make_shapes(n, seed)
    return ImageDataset("shapes", split, images, labels, masks, SHAPES_MEAN, SHAPES_STD,
                        len(SHAPE_CLASSES), list(SHAPE_CLASSES))
