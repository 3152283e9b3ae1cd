"""What the attribution methods and metrics ask of a model, written down as typed protocols.

The code that computes on tensors reads a model only through these members, whatever its class:
the study's own model (:class:`~xai_utils.study.models.ExplainedModel`), a model a user brings
(:class:`~xai_utils.study.brought.BroughtModel`, made by :func:`~xai_utils.study.brought.bring`
from any timm or torchvision classifier) or a class of the user's own that has them.

At run time a model is checked with :func:`holds` / :func:`require` (``hasattr`` on each
member), not ``isinstance``: since Python 3.12 a runtime protocol's ``isinstance`` looks members
up statically, and an ``nn.Module``'s buffers (``mean``, ``std``) live in its ``_buffers``, where
a static lookup does not see them.
"""
from __future__ import annotations

from typing import Iterator, Protocol

import torch.nn as nn
from torch import Tensor


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


class Embedding(Explainable, Protocol):
    """An :class:`Explainable` model with pooled features [N, D]: what the pair methods and
    metrics compare two images by (the ``cosine`` space)."""

    def features(self, x: Tensor) -> Tensor: ...


# the members each protocol adds to nn.Module's (what a model must have beyond being a module)
MEMBERS: dict[type, tuple[str, ...]] = {Explainable: ("mean", "std", "cam_layer", "normalize_input")}
MEMBERS[Embedding] = MEMBERS[Explainable] + ("features",)


def lacks(model: object, contract: type = Explainable) -> list[str]:
    """The members of ``contract`` that ``model`` does not have."""
    return [m for m in MEMBERS[contract] if not hasattr(model, m)]


def holds(model: object, contract: type = Explainable) -> bool:
    """Whether ``model`` has every member of ``contract``."""
    return not lacks(model, contract)


def require(model: object, contract: type = Explainable) -> None:
    """Refuse (TypeError, one line) a model that lacks a member of ``contract``."""
    missing = lacks(model, contract)
    if missing:
        raise TypeError(f"{type(model).__name__} lacks {', '.join(missing)} of the {contract.__name__} contract "
                        "(xai_utils.ops.contract): wrap it with xai_utils.study.brought.bring(model), or call "
                        "xai_utils.evaluate / xai_utils.attribute, which do")
