"""The paper's three objectives: cross-entropy, Supervised Contrastive, Triplet."""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from ...ops.devices import float32
from ...ops.losses import SupConLoss, TripletLoss
from ..models import ExplainedModel, ProjectionHead
from .base import Objective, RunSettings, register_objective


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
    settings = ("temperature", "proj_dim")

    def __init__(self, cfg: RunSettings, model: ExplainedModel):
        super().__init__(cfg, model)
        self.projection = ProjectionHead(model.feature_dim, cfg.proj_dim)
        self.loss = SupConLoss(cfg.temperature)

    def forward(self, h, y, model):
        b = y.shape[0]
        # the projection and its L2 normalisation in float32: logits are divided by t ~ 0.1
        with float32(h.device):
            z = self.projection(h.float())
        return self.loss(z.view(self.views, b, -1).transpose(0, 1), y), None


@register_objective("tl", label="TL", color="#009E73", in_paper=True)
class TripletObjective(Objective):
    """TripletLoss on the raw pooled backbone features (no head, no normalisation)."""

    min_batch = 2
    needs_probe = True
    normalize_features = True
    settings = ("margin", "mining")

    def __init__(self, cfg: RunSettings, model: ExplainedModel):
        super().__init__(cfg, model)
        self.loss = TripletLoss(cfg.margin, cfg.mining)

    def forward(self, h, y, model):
        return self.loss(h, y), None
