"""Training objectives: one registry, the single source of objective names and properties.

Each objective is an :class:`Objective` subclass registered under its name
(``@register_objective("scl")``). Its class attributes say everything the rest of the
companion needs to know about it:

* ``label``, ``color``: how tables and figures name and draw it (Okabe & Ito colours);
* ``views``: augmented views per image in a training step; ``augmentation``: the recipe
  that ``augmentation: auto`` means for it; ``min_batch``: the smallest batch it can use;
* ``needs_probe``: a linear probe on frozen, L2-normalised features becomes its classifier;
* ``normalize_features``: the explained model L2-normalises the pooled features before
  its linear head (true exactly when the head is that probe);
* ``in_paper``: one of the paper's three objectives (a profile that lists no objectives
  runs these).

The order of :data:`OBJECTIVES` is the order of columns in every table and figure.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import RunConfig
from .losses import SupConLoss, TripletLoss
from .models import ExplainedModel, ProjectionHead


class Objective(nn.Module):
    """What a training step optimises, given pooled backbone features of all views.

    Subclasses own any extra trainable module (the SCL projection head), which is saved in
    the checkpoint and dropped after training.
    """

    name: str = ""
    label: str = ""
    color: str = "#000000"
    views: int = 1
    augmentation: str = "ce"
    min_batch: int = 1
    needs_probe: bool = False
    normalize_features: bool = False
    in_paper: bool = False

    def __init__(self, cfg: RunConfig, model: ExplainedModel):
        super().__init__()

    def trainable(self, model: ExplainedModel) -> list[nn.Parameter]:
        """Parameters the optimiser updates (the backbone, plus what the objective uses)."""
        return list(model.backbone.parameters()) + list(self.parameters())

    def forward(self, h: torch.Tensor, y: torch.Tensor, model: ExplainedModel
                ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """``h``: features [views * B, d] (view-major), ``y``: labels [B] -> (loss, logits or None)."""
        raise NotImplementedError


OBJECTIVES: dict[str, type[Objective]] = {}


def register_objective(name: str, label: str, color: str, in_paper: bool = False
                       ) -> Callable[[type[Objective]], type[Objective]]:
    """Register an :class:`Objective` subclass under ``name`` with its display label and colour."""
    def wrap(cls: type[Objective]) -> type[Objective]:
        cls.name, cls.label, cls.color, cls.in_paper = name, label, color, in_paper
        if cls.needs_probe != cls.normalize_features:
            raise TypeError(f"objective {name!r}: the explained model normalises its features "
                            f"exactly when a linear probe (trained on normalised features) is its head")
        OBJECTIVES[name] = cls
        return cls
    return wrap


def get_objective(name: str) -> type[Objective]:
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; available: {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name]


def objective_label(name: str) -> str:
    """Display name (``CE``); an unregistered name is shown upper-cased."""
    return OBJECTIVES[name].label if name in OBJECTIVES else str(name).upper()


def objective_color(name: str) -> str:
    """Colour of an objective in every figure; unregistered names get a fixed spare colour."""
    if name in OBJECTIVES:
        return OBJECTIVES[name].color
    spare = ("#D55E00", "#56B4E9", "#CC79A7", "#F0E442", "#000000")
    return spare[sum(map(ord, str(name))) % len(spare)]


def paper_objectives() -> list[str]:
    """The paper's objectives (CE, SCL, TL), in registry order."""
    return [name for name, cls in OBJECTIVES.items() if cls.in_paper]


def order_objectives(values) -> list[str]:
    """Registered objectives in registry order, then any others alphabetically."""
    vals = list(dict.fromkeys(str(v) for v in values))
    return [o for o in OBJECTIVES if o in vals] + sorted(o for o in vals if o not in OBJECTIVES)


# ----------------------------------------------------------------------------- the paper's three

@register_objective("ce", label="CE", color="#E69F00", in_paper=True)
class CrossEntropyObjective(Objective):
    """Backbone + the model's own linear head, cross-entropy on one augmented view."""

    def trainable(self, model: ExplainedModel) -> list[nn.Parameter]:
        return list(model.backbone.parameters()) + list(model.head.parameters())

    def forward(self, h, y, model):
        logits = model.head(h)
        return F.cross_entropy(logits.float(), y), logits


@register_objective("scl", label="SCL", color="#0072B2", in_paper=True)
class SupConObjective(Objective):
    """Two views -> projection head (Linear, ReLU, Linear, L2) -> SupConLoss (Khosla et al.)."""

    views = 2
    augmentation = "scl"
    min_batch = 2
    needs_probe = True
    normalize_features = True

    def __init__(self, cfg: RunConfig, model: ExplainedModel):
        super().__init__(cfg, model)
        self.projection = ProjectionHead(model.feature_dim, cfg.proj_dim)
        self.loss = SupConLoss(cfg.temperature)

    def forward(self, h, y, model):
        b = y.shape[0]
        # the projection and its L2 normalisation in float32: logits are divided by t ~ 0.1
        with torch.autocast(h.device.type, enabled=False):
            z = self.projection(h.float())
        return self.loss(z.view(self.views, b, -1).transpose(0, 1), y), None


@register_objective("tl", label="TL", color="#009E73", in_paper=True)
class TripletObjective(Objective):
    """TripletLoss on the raw pooled backbone features (no head, no normalisation)."""

    min_batch = 2
    needs_probe = True
    normalize_features = True

    def __init__(self, cfg: RunConfig, model: ExplainedModel):
        super().__init__(cfg, model)
        self.loss = TripletLoss(cfg.margin, cfg.mining)

    def forward(self, h, y, model):
        return self.loss(h, y), None
