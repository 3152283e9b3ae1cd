"""Post-processing of attribution maps: resizing, min-max scaling, channel reduction."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def upsample(maps: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinear resize of [N, 1, h, w] maps to ``size`` (half-pixel centres, as cv2.resize)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps, size=tuple(size), mode="bilinear", align_corners=False)


def minmax_scale(maps: Tensor) -> Tensor:
    """Scale each map of [N, ...] to [0, 1]; a constant map becomes all zeros (not NaN).

    pytorch-grad-cam divides by ``max - min + 1e-7`` instead; for a map of range r the two
    differ by at most 1e-7 / (r + 1e-7) (relative), and both give zeros for constant maps.
    """
    flat = maps.flatten(1)
    lo = flat.min(dim=1, keepdim=True).values
    rng = flat.max(dim=1, keepdim=True).values - lo
    ok = rng > 0
    out = torch.where(ok, (flat - lo) / torch.where(ok, rng, torch.ones_like(rng)), torch.zeros_like(flat))
    return out.view_as(maps)


REDUCTIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "sum": lambda a: a.sum(dim=1, keepdim=True),
    "mean": lambda a: a.mean(dim=1, keepdim=True),
    "max_abs": lambda a: a.gather(1, a.abs().argmax(dim=1, keepdim=True)),
}


def channel_map(attr: Tensor, reduction: str = "sum", abs: bool = True, scale: bool = False) -> Tensor:
    """[N, C, H, W] attributions -> [N, 1, H, W]: |.| per channel (if ``abs``), reduce, scale."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction '{reduction}'; available: {', '.join(REDUCTIONS)}")
    if abs:
        attr = attr.abs()
    out = REDUCTIONS[reduction](attr)
    return minmax_scale(out) if scale else out


def grad_input(x: Tensor) -> Tensor:
    """A view of ``x`` that requires grad, leaving the caller's tensor untouched."""
    return x.detach().requires_grad_(True)
