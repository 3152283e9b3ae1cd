"""The model contract of the lower layers (xai_utils.ops.contract): a class of a user's own that
has its members is explained and scored exactly as the wrapped timm model; one without them is
refused in one line naming what it lacks."""
import inspect

import pytest
import torch
import torch.nn as nn

from xai_utils.ops.attribution import attribute
from xai_utils.ops.contract import Embedding, Explainable, holds, require
from xai_utils.ops.metrics import METRICS, MetricInputs
from xai_utils.study.brought import bring
from xai_utils.study.models import build_model

MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)


class Mine(nn.Module):
    """Written as a user would, from the contract alone: no class of the companion."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1))

    @property
    def cam_layer(self) -> nn.Module:
        return self.net.layer4

    def normalize_input(self, x):
        return (x - self.mean) / self.std

    def forward(self, x):
        return self.net(self.normalize_input(x))


@pytest.fixture(scope="module")
def net(one_thread):
    import timm
    torch.manual_seed(0)
    return timm.create_model("resnet18", num_classes=4).eval()


def test_the_companions_models_and_a_users_own_class_hold_the_contract(net):
    assert holds(Mine(net), Explainable) and not holds(Mine(net), Embedding)
    assert holds(bring(net, mean=MEAN, std=STD), Embedding)
    assert holds(build_model("resnet18", [8, 16, 32, 64], 4, MEAN, STD, False), Embedding)
    assert not holds(net, Explainable)
    mine = Mine(net)
    assert bring(mine) is mine                                    # a model that holds it is not wrapped again


def test_buffers_count_although_a_static_lookup_misses_them(net):
    """Python 3.12's isinstance on a runtime protocol looks members up statically, which misses
    an nn.Module's buffers: the contract is checked with hasattr, on every Python."""
    wrapped = bring(net, mean=MEAN, std=STD)
    assert inspect.getattr_static(wrapped, "mean", None) is None and hasattr(wrapped, "mean")
    assert holds(wrapped) and bring(wrapped) is wrapped


@pytest.mark.parametrize("method", ["gradcam", "eigencam", "saliency"])
def test_a_users_own_class_is_explained_and_scored_as_the_wrapped_model(net, method):
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    target = torch.tensor([0, 1, 3])
    mine, wrapped = Mine(net), bring(net, target_layer="layer4", mean=MEAN, std=STD)
    maps = attribute(mine, x, target, method)
    assert torch.equal(maps, attribute(wrapped, x, target, method))
    for metric in ("pixel_flipping_normalised", "road"):
        a, b = (METRICS[metric].compute(MetricInputs(model=m, x=x, maps=maps, labels=target, preds=target,
                                                     targets=target, sample_ids=torch.arange(3),
                                                     features_in_step=512)).values for m in (mine, wrapped))
        assert torch.isfinite(a).any() and torch.allclose(a, b, rtol=0, atol=0, equal_nan=True), metric


def test_a_model_without_the_contract_is_refused_naming_what_it_lacks(net):
    with pytest.raises(TypeError, match=r"^ResNet lacks mean, std, cam_layer, normalize_input of the Explainable"):
        attribute(net, torch.rand(1, 3, 32, 32), [0], "gradcam")
    with pytest.raises(TypeError, match=r"lacks features of the Embedding contract"):
        require(Mine(net), Embedding)
    require(bring(net, mean=MEAN, std=STD), Embedding)           # holds: nothing raised
