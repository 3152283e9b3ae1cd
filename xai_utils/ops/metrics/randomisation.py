"""Model-randomisation sanity check (Adebayo et al. 2018)."""
from __future__ import annotations

import copy
from typing import Any, Optional

import torch
import torch.nn as nn
from torch import Tensor

from ..contract import Explainable
from ._common import (MethodLike, _as_long, _attribute_chunked, resolve_method)
from .map_similarity import SIMILARITIES


def randomise_model(model: Explainable, seed: int = 0) -> Explainable:
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


def model_randomisation(model: Explainable, x: Tensor, target: Any, method: MethodLike,
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
