"""Batched augmentations: parameter statistics, pixels against torchvision's per-image
functions, reproducibility, shapes and ranges."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from scipy import stats
from torchvision.transforms import InterpolationMode, RandomResizedCrop

from xai_utils.ops import augment as A
from xai_utils.study.data import load_dataset


def _binomial_ok(k: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    return abs(k - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


@pytest.fixture(scope="module")
def shapes_batch() -> torch.Tensor:
    return load_dataset("shapes", "test").images[:512]                      # uint8, colourful


def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- all recipes


@pytest.mark.parametrize("name,in_size,out_size", [
    ("none", 32, 32), ("ce", 32, 32), ("scl", 32, 32),
    ("ce_imagenet", 224, 224), ("scl_imagenet", 224, 224), ("none_imagenet", 224, 224),
    ("none_imagenet", 256, 224)])
def test_recipes_shapes_range_and_reproducibility(name, in_size, out_size):
    x = torch.randint(0, 256, (6, 3, in_size, in_size), dtype=torch.uint8)
    aug = A.get_augmentation(name)
    y = aug(x, _g(0))
    assert y.shape == (6, 3, out_size, out_size) and y.dtype == torch.float32
    assert y.min() >= 0 and y.max() <= 1
    assert torch.equal(y, aug(x, _g(0)))                      # same seed -> same output
    assert torch.equal(y, aug(x.float() / 255, _g(0)))        # uint8 and float agree
    if name == "none":
        assert torch.equal(y, x.float() / 255)
    elif name == "none_imagenet":                             # centre crop 224 (none of a 224 view)
        o = (in_size - out_size) // 2
        assert torch.equal(y, x[..., o:o + out_size, o:o + out_size].float() / 255)
    else:
        assert not torch.allclose(y, aug(x, _g(1)))           # different seed -> different


def test_get_augmentation_registry():
    assert A.get_augmentation("scl") is A.scl_augment
    assert A.get_augmentation("ce", dataset="imagenet_s50") is A.ce_imagenet_augment
    assert A.get_augmentation("scl", dataset="imagenet_s50") is A.scl_imagenet_augment
    assert A.get_augmentation("none", dataset="imagenet_s50") is A.none_imagenet_augment
    assert A.get_augmentation("ce", dataset="cifar10") is A.ce_augment
    with pytest.raises(ValueError, match="ce, scl"):
        A.get_augmentation("mixup")
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        A.ce_augment(torch.zeros(3, 32, 32))


def test_params_are_drawn_on_the_generator_device_and_moved():
    # parameters never depend on x.device: same generator seed -> same CPU parameters
    p1 = A.sample_scl_params(64, 32, 32, _g(5), blur=True)
    p2 = A.sample_scl_params(64, 32, 32, _g(5), blur=True)
    assert all(v.device.type == "cpu" and torch.equal(v, p2[k]) for k, v in p1.items())
    x = torch.rand(64, 3, 32, 32, dtype=torch.float64)      # apply follows x's dtype/device
    assert A.apply_scl(x, p1).dtype == torch.float64


# ----------------------------------------------------------------------------- flip, CE crop


def test_flip_rate_and_pixels():
    p = A.sample_flip_params(20_000, 0.5, _g(0))
    assert _binomial_ok(int(p["flip"].sum()), 20_000, 0.5)
    x = torch.rand(8, 3, 5, 7)
    f = A.sample_flip_params(8, 0.5, _g(3))
    y = A.apply_flip(x, f)
    for i in range(8):
        assert torch.equal(y[i], TF.hflip(x[i]) if f["flip"][i] else x[i])


def test_pad_crop_offsets_uniform_in_range():
    p = A.sample_pad_crop_params(18_000, 4, _g(0))
    for k in ("dy", "dx"):
        v = p[k]
        assert v.min() == -4 and v.max() == 4
        counts = torch.bincount(v + 4, minlength=9).numpy()
        assert stats.chisquare(counts).pvalue > 1e-3          # uniform over the 9 shifts
    assert abs(float(np.corrcoef(p["dy"], p["dx"])[0, 1])) < 0.05


def test_pad_crop_pixels_match_literal_loop():
    x = torch.rand(6, 3, 10, 12)
    p = A.sample_pad_crop_params(6, 4, _g(1))
    y = A.apply_pad_crop(x, p)
    ref = torch.zeros_like(x)
    for b in range(6):
        dy, dx = int(p["dy"][b]), int(p["dx"][b])
        for i in range(10):
            for j in range(12):
                if 0 <= i + dy < 10 and 0 <= j + dx < 12:
                    ref[b, :, i, j] = x[b, :, i + dy, j + dx]
    assert torch.equal(y, ref)


def test_ce_augment_end_to_end_flip_and_shift_statistics():
    n = 2000
    ramp = torch.linspace(0.1, 0.9, 32).view(1, 1, 1, 32).expand(n, 3, 32, 32).contiguous()
    y = A.ce_augment(ramp, _g(0))
    interior = y[:, 0, 12:20, 12:20]
    slope = (interior[:, :, 1:] - interior[:, :, :-1]).mean((1, 2))
    flipped = slope < 0
    assert _binomial_ok(int(flipped.sum()), n, 0.5)
    # the centre pixel reveals the horizontal shift: |shift| <= 4 pixels of the ramp
    step = 0.8 / 31
    centre = torch.where(flipped, ramp[0, 0, 0].flip(0)[16], ramp[0, 0, 0, 16])
    shift = ((y[:, 0, 16, 16] - centre) / step).round()
    shift = torch.where(flipped, -shift, shift)
    assert shift.abs().max() == 4 and len(torch.unique(shift)) == 9


# ----------------------------------------------------------------------------- resized crop


def test_resized_crop_params_match_torchvision_distribution():
    n = 4000
    p = A.sample_resized_crop_params(n, 32, 32, scale=(0.2, 1.0), generator=_g(0))
    h, w, top, left = p["h"], p["w"], p["top"], p["left"]
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 32).all() and (left + w <= 32).all()
    frac = (h * w).float() / 1024
    assert frac.min() > 0.15 and frac.max() == 1.0             # within scale (up to rounding)
    q = torch.histc(frac, bins=4, min=0.2, max=1.0) / n         # spread over [0.2, 1]
    assert (q > 0.1).all()
    ratio = w.float() / h.float()
    assert ratio.min() > 0.6 and ratio.max() < 1.6              # 3/4..4/3 up to rounding
    # same distribution as torchvision's RandomResizedCrop.get_params (KS tests)
    torch.manual_seed(0)
    img = torch.zeros(3, 32, 32)
    ref = np.array([RandomResizedCrop.get_params(img, [0.2, 1.0], [3 / 4, 4 / 3]) for _ in range(n)])
    assert stats.ks_2samp(frac.numpy(), ref[:, 2] * ref[:, 3] / 1024).pvalue > 1e-3
    assert stats.ks_2samp(top.numpy(), ref[:, 0]).pvalue > 1e-3
    assert stats.ks_2samp(ratio.numpy(), ref[:, 3] / ref[:, 2]).pvalue > 1e-3


def test_resized_crop_fallback_is_centre_crop():
    # scale > 1 never fits: torchvision falls back to the whole (ratio-clamped) image
    p = A.sample_resized_crop_params(5, 20, 40, scale=(2.0, 3.0), generator=_g(0))
    assert p["w"].tolist() == [27] * 5 and p["h"].tolist() == [20] * 5   # 40/20 clamped to 4/3
    assert p["left"].tolist() == [6] * 5 and p["top"].tolist() == [0] * 5


@pytest.mark.parametrize("in_size,out_size", [(32, 32), (40, 24)])
def test_resized_crop_pixels_match_torchvision(in_size, out_size):
    x = torch.rand(16, 3, in_size, in_size)
    p = A.sample_resized_crop_params(16, in_size, in_size, scale=(0.2, 1.0), generator=_g(2))
    flip = A.sample_flip_params(16, 0.5, _g(3))["flip"]
    y = A.apply_resized_crop(x, p, out_size, flip=flip)
    assert y.shape == (16, 3, out_size, out_size)
    for i in range(16):
        ref = TF.resized_crop(x[i], int(p["top"][i]), int(p["left"][i]), int(p["h"][i]),
                              int(p["w"][i]), [out_size, out_size],
                              InterpolationMode.BILINEAR, antialias=False)
        if flip[i]:
            ref = TF.hflip(ref)
        # interior: identical sampling; the outermost ring may blend a pixel outside the box
        torch.testing.assert_close(y[i, :, 1:-1, 1:-1], ref[:, 1:-1, 1:-1], atol=1e-5, rtol=0)
        assert (y[i] - ref).abs().mean() < 0.05


# ----------------------------------------------------------------------------- colour


def test_color_jitter_params():
    p = A.sample_color_jitter_params(20_000, 0.4, 0.4, 0.4, 0.1, p=0.8, generator=_g(0))
    assert _binomial_ok(int(p["jitter"].sum()), 20_000, 0.8)
    for k in ("brightness", "contrast", "saturation"):
        assert p[k].min() >= 0.6 and p[k].max() <= 1.4 and p[k].min() < 0.61 and p[k].max() > 1.39
    assert p["hue"].abs().max() <= 0.1 and p["hue"].min() < -0.099


def test_color_jitter_pixels_match_torchvision(shapes_batch):
    x = shapes_batch[:24].float() / 255
    p = A.sample_color_jitter_params(24, 0.8, 0.8, 0.8, 0.2, p=0.8, generator=_g(4))
    y = A.apply_color_jitter(x, p)
    assert 0 < int(p["jitter"].sum()) < 24
    for i in range(24):
        if not p["jitter"][i]:
            assert torch.equal(y[i], x[i])
            continue
        ref = TF.adjust_brightness(x[i], float(p["brightness"][i]))
        ref = TF.adjust_contrast(ref, float(p["contrast"][i]))
        ref = TF.adjust_saturation(ref, float(p["saturation"][i]))
        ref = TF.adjust_hue(ref, float(p["hue"][i]))
        torch.testing.assert_close(y[i], ref, atol=2e-5, rtol=0)


def test_hsv_round_trip_and_hue_against_torchvision():
    x = torch.rand(32, 3, 9, 9)
    x[0] = 0.5                                           # grey: hue undefined, must stay grey
    x[1, :, :, :4] = 0                                   # black pixels
    torch.testing.assert_close(A.hsv_to_rgb(A.rgb_to_hsv(x)), x, atol=1e-6, rtol=0)
    shift = torch.linspace(-0.5, 0.5, 32)
    y = A.adjust_hue(x, shift)
    for i in range(32):
        torch.testing.assert_close(y[i], TF.adjust_hue(x[i], float(shift[i])), atol=2e-5, rtol=0)


def test_grayscale_pixels():
    x = torch.rand(10, 3, 6, 6)
    p = A.sample_grayscale_params(10, 0.5, _g(1))
    y = A.apply_grayscale(x, p)
    for i in range(10):
        ref = TF.rgb_to_grayscale(x[i], 3) if p["gray"][i] else x[i]
        torch.testing.assert_close(y[i], ref, atol=1e-6, rtol=0)


def test_gaussian_blur_matches_torchvision():
    x = torch.rand(6, 3, 40, 40)
    p = A.sample_blur_params(6, (0.1, 2.0), p=0.5, generator=_g(2))
    p["blur"][:3] = True
    y = A.apply_gaussian_blur(x, p, 23)
    for i in range(6):
        if p["blur"][i]:
            s = float(p["sigma"][i])
            ref = TF.gaussian_blur(x[i], [23, 23], [s, s])
            torch.testing.assert_close(y[i], ref, atol=1e-5, rtol=0)
        else:
            assert torch.equal(y[i], x[i])
    q = A.sample_blur_params(20_000, (0.1, 2.0), p=0.5, generator=_g(0))
    assert _binomial_ok(int(q["blur"].sum()), 20_000, 0.5)
    assert q["sigma"].min() >= 0.1 and q["sigma"].max() <= 2.0
    assert stats.kstest(((q["sigma"] - 0.1) / 1.9).numpy(), "uniform").pvalue > 1e-3


# ----------------------------------------------------------------------------- SCL end to end


def test_scl_augment_grayscale_rate_and_composition(shapes_batch):
    x = shapes_batch                                      # 512 colourful images
    y = A.scl_augment(x, _g(0))
    gray = (y[:, 0] == y[:, 1]).flatten(1).all(1) & (y[:, 1] == y[:, 2]).flatten(1).all(1)
    assert _binomial_ok(int(gray.sum()), len(x), 0.2)
    # exactly the composition of the documented steps with the parameters from the same seed
    p = A.sample_scl_params(len(x), 32, 32, _g(0))
    assert torch.equal(gray, p["gray"])
    step = A.apply_resized_crop(x.float() / 255, p, flip=p["flip"])
    step = A.apply_grayscale(A.apply_color_jitter(step, p), p)
    torch.testing.assert_close(y, step, atol=0, rtol=0)
    jit_rate = float(p["jitter"].float().mean())
    assert abs(jit_rate - 0.8) < 0.06


def test_ce_imagenet_flips_the_loader_crops_only():
    # the loader crops 224 from the whole image; the recipe only flips (no crop, same size)
    x = torch.randint(0, 256, (256, 3, 24, 24), dtype=torch.uint8)
    y = A.ce_imagenet_augment(x, _g(3))
    flip = A.sample_flip_params(256, 0.5, _g(3))["flip"]
    assert y.shape == x.shape
    assert torch.equal(y[flip], x[flip].flip(-1).float() / 255)
    assert torch.equal(y[~flip], x[~flip].float() / 255)
    assert _binomial_ok(int(flip.sum()), 256, 0.5)


def test_scl_imagenet_on_loader_crops():
    # the loader crops 224 from the whole image; the recipe keeps the size (no crop) and is
    # flip -> colour jitter -> grayscale -> blur with the parameters of the same seed
    x = torch.randint(0, 256, (64, 3, 64, 64), dtype=torch.uint8)
    p = A.sample_scl_imagenet_params(64, _g(0))
    assert set(p) == {"flip", "jitter", "brightness", "contrast", "saturation", "hue", "gray",
                      "blur", "sigma"}                               # no crop box
    assert p["brightness"].min() >= 0.2 and p["brightness"].max() <= 1.8
    assert p["hue"].abs().max() <= 0.2 and p["sigma"].min() >= 0.1 and p["sigma"].max() <= 2.0
    y = A.scl_imagenet_augment(x, _g(0))
    assert y.shape == x.shape
    no_blur = A.apply_grayscale(A.apply_color_jitter(A.apply_flip(x.float() / 255, p), p), p)
    torch.testing.assert_close(y, A.apply_gaussian_blur(no_blur, p, 23).clamp(0, 1), atol=0, rtol=0)
    assert torch.equal(y[~p["blur"]], no_blur[~p["blur"]])
    rough = lambda t: (t[:, :, :, 1:] - t[:, :, :, :-1]).abs().mean((1, 2, 3))  # noqa: E731
    visible = p["blur"] & (p["sigma"] > 0.5)
    assert visible.sum() > 10 and _binomial_ok(int(p["blur"].sum()), 64, 0.5)
    assert (rough(y[visible]) < 0.9 * rough(no_blur[visible])).all()
    for key, rate in (("gray", 0.2), ("jitter", 0.8), ("flip", 0.5)):
        assert _binomial_ok(int(p[key].sum()), 64, rate), key
