"""Continuity (SSIM under input noise), contrastivity (SSIM between classes) and max-sensitivity."""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from ..contract import Explainable
from ._common import (DEFAULT_BATCH, MethodLike, _as_long, _attribute_chunked, _check_maps,
                      _sample_ids, num_classes_of, resolve_method, sample_seed)
from .map_similarity import ssim


def gaussian_noise(shape: Sequence[int], seed: int, sample_ids: Optional[Any] = None,
                   stream: str = "continuity", device: Any = None) -> Tensor:
    """Standard normal noise [N, *shape[1:]], one CPU generator per image seeded by
    :func:`sample_seed` (identical on every device and for every batch composition)."""
    ids = _sample_ids(int(shape[0]), sample_ids)
    g = torch.Generator()
    out = torch.empty(tuple(shape), dtype=torch.float32)
    for i, sid in enumerate(ids):
        g.manual_seed(sample_seed(seed, sid, stream))
        out[i] = torch.randn(tuple(shape[1:]), generator=g)
    return out.to(device)


def _noisy_pixel(model: Explainable, x: Tensor, noise: Tensor, sigma: float) -> Tensor:
    """x + N(0, sigma^2) in pixel space, clamped to [0, 1] (a valid image; at sigma=0.02
    the clamp touches only pixels within a few sigma of 0 or 1)."""
    return (x + sigma * noise).clamp(0.0, 1.0)


def _noisy_official(model: Explainable, x: Tensor, noise: Tensor, sigma: float) -> Tensor:
    """The authors' code: noise added to the *normalised* image, then clamped to [0, 1] —
    in normalised units, where values span about [-2, 2]: every value below the channel
    mean becomes the mean and every value above mean + std becomes mean + std. The
    distortion is therefore far larger than sigma suggests. Mapped back to pixel space for
    our pixel-space model."""
    xn = (model.normalize_input(x) + sigma * noise).clamp(0.0, 1.0)
    return xn * model.std + model.mean


NOISE_SPACES: dict[str, Callable[[nn.Module, Tensor, Tensor, float], Tensor]] = {
    "pixel": _noisy_pixel,
    "official": _noisy_official,
}


def continuity_perturbation(model: Explainable, x: Tensor, sigma: float = 0.02, noise_space: str = "pixel",
                            seed: int = 0, sample_ids: Optional[Any] = None) -> Tensor:
    """The noisy images (pixel space) the continuity metric explains; see :data:`NOISE_SPACES`."""
    if noise_space not in NOISE_SPACES:
        raise ValueError(f"unknown noise_space '{noise_space}'; valid: {', '.join(NOISE_SPACES)}")
    noise = gaussian_noise(x.shape, seed, sample_ids, "continuity", x.device).to(x.dtype)
    return NOISE_SPACES[noise_space](model, x, noise, sigma)


def continuity_ssim(model: Explainable, x: Tensor, target: Any, method: MethodLike, sigma: float = 0.02,
                    noise_space: str = "pixel", seed: int = 0, sample_ids: Optional[Any] = None,
                    maps: Optional[Tensor] = None, batch_size: Optional[int] = None) -> Tensor:
    """SSIM (data_range 1) between the map of x and the map of x + N(0, sigma^2) for the same
    target (float64 [N]; higher = more continuous). Noise is seeded per sample id (pass the
    dataset indices as ``sample_ids``). ``maps``: precomputed maps of x (else computed).
    ``noise_space``: "pixel" (default) or "official" (the authors' code, see
    :func:`_noisy_official`)."""
    fn = resolve_method(method)
    target = _as_long(target, x.shape[0], x.device, "target")
    if maps is None:
        maps = _attribute_chunked(fn, model, x, target, batch_size)
    noisy = continuity_perturbation(model, x, sigma, noise_space, seed, sample_ids)
    maps_noisy = _attribute_chunked(fn, model, noisy, target, batch_size)
    return ssim(maps, maps_noisy)


def other_classes(pred: Any, num_classes: int, seed: int = 0, sample_ids: Optional[Any] = None,
                  generator: Optional[torch.Generator] = None) -> Tensor:
    """A class drawn uniformly among the ``num_classes - 1`` classes other than ``pred``
    (int64 [N]): ``r ~ U{0..C-2}``, ``r + (r >= pred)`` (as the authors' code). Drawn from
    ``generator`` when given, else from a generator per sample id (:func:`sample_seed`)."""
    pred = torch.as_tensor(pred, dtype=torch.long).reshape(-1)
    if num_classes < 2:
        raise ValueError(f"contrastivity needs at least 2 classes, got {num_classes}")
    if generator is not None:
        r = torch.randint(0, num_classes - 1, (pred.numel(),), generator=generator,
                          device=generator.device).to(pred.device)
    else:
        ids = _sample_ids(pred.numel(), sample_ids)
        r = torch.tensor([np.random.default_rng(sample_seed(seed, s, "contrastivity")).integers(0, num_classes - 1)
                          for s in ids], dtype=torch.long, device=pred.device)
    return r + (r >= pred).long()


def contrastivity_ssim(model: Explainable, x: Tensor, pred: Any, method: MethodLike,
                       generator: Optional[torch.Generator] = None, seed: int = 0,
                       sample_ids: Optional[Any] = None, maps: Optional[Tensor] = None,
                       batch_size: Optional[int] = None, return_classes: bool = False):
    """SSIM between the map for the predicted class and the map for a uniformly drawn other
    class (float64 [N]; lower = more contrastive). Meaningless for class-agnostic methods
    (Eigen-CAM). ``maps``: precomputed maps for ``pred``. ``return_classes`` also returns
    the other classes."""
    fn = resolve_method(method)
    pred = _as_long(pred, x.shape[0], x.device, "pred")
    other = other_classes(pred, num_classes_of(model, x), seed, sample_ids, generator)
    if maps is None:
        maps = _attribute_chunked(fn, model, x, pred, batch_size)
    maps_other = _attribute_chunked(fn, model, x, other, batch_size)
    value = ssim(maps, maps_other)
    return (value, other) if return_classes else value


def max_sensitivity(model: Explainable, x: Tensor, target: Any, method: MethodLike,
                    a: Optional[Tensor] = None, nr_samples: int = 200, lower_bound: float = 0.2,
                    seed: int = 0, sample_ids: Optional[Any] = None,
                    batch_size: Optional[int] = None) -> Tensor:
    """Quantus ``MaxSensitivity`` (defaults: ``normalise=False``, ``abs=False``, uniform noise
    in [-lower_bound, lower_bound] on every feature, no clamp, Frobenius norms), batched:
    ``max_k ||a(x) - a(x + u_k)|| / ||a(x)||`` over ``nr_samples`` draws (float64 [N]; lower
    is more robust; NaN for an all-zero map). Noise: ``np.random.RandomState(sample_seed(
    seed, id, ...))``, the stream a one-image Quantus call sees after ``np.random.seed``.
    """
    fn = resolve_method(method)
    n = x.shape[0]
    target = _as_long(target, n, x.device, "target")
    if a is None:
        a = _attribute_chunked(fn, model, x, target, batch_size)
    _check_maps(a, x)
    ids = _sample_ids(n, sample_ids)
    rss = [np.random.RandomState(sample_seed(seed, s, "max_sensitivity")) for s in ids]
    af = a.reshape(n, -1).double()
    den = af.norm(dim=1)
    best = torch.full((n,), float("nan"), dtype=torch.float64, device=x.device)
    x64 = x.double()
    bs = int(batch_size or DEFAULT_BATCH)
    for s0 in range(0, n, bs):
        sl = slice(s0, s0 + bs)
        for _ in range(nr_samples):
            noise = np.stack([rs.uniform(-lower_bound, lower_bound, size=x.shape[1:]) for rs in rss[sl]])
            xp = (x64[sl] + torch.from_numpy(noise).to(x.device)).to(x.dtype)
            ap = fn(model, xp, target[sl]).to(x.device).reshape(xp.shape[0], -1).double()
            sens = (af[sl] - ap).norm(dim=1) / den[sl]
            best[sl] = torch.fmax(best[sl], sens)
    return torch.where(den > 0, best, torch.full_like(best, float("nan")))
