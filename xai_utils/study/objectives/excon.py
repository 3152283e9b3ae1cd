"""ExCon and ExConB: explanation-driven Supervised Contrastive learning (Zhang et al. 2021,
arXiv 2111.14271; facts in ../shared/related/EXCON.md), written anew and batched.

One of SupCon's two views of an image is replaced by the image *masked by its own
saliency*, so positives share content and explanation:

1. **Saliency**: Grad-CAM (:func:`xai_utils.ops.attribution.grad_cam`, signed, no ReLU) of the
   jointly trained linear classifier's logit for the **true label**, on the clean image, at
   a mid-level layer (``excon_layer``), upsampled bilinearly to the input size.
2. **Mask**: each map min-max scaled to [0, 1]; pixels with value > ``excon_threshold`` are
   kept, the others set to the dataset's mean colour (all channels alike).
3. **Filter**: a masked image is used only if the classifier predicts its true label; the
   other images keep their random SCL view.
4. **Views**: view 1 = the masked image where accepted, else a random view; view 2 = another
   random view. ExConB adds every *rejected* masked image as a background sample (both its
   views the masked image) that enters only the denominators of the loss.
5. **Loss**: SupCon over all views (the run's ``temperature``), plus the cross-entropy of the
   jointly trained classifier on detached features (it trains the classifier only).

Plain SupCon (view 1 random) during the first ``excon_warmup_epochs`` epochs.

The classifier is a linear layer on the L2-normalised pooled features, like the probe, trained
in every step on the detached features of the second random view. (The authors train it one
epoch on frozen features after each encoder epoch.) It only drives the saliency: after
training, the explained model gets the probe exactly as for SCL.

Deviations from the authors' code, on purpose:

* BatchNorm running statistics are not updated by the saliency and filter passes (they run
  in train mode with batch statistics, as theirs, but the running statistics are restored).
* The mask layer is a setting; the default for the CIFAR ResNet-18 is ``layer2.-1.conv2``, the
  last convolution of stage 2 before its BatchNorm, residual and ReLU: 16x16 maps for a
  32 px input, the analogue of their ``layer2[3].conv3`` of ResNet-50 (the last layer4 block
  gives 4x4 maps, too coarse to mask a 32 px image).
* No ``t / 0.07`` factor on the loss (as our SCL); batch-wise tensors throughout (no
  per-sample Python, no host synchronisation in a step).
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...errors import ConfigError
from ...ops.attribution import grad_cam, minmax_scale, module_at, upsample
from ...ops.devices import float32
from ..models import ExplainedModel, build_backbone
from .base import RunSettings, StepOutput, TrainBatch, register_objective
from .paper import SupConObjective


@contextlib.contextmanager
def frozen_bn_statistics(module: nn.Module) -> Iterator[None]:
    """Run the block with BatchNorm as it is (train mode: batch statistics) but leave its
    running statistics, and the count of batches seen, as they were before."""
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in bns]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, (mean, var, count) in zip(bns, saved):
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(count)


def saliency_mask(cam: torch.Tensor, size: tuple[int, int], threshold: float) -> torch.Tensor:
    """Bool [N, 1, H, W]: where the min-max scaled, bilinearly upsampled map exceeds
    ``threshold`` (a constant map keeps nothing)."""
    return minmax_scale(upsample(cam.float(), size)) > threshold


def mask_images(x: torch.Tensor, keep: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """Pixel-space images with every pixel outside ``keep`` set to ``fill`` ([1, C, 1, 1],
    the dataset's mean colour: zero after the model's normalisation)."""
    return torch.where(keep, x, fill.to(x.dtype))


@register_objective("excon", label="ExCon", color="#CC79A7")
class ExConObjective(SupConObjective):
    """SupCon with one view replaced by the saliency-masked image (see the module docstring)."""

    background_samples = False
    random_views = 2                 # batch.view() twice per step: view 1 (unless masked) and view 2
    uses_clean_view = True           # the saliency of the clean image masks view 1
    settings = ("temperature", "proj_dim", "excon_threshold", "excon_warmup_epochs", "excon_layer")
    uncompiled_reason = "its step hooks a layer of the backbone for the Grad-CAM of the masks"

    def __init__(self, cfg: RunSettings, model: ExplainedModel):
        super().__init__(cfg, model)
        self.classifier = nn.Linear(model.feature_dim, model.head.out_features)
        self.threshold = float(cfg.excon_threshold)
        self.warmup_epochs = int(cfg.excon_warmup_epochs)
        self.layer_path = cfg.excon_layer

    @classmethod
    def check(cls, cfg: RunSettings) -> None:
        if not 0.0 <= cfg.excon_threshold < 1.0:
            raise ConfigError(f"run {cfg.run_id}: 'excon_threshold' must be in [0, 1), got {cfg.excon_threshold!r}")
        if not 0 <= cfg.excon_warmup_epochs <= cfg.epochs:
            raise ConfigError(f"run {cfg.run_id}: 'excon_warmup_epochs' must be between 0 and epochs "
                              f"({cfg.epochs}), got {cfg.excon_warmup_epochs!r}")
        try:
            layer = module_at(build_backbone(cfg.arch, cfg.widths), cfg.excon_layer)
        except ValueError as e:
            raise ConfigError(f"run {cfg.run_id}: 'excon_layer' {e}") from None
        if not isinstance(layer, nn.Conv2d) and not any(isinstance(m, nn.Conv2d) for m in layer.modules()):
            raise ConfigError(f"run {cfg.run_id}: 'excon_layer' must name a convolutional layer or block, "
                              f"got {type(layer).__name__}")

    def classify(self, engine: Any, x: torch.Tensor) -> torch.Tensor:
        """Logits of the jointly trained classifier (on L2-normalised pooled features)."""
        return self.classifier(F.normalize(engine.features(x).float(), dim=1))

    def masked_views(self, batch: TrainBatch, model: ExplainedModel, engine: Any
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """(masked clean images, accepted bool [B]); BatchNorm statistics untouched."""
        clean = batch.clean()
        layer = module_at(model.backbone, self.layer_path)
        with frozen_bn_statistics(model.backbone):
            cam = grad_cam(lambda v: self.classify(engine, v), layer, clean, batch.labels, relu=False)
            keep = saliency_mask(cam.detach(), tuple(clean.shape[-2:]), self.threshold)
            masked = mask_images(clean, keep, model.mean)
            with torch.no_grad():
                accepted = self.classify(engine, masked).argmax(dim=1) == batch.labels
        return masked.detach(), accepted

    def step(self, batch: TrainBatch, model: ExplainedModel, engine: Any) -> StepOutput:
        y = batch.labels
        b = y.shape[0]
        random_view = batch.view()                              # view 1 when the mask is rejected
        second = batch.view()                                   # view 2
        explaining = batch.epoch >= self.warmup_epochs
        if explaining:
            masked, accepted = self.masked_views(batch, model, engine)
            first = torch.where(accepted[:, None, None, None], masked, random_view)
        else:
            accepted = torch.zeros(b, dtype=torch.bool, device=y.device)
            first = random_view
        extra = explaining and self.background_samples
        views = [first, second] + ([masked] if extra else [])
        h = engine.features(torch.cat(views))
        with float32(h.device):
            z = self.projection(h.float())
        z_real = z[:2 * b].view(2, b, -1).transpose(0, 1)      # [B, 2, D]
        if extra:                                               # rejected masks: denominators only
            z_bg = z[2 * b:].unsqueeze(1).expand(-1, 2, -1)     # both views are the masked image
            rejected = ~accepted
            labels = torch.cat([y, torch.where(rejected, torch.zeros_like(y), torch.full_like(y, -1))])
            background = torch.cat([torch.zeros_like(rejected), rejected])
            supcon = self.loss(torch.cat([z_real, z_bg]), labels, background=background)
        else:                                                   # (an all-False background: no host sync)
            supcon = self.loss(z_real, y, background=torch.zeros_like(y, dtype=torch.bool))
        h_second = h[b:2 * b].detach().float()
        classifier_ce = F.cross_entropy(self.classifier(F.normalize(h_second, dim=1)), y)
        return StepOutput(supcon + classifier_ce, None, {
            "supcon": supcon.detach(), "classifier_ce": classifier_ce.detach(),
            "accepted_masked": accepted.float().mean().detach()})


@register_objective("exconb", label="ExConB", color="#D55E00")
class ExConBObjective(ExConObjective):
    """ExCon whose rejected masked images join the batch as background samples."""

    background_samples = True
