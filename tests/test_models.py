"""Backbones (CIFAR stem, widths), the explained model's logits, and the model.pt round trip.

Expected logits are computed in the test from the backbone and the head's weights with
plain tensor algebra (normalise input, pool, L2-normalise, W h + b), not through the
ExplainedModel methods under test.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from xai_utils.settings import layout as runs
from xai_utils.stages import files
from xai_utils.settings import RunConfig
from xai_utils.study.models import BACKBONES, ExplainedModel, ProjectionHead, build_backbone
from xai_utils.stages.model_io import load_model, model_state
from xai_utils.study.objectives import explained_model

NARROW = [16, 32, 64, 128]
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def _cfg(objective: str, widths=NARROW) -> RunConfig:
    return RunConfig(dataset="shapes", objective=objective, arch="resnet18", widths=widths)


def _convs(m: nn.Module) -> list[nn.Conv2d]:
    return [c for c in m.modules() if isinstance(c, nn.Conv2d)]


@pytest.mark.parametrize("widths", [NARROW, None])
def test_cifar_stem_and_layer4_map(widths):
    torch.manual_seed(0)
    net = build_backbone("resnet18", widths)
    stem = widths[0] if widths else 64
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1)
    assert net.conv1.out_channels == stem and net.bn1.num_features == stem
    assert isinstance(net.maxpool, nn.Identity)
    assert net.layer1[0].downsample is None          # stem width == first stage width
    with torch.no_grad():
        fmap = net.eval().forward_features(torch.rand(2, 3, 32, 32))
    dim = widths[-1] if widths else 512
    assert fmap.shape == (2, dim, 4, 4)
    assert net.num_features == dim
    assert max(max(c.in_channels, c.out_channels) for c in _convs(net)) == dim


def test_narrow_resnet18_has_no_full_width_leftovers():
    net = build_backbone("resnet18", [8, 16, 32, 64])
    assert max(max(c.in_channels, c.out_channels) for c in _convs(net)) == 64
    assert sum(p.numel() for p in net.parameters()) < 200_000   # ~11.2M / 64


def test_resnet50_feature_dims():
    torch.manual_seed(0)
    full = build_backbone("resnet50")
    assert full.num_features == 2048 and full.conv1.kernel_size == (7, 7)
    narrow = build_backbone("resnet50", NARROW)
    assert narrow.num_features == NARROW[-1] * 4 and narrow.conv1.out_channels == NARROW[0]
    with torch.no_grad():
        assert full.eval()(torch.rand(1, 3, 64, 64)).shape == (1, 2048)
        assert narrow.eval()(torch.rand(2, 3, 64, 64)).shape == (2, 512)


def _independent_logits(model: ExplainedModel, x: torch.Tensor, l2: bool) -> torch.Tensor:
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    fmap = model.backbone.forward_features((x - mean) / std)
    h = fmap.mean(dim=(2, 3))                                   # global average pooling
    if l2:
        h = h / h.norm(dim=1, keepdim=True)
    return h @ model.head.weight.T + model.head.bias


@pytest.mark.parametrize("objective", ["ce", "scl", "tl"])
def test_logits_match_independent_computation(objective):
    torch.manual_seed(1)
    model = explained_model(_cfg(objective), 10, MEAN, STD).eval()
    nn.init.normal_(model.head.weight)
    nn.init.normal_(model.head.bias)
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        got = model(x)
        ref = _independent_logits(model, x, l2=objective != "ce")
    assert model.normalize_features == (objective != "ce")
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    assert model.cam_layer is model.backbone.layer4[-1]


def test_projection_head_is_l2_normalised():
    torch.manual_seed(2)
    head = ProjectionHead(32, 8)
    h = torch.randn(5, 32)
    ref = head.net[2](torch.relu(head.net[0](h)))
    ref = ref / ref.norm(dim=1, keepdim=True)
    torch.testing.assert_close(head(h), ref)
    assert [type(m) for m in head.net] == [nn.Linear, nn.ReLU, nn.Linear]


@pytest.mark.parametrize("objective", ["ce", "scl"])
def test_load_model_round_trip(tmp_path, objective):
    torch.manual_seed(3)
    cfg = _cfg(objective)
    model = explained_model(cfg, 10, MEAN, STD)
    nn.init.normal_(model.head.weight)
    model.train()(torch.rand(8, 3, 32, 32))                     # move the BN running statistics
    model.eval()
    files.save_torch(tmp_path / runs.MODEL, model_state(model, cfg, 10))
    loaded, cfg2 = load_model(tmp_path)
    assert not loaded.training and cfg2 == cfg
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_bad_backbone_parameters():
    with pytest.raises(ValueError, match="unknown arch"):
        build_backbone("vgg11")
    with pytest.raises(ValueError, match="4 positive stage widths"):
        build_backbone("resnet18", [16, 32, 64])
    assert set(BACKBONES) >= {"resnet18", "resnet50"}
