"""Backbones (timm), the SCL projection head, and the model that is explained.

The explained model is one ``nn.Module`` mapping images in pixel space [0, 1] to logits:

    x -> normalise(mean, std) -> backbone -> pooled features -> [L2-normalise] -> linear head

CE models use their own linear head on raw features; SCL and TL models use the linear
probe trained on L2-normalised frozen features (PAPER.md), and the same normalisation is
applied at explanation time (the official code forgets it on CIFAR). Taking pixel-space
inputs keeps every perturbation (pixel flipping, continuity noise) in pixel space.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import RunConfig

BACKBONES: dict[str, Callable[..., nn.Module]] = {}


def register_backbone(name: str) -> Callable:
    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        BACKBONES[name] = fn
        return fn
    return wrap


@register_backbone("resnet18")
def resnet18_cifar(widths: Optional[Sequence[int]] = None) -> nn.Module:
    """timm ResNet-18 with the CIFAR stem: 3x3 stride-1 first convolution, no max-pool."""
    kw = {} if widths is None else {"channels": tuple(widths), "stem_width": widths[0]}
    net = timm.create_model("resnet18", pretrained=False, num_classes=0, **kw)
    stem = net.conv1.out_channels
    net.conv1 = nn.Conv2d(3, stem, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    return net


@register_backbone("resnet50")
def resnet50(widths: Optional[Sequence[int]] = None) -> nn.Module:
    """timm ResNet-50 (ImageNet stem) for 224 px inputs; 2048-d features at full width."""
    kw = {} if widths is None else {"channels": tuple(widths), "stem_width": widths[0]}
    return timm.create_model("resnet50", pretrained=False, num_classes=0, **kw)


def build_backbone(arch: str, widths: Optional[Sequence[int]] = None) -> nn.Module:
    if arch not in BACKBONES:
        raise ValueError(f"unknown arch '{arch}'; available: {', '.join(sorted(BACKBONES))}")
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


def build_model(cfg: RunConfig, num_classes: int, mean: Sequence[float], std: Sequence[float]) -> ExplainedModel:
    """The explained model for a run: CE uses raw features, SCL/TL the normalised-feature probe."""
    backbone = build_backbone(cfg.arch, cfg.widths)
    return ExplainedModel(backbone, num_classes, mean, std, normalize_features=cfg.objective != "ce")


def model_state(model: ExplainedModel, cfg: RunConfig, num_classes: int) -> dict:
    return {"config": cfg.to_dict(), "num_classes": num_classes,
            "mean": model.mean.flatten().tolist(), "std": model.std.flatten().tolist(),
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}


def load_model(run_dir_or_file: Union[str, Path], device: Union[str, torch.device] = "cpu"
               ) -> tuple[ExplainedModel, RunConfig]:
    """Load a trained run's explained model (``model.pt``) in eval mode, with its config."""
    p = Path(run_dir_or_file)
    if p.is_dir():
        p = p / "model.pt"
    if not p.is_file():
        raise FileNotFoundError(f"{p} not found: train the run first (notebook 01_train)")
    state = torch.load(p, map_location="cpu", weights_only=False)
    cfg = RunConfig.from_dict(state["config"])
    model = build_model(cfg, state["num_classes"], state["mean"], state["std"])
    model.load_state_dict(state["state_dict"])
    return model.to(device).eval(), cfg
