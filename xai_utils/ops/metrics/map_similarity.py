"""Similarities between maps: SSIM (scikit-image's), Pearson and Spearman, row-wise and batched."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor


def pearson(u: Tensor, v: Tensor) -> Tensor:
    """Row-wise Pearson correlation (float64 [N]); NaN for a constant row."""
    u, v = u.double(), v.double()
    u = u - u.mean(dim=1, keepdim=True)
    v = v - v.mean(dim=1, keepdim=True)
    den = u.norm(dim=1) * v.norm(dim=1)
    r = (u * v).sum(dim=1) / den
    return torch.where(den > 0, r.clamp(-1.0, 1.0), torch.full_like(r, float("nan")))


def _as_nchw(t: Tensor) -> Tensor:
    if t.dim() == 3:
        t = t[:, None]
    if t.dim() != 4 or t.shape[1] != 1:
        raise ValueError(f"expected maps [N, 1, H, W] or [N, H, W], got shape {tuple(t.shape)}")
    return t


def ssim(a: Tensor, b: Tensor, data_range: float = 1.0, win_size: int = 7,
         k1: float = 0.01, k2: float = 0.03) -> Tensor:
    """Mean SSIM per pair of maps (float64 [N]) = ``skimage.metrics.structural_similarity(
    a2d, b2d, data_range=data_range)`` with its defaults: 7x7 uniform window, sample
    covariance, K1=0.01, K2=0.03, mean over the windows that fit inside the map.

    Computed in float64, in chunks of images: on the CPU small enough to stay in cache, on an
    accelerator :data:`SSIM_DEVICE_CHUNK` map pixels (about 1 GB of float64 temporaries,
    whatever the number of maps)."""
    a, b = _as_nchw(a), _as_nchw(b)
    if a.shape != b.shape:
        raise ValueError(f"maps must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if min(a.shape[-2:]) < win_size:
        raise ValueError(f"maps of size {tuple(a.shape[-2:])} are smaller than the SSIM window {win_size}")
    n, hw = a.shape[0], a.shape[-1] * a.shape[-2]
    chunk = max(1, (SSIM_CPU_CHUNK if a.device.type == "cpu" else SSIM_DEVICE_CHUNK) // hw)
    return torch.cat([_ssim(a[s:s + chunk].double(), b[s:s + chunk].double(), data_range, win_size, k1, k2)
                      for s in range(0, n, chunk)]) if n else a.new_zeros(0, dtype=torch.float64)


SSIM_CPU_CHUNK = 1 << 16          # map pixels per chunk on the CPU (~2.6 MB of float64 temporaries)
SSIM_DEVICE_CHUNK = 1 << 22       # ... on an accelerator (83 maps of 224 x 224)


def _ssim(a: Tensor, b: Tensor, data_range: float, win_size: int, k1: float, k2: float) -> Tensor:
    ux, uy, uxx, uyy, uxy = _box_mean(torch.cat([a, b, a * a, b * b, a * b], dim=1), win_size).unbind(1)
    cov_norm = win_size ** 2 / (win_size ** 2 - 1)
    vx, vy, vxy = cov_norm * (uxx - ux * ux), cov_norm * (uyy - uy * uy), cov_norm * (uxy - ux * uy)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux ** 2 + uy ** 2 + c1) * (vx + vy + c2))
    return s.mean(dim=(1, 2))


def _box_mean(t: Tensor, w: int) -> Tensor:
    """Mean over every w x w window that fits (valid region): running sums along H then W
    (float64 keeps them exact to ~1e-15; faster than pooling or convolution in float64)."""
    s = F.pad(t, (0, 0, 1, 0)).cumsum(dim=-2)
    t = s[..., w:, :] - s[..., :-w, :]
    s = F.pad(t, (1, 0)).cumsum(dim=-1)
    return (s[..., w:] - s[..., :-w]) / (w * w)


def _average_ranks(t: Tensor) -> Tensor:
    """Row-wise ranks (1-based, ties get their average rank, as scipy.stats.rankdata)."""
    srt, _ = torch.sort(t, dim=1)
    lo = torch.searchsorted(srt, t.contiguous(), right=False)
    hi = torch.searchsorted(srt, t.contiguous(), right=True)
    return (lo + hi + 1).double() / 2


def spearman(u: Tensor, v: Tensor) -> Tensor:
    """Row-wise Spearman rank correlation (average ranks for ties, as scipy.stats.spearmanr);
    NaN when a row is constant."""
    u, v = u.reshape(u.shape[0], -1).double(), v.reshape(v.shape[0], -1).double()
    return pearson(_average_ranks(u), _average_ranks(v))


SIMILARITIES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "ssim": ssim,
    "spearman": spearman,
}
