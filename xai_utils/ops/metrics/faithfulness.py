"""Faithfulness: pixel flipping (Quantus PixelFlipping) and faithfulness correlation, batched."""
from __future__ import annotations

import math
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from ..contract import Explainable
from ._common import (DEFAULT_BATCH, _as_long, _check_maps,
                      _forward_chunked, _sample_ids, is_constant_map, normalise_by_max,
                      sample_seed)
from .map_similarity import pearson


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
TIE_BREAKS = (*SORTERS, "auto")


def resolve_tie_break(tie_break: str, device: "torch.device | str") -> str:
    """The sorter ``tie_break`` means on ``device``: ``auto`` is ``stable`` on CUDA (no copy of
    every map to the host and no NumPy sort there) and ``quantus`` elsewhere. The two orders
    agree except among exactly equal attributions (e.g. the zeros of a ReLU'd Grad-CAM)."""
    if tie_break not in TIE_BREAKS:
        raise ValueError(f"unknown tie_break '{tie_break}'; valid: {', '.join(TIE_BREAKS)}")
    if tie_break != "auto":
        return tie_break
    kind = device.type if isinstance(device, torch.device) else str(device).split(":", 1)[0]
    return "stable" if kind == "cuda" else "quantus"


def _baseline_black(model: Explainable, x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1).amin(dim=1, keepdim=True)


def _baseline_white(model: Explainable, x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1).amax(dim=1, keepdim=True)


def _baseline_black_normalised(model: Explainable, x: Tensor) -> Tensor:
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


def pixel_flipping_logits(model: Explainable, x: Tensor, a: Tensor, features_in_step: int,
                          baseline: str = "black", batch_size: Optional[int] = None,
                          tie_break: str = "quantus") -> Tensor:
    """The logits of every class along the pixel-flipping perturbation (float32 [N, S + 1, C]).

    Column 0 is the unperturbed image; column s the image after step s, when the ``s *
    features_in_step`` most relevant features (Quantus's order: the 1-channel map broadcast
    over the C channels, ``np.argsort(-a)`` after normalising by the maximum) are set to the
    baseline. Every pixel-flipping score (:data:`FLIP_SCORES`) is a function of these.

    Batched: for a block of images the argsort is computed once; each step sets the next
    ``features_in_step`` features of a running copy to the baseline (``scatter_``) and the
    steps' copies of all images go through the model together, ``batch_size`` perturbed
    images per forward pass. ``tie_break="quantus"`` sorts with NumPy as Quantus does
    (exact equality); ``"stable"`` sorts on the device; ``"auto"``: :func:`resolve_tie_break`.
    ``baseline``: see :data:`BASELINES`.
    """
    _check_maps(a, x)
    if baseline not in BASELINES:
        raise ValueError(f"unknown baseline '{baseline}'; valid: {', '.join(BASELINES)}")
    tie_break = resolve_tie_break(tie_break, x.device)
    if int(features_in_step) < 1:
        raise ValueError(f"features_in_step must be >= 1, got {features_in_step}")
    n, c, h, w = x.shape
    nf, k = c * h * w, int(features_in_step)
    steps = math.ceil(nf / k)
    bs = int(batch_size or DEFAULT_BATCH)
    block = max(1, min(n, bs))
    per_pass = max(1, bs // block)                 # steps sharing one forward pass
    fill_all = BASELINES[baseline](model, x)        # [N, 1] or [N, C]
    first = _forward_chunked(model, x, bs)          # the unperturbed images
    logits = torch.empty(n, steps + 1, first.shape[1], dtype=torch.float32, device=x.device)
    logits[:, 0] = first

    with torch.inference_mode():
        for b0 in range(0, n, block):
            xb = x[b0:b0 + block].reshape(-1, nf).clone()
            nb = xb.shape[0]
            keys = normalise_by_max(a[b0:b0 + nb]).expand(nb, c, h, w).reshape(nb, nf)
            order = SORTERS[tie_break](keys)
            fill = fill_all[b0:b0 + nb]
            fill = fill.repeat_interleave(h * w, dim=1) if fill.shape[1] > 1 else fill.expand(nb, nf)
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
                    out = model(batch).float().view(m, nb, -1)
                    logits[b0:b0 + nb, 1 + done:2 + s] = out.transpose(0, 1)
                    done = s + 1
    return logits


def _true_probability(logits: Tensor, y: Tensor, temperature: Any = 1.0) -> Tensor:
    """Softmax probability of class y at every step [N, S + 1] (logits divided by T first: one
    temperature, or one per image [N])."""
    if isinstance(temperature, Tensor):
        z = logits / temperature.to(logits).view(-1, 1, 1)
    else:
        z = logits if temperature == 1.0 else logits / temperature
    return torch.softmax(z, dim=-1).gather(2, y[:, None, None].expand(-1, z.shape[1], 1))[..., 0]


def _score_probability(logits: Tensor, y: Tensor, temperature: float) -> Tensor:
    """The paper's curve: the softmax probability of the true class after each step (no
    point for the unperturbed image, as Quantus)."""
    return _true_probability(logits, y)[:, 1:]


def _score_normalised(logits: Tensor, y: Tensor, temperature: float) -> Tensor:
    """The paper's probabilities divided by the unperturbed one, that point included
    (starts at 1): what share of its confidence the model keeps."""
    p = _true_probability(logits, y)
    return p / p[:, :1]


def _score_calibrated(logits: Tensor, y: Tensor, temperature: float) -> Tensor:
    """The paper's curve on temperature-scaled probabilities softmax(z / T)."""
    return _true_probability(logits, y, temperature)[:, 1:]


def _score_logit(logits: Tensor, y: Tensor, temperature: float) -> Tensor:
    """The true-class logit minus the mean logit (softmax's shift removed), divided by its
    unperturbed value, that point included (starts at 1): the share of the evidence for the
    true class that remains, free of the model's logit scale. NaN for an image whose
    unperturbed true-class logit is not above the mean."""
    zy = logits.gather(2, y[:, None, None].expand(-1, logits.shape[1], 1))[..., 0]
    centred = zy - logits.mean(dim=2)
    base = centred[:, :1]
    return torch.where(base > 0, centred / torch.where(base > 0, base, torch.ones_like(base)),
                       torch.full_like(centred, float("nan")))


# name -> curve [N, S'] from the logits along the perturbation, the labels and a temperature
FLIP_SCORES: dict[str, Callable[[Tensor, Tensor, float], Tensor]] = {
    "probability": _score_probability,
    "normalised": _score_normalised,
    "calibrated": _score_calibrated,
    "logit": _score_logit,
}


def flip_curves(logits: Tensor, y: Any, score: str = "probability", temperature: Any = 1.0,
                a: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    """``(curves float32 [N, S'], auc float64 [N])`` of one pixel-flipping score (see
    :data:`FLIP_SCORES`) from :func:`pixel_flipping_logits`; AUC = :func:`curve_auc` (the
    paper's trapz / (points - 1)). With the maps ``a``, constant maps get NaN (their order
    of features would be NumPy's arbitrary order of ties)."""
    if score not in FLIP_SCORES:
        raise ValueError(f"unknown pixel-flipping score '{score}'; valid: {', '.join(FLIP_SCORES)}")
    y = _as_long(y, logits.shape[0], logits.device, "y")
    t = temperature if isinstance(temperature, Tensor) else float(temperature)
    curves = FLIP_SCORES[score](logits.float(), y, t).float()
    auc = curve_auc(curves)
    if a is not None:
        z = is_constant_map(a).to(curves.device)
        curves[z] = float("nan")
        auc[z] = float("nan")
    return curves, auc


def pixel_flipping(model: Explainable, x: Tensor, y: Any, a: Tensor, features_in_step: int,
                   baseline: str = "black", batch_size: Optional[int] = None,
                   tie_break: str = "quantus", constant_map_nan: bool = True,
                   return_unperturbed: bool = False) -> tuple[Tensor, ...]:
    """Quantus ``PixelFlipping`` (softmax, ``abs=False``, ``normalise=True``), batched.

    Returns ``(curves float32 [N, S], auc float64 [N])``: the softmax probability of class
    ``y`` after each step, and ``curve_auc`` = trapz / (S - 1). Lower is better. See
    :func:`pixel_flipping_logits` for the perturbation, the batching and ``tie_break``.
    ``constant_map_nan``: constant maps (all-zero included) get NaN curves and AUC, as the
    authors do for all-zero maps (their ranking would be NumPy's arbitrary order of ties);
    False keeps the numbers Quantus gives them inside a batch call.
    ``return_unperturbed``: also return the probability of class ``y`` on the unperturbed
    image (float32 [N], defined for every map): the point at 0 % removed, which Quantus
    does not record and the AUC does not include.
    """
    logits = pixel_flipping_logits(model, x, a, features_in_step, baseline, batch_size, tie_break)
    curves, auc = flip_curves(logits, y, "probability", a=a if constant_map_nan else None)
    if not return_unperturbed:
        return curves, auc
    p0 = _true_probability(logits[:, :1], _as_long(y, x.shape[0], x.device, "y"))[:, 0]
    return curves, auc, p0


def faithfulness_correlation(model: Explainable, x: Tensor, y: Any, a: Tensor, subset_size: int = 224,
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
