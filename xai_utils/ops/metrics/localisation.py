"""Coherence with object masks: Quantus PointingGame and AttributionLocalisation."""
from __future__ import annotations


import torch
from torch import Tensor

from ._common import (_check_maps,
                      is_constant_map, is_zero_map, normalise_by_max)


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
