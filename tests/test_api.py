"""The library route: the study's protocol on a model and images a user brings
(``xai_utils.evaluate``, ``xai_utils.attribute``), checked against Quantus called on the same
model, maps and images, and against the layer and normalisation the docs promise."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import quantus
import timm
import torch
import torch.nn as nn
import torchvision

import xai_utils
from xai_utils.errors import UnknownNameError
from xai_utils.study.brought import BroughtModel, bring, find_cam_layer

SIZE, STEP = 64, 256                                   # 48 pixel-flipping steps (Quantus: STEP divides H x W)


@pytest.fixture(scope="module")
def model_and_images():
    torch.manual_seed(0)
    net = timm.create_model("resnet18", num_classes=4).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(8, 3, SIZE, SIZE, generator=g)
    return net, x, torch.arange(8) % 4


def test_evaluate_returns_the_long_table_and_equals_quantus_on_the_same_model(model_and_images):
    net, x, y = model_and_images
    df = xai_utils.evaluate(net, x, y, methods=["gradcam"], metrics=["pixel_flipping", "complexity"],
                            features_in_step=STEP, device="cpu")
    assert list(df.columns) == ["image", "label", "pred", "correct", "method", "metric", "value"]
    assert len(df) == 2 * len(x) and set(df["metric"]) == {"pixel_flipping", "complexity"}
    pf = df[df["metric"] == "pixel_flipping"].set_index("image")["value"]
    assert np.isfinite(pf).sum() >= 3                  # random weights: some Grad-CAM maps are all zero (NaN)
    # the reference: Quantus on the wrapped model (pixel-space images), maps from xai_utils.attribute
    model = bring(net)
    with torch.no_grad():
        preds = model(x).argmax(1)
    assert (df[df["metric"] == "complexity"]["pred"].to_numpy() == preds.numpy()).all()
    maps = xai_utils.attribute(net, x, preds, "gradcam")
    ok = [i for i in range(len(x)) if float(maps[i].max() - maps[i].min()) > 0]
    q = quantus.PixelFlipping(features_in_step=STEP, perturb_baseline="black", disable_warnings=True,
                              return_auc_per_sample=True)
    ref = [q(model=model, x_batch=x[i:i + 1].numpy(), y_batch=y[i:i + 1].numpy(), a_batch=maps[i:i + 1].numpy())[0]
           / (3 * SIZE * SIZE // STEP - 1) for i in ok]          # Quantus's trapezoid / (steps - 1), as the paper
    np.testing.assert_allclose(pf.loc[ok].to_numpy(), ref, atol=1e-5, rtol=0)
    qc = [quantus.Complexity(disable_warnings=True)(model=None, x_batch=x[i:i + 1].numpy(), y_batch=y[i:i + 1].numpy(),
                                                     a_batch=maps[i:i + 1].numpy())[0] for i in ok]
    cx = df[df["metric"] == "complexity"].set_index("image")["value"]
    np.testing.assert_allclose(cx.loc[ok].to_numpy(), qc, rtol=1e-6, atol=0)   # Quantus's entropy is float32 (~8: ulp 1e-6)


def test_the_layer_and_the_normalisation_are_found_or_given(model_and_images):
    net, x, y = model_and_images
    assert find_cam_layer(net) is net.layer4                                        # timm's last stage
    tv = torchvision.models.resnet18(num_classes=4)
    assert find_cam_layer(tv) is tv.layer4
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 5, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    assert find_cam_layer(plain) is plain[2]                                        # the last convolution
    wrapped = bring(net)
    assert isinstance(wrapped, BroughtModel)
    assert wrapped.mean.flatten().tolist() == pytest.approx([0.485, 0.456, 0.406])  # timm's pretrained config
    with torch.no_grad():                                                           # pixel space in, as the study's
        assert torch.allclose(wrapped(x), net((x - wrapped.mean) / wrapped.std))
    assert bring(net, target_layer="layer3").cam_layer is net.layer3
    assert dict(bring(net).named_children()).keys() == {"net"}                      # the layer is not registered twice
    with pytest.raises(ValueError, match="give mean and std"):
        bring(tv)
    with pytest.raises(ValueError, match="'layer9' is not a module"):
        bring(net, target_layer="layer9")
    shallow = xai_utils.attribute(net, x, y, "gradcam", target_layer=net.layer3)
    deep = xai_utils.attribute(net, x, y, "gradcam")
    assert shallow.shape == deep.shape == (8, 1, SIZE, SIZE) and not torch.allclose(shallow, deep)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"metrics": ["pixel_flipping_calibrated"]}, ValueError, "needs a temperature"),
    ({"metrics": ["pointing_game"]}, ValueError, "needs object masks"),
    ({"metrics": ["complexity"], "sigma": 1.0}, ValueError, "unknown metric setting"),
    ({"metrics": ["complexty"]}, UnknownNameError, "did you mean 'complexity'"),
])
def test_bad_arguments_are_refused_before_any_work(model_and_images, kwargs, error, message):
    net, x, y = model_and_images
    with pytest.raises(error, match=message):
        xai_utils.evaluate(net, x, y, methods=["gradcam"], device="cpu", **kwargs)


def test_the_docs_page_runs():
    """docs/own-models.md's code, as a reader would paste it."""
    page = (Path(__file__).resolve().parent.parent / "docs" / "own-models.md").read_text()
    page = page.split("## Through a profile")[0]          # the library route (test_own_models runs the rest)
    blocks = re.findall(r"```python\n(.*?)```", page, flags=re.S)
    assert blocks
    namespace: dict = {}
    exec(compile("\n".join(blocks), "own-models.md", "exec"), namespace)
    assert namespace["maps"].shape == (8, 1, 64, 64)
    assert set(namespace["scores"]["scl"]["metric"]) == {"pixel_flipping", "complexity"}
