"""Temperature scaling (Guo et al. 2017) on logits: the fit and the calibration measures.

:func:`fit_temperature` finds the T > 0 that minimises the negative log-likelihood (NLL) of
``softmax(logits / T)``; :func:`expected_calibration_error` measures how far confidence is
from accuracy. The calibration stage (:mod:`xai_utils.stages.calibrate`) applies them to a run.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

ECE_BINS = 15


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 200) -> float:
    """The T > 0 minimising the mean NLL of ``softmax(logits / T)`` (float64, LBFGS on log T)."""
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
    return float(log_t.detach().exp())


def nll(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> float:
    return float(F.cross_entropy(logits.double() / temperature, labels.long()))


def expected_calibration_error(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0,
                               n_bins: int = ECE_BINS) -> float:
    """ECE: over ``n_bins`` equal-width bins of the top-class confidence, the share of images
    in the bin times |accuracy - mean confidence| of the bin, summed (a fraction in [0, 1])."""
    p = torch.softmax(logits.double() / temperature, dim=1)
    conf, pred = p.max(dim=1)
    correct = (pred == labels.long()).double()
    bins = torch.clamp((conf * n_bins).ceil().long() - 1, 0, n_bins - 1)   # (k/B, (k+1)/B]
    ece = 0.0
    for b in range(n_bins):
        sel = bins == b
        if bool(sel.any()):
            ece += float(sel.double().mean()) * abs(float(correct[sel].mean()) - float(conf[sel].mean()))
    return ece
