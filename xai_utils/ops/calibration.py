"""Temperature scaling (Guo et al. 2017) on logits: the fit and the calibration measures.

:func:`fit_temperature` finds the T > 0 that minimises the negative log-likelihood (NLL) of
``softmax(logits / T)``; :func:`crossfit_temperatures` fits one T on each of two folds of the
images and gives every image the other fold's, so that no image is scored with a temperature
fitted on itself; :func:`expected_calibration_error` measures how far confidence is from
accuracy (per-image temperatures allowed). The calibration stage
(:mod:`xai_utils.stages.calibrate`) applies them to a run.
"""
from __future__ import annotations

from typing import Union

import numpy as np
import torch
import torch.nn.functional as F

ECE_BINS = 15


# the range a fitted temperature is kept in: on a few images that a model gets all right (or
# all wrong) the unbounded minimum runs off towards 0 (or infinity; 4.8e11 was seen in a rehearsal)
TEMPERATURE_BOUNDS = (1e-2, 1e2)


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 200) -> float:
    """The T in :data:`TEMPERATURE_BOUNDS` minimising the mean NLL of ``softmax(logits / T)``
    (float64, LBFGS on log T, then clipped to the bounds: the NLL has one minimum in T, so the
    clipped value is the minimum within them)."""
    z = logits.detach().double().cpu()
    y = labels.detach().long().cpu()
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, tolerance_grad=1e-12,
                            tolerance_change=1e-14, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    low, high = TEMPERATURE_BOUNDS
    return min(max(float(log_t.detach().exp()), low), high)


Temperature = Union[float, torch.Tensor]        # one for all images, or one per image [N]


def _scaled(logits: torch.Tensor, temperature: Temperature) -> torch.Tensor:
    t = torch.as_tensor(temperature, dtype=torch.float64)
    return logits.double() / (t.view(-1, 1) if t.dim() else t)


def nll(logits: torch.Tensor, labels: torch.Tensor, temperature: Temperature = 1.0) -> float:
    return float(F.cross_entropy(_scaled(logits, temperature), labels.long()))


def crossfit_folds(n: int, seed: int = 0) -> np.ndarray:
    """Two folds of ``n`` images (int64 0/1 [N], sizes n // 2 and the rest), by a seeded permutation."""
    fold = np.ones(n, dtype=np.int64)
    fold[np.random.default_rng(seed).permutation(n)[:n // 2]] = 0
    return fold


def crossfit_temperatures(logits: torch.Tensor, labels: torch.Tensor, fold: np.ndarray
                          ) -> tuple[torch.Tensor, tuple[float, float]]:
    """(per-image temperatures float64 [N], (T of fold 0, T of fold 1)): a temperature fitted on
    each fold's images; every image gets the one fitted on the *other* fold."""
    fold_t = torch.as_tensor(fold)
    if not ((fold_t == 0).sum() >= 2 and (fold_t == 1).sum() >= 2):
        raise ValueError(f"cross-fitting needs at least 2 images in each fold, got {np.bincount(fold, minlength=2)}")
    t0 = fit_temperature(logits[fold_t == 0], labels[fold_t == 0])
    t1 = fit_temperature(logits[fold_t == 1], labels[fold_t == 1])
    return torch.where(fold_t == 0, torch.tensor(t1, dtype=torch.float64), torch.tensor(t0, dtype=torch.float64)), (t0, t1)


def expected_calibration_error(logits: torch.Tensor, labels: torch.Tensor, temperature: Temperature = 1.0,
                               n_bins: int = ECE_BINS) -> float:
    """ECE: over ``n_bins`` equal-width bins of the top-class confidence, the share of images
    in the bin times |accuracy - mean confidence| of the bin, summed (a fraction in [0, 1])."""
    p = torch.softmax(_scaled(logits, temperature), dim=1)
    conf, pred = p.max(dim=1)
    correct = (pred == labels.long()).double()
    bins = torch.clamp((conf * n_bins).ceil().long() - 1, 0, n_bins - 1)   # (k/B, (k+1)/B]
    ece = 0.0
    for b in range(n_bins):
        sel = bins == b
        if bool(sel.any()):
            ece += float(sel.double().mean()) * abs(float(correct[sel].mean()) - float(conf[sel].mean()))
    return ece
