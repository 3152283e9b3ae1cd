"""Explanation-quality metrics on whole batches of tensors (CPU or GPU).

The paper's metrics are Quantus 0.6.0 metrics (and scikit-image SSIM) called one image at
a time. Here every metric takes batches — images ``x`` float [N, C, H, W] in pixel space
[0, 1] (the :class:`~xai_utils.models.ExplainedModel` normalises inside), attribution maps
``a`` float [N, 1, H, W], labels / targets int64 [N], masks bool [N, 1, H, W] — and returns
one value per image, on the device of its inputs. ``tests/test_metrics.py`` checks each
against Quantus / scikit-image called per image on the same numpy arrays.

What Quantus 0.6.0 does (read from its source) and we reproduce:

* **Normalisation.** ``normalise=True`` divides by ``max |a|`` over *everything passed in
  one call* (all-zero input left as is); the authors call Quantus once per image, so we
  normalise per image, in the maps' own dtype (which matters for exact ties at the max).
  Only Sparseness depends on it (its 1e-7 is added after normalising): a batch call of
  Quantus differs from per-image calls by up to ~1e-4 unless every map has the same max.
  Defaults: PixelFlipping ``abs=False``, Complexity / Sparseness / AttributionLocalisation
  ``abs=True``, PointingGame ``abs=False``, all ``normalise=True``.
* **PixelFlipping.** The 1-channel map is broadcast over the C channels, so there are
  F = C*H*W features and S = ceil(F / features_in_step) steps (96 on 32x32x3 with 32 per
  step). Features are ordered by ``np.argsort(-a)`` — NumPy's default, *unstable* sort, so
  tied features (at least the C channels of every pixel) come in NumPy's own order, which
  we reproduce by calling the same ``np.argsort`` on the same values. At step s the next
  ``features_in_step`` features of a running copy are set to the baseline and the softmax
  probability of class y is recorded (no point for the unperturbed image). Baseline
  "black" = the minimum over all values of the (running) image, i.e. the original image's
  minimum; here in pixel space (our model takes pixel-space images). The authors' Quantus
  saw *normalised* images, so their "black" is the normalised image's minimum given to
  every channel: ``baseline="black_normalised"`` reproduces that (nearly black, per channel). ``return_auc_per_sample=True`` returns ``np.trapz(curve, dx=1)``, *not*
  normalised (range [0, S-1]); the authors divide it by ``len(curve) - 1``, which is our
  ``auc`` (the mean height of the curve, in [0, 1]). They set it to NaN for all-zero maps.
* **Complexity**: entropy ``-sum p log(p + 1e-12)`` of ``p = |a| / sum |a|`` (0/0 = NaN for
  an all-zero map). **Sparseness**: Gini index of ``|a| + 1e-7`` (sorted ascending).
* **PointingGame**: hit if *any* position holding the maximum lies in the mask (ties count).
  On an empty mask Quantus means to return NaN but writes NaN into a boolean array, which
  reads back as True (a hit); we return NaN. **AttributionLocalisation**:
  ``sum(|a| * mask) / (sum |a| + 1e-9)``, NaN for an empty mask or a ratio above 1.
* Perturbation metrics draw their randomness from NumPy's global generator; ours draw from
  one generator per *sample*, seeded by (seed, sample id, metric) (:func:`sample_seed`),
  so every model sees the same perturbation of the same image, whatever the batch.

Quantus refuses (AssertionError) a call whose maps are all zero, all one, constant or all
negative; the authors therefore skip all-zero maps (NaN). Our policy, one per metric:

* *constant maps* (all-zero included: a Grad-CAM whose ReLU kills everything comes out of
  min-max scaling as zeros) give no ranking and no peak: NaN for pixel flipping (its value
  would be NumPy's arbitrary order of ties) and the pointing game (every position is "the
  maximum"; Quantus, in a batch call, would score a hit);
* *all-zero maps* have no attribution mass: NaN for complexity (0/0, as Quantus), attribution
  localisation (Quantus's 1e-9 guard would give 0), max-sensitivity (divides by
  ``||a|| = 0``) and the correlations (constant input). A constant non-zero map keeps its
  well-defined value there (complexity log(H*W), localisation = the mask's area share);
* always defined: sparseness (0 for any flat map, the Gini index of equal values) and SSIM.

NaNs are kept in ``results.csv`` (written ``nan``); statistics pair samples first and then
drop NaNs, and :func:`xai_utils.evaluate.summarise` reports how many there are.
"""
from __future__ import annotations

import copy
import math
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

AttributionFn = Callable[[nn.Module, Tensor, Tensor], Tensor]
MethodLike = Union[str, AttributionFn]
DEFAULT_BATCH = 256


# ----------------------------------------------------------------------------- helpers

def resolve_method(method: MethodLike, **options: Any) -> AttributionFn:
    """A callable ``(model, x, target) -> maps [N, 1, H, W]``.

    ``method`` is a callable (returned as is, with ``options`` bound) or a name of the
    :data:`xai_utils.attribution.METHODS` registry, resolved lazily so that this module
    works without the attribution module.
    """
    if callable(method):
        if not options:
            return method
        return lambda model, x, target: method(model, x, target, **options)
    if not isinstance(method, str):
        raise TypeError(f"method must be a registry name or a callable (model, x, target) -> maps, got {method!r}")
    from . import attribution
    attribution.get_method(method)                       # clear error for an unknown name
    attribution.resolve_options(method, **options)       # ... and for an unknown option
    return lambda model, x, target: attribution.attribute(model, x, target, method, **options)


def sample_seed(seed: int, sample_id: int, stream: str) -> int:
    """A 32-bit seed that depends only on (seed, sample id, stream name).

    Used for every random draw tied to one image (continuity noise, the contrast class,
    random subsets), so that paired comparisons across models see the same draws.
    """
    entropy = [int(seed) & 0xFFFFFFFF, int(sample_id) & 0xFFFFFFFF, zlib.crc32(stream.encode())]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def _sample_ids(n: int, sample_ids: Optional[Any]) -> np.ndarray:
    if sample_ids is None:
        return np.arange(n, dtype=np.int64)
    ids = np.asarray(sample_ids.cpu() if isinstance(sample_ids, Tensor) else sample_ids, dtype=np.int64).reshape(-1)
    if len(ids) != n:
        raise ValueError(f"sample_ids must have one id per image ({n}), got {len(ids)}")
    return ids


def _check_maps(a: Tensor, x: Optional[Tensor] = None, name: str = "a") -> None:
    if a.dim() != 4:
        raise ValueError(f"{name} must be attribution maps [N, 1, H, W], got shape {tuple(a.shape)}")
    if x is not None:
        if x.dim() != 4:
            raise ValueError(f"x must be images [N, C, H, W], got shape {tuple(x.shape)}")
        if a.shape[0] != x.shape[0] or a.shape[-2:] != x.shape[-2:] or a.shape[1] not in (1, x.shape[1]):
            raise ValueError(f"maps {tuple(a.shape)} do not match images {tuple(x.shape)}: "
                             f"expected [N, 1, H, W] with the images' N, H, W")


def _as_long(t: Any, n: int, device: torch.device, name: str) -> Tensor:
    t = torch.as_tensor(t, dtype=torch.long, device=device).reshape(-1)
    if t.numel() != n:
        raise ValueError(f"{name} must have one class per image ({n}), got {t.numel()}")
    return t


def normalise_by_max(a: Tensor) -> Tensor:
    """Quantus ``normalise_by_max`` applied per image: ``a / max|a|`` (all-zero maps unchanged),
    computed in ``a``'s dtype so that ties at the maximum are those Quantus sees."""
    flat = a.reshape(a.shape[0], -1)
    m = flat.abs().amax(dim=1, keepdim=True)
    m = torch.where(m == 0, torch.ones_like(m), m)
    return (flat / m).reshape(a.shape)


def is_zero_map(a: Tensor) -> Tensor:
    """bool [N]: the map is all zeros (no attribution mass)."""
    return (a.reshape(a.shape[0], -1) == 0).all(dim=1)


def is_constant_map(a: Tensor) -> Tensor:
    """bool [N]: every value of the map is the same (no ranking, no peak); all-zero included."""
    flat = a.reshape(a.shape[0], -1)
    return (flat == flat[:, :1]).all(dim=1)


def _attribute_chunked(method: AttributionFn, model: nn.Module, x: Tensor, target: Tensor,
                       batch_size: Optional[int]) -> Tensor:
    bs = batch_size or DEFAULT_BATCH
    return torch.cat([method(model, x[s:s + bs], target[s:s + bs]).to(x.device)
                      for s in range(0, x.shape[0], bs)])


def _forward_chunked(model: nn.Module, x: Tensor, batch_size: Optional[int]) -> Tensor:
    bs = batch_size or DEFAULT_BATCH
    with torch.inference_mode():
        return torch.cat([model(x[s:s + bs]).float() for s in range(0, x.shape[0], bs)])


def num_classes_of(model: nn.Module, x: Tensor) -> int:
    head = getattr(model, "head", None)
    if isinstance(head, nn.Linear):
        return head.out_features
    return int(_forward_chunked(model, x[:1], 1).shape[-1])


# ----------------------------------------------------------------------------- faithfulness

def _argsort_numpy(keys: Tensor) -> Tensor:
    """``np.argsort(-keys, axis=1)``, NumPy's default (unstable) sort: Quantus's order of ties."""
    k = keys.detach().cpu().numpy()
    return torch.from_numpy(np.argsort(-k, axis=1)).to(keys.device)


def _argsort_stable(keys: Tensor) -> Tensor:
    """Descending, stable (ties in feature order), on the keys' device."""
    return torch.argsort(keys, dim=1, descending=True, stable=True)


SORTERS: dict[str, Callable[[Tensor], Tensor]] = {
    "quantus": _argsort_numpy,   # exact Quantus/NumPy tie order (sorts on the CPU)
    "stable": _argsort_stable,   # device-native; ties in channel-major feature order
}


def _baseline_black(model: nn.Module, x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1).amin(dim=1, keepdim=True)


def _baseline_white(model: nn.Module, x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1).amax(dim=1, keepdim=True)


def _baseline_black_normalised(model: nn.Module, x: Tensor) -> Tensor:
    """The official protocol: Quantus sees *normalised* images there, so "black" is the
    minimum of the normalised image, given to every channel; mapped back to pixel space it
    is one value per channel (nearly black, slightly out of [0, 1] on some channels)."""
    xn = model.normalize_input(x)
    m = xn.reshape(x.shape[0], -1).amin(dim=1)
    return (m[:, None] * model.std.reshape(1, -1) + model.mean.reshape(1, -1)).to(x.dtype)


# value per image [N, 1] or per image and channel [N, C], in pixel space
BASELINES: dict[str, Callable[[nn.Module, Tensor], Tensor]] = {
    "black": _baseline_black,
    "white": _baseline_white,
    "black_normalised": _baseline_black_normalised,
}


def curve_auc(curves: Tensor) -> Tensor:
    """Trapezoidal area (dx=1) of each curve divided by its width S-1: the authors'
    ``np.trapz(curve) / (len(curve) - 1)``, the curve's mean height (float64 [N]).
    A one-point curve gives its value."""
    c = curves.double()
    if c.shape[1] == 1:
        return c[:, 0]
    return (c.sum(dim=1) - 0.5 * (c[:, 0] + c[:, -1])) / (c.shape[1] - 1)


def pixel_flipping(model: nn.Module, x: Tensor, y: Any, a: Tensor, features_in_step: int,
                   baseline: str = "black", batch_size: Optional[int] = None,
                   tie_break: str = "quantus", constant_map_nan: bool = True) -> tuple[Tensor, Tensor]:
    """Quantus ``PixelFlipping`` (softmax, ``abs=False``, ``normalise=True``), batched.

    Returns ``(curves float32 [N, S], auc float64 [N])``: the softmax probability of class
    ``y`` after each step, and ``curve_auc`` = trapz / (S - 1). Lower is better.

    Batched: for a block of images the argsort is computed once; each step sets the next
    ``features_in_step`` features of a running copy to the baseline (``scatter_``) and the
    steps' copies of all images go through the model together, ``batch_size`` perturbed
    images per forward pass. ``tie_break="quantus"`` sorts with NumPy as Quantus does
    (exact equality); ``"stable"`` sorts on the device. ``baseline``: see :data:`BASELINES`.
    ``constant_map_nan``: constant maps (all-zero included) get NaN curves and AUC, as the
    authors do for all-zero maps (their ranking would be NumPy's arbitrary order of ties);
    False keeps the numbers Quantus gives them inside a batch call.
    """
    _check_maps(a, x)
    if baseline not in BASELINES:
        raise ValueError(f"unknown baseline '{baseline}'; valid: {', '.join(BASELINES)}")
    if tie_break not in SORTERS:
        raise ValueError(f"unknown tie_break '{tie_break}'; valid: {', '.join(SORTERS)}")
    if int(features_in_step) < 1:
        raise ValueError(f"features_in_step must be >= 1, got {features_in_step}")
    n, c, h, w = x.shape
    nf, k = c * h * w, int(features_in_step)
    steps = math.ceil(nf / k)
    y = _as_long(y, n, x.device, "y")
    bs = int(batch_size or DEFAULT_BATCH)
    block = max(1, min(n, bs))
    per_pass = max(1, bs // block)                 # steps sharing one forward pass
    fill_all = BASELINES[baseline](model, x)        # [N, 1] or [N, C]
    curves = torch.empty(n, steps, dtype=torch.float32, device=x.device)

    with torch.inference_mode():
        for b0 in range(0, n, block):
            xb = x[b0:b0 + block].reshape(-1, nf).clone()
            nb = xb.shape[0]
            keys = normalise_by_max(a[b0:b0 + nb]).expand(nb, c, h, w).reshape(nb, nf)
            order = SORTERS[tie_break](keys)
            fill = fill_all[b0:b0 + nb]
            fill = fill.repeat_interleave(h * w, dim=1) if fill.shape[1] > 1 else fill.expand(nb, nf)
            yb = y[b0:b0 + nb]
            buf = torch.empty(per_pass * nb, nf, dtype=x.dtype, device=x.device) if per_pass > 1 else None
            done = 0                                # steps of this block already predicted
            for s in range(steps):
                idx = order[:, s * k:(s + 1) * k]
                xb.scatter_(1, idx, fill.gather(1, idx))
                j = s - done
                if buf is not None:
                    buf[j * nb:(j + 1) * nb].copy_(xb)
                if j + 1 == per_pass or s == steps - 1:
                    m = j + 1
                    batch = (buf[:m * nb] if buf is not None else xb).view(m * nb, c, h, w)
                    p = torch.softmax(model(batch).float(), dim=-1)
                    p = p.gather(1, yb.repeat(m)[:, None]).view(m, nb)
                    curves[b0:b0 + nb, done:s + 1] = p.t()
                    done = s + 1
    auc = curve_auc(curves)
    if constant_map_nan:
        z = is_constant_map(a)
        curves[z] = float("nan")
        auc[z] = float("nan")
    return curves, auc


def faithfulness_correlation(model: nn.Module, x: Tensor, y: Any, a: Tensor, subset_size: int = 224,
                             nr_runs: int = 100, baseline: str = "black", seed: int = 0,
                             sample_ids: Optional[Any] = None, batch_size: Optional[int] = None) -> Tensor:
    """Quantus ``FaithfulnessCorrelation`` (defaults: logits, ``abs=False``, ``normalise=True``,
    Pearson), batched: Pearson correlation over ``nr_runs`` random subsets of
    ``subset_size`` features between the summed attribution of the subset and the drop of
    the class-``y`` logit when the subset is set to the baseline. Higher is better.

    Subsets come from ``np.random.RandomState(sample_seed(seed, id, ...))`` consuming the
    stream exactly as Quantus consumes NumPy's global one for a one-image call (a
    ``choice`` per run, then one ``uniform`` draw its baseline dictionary makes), so a
    per-image Quantus call after ``np.random.seed(<that seed>)`` sees the same subsets.
    NaN where the attribution sums are constant (e.g. an all-zero map).
    """
    _check_maps(a, x)
    if baseline not in BASELINES:
        raise ValueError(f"unknown baseline '{baseline}'; valid: {', '.join(BASELINES)}")
    n, c, h, w = x.shape
    nf = c * h * w
    if not 0 < subset_size <= nf:
        raise ValueError(f"subset_size must be in 1..{nf}, got {subset_size}")
    y = _as_long(y, n, x.device, "y")
    ids = _sample_ids(n, sample_ids)
    subsets = np.empty((n, nr_runs, subset_size), dtype=np.int64)
    for i, sid in enumerate(ids):                    # cheap: index draws only
        rs = np.random.RandomState(sample_seed(seed, sid, "faithfulness_correlation"))
        for r in range(nr_runs):
            subsets[i, r] = rs.choice(nf, subset_size, replace=False)
            rs.uniform(0.0, 1.0, size=1)              # Quantus's eager "uniform" baseline draw
    sub = torch.from_numpy(subsets).to(x.device)
    keys = normalise_by_max(a).expand(n, c, h, w).reshape(n, nf).double()
    att_sums = keys.gather(1, sub.reshape(n, -1)).reshape(n, nr_runs, subset_size).sum(-1)

    fill = BASELINES[baseline](model, x)
    fill = fill.repeat_interleave(h * w, dim=1) if fill.shape[1] > 1 else fill.expand(n, nf)
    logit = _forward_chunked(model, x, batch_size).gather(1, y[:, None])[:, 0].double()
    bs = int(batch_size or DEFAULT_BATCH)
    xf = x.reshape(n, nf)
    drops = torch.empty(n, nr_runs, dtype=torch.float64, device=x.device)
    items = [(i, r) for r in range(nr_runs) for i in range(n)]
    with torch.inference_mode():
        for s0 in range(0, len(items), bs):
            chunk = torch.tensor(items[s0:s0 + bs], device=x.device)
            ii, rr = chunk[:, 0], chunk[:, 1]
            xp = xf[ii].clone()
            idx = sub[ii, rr]
            xp.scatter_(1, idx, fill[ii].gather(1, idx))
            out = model(xp.view(-1, c, h, w)).float().gather(1, y[ii][:, None])[:, 0].double()
            drops[ii, rr] = logit[ii] - out
    return pearson(att_sums, drops)


def pearson(u: Tensor, v: Tensor) -> Tensor:
    """Row-wise Pearson correlation (float64 [N]); NaN for a constant row."""
    u, v = u.double(), v.double()
    u = u - u.mean(dim=1, keepdim=True)
    v = v - v.mean(dim=1, keepdim=True)
    den = u.norm(dim=1) * v.norm(dim=1)
    r = (u * v).sum(dim=1) / den
    return torch.where(den > 0, r.clamp(-1.0, 1.0), torch.full_like(r, float("nan")))


# ----------------------------------------------------------------------------- complexity

def complexity(a: Tensor) -> Tensor:
    """Quantus ``Complexity`` (``abs=True``, ``normalise=True``): entropy of |a| / sum |a|
    (float64 [N]; NaN for an all-zero map). Lower is better; at most log(H*W)."""
    _check_maps(a)
    p = normalise_by_max(a).abs().reshape(a.shape[0], -1).double()
    p = p / p.sum(dim=1, keepdim=True)
    return -(p * torch.log(p + 1e-12)).sum(dim=1)


def sparseness(a: Tensor) -> Tensor:
    """Quantus ``Sparseness`` (``abs=True``, ``normalise=True``): Gini index of |a| + 1e-7
    (float64 [N]; 0 for a flat map, all-zero included). Higher is sparser."""
    _check_maps(a)
    v = normalise_by_max(a).abs().reshape(a.shape[0], -1).double() + 1e-7
    v, _ = torch.sort(v, dim=1)
    n = v.shape[1]
    i = torch.arange(1, n + 1, dtype=torch.float64, device=v.device)
    return ((2 * i - n - 1) * v).sum(dim=1) / (n * v.sum(dim=1))


# ----------------------------------------------------------------------------- SSIM-based

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

    Computed in float64; on the CPU in chunks of images small enough to stay in cache."""
    a, b = _as_nchw(a), _as_nchw(b)
    if a.shape != b.shape:
        raise ValueError(f"maps must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if min(a.shape[-2:]) < win_size:
        raise ValueError(f"maps of size {tuple(a.shape[-2:])} are smaller than the SSIM window {win_size}")
    n, hw = a.shape[0], a.shape[-1] * a.shape[-2]
    chunk = n if a.device.type != "cpu" else max(1, SSIM_CPU_CHUNK // hw)
    return torch.cat([_ssim(a[s:s + chunk].double(), b[s:s + chunk].double(), data_range, win_size, k1, k2)
                      for s in range(0, n, chunk)]) if n else a.new_zeros(0, dtype=torch.float64)


SSIM_CPU_CHUNK = 1 << 16          # map pixels per chunk on the CPU (~2.6 MB of float64 temporaries)


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


def _noisy_pixel(model: nn.Module, x: Tensor, noise: Tensor, sigma: float) -> Tensor:
    """x + N(0, sigma^2) in pixel space, clamped to [0, 1] (a valid image; at sigma=0.02
    the clamp touches only pixels within a few sigma of 0 or 1)."""
    return (x + sigma * noise).clamp(0.0, 1.0)


def _noisy_official(model: nn.Module, x: Tensor, noise: Tensor, sigma: float) -> Tensor:
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


def continuity_perturbation(model: nn.Module, x: Tensor, sigma: float = 0.02, noise_space: str = "pixel",
                            seed: int = 0, sample_ids: Optional[Any] = None) -> Tensor:
    """The noisy images (pixel space) the continuity metric explains; see :data:`NOISE_SPACES`."""
    if noise_space not in NOISE_SPACES:
        raise ValueError(f"unknown noise_space '{noise_space}'; valid: {', '.join(NOISE_SPACES)}")
    noise = gaussian_noise(x.shape, seed, sample_ids, "continuity", x.device).to(x.dtype)
    return NOISE_SPACES[noise_space](model, x, noise, sigma)


def continuity_ssim(model: nn.Module, x: Tensor, target: Any, method: MethodLike, sigma: float = 0.02,
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


def contrastivity_ssim(model: nn.Module, x: Tensor, pred: Any, method: MethodLike,
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


# ----------------------------------------------------------------------------- localisation

def _check_masks(a: Tensor, masks: Tensor) -> Tensor:
    _check_maps(a)
    if masks.shape[0] != a.shape[0] or masks.shape[-2:] != a.shape[-2:]:
        raise ValueError(f"masks {tuple(masks.shape)} do not match maps {tuple(a.shape)}")
    return masks.reshape(masks.shape[0], -1).to(device=a.device, dtype=torch.bool)


def pointing_game(a: Tensor, masks: Tensor) -> Tensor:
    """Quantus ``PointingGame`` (``abs=False``, ``normalise=True``): 1.0 if a position holding
    the map's maximum (any of them, when tied) is inside the mask, else 0.0 (float64 [N]).
    NaN for an empty mask (Quantus: True, see module doc) and for a constant map (no peak)."""
    m = _check_masks(a, masks)
    v = normalise_by_max(a).reshape(a.shape[0], -1)
    hit = ((v == v.amax(dim=1, keepdim=True)) & m).any(dim=1).double()
    undefined = (m.sum(dim=1) == 0) | is_constant_map(a)
    return torch.where(undefined, torch.full_like(hit, float("nan")), hit)


def attribution_localisation(a: Tensor, masks: Tensor) -> Tensor:
    """Quantus ``AttributionLocalisation`` (``abs=True``, ``normalise=True``): share of the
    attribution mass inside the mask, ``sum(|a| m) / (sum |a| + 1e-9)`` (float64 [N]).
    NaN for an empty mask or a ratio above 1 (as Quantus) and for an all-zero map."""
    m = _check_masks(a, masks)
    v = normalise_by_max(a).abs().reshape(a.shape[0], -1).double()
    ratio = (v * m).sum(dim=1) / (v.sum(dim=1) + 1e-9)
    undefined = (m.sum(dim=1) == 0) | (ratio > 1) | is_zero_map(a)
    return torch.where(undefined, torch.full_like(ratio, float("nan")), ratio)


# ----------------------------------------------------------------------------- robustness

def max_sensitivity(model: nn.Module, x: Tensor, target: Any, method: MethodLike,
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


# ----------------------------------------------------------------------------- randomisation

def randomise_model(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of ``model`` with every layer re-initialised (``reset_parameters``; BatchNorm
    statistics reset too), seeded, in eval mode; the original is untouched and the global
    RNG state is preserved. Buffers that are not learned (input mean/std) are kept."""
    device = next(model.parameters()).device
    rand = copy.deepcopy(model).cpu()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for mod in rand.modules():
            if hasattr(mod, "reset_parameters") and callable(mod.reset_parameters):
                mod.reset_parameters()
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                mod.reset_running_stats()
    return rand.to(device).eval()


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


def model_randomisation(model: nn.Module, x: Tensor, target: Any, method: MethodLike,
                        a: Optional[Tensor] = None, similarity: str = "ssim", seed: int = 0,
                        batch_size: Optional[int] = None) -> Tensor:
    """Model-randomisation sanity check (Adebayo et al. 2018, full randomisation): similarity
    between the maps of the trained model and of :func:`randomise_model` (float64 [N]).
    Lower is better (the explanation depends on what the model learned). ``similarity``:
    "ssim" (defined for every pair; data_range 1, for maps in [0, 1]) or "spearman"
    (NaN when a map is constant, e.g. all-zero)."""
    if similarity not in SIMILARITIES:
        raise ValueError(f"unknown similarity '{similarity}'; valid: {', '.join(SIMILARITIES)}")
    fn = resolve_method(method)
    target = _as_long(target, x.shape[0], x.device, "target")
    if a is None:
        a = _attribute_chunked(fn, model, x, target, batch_size)
    rand = randomise_model(model, seed)
    a_rand = _attribute_chunked(fn, rand, x, target, batch_size)
    return SIMILARITIES[similarity](a, a_rand)


# ----------------------------------------------------------------------------- registry

@dataclass
class MetricInputs:
    """Everything a registered metric may need, for one method on one run's samples."""

    model: nn.Module
    x: Tensor                                  # pixel space [N, C, H, W]
    maps: Tensor                               # stored maps [N, 1, H, W]
    labels: Tensor                             # true classes [N]
    preds: Tensor                              # predicted classes [N]
    targets: Tensor                            # classes the maps explain [N]
    sample_ids: Tensor                         # indices into the evaluation split [N]
    masks: Optional[Tensor] = None             # bool [N, 1, H, W]
    method: Optional[AttributionFn] = None     # to recompute maps (noise, other class, ...)
    batch_size: Optional[int] = None
    features_in_step: int = 32
    continuity_sigma: float = 0.02
    noise_space: str = "pixel"
    seed: int = 0


@dataclass
class MetricResult:
    values: Tensor                             # one value per sample [N]
    curves: Optional[Tensor] = None            # pixel-flipping curves [N, S]


@dataclass(frozen=True)
class MetricSpec:
    name: str
    compute: Callable[[MetricInputs], MetricResult]
    needs: frozenset = field(default_factory=frozenset)   # model | method | masks | class_specific
    higher_is_better: bool = True
    facet: str = ""
    in_paper: bool = True
    description: str = ""


METRICS: dict[str, MetricSpec] = {}


def register_metric(name: str, needs: Sequence[str] = (), higher_is_better: bool = True,
                    facet: str = "", in_paper: bool = True, description: str = "") -> Callable:
    """Register ``compute(MetricInputs) -> MetricResult`` under ``name`` (a results.csv name)."""
    def wrap(fn: Callable[[MetricInputs], MetricResult]) -> Callable[[MetricInputs], MetricResult]:
        METRICS[name] = MetricSpec(name, fn, frozenset(needs), higher_is_better, facet, in_paper, description)
        return fn
    return wrap


def check_metrics(names: Sequence[str]) -> list[str]:
    """Validate metric names at once: one error listing the unknown names and the valid ones."""
    names = list(names)
    bad = [m for m in names if m not in METRICS]
    if bad:
        raise ValueError(f"unknown metric(s) {bad}; available: {', '.join(METRICS)}")
    return names


@register_metric("pixel_flipping", needs=("model",), higher_is_better=False, facet="faithfulness",
                 description="AUC / (steps - 1) of the softmax probability of the true class while "
                             "the most relevant features are set to black, features_in_step at a time")
def _m_pixel_flipping(d: MetricInputs) -> MetricResult:
    curves, auc = pixel_flipping(d.model, d.x, d.labels, d.maps, d.features_in_step, batch_size=d.batch_size)
    return MetricResult(auc, curves)


@register_metric("continuity", needs=("model", "method"), facet="continuity",
                 description="SSIM between the maps of x and of x + N(0, sigma^2), same target")
def _m_continuity(d: MetricInputs) -> MetricResult:
    return MetricResult(continuity_ssim(d.model, d.x, d.targets, d.method, d.continuity_sigma, d.noise_space,
                                        d.seed, d.sample_ids, maps=d.maps, batch_size=d.batch_size))


@register_metric("complexity", higher_is_better=False, facet="complexity",
                 description="entropy of the normalised absolute map (Quantus Complexity)")
def _m_complexity(d: MetricInputs) -> MetricResult:
    return MetricResult(complexity(d.maps))


@register_metric("contrastivity", needs=("model", "method", "class_specific"), higher_is_better=False,
                 facet="contrastivity",
                 description="SSIM between the maps for the predicted class and a random other class")
def _m_contrastivity(d: MetricInputs) -> MetricResult:
    maps = d.maps if bool((d.targets == d.preds).all()) else None
    return MetricResult(contrastivity_ssim(d.model, d.x, d.preds, d.method, seed=d.seed,
                                           sample_ids=d.sample_ids, maps=maps, batch_size=d.batch_size))


@register_metric("sparseness", facet="complexity",
                 description="Gini index of the absolute map (Quantus Sparseness; computed, not reported)")
def _m_sparseness(d: MetricInputs) -> MetricResult:
    return MetricResult(sparseness(d.maps))


@register_metric("pointing_game", needs=("masks",), facet="coherence",
                 description="the map's maximum lies on the object (Quantus PointingGame)")
def _m_pointing_game(d: MetricInputs) -> MetricResult:
    return MetricResult(pointing_game(d.maps, d.masks))


@register_metric("attribution_localisation", needs=("masks",), facet="coherence",
                 description="share of the attribution inside the object mask (Quantus AttributionLocalisation)")
def _m_attribution_localisation(d: MetricInputs) -> MetricResult:
    return MetricResult(attribution_localisation(d.maps, d.masks))


@register_metric("faithfulness_correlation", needs=("model",), facet="faithfulness", in_paper=False,
                 description="Pearson correlation of subset attribution sums and logit drops "
                             "(Quantus FaithfulnessCorrelation, 100 runs of 224 features)")
def _m_faithfulness_correlation(d: MetricInputs) -> MetricResult:
    return MetricResult(faithfulness_correlation(d.model, d.x, d.targets, d.maps, seed=d.seed,
                                                 sample_ids=d.sample_ids, batch_size=d.batch_size))


@register_metric("max_sensitivity", needs=("model", "method"), higher_is_better=False, facet="robustness",
                 in_paper=False,
                 description="largest relative change of the map under uniform noise of +-0.2 "
                             "(Quantus MaxSensitivity, 20 draws instead of Quantus's 200)")
def _m_max_sensitivity(d: MetricInputs) -> MetricResult:
    return MetricResult(max_sensitivity(d.model, d.x, d.targets, d.method, a=d.maps, nr_samples=20, seed=d.seed,
                                        sample_ids=d.sample_ids, batch_size=d.batch_size))


@register_metric("model_randomisation", needs=("model", "method"), higher_is_better=False, facet="sanity",
                 in_paper=False,
                 description="SSIM between the maps of the trained model and of a fully re-initialised copy")
def _m_model_randomisation(d: MetricInputs) -> MetricResult:
    return MetricResult(model_randomisation(d.model, d.x, d.targets, d.method, a=d.maps, seed=d.seed,
                                            batch_size=d.batch_size))
