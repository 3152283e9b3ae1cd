"""Models a user brings: any classifier from normalised images to logits (a timm or
torchvision model as it comes), wrapped so that the study's methods and metrics explain it
exactly as they explain the study's own models.

The study's code asks a model for four things (:class:`~xai_utils.study.models.ExplainedModel`
has them): pixel-space images in, logits out; ``mean`` and ``std`` (the pixel normalisation);
``normalize_input``; and ``cam_layer``, the layer Grad-CAM and Eigen-CAM explain.
:func:`bring` gives a plain model these: the normalisation given or read from timm's
pretrained configuration, the layer given (a module or its dotted name) or found: timm's
``feature_info`` (the last stage), a torchvision ResNet's ``layer4``, else the last module that
holds a convolution.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn as nn

Layer = Union[nn.Module, str, None]


class BroughtModel(nn.Module):
    """Pixel-space images -> the brought model's logits; the CAM layer and normalisation the
    study's methods and metrics read."""

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float], cam_layer: nn.Module):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))
        self._cam = (cam_layer,)                 # a reference, not a second registration of the module

    @property
    def cam_layer(self) -> nn.Module:
        return self._cam[0]

    def normalize_input(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize_input(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features (timm models: ``forward_head(..., pre_logits=True)``)."""
        if not (hasattr(self.net, "forward_features") and hasattr(self.net, "forward_head")):
            raise TypeError(f"{type(self.net).__name__} has no forward_features/forward_head: its pooled "
                            "features are unknown (a timm model has them)")
        return self.net.forward_head(self.net.forward_features(self.normalize_input(x)), pre_logits=True)


def find_cam_layer(net: nn.Module) -> nn.Module:
    """The layer a CAM explains when none is given: the last stage of timm's ``feature_info``,
    a torchvision ResNet's ``layer4``, else the last module whose subtree holds a convolution."""
    info = getattr(net, "feature_info", None)
    if info is not None:
        last = info[-1] if isinstance(info, (list, tuple)) else info.get_dicts()[-1]
        return net.get_submodule(last["module"])
    if isinstance(getattr(net, "layer4", None), nn.Module):
        return net.layer4
    children = list(net.children())
    for child in reversed(children):
        if any(isinstance(m, nn.Conv2d) for m in child.modules()):
            return child if not list(child.children()) else find_cam_layer(child)
    raise ValueError(f"no convolutional layer found in {type(net).__name__}: give target_layer")


def cam_layer_of(net: nn.Module, target_layer: Layer) -> nn.Module:
    """``target_layer`` as a module (given as one, or by its dotted name), or :func:`find_cam_layer`."""
    if target_layer is None:
        return find_cam_layer(net)
    if isinstance(target_layer, str):
        try:
            return net.get_submodule(target_layer)
        except AttributeError:
            raise ValueError(f"target_layer '{target_layer}' is not a module of {type(net).__name__}") from None
    if not any(m is target_layer for m in net.modules()):
        raise ValueError("target_layer is not a module of the model")
    return target_layer


def normalisation_of(net: nn.Module, mean: Optional[Sequence[float]], std: Optional[Sequence[float]]
                     ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per channel: as given, else timm's pretrained configuration's."""
    cfg = getattr(net, "pretrained_cfg", None) or getattr(net, "default_cfg", None) or {}
    mean = mean if mean is not None else cfg.get("mean")
    std = std if std is not None else cfg.get("std")
    if mean is None or std is None:
        raise ValueError(f"the input normalisation of {type(net).__name__} is unknown: give mean and std")
    if len(mean) != len(std):
        raise ValueError(f"mean has {len(mean)} channels and std {len(std)}")
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def bring(net: nn.Module, target_layer: Layer = None, mean: Optional[Sequence[float]] = None,
          std: Optional[Sequence[float]] = None) -> BroughtModel:
    """``net`` (normalised images -> logits) as a model the study explains (pixel-space input),
    in ``net``'s mode (training or eval); a :class:`BroughtModel` or the study's own model is
    returned as it is."""
    if isinstance(net, BroughtModel) or (hasattr(net, "cam_layer") and hasattr(net, "normalize_input")):
        return net
    m, s = normalisation_of(net, mean, std)
    return BroughtModel(net, m, s, cam_layer_of(net, target_layer)).train(net.training)
