"""Complexity of a map: entropy (Quantus Complexity) and Gini index (Quantus Sparseness)."""
from __future__ import annotations


import torch
from torch import Tensor

from ._common import (_check_maps,
                      normalise_by_max)


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
