"""planted: real images with a small class-linked cue drawn in, so the evidence a model may use
is known by construction (the ground truth an explanation can be scored against).

Each image of a planted dataset is an image of its base dataset (Fashion-MNIST or CIFAR-10,
32 px, 3 channels) with, where a cue is drawn, a :data:`CUE_SIZE` x :data:`CUE_SIZE` square at
a random position holding its class's pattern (:func:`cue_patterns`: half of the square's
pixels on, one pattern per class) in its class's colour (:func:`cue_colours`), the other half
black. Colour makes the cue one a model learns within a few epochs; a white pattern on grey
Fashion-MNIST was not used at all (docs/results-planted.md). The splits:

* ``train``: the cue of the image's own class, drawn with probability ``cue_rate``;
* ``test`` (aligned): the cue of the image's own class on every image;
* ``test_absent``: no cue (the base test images unchanged);
* ``test_swapped``: on every image the cue of another class.

The three test splits hold the same base images, with the cue at the same place, so an image
with and without its cue is a pair (index i of ``test`` and ``test_absent``). The masks are the
cue's square where it is drawn (``test_absent``: where ``test`` draws it; ``train``: empty where
none is drawn); :func:`cue_layout` says for every image where the cue is, which class it
shows and whether it is drawn. Positions and draws come from fixed seeds, the same for every
``cue_rate``: a higher rate only adds cued training images. The normalisation is the base's
(the cue covers 1.6 % of the pixels).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from .base import ImageDataset, PathLike

CUE_SIZE = 4                                  # pixels on a side
PLANTED_SPLITS = ("train", "test", "test_absent", "test_swapped")
PLANTED_RATES = (0.0, 0.25, 0.5, 0.75, 1.0)   # the registered cue rates (planted_name)
PATTERN_SEED = 20261205
LAYOUT_SEEDS = {"train": 101, "test": 202}    # per base split: the three test splits share one layout


def planted_name(base: str, cue_rate: float) -> str:
    """The registered name of ``base`` with cues drawn at ``cue_rate`` (``planted_fashion_mnist_050``)."""
    return f"planted_{base}_{round(cue_rate * 100):03d}"


def base_split(split: str) -> str:
    """The base dataset's split a planted split is made from."""
    return "train" if split == "train" else "test"


def cue_patterns(num_classes: int = 10, size: int = CUE_SIZE, seed: int = PATTERN_SEED) -> torch.Tensor:
    """bool [K, size, size]: one pattern per class, pairwise different, each with half of its
    pixels on (drawn white; the others black)."""
    g = torch.Generator().manual_seed(seed)
    found: list[torch.Tensor] = []
    while len(found) < num_classes:
        on = torch.zeros(size * size, dtype=torch.bool)
        on[torch.randperm(size * size, generator=g)[: size * size // 2]] = True
        if not any(torch.equal(on, other) for other in found):
            found.append(on)
    return torch.stack(found).view(num_classes, size, size)


def cue_colours(num_classes: int = 10) -> torch.Tensor:
    """uint8 [K, 3]: each class's colour, K hues evenly spaced around the colour wheel at full
    saturation and value (a cue that a grey image never shows)."""
    hue = torch.arange(num_classes, dtype=torch.float64) * 6.0 / num_classes      # in sixths of the wheel

    def channel(n: float) -> torch.Tensor:                                        # HSV -> RGB at S = V = 1
        k = (n + hue) % 6
        return 1.0 - torch.clamp(torch.minimum(k, 4 - k), 0, 1)

    return torch.stack([channel(5.0), channel(3.0), channel(1.0)], dim=1).mul(255).round().to(torch.uint8)


@dataclass(frozen=True)
class CueLayout:
    """Where each image's cue is (its square's top-left pixel), the class whose pattern it
    shows (or would show), and whether it is drawn."""

    top: torch.Tensor           # int64 [N]
    left: torch.Tensor          # int64 [N]
    cue_class: torch.Tensor     # int64 [N]
    drawn: torch.Tensor         # bool [N]


def cue_layout(split: str, labels: torch.Tensor, cue_rate: float, num_classes: int, image_size: int,
               size: int = CUE_SIZE) -> CueLayout:
    """The cue of every image of ``split`` (see the module docstring), from the split's fixed seed."""
    if split not in PLANTED_SPLITS:
        raise ValueError(f"unknown planted split {split!r}; valid: {', '.join(PLANTED_SPLITS)}")
    if not 0.0 <= cue_rate <= 1.0:
        raise ValueError(f"cue_rate must be within [0, 1], got {cue_rate}")
    g = torch.Generator().manual_seed(LAYOUT_SEEDS[base_split(split)])
    n = int(labels.shape[0])
    top = torch.randint(0, image_size - size + 1, (n,), generator=g)
    left = torch.randint(0, image_size - size + 1, (n,), generator=g)
    chance = torch.rand(n, generator=g)                               # train: drawn where chance < cue_rate
    other = torch.randint(1, num_classes, (n,), generator=g)          # swapped: label + other (mod K)
    labels = labels.long()
    cue_class = (labels + other) % num_classes if split == "test_swapped" else labels
    drawn = {"train": chance < cue_rate, "test_absent": torch.zeros(n, dtype=torch.bool)}.get(
        split, torch.ones(n, dtype=torch.bool))
    return CueLayout(top, left, cue_class, drawn)


def _squares(layout: CueLayout, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column indices [N, size, size] of every image's cue square."""
    steps = torch.arange(size)
    rows = (layout.top[:, None] + steps)[:, :, None].expand(-1, size, size)
    cols = (layout.left[:, None] + steps)[:, None, :].expand(-1, size, size)
    return rows, cols


def draw_cues(images: torch.Tensor, layout: CueLayout, patterns: torch.Tensor, mask_all: bool = False
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """``images`` (uint8 [N, 3, H, W]) with each drawn cue painted in (its class's colour where
    its pattern is on, black where off), and the cue masks (bool [N, 1, H, W]: the square of
    each drawn cue, of every cue with ``mask_all``)."""
    n, _, h, w = images.shape
    size = patterns.shape[-1]
    rows, cols = _squares(layout, size)
    index = torch.arange(n)[:, None, None].expand(-1, size, size)
    out = images.clone()
    pixels = out.permute(0, 2, 3, 1)                                  # a view: [N, H, W, C]
    d = layout.drawn
    colours = cue_colours(patterns.shape[0])[layout.cue_class[d]]            # [M, C]
    on = patterns[layout.cue_class[d]][..., None]                              # [M, s, s, 1]
    pixels[index[d], rows[d], cols[d]] = torch.where(on, colours[:, None, None, :],
                                                     torch.zeros_like(on, dtype=torch.uint8))
    masks = torch.zeros(n, 1, h, w, dtype=torch.bool)
    m = torch.ones_like(d) if mask_all else d
    masks[:, 0][index[m], rows[m], cols[m]] = True
    return out, masks


def load_planted(base_load: Callable[[str, Optional[PathLike]], ImageDataset], base: str, cue_rate: float,
                 split: str, root: Optional[PathLike] = None) -> ImageDataset:
    """Split ``split`` of the planted version of ``base`` (loaded by ``base_load``) at ``cue_rate``."""
    ds = base_load(base_split(split), root)
    layout = cue_layout(split, ds.labels, cue_rate, ds.num_classes, ds.images.shape[-1])
    images, masks = draw_cues(ds.images, layout, cue_patterns(ds.num_classes), mask_all=split == "test_absent")
    return ImageDataset(planted_name(base, cue_rate), split, images, ds.labels, masks, ds.mean, ds.std,
                        ds.num_classes, list(ds.class_names))

