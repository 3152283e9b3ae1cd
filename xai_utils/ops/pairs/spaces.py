"""The scalar a pair explanation explains: the similarity of two images under a model.

    s = similarity(model, x1, x2)                       # float32 [N], one per pair

Spaces (the registry :data:`SPACES`; the run configuration key ``pair_space``):

* ``cosine`` (default): cosine of the pooled backbone features ``model.features(x)``, the
  representation the linear probe reads (L2-normalised for SCL and TL, whose probe is
  trained on normalised features; the cosine is the same either way). One scalar for every
  objective, so CE, SCL and TL are compared on the same quantity.
* ``projection``: cosine of the SCL projection head's output (the space SupCon's loss was
  computed in), for models trained with one (SCL, ExCon, ExConB: ``model.projection``).
* ``distance``: ``-||f(x1) - f(x2)||^2`` on the raw pooled features, the quantity the
  triplet loss trains (higher = more similar). Unbounded and <= 0, so average drop and
  increase are undefined there (NaN).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..contract import Embedding


@dataclass(frozen=True)
class Space:
    name: str
    embed: Callable[[nn.Module, Tensor], Tensor]          # images [N, C, H, W] -> embeddings [N, D]
    score: Callable[[Tensor, Tensor], Tensor]             # embeddings [N, D] x 2 -> similarity [N]
    description: str = ""


def _features(model: Embedding, x: Tensor) -> Tensor:
    return model.features(x).float()


def _projection(model: Embedding, x: Tensor) -> Tensor:
    head = getattr(model, "projection", None)
    if head is None:
        raise ValueError("pair_space 'projection' needs a model trained with a projection head (SCL, ExCon, "
                         "ExConB) and saved with it (retrain runs trained before heads were saved)")
    return head(model.features(x).float()).float()


def _cosine(e1: Tensor, e2: Tensor) -> Tensor:
    return F.cosine_similarity(e1, e2, dim=-1, eps=1e-8)


def _neg_sq_distance(e1: Tensor, e2: Tensor) -> Tensor:
    return -((e1 - e2) ** 2).sum(dim=-1)


SPACES: dict[str, Space] = {
    "cosine": Space("cosine", _features, _cosine, "cosine of the pooled backbone features"),
    "projection": Space("projection", _projection, _cosine, "cosine of the SCL projection head's output"),
    "distance": Space("distance", _features, _neg_sq_distance,
                      "minus the squared Euclidean distance of the raw pooled features (TL's quantity)"),
}


def get_space(name: str) -> Space:
    if name not in SPACES:
        raise ValueError(f"unknown pair space '{name}'; available: {', '.join(SPACES)}")
    return SPACES[name]


def embed(model: Embedding, x: Tensor, space: str = "cosine") -> Tensor:
    """Embeddings of images in ``space`` (float32 [N, D]); differentiable."""
    return get_space(space).embed(model, x)


def score(e1: Tensor, e2: Tensor, space: str = "cosine") -> Tensor:
    """Similarity of embeddings row by row (float32 [N])."""
    return get_space(space).score(e1, e2)


def similarity(model: Embedding, x1: Tensor, x2: Tensor, space: str = "cosine") -> Tensor:
    """s(x1_i, x2_i) for every pair i (float32 [N]); one joint forward of both images
    (BatchNorm must be in eval mode for a pair's value not to depend on the batch)."""
    if x1.shape != x2.shape:
        raise ValueError(f"x1 and x2 must have the same shape, got {tuple(x1.shape)} and {tuple(x2.shape)}")
    e = embed(model, torch.cat([x1, x2]), space)
    return score(e[:x1.shape[0]], e[x1.shape[0]:], space)
