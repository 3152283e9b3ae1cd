"""Consistency of an explanation under a crop and a flip: is the map of a transformed image the
transformed map? (The facet CGC trains for; ../shared/related/CGC.md.)"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from torch import Tensor

from ..attribution import resolve_options
from ..augment import apply_crop_flip, sample_crop_flip_params
from ..contract import Explainable
from ._common import MethodLike, _as_long, _attribute_chunked, _sample_ids, resolve_method, sample_seed
from .map_similarity import ssim


def consistency_transforms(n: int, height: int, width: int, scale: Sequence[float] = (0.08, 1.0),
                           seed: int = 0, sample_ids: Optional[Any] = None) -> dict[str, Tensor]:
    """One random resized crop + flip T per image, drawn from a generator seeded by the
    sample id (:func:`sample_seed`): the same T for an image in every model and batch."""
    ids = _sample_ids(n, sample_ids)
    parts = []
    for sid in ids:
        g = torch.Generator().manual_seed(sample_seed(seed, int(sid), "consistency"))
        parts.append(sample_crop_flip_params(1, height, width, scale, generator=g))
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]} if parts else {}


def cosine(u: Tensor, v: Tensor) -> Tensor:
    """Row-wise cosine similarity of flattened maps (float64 [N]); NaN when a map is all zero."""
    u, v = u.reshape(u.shape[0], -1).double(), v.reshape(v.shape[0], -1).double()
    den = u.norm(dim=1) * v.norm(dim=1)
    c = (u * v).sum(dim=1) / torch.where(den > 0, den, torch.ones_like(den))
    return torch.where(den > 0, c, torch.full_like(c, float("nan")))


def unscaled(method: MethodLike, **options: Any) -> MethodLike:
    """The method without its per-map min-max scaling (``scale=False``) where it has one: a
    min-max scaled map is not equivariant even when the explanation is (the minimum of a crop
    is not the image's), so consistency compares maps before that scaling."""
    if isinstance(method, str):
        if "scale" in resolve_options(method):
            options = {**options, "scale": False}
        return resolve_method(method, **options)
    return resolve_method(method, **options)


def _max_scaled(m: Tensor) -> Tensor:
    """Each map divided by its maximum (an all-zero map stays zero): equal maps stay equal."""
    top = m.flatten(1).amax(dim=1).view(-1, *([1] * (m.dim() - 1)))
    return m / torch.where(top > 0, top, torch.ones_like(top))


def consistency(model: Explainable, x: Tensor, target: Any, method: MethodLike,
                crop_scale: Sequence[float] = (0.08, 1.0), seed: int = 0, sample_ids: Optional[Any] = None,
                batch_size: Optional[int] = None, method_options: Optional[dict[str, Any]] = None
                ) -> tuple[Tensor, Tensor]:
    """(cosine, SSIM) between T(map(x)) and map(T(x)) per image (float64 [N] each; higher =
    more consistent), T a seeded random resized crop (area ``crop_scale``) and flip
    (:func:`consistency_transforms`), applied to images and maps with the same bilinear warp
    (:func:`xai_utils.ops.augment.apply_crop_flip`); the map of T(x) explains the same class.
    Maps are compared before the method's min-max scaling (:func:`unscaled`); SSIM (data
    range 1) sees each map divided by its maximum. ``method_options``: the method's options (its
    ``scale`` is overridden, see above; a mapping, so that a method's own ``seed`` option and
    the metric's ``seed`` stay apart)."""
    fn = unscaled(method, **(method_options or {}))
    target = _as_long(target, x.shape[0], x.device, "target")
    maps = _attribute_chunked(fn, model, x, target, batch_size)
    params = consistency_transforms(x.shape[0], x.shape[-2], x.shape[-1], crop_scale, seed, sample_ids)
    params = {k: v.to(x.device) for k, v in params.items()}
    warped = apply_crop_flip(maps.to(x.dtype), params)
    maps_t = _attribute_chunked(fn, model, apply_crop_flip(x, params), target, batch_size)
    return cosine(warped, maps_t), ssim(_max_scaled(warped), _max_scaled(maps_t))
