"""What the attribution methods and metrics ask of a model, written down as typed protocols.

The code that computes on tensors reads a model only through these members, whatever its class:
the study's own model (:class:`~xai_utils.study.models.ExplainedModel`), a model a user brings
(:class:`~xai_utils.study.brought.BroughtModel`, made by :func:`~xai_utils.study.brought.bring`
from any timm or torchvision classifier) or a class of the user's own that has them. Both
protocols are checked at run time (``isinstance``) by the entry points, :func:`require`, so a
model without them is refused in one line naming what it lacks, not deep inside a method.
"""
from __future__ import annotations

from typing import Iterator, Protocol, runtime_checkable

import torch.nn as nn
from torch import Tensor


@runtime_checkable
class Explainable(Protocol):
    """An ``nn.Module`` that maps pixel-space images [N, C, H, W] in [0, 1] to logits [N, K].

    ``mean``, ``std``: the per-channel normalisation [1, C, 1, 1] it applies first (metrics that
    perturb in the normalised space undo it); ``normalize_input``: that normalisation;
    ``cam_layer``: the layer whose activations Grad-CAM and Eigen-CAM explain."""

    mean: Tensor
    std: Tensor

    @property
    def cam_layer(self) -> nn.Module: ...

    def normalize_input(self, x: Tensor) -> Tensor: ...

    def __call__(self, x: Tensor) -> Tensor: ...

    # what the methods use of nn.Module: its device, eval mode while explaining, ReLUs set out of place
    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...

    def modules(self) -> Iterator[nn.Module]: ...

    def eval(self) -> nn.Module: ...


@runtime_checkable
class Embedding(Explainable, Protocol):
    """An :class:`Explainable` model with pooled features [N, D]: what the pair methods and
    metrics compare two images by (the ``cosine`` space)."""

    def features(self, x: Tensor) -> Tensor: ...


def require(model: object, contract: type = Explainable) -> None:
    """Refuse (TypeError, one line) a model that lacks a member of ``contract``."""
    if isinstance(model, contract):
        return
    members = [m for m in ("mean", "std", "cam_layer", "normalize_input", "features")
               if any(m in vars(c) or m in vars(c).get("__annotations__", {}) for c in contract.__mro__)]
    missing = [m for m in members if not hasattr(model, m)]
    raise TypeError(f"{type(model).__name__} lacks {', '.join(missing) or 'a member'} of the {contract.__name__} "
                    "contract (xai_utils.ops.contract): wrap it with xai_utils.study.brought.bring(model), or call "
                    "xai_utils.evaluate / xai_utils.attribute, which do")
