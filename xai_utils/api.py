"""The protocol on a model and images a user brings, from Python: no profile, no run folder.

    import timm, xai_utils
    model = timm.create_model("resnet18", num_classes=4)          # or a trained one
    scores = xai_utils.evaluate(model, images, labels, methods=["gradcam"],
                                metrics=["pixel_flipping", "complexity"])
    maps = xai_utils.attribute(model, images, targets, "gradcam")

``model`` maps normalised images to logits (a timm or torchvision classifier as it comes);
``images`` are pixel-space float tensors [N, C, H, W] in [0, 1]. The Grad-CAM layer is found
(timm's last stage, a torchvision ResNet's ``layer4``) or given as ``target_layer`` (a module or
its dotted name); the normalisation is given as ``mean``/``std`` or read from timm's pretrained
configuration (:mod:`xai_utils.study.brought`). The methods and metrics are the study's own,
computed as the pipeline computes them (IEEE float32, batched, seeded).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import pandas as pd
import torch
import torch.nn as nn

from .ops.attribution import METHODS, attribute as _attribute, predict
from .ops.devices import ieee_float32, resolve_device
from .ops.metrics import METRICS, SETTINGS, MetricInputs, resolve_method
from .settings.layout import RowName
from .study.brought import Layer, bring

COLUMNS = ("image", "label", "pred", "correct", "method", "metric", "value")


def attribute(model: nn.Module, images: torch.Tensor, targets: Any, method: str, *, target_layer: Layer = None,
              mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None,
              batch_size: int = 64, **options: Any) -> torch.Tensor:
    """Maps float32 [N, 1, H, W] of ``method`` for ``targets`` (one class per image), on the
    images' device; ``options``: the method's options (as ``method_options`` of a run)."""
    explained = bring(model, target_layer, mean, std).to(images.device)
    targets = torch.as_tensor(targets, dtype=torch.long, device=images.device).reshape(-1)
    return torch.cat([_attribute(explained, images[s:s + batch_size], targets[s:s + batch_size], method, **options)
                      for s in range(0, len(images), batch_size)])


def evaluate(model: nn.Module, images: torch.Tensor, labels: Any, *, methods: Sequence[str],
             metrics: Sequence[str], target_layer: Layer = None, mean: Optional[Sequence[float]] = None,
             std: Optional[Sequence[float]] = None, masks: Optional[torch.Tensor] = None, target: str = "pred",
             batch_size: int = 64, device: str = "auto", **settings: Any) -> pd.DataFrame:
    """One row per image, method and metric (and metric variant): ``image`` (its index in
    ``images``), ``label``, ``pred``, ``correct``, ``method``, ``metric``, ``value``.

    ``target``: the class each map explains, ``"pred"`` (the study's default) or ``"true"``.
    ``masks``: bool [N, 1, H, W] object masks, for the localisation metrics. ``settings``: the
    metrics' run settings by their configuration keys (``features_in_step=32``,
    ``metric_seed=0``, ...). Metrics that need a fitted temperature are the pipeline's."""
    methods, metrics = METHODS.check(methods), METRICS.check(metrics)
    _check_metrics(metrics, masks)
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise ValueError(f"unknown metric setting(s) {unknown}; valid: {', '.join(SETTINGS)}")
    dev = resolve_device(device)
    explained = bring(model, target_layer, mean, std).to(dev)
    x = images.to(dev).float()
    y = torch.as_tensor(labels, dtype=torch.long, device=dev).reshape(-1)
    if y.numel() != len(x):
        raise ValueError(f"labels has {y.numel()} entries for {len(x)} images")
    preds = predict(explained, x, batch_size)
    targets = preds if target == "pred" else y
    frames = []
    for method in methods:
        maps = attribute(explained, x, targets, method, batch_size=batch_size)
        inputs = MetricInputs(model=explained, x=x, maps=maps, labels=y, preds=preds, targets=targets,
                              sample_ids=torch.arange(len(x)), masks=None if masks is None else masks.to(dev),
                              method=resolve_method(method), method_name=method, batch_size=batch_size,
                              **{SETTINGS[k]: v for k, v in settings.items()})
        for metric in metrics:
            with ieee_float32(dev):
                result = METRICS[metric].compute(inputs)
            rows = {metric: result.values, **{str(RowName(metric, (k,))): v for k, v in result.variants.items()}}
            frames += [_rows(name, method, values, y, preds) for name, values in rows.items()]
    return pd.concat(frames, ignore_index=True)[list(COLUMNS)]


def _check_metrics(metrics: Sequence[str], masks: Optional[torch.Tensor]) -> None:
    for metric in metrics:
        needs = METRICS[metric].needs
        if "calibration" in needs:
            raise ValueError(f"metric '{metric}' needs a temperature fitted on held-out images: run it in a "
                             "profile (the pipeline fits it), or use its uncalibrated score")
        if "masks" in needs and masks is None:
            raise ValueError(f"metric '{metric}' needs object masks: pass masks=[N, 1, H, W] bool")


def _rows(metric: str, method: str, values: torch.Tensor, labels: torch.Tensor, preds: torch.Tensor) -> pd.DataFrame:
    y, p = labels.cpu().numpy(), preds.cpu().numpy()
    return pd.DataFrame({"image": range(len(y)), "label": y, "pred": p, "correct": y == p, "method": method,
                         "metric": metric, "value": values.detach().double().cpu().numpy()})
