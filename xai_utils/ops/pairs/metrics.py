"""Pair metrics: how well a pair of maps explains the similarity s of its two images.

The score tracked is always s (:mod:`.similarity`, the run's ``pair_space``). Registered in
:data:`PAIR_METRICS` (the same :class:`~xai_utils.ops.metrics.spec.MetricSpec` entries as the
single-image metrics: label, facet, direction, bounds), computed for whole batches of pairs:

* ``pair_deletion`` (lower is better): the image's pixels, most relevant first by its own
  map, set to 0 (black), ``pair_pixels_per_step`` pixels (all channels) a step: 32 px
  images give 32 steps of 32 pixels; area under s over the fraction deleted, trapezoid on
  [0, 1], of the raw s (not divided by s at 0). Row ``pair_deletion``: "simultaneous", both
  images perturbed, each in the order of its own map; row ``pair_deletion[conditional]``:
  one image perturbed, the other intact, the mean of the two ways round.
* ``pair_insertion`` (higher is better): the same from blurred images (Gaussian, kernel
  ``pair_blur_kernel``, sigma ``pair_blur_sigma`` px; 5 and 2 for 32 px), pixels restored in
  the order of the map.
* Both also give ``[...,normalised]``: the simultaneous AUC divided by the pair's own s
  (NaN for s <= 0). The raw AUC carries the level of s, so a model whose pairs are more
  similar gets a higher insertion and a higher deletion AUC whatever its maps; divided by s,
  the curve starts (deletion) or ends (insertion) at 1 for every model, as the normalised
  pixel-flipping score does for confidence.
* ``pair_average_drop`` (lower is better) = max(0, s - s') / s and ``pair_average_increase``
  (higher is better) = [s' > s], with s' the similarity of the two images each multiplied
  by its min-max scaled map. Undefined (NaN) for s <= 0: a relative drop of a negative or
  zero similarity has no meaning (always so for ``pair_space: distance``).
* ``pair_max_sensitivity`` (lower is better): ``pair_max_sensitivity_samples`` draws of
  uniform noise in +-``pair_max_sensitivity_radius`` (one draw added to both images, seeded
  by the pair), maps recomputed; per image the largest relative change
  ``||M(x + u) - M(x)|| / ||M(x)||`` (Frobenius), then the mean over the two images (NaN if
  a map is all zero).

The evaluation stage writes one row per pair, method and metric, with the pair's kind in
the row name: ``pair_deletion[view]``, ``pair_deletion[view,conditional]`` (see
:mod:`xai_utils.stages.pairs`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from ...registry import Registry
from ..attribution import minmax_scale
from ..augment import apply_gaussian_blur
from ..contract import Embedding
from ..metrics._common import sample_seed
from ..metrics.spec import MetricResult, MetricSpec
from .methods import embed_chunked
from .spaces import score

PairMethodFn = Callable[[nn.Module, Tensor, Tensor], tuple[Tensor, Tensor]]


@dataclass
class PairInputs:
    """Everything a pair metric may need, for one pair method on one run's pairs."""

    model: Embedding
    x1: Tensor                                   # [N, C, H, W], pixel space
    x2: Tensor
    maps1: Tensor                                # stored maps [N, 1, H, W]
    maps2: Tensor
    index1: np.ndarray                           # indices into the evaluation split [N]
    index2: np.ndarray
    method: Optional[PairMethodFn] = None        # recomputes the maps (max-sensitivity)
    batch_size: int = 256
    # settings: the run configuration keys of the same name
    pair_space: str = "cosine"
    pair_pixels_per_step: int = 32
    pair_blur_kernel: int = 5
    pair_blur_sigma: float = 2.0
    pair_max_sensitivity_samples: int = 10
    pair_max_sensitivity_radius: float = 0.2
    seed: int = 0                                # metric_seed
    cache: dict = field(default_factory=dict)


# PairInputs fields that come from the run configuration (config key -> field)
PAIR_SETTINGS: dict[str, str] = {"metric_seed": "seed", **{k: k for k in (
    "pair_space", "pair_pixels_per_step", "pair_blur_kernel", "pair_blur_sigma",
    "pair_max_sensitivity_samples", "pair_max_sensitivity_radius")}}

PAIR_METRICS: Registry[MetricSpec] = Registry("pair metric")


def register_pair_metric(name: str, label: str, higher_is_better: bool, bounds=(None, None),
                         description: str = "", override: bool = False) -> Callable:
    """Register ``compute(PairInputs) -> MetricResult`` under ``name``; a name already
    registered is refused unless ``override``."""
    def wrap(fn: Callable[[PairInputs], MetricResult]) -> Callable[[PairInputs], MetricResult]:
        PAIR_METRICS.register(name, MetricSpec(name, fn, label, frozenset({"model", "pairs"}), higher_is_better,
                                               "pairs", False, False, tuple(bounds), description), override)
        return fn
    return wrap


def check_pair_metrics(names) -> list[str]:
    bad = [m for m in names if m not in PAIR_METRICS]
    if bad:
        raise ValueError(f"unknown pair metric(s) {bad}; available: {', '.join(PAIR_METRICS)}")
    return list(names)


# ----------------------------------------------------------------------------- perturbation curves

def blur(x: Tensor, kernel: int, sigma: float) -> Tensor:
    """Gaussian blur of every image (separable, reflect padding), the insertion's start."""
    n = x.shape[0]
    params = {"blur": torch.ones(n, dtype=torch.bool), "sigma": torch.full((n,), float(sigma))}
    return apply_gaussian_blur(x, params, kernel)


def step_fractions(n_pixels: int, per_step: int) -> Tensor:
    """Pixels changed after each step (0, k, 2k, ..., all) as fractions of the image (float64)."""
    counts = list(range(0, n_pixels, per_step)) + [n_pixels]
    return torch.tensor(counts, dtype=torch.float64) / n_pixels


def perturbed(x: Tensor, maps: Tensor, start: Tensor, fractions: Tensor) -> Tensor:
    """[N, S, C, H, W]: image ``x`` with its first (by ``maps``, descending, ties in pixel order)
    ``fraction`` of pixels taken from ``start`` at each step: deletion when ``start`` is
    black, insertion when ``x`` and ``start`` are swapped (a blurred image restored)."""
    n, c, h, w = x.shape
    order = torch.argsort(maps.reshape(n, -1), dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(h * w, device=x.device).expand(n, -1))
    counts = torch.round(fractions * h * w).long().to(x.device)                  # [S]
    changed = (rank[:, None, :] < counts[None, :, None]).view(n, -1, 1, h, w)     # [N, S, 1, H, W]
    return torch.where(changed, start.unsqueeze(1), x.unsqueeze(1))


def trapezoid(curves: Tensor, fractions: Tensor) -> Tensor:
    """Area under each curve [N, S] over the x positions ``fractions`` [S] (float64 [N])."""
    c, f = curves.double(), fractions.to(curves.device)
    return ((c[:, 1:] + c[:, :-1]) * (f[1:] - f[:-1]) / 2).sum(dim=1)


def similarity_curves(d: PairInputs, mode: str) -> dict[str, Tensor]:
    """s along the deletion or insertion of both images: ``simultaneous`` [N, S] (both
    perturbed), ``conditional1`` (x1 perturbed, x2 intact), ``conditional2``; and
    ``fractions`` [S]. Computed once per mode and shared (``d.cache``)."""
    key = ("curves", mode, d.pair_pixels_per_step, d.pair_blur_kernel, d.pair_blur_sigma)
    if key in d.cache:
        return d.cache[key]
    n, _, h, w = d.x1.shape
    fr = step_fractions(h * w, d.pair_pixels_per_step)
    embs = []
    for x, m in ((d.x1, d.maps1), (d.x2, d.maps2)):
        parts = []
        per = max(1, d.batch_size // len(fr))                  # images per chunk of S perturbations
        for s in range(0, n, per):
            xs, ms = x[s:s + per], m[s:s + per]
            if mode == "deletion":
                seq = perturbed(xs, ms, torch.zeros_like(xs), fr)
            else:
                seq = perturbed(blur(xs, d.pair_blur_kernel, d.pair_blur_sigma), ms, xs, fr)
            parts.append(embed_chunked(d.model, seq.flatten(0, 1), d.pair_space, d.batch_size)
                         .view(xs.shape[0], len(fr), -1))
        embs.append(torch.cat(parts))
    e1, e2 = embs                                              # [N, S, D]; step 0 = the start image
    intact1 = embed_chunked(d.model, d.x1, d.pair_space, d.batch_size)[:, None].expand_as(e1)
    intact2 = embed_chunked(d.model, d.x2, d.pair_space, d.batch_size)[:, None].expand_as(e2)
    out = {"fractions": fr, "simultaneous": score(e1, e2, d.pair_space),
           "conditional1": score(e1, intact2, d.pair_space), "conditional2": score(intact1, e2, d.pair_space)}
    d.cache[key] = out
    return out


def _auc_rows(d: PairInputs, mode: str) -> MetricResult:
    c = similarity_curves(d, mode)
    auc = trapezoid(c["simultaneous"], c["fractions"])
    cond = (trapezoid(c["conditional1"], c["fractions"]) + trapezoid(c["conditional2"], c["fractions"])) / 2
    intact = c["simultaneous"][:, 0 if mode == "deletion" else -1].double()       # s of the pair itself
    return MetricResult(auc, curves=c["simultaneous"],
                        variants={"conditional": cond, "normalised": _undefined_for_nonpositive(intact, auc / intact)})


@register_pair_metric("pair_deletion", "Pair deletion AUC", higher_is_better=False,
                      description="area under s while both images' most relevant pixels are set to 0; "
                                  "[conditional]: one image at a time")
def pair_deletion(d: PairInputs) -> MetricResult:
    return _auc_rows(d, "deletion")


@register_pair_metric("pair_insertion", "Pair insertion AUC", higher_is_better=True,
                      description="area under s while both images' most relevant pixels are restored into "
                                  "their blurred copies; [conditional]: one image at a time")
def pair_insertion(d: PairInputs) -> MetricResult:
    return _auc_rows(d, "insertion")


# ----------------------------------------------------------------------------- masking by the maps

def masked_similarity(d: PairInputs) -> tuple[Tensor, Tensor]:
    """(s, s'): the similarity of the pair and of the two images multiplied by their
    min-max scaled maps (float64 [N] each)."""
    key = ("masked",)
    if key not in d.cache:
        n = d.x1.shape[0]
        x = torch.cat([d.x1, d.x2, d.x1 * minmax_scale(d.maps1), d.x2 * minmax_scale(d.maps2)])
        e = embed_chunked(d.model, x, d.pair_space, d.batch_size)
        d.cache[key] = (score(e[:n], e[n:2 * n], d.pair_space).double(),
                        score(e[2 * n:3 * n], e[3 * n:], d.pair_space).double())
    return d.cache[key]


def _undefined_for_nonpositive(s: Tensor, values: Tensor) -> Tensor:
    return torch.where(s > 0, values, torch.full_like(values, math.nan))


@register_pair_metric("pair_average_drop", "Pair average drop", higher_is_better=False, bounds=(0.0, None),
                      description="max(0, s - s')/s, s' the similarity of the images masked by their maps "
                                  "(NaN for s <= 0)")
def pair_average_drop(d: PairInputs) -> MetricResult:
    s, s_masked = masked_similarity(d)
    return MetricResult(_undefined_for_nonpositive(s, (s - s_masked).clamp_min(0) / s.abs().clamp_min(1e-12)))


@register_pair_metric("pair_average_increase", "Pair average increase", higher_is_better=True, bounds=(0.0, 1.0),
                      description="1 when the images masked by their maps are more similar than the "
                                  "images (NaN for s <= 0)")
def pair_average_increase(d: PairInputs) -> MetricResult:
    s, s_masked = masked_similarity(d)
    return MetricResult(_undefined_for_nonpositive(s, (s_masked > s).double()))


# ----------------------------------------------------------------------------- robustness

def pair_noise(shape, index1: np.ndarray, index2: np.ndarray, radius: float, seed: int, draw: int) -> Tensor:
    """Uniform noise in [-radius, radius], one image [C, H, W] per pair (the same for both of
    its images), seeded by (seed, pair, draw): every model sees the same draws."""
    out = torch.empty((len(index1), *shape), dtype=torch.float32)
    for k, (a, b) in enumerate(zip(np.asarray(index1).tolist(), np.asarray(index2).tolist())):
        rs = np.random.RandomState(sample_seed(seed, a, f"pair_max_sensitivity:{b}:{draw}"))
        out[k] = torch.from_numpy(rs.uniform(-radius, radius, size=shape).astype(np.float32))
    return out


@register_pair_metric("pair_max_sensitivity", "Pair max-sensitivity", higher_is_better=False, bounds=(0.0, None),
                      description="largest relative change of the pair's maps under the same uniform noise on "
                                  "both images, mean of the two images")
def pair_max_sensitivity(d: PairInputs) -> MetricResult:
    if d.method is None:
        raise ValueError("pair_max_sensitivity recomputes the maps: PairInputs.method is needed")
    n = d.x1.shape[0]
    worst = [torch.zeros(n, dtype=torch.float64, device=d.x1.device) for _ in range(2)]
    refs = [m.reshape(n, -1).double() for m in (d.maps1, d.maps2)]
    norms = [r.norm(dim=1) for r in refs]
    for r in range(d.pair_max_sensitivity_samples):
        u = pair_noise(d.x1.shape[1:], d.index1, d.index2, d.pair_max_sensitivity_radius, d.seed, r).to(d.x1)
        new = [], []
        for s in range(0, n, d.batch_size):
            m1, m2 = d.method(d.model, d.x1[s:s + d.batch_size] + u[s:s + d.batch_size],
                              d.x2[s:s + d.batch_size] + u[s:s + d.batch_size])
            new[0].append(m1)
            new[1].append(m2)
        for k in range(2):
            change = (torch.cat(new[k]).reshape(n, -1).double() - refs[k]).norm(dim=1) / norms[k].clamp_min(1e-300)
            worst[k] = torch.maximum(worst[k], change)
    value = (worst[0] + worst[1]) / 2
    return MetricResult(torch.where((norms[0] > 0) & (norms[1] > 0), value, torch.full_like(value, math.nan)))
