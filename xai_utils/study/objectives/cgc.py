"""CGC: Contrastive Grad-CAM Consistency (Pillai et al., CVPR 2022, arXiv 2110.00527; facts in
../shared/related/CGC.md), written anew and batched.

Cross-entropy plus a regulariser that makes the model's Grad-CAM *equivariant* to crops and
flips, contrastively: the map of a transformed image and the transformed map of the image are
a positive pair; the maps of the other images of the batch are negatives.

Per image three views: ``x_ce`` (the run's augmentation, for cross-entropy), ``x`` (the
clean image) and ``x_aug = T(x)``, T a random resized crop (``cgc_crop_scale``, ratio 3/4-4/3)
resized back to the input size and flipped with probability 0.5; T's box and flip are kept.

1. Differentiable Grad-CAM (``create_graph``) at the CAM layer (the last residual block, as
   the paper's maps), in float32, of ``x`` and ``x_aug`` for the class the model predicts on
   ``x``; ReLU, bilinear upsampling to the input size, divided by its sum (+ 1e-8).
2. Alignment: ``b_i = T_i(g(x_i))`` with the *same* box and flip as the image
   (:func:`xai_utils.ops.augment.apply_crop_flip`); ``a_i = g(T_i(x_i))``.
3. :class:`CGCLoss`, InfoNCE with temperature ``cgc_temperature`` on the flattened,
   L2-normalised maps: positive <a_i, b_i>; negatives <a_i, a_j> (the authors' code,
   ``cgc_negatives: augmented``) or <b_i, a_j> (the form written in the paper, ``aligned``).
4. Loss = CE(x_ce) + CE(x) + CE(x_aug) + ``cgc_lambda`` * CGC.

Deviations from the authors' code: the crop box and the flip of the map are those of the image
(their code flips the image about 25 % of the time and the map 50 %); the three views go
through the network as one batch; no per-sample Python.

The double backward (a gradient of a gradient) rules ``torch.compile`` out: a run with
``compile: true`` trains uncompiled and says so.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...errors import ConfigError
from ...ops.augment import apply_crop_flip, sample_crop_flip_params
from ...ops.devices import float32
from ..models import ExplainedModel
from .base import RunSettings, StepOutput, TrainBatch, register_objective
from .paper import CrossEntropyObjective

NEGATIVES = ("augmented", "aligned")


class CGCLoss(nn.Module):
    """Contrastive Grad-CAM consistency loss of maps ``a`` (augmented views) and ``b`` (the
    originals' maps aligned to them), both [B, H, W] (or [B, 1, H, W]).

    With â, b̂ the flattened, L2-normalised maps and t the temperature::

        l_i = -log( exp(â_i·b̂_i / t) / (exp(â_i·b̂_i / t) + sum_{j != i} exp(q_i·â_j / t)) )

    where q_i = â_i (``negatives="augmented"``, the authors' code) or b̂_i (``"aligned"``,
    the paper's form); the loss is the mean of l_i.
    """

    def __init__(self, temperature: float = 0.5, negatives: str = "augmented"):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"CGCLoss: temperature must be > 0, got {temperature!r}")
        if negatives not in NEGATIVES:
            raise ValueError(f"CGCLoss: negatives must be one of {', '.join(NEGATIVES)}, got {negatives!r}")
        self.temperature, self.negatives = float(temperature), negatives

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if a.shape != b.shape or a.dim() not in (3, 4):
            raise ValueError(f"CGCLoss: a and b must be maps of one shape [B, H, W], got "
                             f"{tuple(a.shape)} and {tuple(b.shape)}")
        with float32(a.device):                 # the similarities in float32, under autocast too
            return self._loss(a, b)

    def _loss(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a = F.normalize(a.float().flatten(1), dim=1)
        b = F.normalize(b.float().flatten(1), dim=1)
        query = a if self.negatives == "augmented" else b
        logits = query @ a.T / self.temperature                 # [i, j] = q_i . a_j / t
        positive = (a * b).sum(dim=1) / self.temperature        # a_i . b_i / t
        eye = torch.eye(a.shape[0], dtype=torch.bool, device=a.device)
        logits = torch.where(eye, positive[:, None].expand_as(logits), logits)
        target = torch.arange(a.shape[0], device=a.device)
        return F.cross_entropy(logits, target)


def normalised_cam(cam: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """CGC's map: bilinear upsampling to ``size``, divided by its sum, + 1e-8 ([N, 1, H, W])."""
    up = F.interpolate(cam, size=size, mode="bilinear", align_corners=False)
    return up / up.sum(dim=(2, 3), keepdim=True).clamp_min(1e-12) + 1e-8


@register_objective("cgc", label="CGC", color="#56B4E9")
class CGCObjective(CrossEntropyObjective):
    """Cross-entropy on three views + ``cgc_lambda`` x contrastive Grad-CAM consistency."""

    random_views = 1                 # x_ce; x and T(x) come from the clean view
    uses_clean_view = True
    settings = ("cgc_lambda", "cgc_temperature", "cgc_negatives", "cgc_crop_scale")
    uncompiled_reason = "its loss needs a double backward (the gradient of a Grad-CAM), which torch.compile lacks"

    def __init__(self, cfg: RunSettings, model: ExplainedModel):
        super().__init__(cfg, model)
        self.consistency = CGCLoss(cfg.cgc_temperature, cfg.cgc_negatives)
        self.lam = float(cfg.cgc_lambda)
        self.scale = tuple(cfg.cgc_crop_scale)

    @classmethod
    def check(cls, cfg: RunSettings) -> None:
        if cfg.cgc_negatives not in NEGATIVES:
            raise ConfigError(f"run {cfg.run_id}: 'cgc_negatives' must be one of {', '.join(NEGATIVES)}, "
                              f"got {cfg.cgc_negatives!r}")
        for key in ("cgc_temperature",):
            if not getattr(cfg, key) > 0:
                raise ConfigError(f"run {cfg.run_id}: '{key}' must be > 0, got {getattr(cfg, key)!r}")
        if not cfg.cgc_lambda >= 0:
            raise ConfigError(f"run {cfg.run_id}: 'cgc_lambda' must be >= 0, got {cfg.cgc_lambda!r}")
        lo, hi = (list(cfg.cgc_crop_scale) + [None, None])[:2]
        if len(cfg.cgc_crop_scale) != 2 or not 0 < lo <= hi <= 1:
            raise ConfigError(f"run {cfg.run_id}: 'cgc_crop_scale' must be [low, high] with "
                              f"0 < low <= high <= 1, got {cfg.cgc_crop_scale!r}")

    def step(self, batch: TrainBatch, model: ExplainedModel, engine: Any) -> StepOutput:
        y = batch.labels
        b = y.shape[0]
        x_ce = batch.view()
        x = batch.clean()
        params = sample_crop_flip_params(b, x.shape[-2], x.shape[-1], self.scale, batch.generator)
        x_aug = apply_crop_flip(x, params)
        store: list[torch.Tensor] = []
        handle = model.cam_layer.register_forward_hook(lambda mod, inp, out: store.append(out))
        try:
            logits = model.logits_from_features(engine.features(torch.cat([x_ce, x, x_aug]))).float()
        finally:
            handle.remove()
        target = logits[b:2 * b].detach().argmax(dim=1).repeat(2)   # the class predicted on x
        score = logits[b:].gather(1, target[:, None]).sum()
        (grads,) = torch.autograd.grad(score, store[-1], create_graph=True)
        acts, grads = store[-1][b:], grads[b:]                   # the CAM layer of x and x_aug
        cam = (grads.float().mean(dim=(2, 3), keepdim=True) * acts.float()).sum(dim=1, keepdim=True).clamp_min(0)
        maps = normalised_cam(cam, tuple(x.shape[-2:]))
        aligned = apply_crop_flip(maps[:b], params)             # b_i = T_i(g(x_i))
        consistency = self.consistency(maps[b:], aligned)       # a_i = g(T_i(x_i))
        ce = [F.cross_entropy(logits[k * b:(k + 1) * b], y) for k in range(3)]
        loss = ce[0] + ce[1] + ce[2] + self.lam * consistency
        return StepOutput(loss, logits[:b], {
            "ce_view": ce[0].detach(), "ce_clean": ce[1].detach(), "ce_transformed": ce[2].detach(),
            "cgc": consistency.detach()})
