"""Shared helpers of the metrics: method resolution, per-sample seeds, checks, chunking."""
from __future__ import annotations

import zlib
from typing import Any, Callable, Optional, Union

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from ..attribution import attribute, get_method, resolve_options
from ..contract import Explainable

AttributionFn = Callable[[nn.Module, Tensor, Tensor], Tensor]
MethodLike = Union[str, AttributionFn]
DEFAULT_BATCH = 256


def resolve_method(method: MethodLike, **options: Any) -> AttributionFn:
    """A callable ``(model, x, target) -> maps [N, 1, H, W]``.

    ``method`` is a callable (returned as is, with ``options`` bound) or a name of the
    :data:`xai_utils.ops.attribution.METHODS` registry.
    """
    if callable(method):
        if not options:
            return method
        return lambda model, x, target: method(model, x, target, **options)
    if not isinstance(method, str):
        raise TypeError(f"method must be a registry name or a callable (model, x, target) -> maps, got {method!r}")
    get_method(method)                                   # clear error for an unknown name
    resolve_options(method, **options)                   # ... and for an unknown option
    return lambda model, x, target: attribute(model, x, target, method, **options)


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


def _attribute_chunked(method: AttributionFn, model: Explainable, x: Tensor, target: Tensor,
                       batch_size: Optional[int]) -> Tensor:
    bs = batch_size or DEFAULT_BATCH
    return torch.cat([method(model, x[s:s + bs], target[s:s + bs]).to(x.device)
                      for s in range(0, x.shape[0], bs)])


def _forward_chunked(model: Explainable, x: Tensor, batch_size: Optional[int]) -> Tensor:
    bs = batch_size or DEFAULT_BATCH
    with torch.inference_mode():
        return torch.cat([model(x[s:s + bs]).float() for s in range(0, x.shape[0], bs)])


def num_classes_of(model: Explainable, x: Tensor) -> int:
    head = getattr(model, "head", None)
    if isinstance(head, nn.Linear):
        return head.out_features
    return int(_forward_chunked(model, x[:1], 1).shape[-1])
