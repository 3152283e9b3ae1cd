"""Backbones (timm), the SCL projection head, and the model that is explained.

The explained model is one ``nn.Module`` mapping images in pixel space [0, 1] to logits:

    x -> normalise(mean, std) -> backbone -> pooled features -> [L2-normalise] -> linear head

CE models use their own linear head on raw features; SCL and TL models use the linear
probe trained on L2-normalised frozen features (PAPER.md), and the same normalisation is
applied at explanation time (the official code forgets it on CIFAR). Taking pixel-space
inputs keeps every perturbation (pixel flipping, continuity noise) in pixel space.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..registry import Registry

BACKBONES: Registry[Callable[..., nn.Module]] = Registry("arch")


def register_backbone(name: str, override: bool = False) -> Callable:
    """Register ``fn(widths) -> backbone`` under ``name`` (an ``arch``); a name already
    registered is refused unless ``override``."""
    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        return BACKBONES.register(name, fn, override)
    return wrap


def _conv_like(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """A fresh convolution with the geometry of ``conv`` but ``in_channels`` inputs."""
    return nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                     padding=conv.padding, bias=conv.bias is not None)


def _set_stem(net: nn.Module, width: int, kernel_size: int, stride: int,
              zero_init_last: bool = True) -> nn.Module:
    """Give a timm ResNet a single-convolution stem of ``width`` channels.

    timm hard-codes 64 stem channels for the plain (non-deep) stem and ignores
    ``stem_width``, so a narrow network (widths 16..128) would otherwise keep a 64-channel
    stem at full resolution, the most expensive layer, plus a needless 64 -> 16 projection
    shortcut in ``layer1[0]``. Rewires ``layer1[0]`` to the new width and re-initialises
    every convolution with timm's scheme (Kaiming normal, fan-out), the last BN of each
    residual branch at zero when ``zero_init_last`` and at one otherwise.
    """
    old = net.conv1.out_channels
    net.conv1 = nn.Conv2d(3, width, kernel_size=kernel_size, stride=stride,
                          padding=kernel_size // 2, bias=False)
    if width != old:
        net.bn1 = nn.BatchNorm2d(width)
        net.feature_info[0]["num_chs"] = width
        block = net.layer1[0]
        block.conv1 = _conv_like(block.conv1, width)
        last = block.conv3 if hasattr(block, "conv3") else block.conv2
        if block.downsample is not None:
            shortcut = block.downsample[0]
            if shortcut.stride == (1, 1) and last.out_channels == width:
                block.downsample = None          # identity shortcut, as in a standard ResNet
            else:
                block.downsample[0] = _conv_like(shortcut, width)
        elif last.out_channels != width:         # e.g. narrow Bottleneck: 16 -> 64 channels
            block.downsample = nn.Sequential(
                nn.Conv2d(width, last.out_channels, kernel_size=1, bias=False),
                nn.BatchNorm2d(last.out_channels))
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    net.init_weights(zero_init_last=zero_init_last)
    return net


def _timm_resnet(name: str, widths: Optional[Sequence[int]]) -> nn.Module:
    if widths is not None and (len(widths) != 4 or any(int(w) < 1 for w in widths)):
        raise ValueError(f"widths must be 4 positive stage widths (e.g. [16, 32, 64, 128]), got {widths!r}")
    kw = {} if widths is None else {"channels": tuple(int(w) for w in widths)}
    import timm   # reason: 2-3 s at import (torchvision.ops loads torch._dynamo); only a process that builds a network pays it
    return timm.create_model(name, pretrained=False, num_classes=0, **kw)


@register_backbone("resnet18")
def resnet18_cifar(widths: Optional[Sequence[int]] = None) -> nn.Module:
    """timm ResNet-18 with the CIFAR stem: 3x3 stride-1 first convolution, no max-pool.

    The stem has ``widths[0]`` channels (64 at full width); 512-d features at full width.
    Initialised like the authors' CIFAR ResNet: Kaiming-normal (fan-out) convolutions, every
    BN at weight 1 / bias 0 (no zero-init of the last BN of a block, unlike timm's default:
    with it, SupCon on a narrow network collapses to a constant embedding in a few steps).
    """
    net = _timm_resnet("resnet18", widths)
    net.maxpool = nn.Identity()
    return _set_stem(net, 64 if widths is None else int(widths[0]), kernel_size=3, stride=1,
                     zero_init_last=False)


@register_backbone("resnet50")
def resnet50(widths: Optional[Sequence[int]] = None) -> nn.Module:
    """timm ResNet-50 (ImageNet stem: 7x7 stride 2 + max-pool) for 224 px inputs; 2048-d features."""
    net = _timm_resnet("resnet50", widths)
    if widths is None:
        return net
    return _set_stem(net, int(widths[0]), kernel_size=7, stride=2)


def build_backbone(arch: str, widths: Optional[Sequence[int]] = None) -> nn.Module:
    """The registered backbone ``arch`` (an unknown name: UnknownNameError) at ``widths``."""
    return BACKBONES[arch](widths)


class ProjectionHead(nn.Module):
    """SCL projection: Linear(d, d), ReLU, Linear(d, out), then L2 normalisation."""

    def __init__(self, dim: int, out_dim: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, out_dim))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(h), dim=1)


class ExplainedModel(nn.Module):
    """Pixel-space images -> logits; exposes pooled features and the CAM layer."""

    def __init__(self, backbone: nn.Module, num_classes: int, mean: Sequence[float],
                 std: Sequence[float], normalize_features: bool):
        super().__init__()
        self.backbone = backbone
        self.feature_dim: int = backbone.num_features
        self.head = nn.Linear(self.feature_dim, num_classes)
        self.normalize_features = normalize_features
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    @property
    def cam_layer(self) -> nn.Module:
        """The last residual block (``layer4[-1]``), the layer the paper explains."""
        return self.backbone.layer4[-1]

    def normalize_input(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features of pixel-space images (not L2-normalised)."""
        return self.backbone(self.normalize_input(x))

    def logits_from_features(self, h: torch.Tensor) -> torch.Tensor:
        if self.normalize_features:
            h = F.normalize(h, dim=1)
        return self.head(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits_from_features(self.features(x))


def build_model(arch: str, widths: Optional[Sequence[int]], num_classes: int, mean: Sequence[float],
                std: Sequence[float], normalize_features: bool = False) -> ExplainedModel:
    """The explained model: backbone ``arch`` (stage ``widths``), a linear head of
    ``num_classes``, pixel normalisation by ``mean``/``std``; ``normalize_features``: the
    head sees L2-normalised features (a probe's). The model of a run is
    :func:`xai_utils.study.objectives.explained_model` (its objective decides the last)."""
    return ExplainedModel(build_backbone(arch, widths), num_classes, mean, std, normalize_features)


EXPLAIN_FEATURES = ("trained", "raw")     # RunConfig.explain_features: the head on the features as trained, or raw
