"""Batched data augmentation on the device that holds the batch (no per-image PIL loop).

Every augmentation maps a batch ``x`` (uint8 or float in [0, 1], ``[B, 3, H, W]``) to float
pixels in [0, 1] and takes an optional ``torch.Generator``. Random parameters are drawn on the
generator's device: training passes a CPU generator (the global CPU generator when none is
given), so a seed gives the same parameters on CPU and CUDA and nothing is read back from the
accelerator. A recipe moves all parameters of one view to ``x.device`` in a single copy from
one pinned buffer (:func:`params_to`), and no apply step reads a device value on the host, so
a training step never waits for the accelerator (checked by ``tests/test_sync.py``).

Each recipe is split in two: ``sample_*_params(batch, ...)`` draws the per-image parameters
(a dict of tensors) and ``apply_*(x, params)`` applies them; tests check the statistics of the
first and the pixels of the second against torchvision's per-image functions.

Recipes (registry :data:`AUGMENTATIONS`, ``get_augmentation(name)``):

``ce``            CIFAR CE: random crop 32 with 4 zero pixels of padding, horizontal flip p 0.5.
``scl``           CIFAR SCL: random resized crop (scale 0.2-1, ratio 3/4-4/3), flip p 0.5,
                  colour jitter (0.4, 0.4, 0.4, 0.1) with p 0.8, grayscale p 0.2.
``ce_imagenet``   flip p 0.5 of the 224 views the loader cropped: its workers take the random
                  resized crop 224 (scale 0.08-1) of the whole image, as torchvision
                  (:func:`xai_utils.study.data.streaming.random_resized_crop`).
``scl_imagenet``  on those crops (scale 0.08-1, as ImageNet CE; the paper's SCL recipe *adds*
                  to it): flip, colour jitter (0.8, 0.8, 0.8, 0.2) p 0.8, grayscale p 0.2,
                  Gaussian blur (kernel 23, sigma 0.1-2) p 0.5.
``none``          no change (uint8 -> float); ``none_imagenet``: the same on the loader's clean
                  224 view (a larger input is centre-cropped to 224).

Fixed op order (torchvision's ColorJitter shuffles the four jitters per call; a fixed order is
simpler to batch and reproduce): crop+flip -> brightness -> contrast -> saturation -> hue ->
grayscale -> blur. The hue shift is done exactly as torchvision's ``adjust_hue``: RGB -> HSV,
rotate H, HSV -> RGB, batched in torch. The random resized crop is one ``grid_sample``
(bilinear, flip folded into the affine map, no antialiasing), equal to torchvision's
``resized_crop(..., antialias=False)`` except that the outermost output pixels may blend in
the pixel just outside the crop box.
"""
from __future__ import annotations

import functools
import math
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

Params = dict[str, torch.Tensor]
Augmentation = Callable[..., torch.Tensor]

# ITU-R 601-2 luma, the weights of torchvision's rgb_to_grayscale
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [0, 1]; floating input is returned as is."""
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    if not x.is_floating_point():
        raise TypeError(f"expected a uint8 or floating batch, got {x.dtype}")
    return x


def _check(x: torch.Tensor) -> None:
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"expected a batch [B, 3, H, W], got shape {tuple(x.shape)}")


def _gen_device(generator: Optional[torch.Generator]) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def _rand(shape: Sequence[int], generator: Optional[torch.Generator]) -> torch.Tensor:
    """Uniform [0, 1) draws on the generator's device (no copy: a CUDA generator's draws stay
    on the GPU, a CPU generator's on the host)."""
    return torch.rand(*shape, generator=generator, device=_gen_device(generator))


def _uniform(lo: float, hi: float, shape: Sequence[int], generator: Optional[torch.Generator]
             ) -> torch.Tensor:
    return lo + (hi - lo) * _rand(shape, generator)


def params_to(params: Params, device: torch.device) -> Params:
    """All parameters of a view on ``device`` with one host-to-device copy.

    Host tensors (bool, int64 and float32 columns of length B) are packed into one float64
    buffer, exact for all three (integers here are pixel counts far below 2**53), pinned when
    CUDA is available, copied without blocking and unpacked on the device. Parameters already
    on ``device`` are returned as they are; on a CPU target nothing is copied at all."""
    device = torch.device(device)
    host = {k: v for k, v in params.items() if v.device != device}
    if not host or device.type == "cpu":
        return {k: v.to(device) for k, v in params.items()}
    keys = list(host)
    buf = torch.stack([host[k].reshape(-1).to(torch.float64) for k in keys], 1)    # [B, K]
    if torch.cuda.is_available():
        buf = buf.pin_memory()
    dev = buf.to(device, non_blocking=True)
    out = dict(params)
    for j, k in enumerate(keys):
        out[k] = dev[:, j].to(host[k].dtype).view(host[k].shape)
    return out


def _where(flag: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(flag.view(-1, 1, 1, 1), a, b)


@functools.lru_cache(maxsize=None)
def _channel_constant(values: tuple[float, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A [1, C, 1, 1] constant, uploaded once per device (a new upload every step would be a
    blocking copy, after which CUDA waits for the stream)."""
    return torch.tensor(values, dtype=dtype, device=device).view(1, -1, 1, 1)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """Luma [B, 1, H, W] of float RGB [B, 3, H, W]."""
    w = _channel_constant(GRAY_WEIGHTS, x.dtype, x.device)
    return (x * w).sum(1, keepdim=True)


# --------------------------------------------------------------------------------------
# horizontal flip
# --------------------------------------------------------------------------------------


def sample_flip_params(batch: int, p: float = 0.5, generator: Optional[torch.Generator] = None
                       ) -> Params:
    return {"flip": _rand((batch,), generator) < p}


def apply_flip(x: torch.Tensor, params: Params) -> torch.Tensor:
    return _where(params["flip"].to(x.device), x.flip(-1), x)


# --------------------------------------------------------------------------------------
# random crop with zero padding (CIFAR CE)
# --------------------------------------------------------------------------------------


def sample_pad_crop_params(batch: int, padding: int = 4,
                           generator: Optional[torch.Generator] = None) -> Params:
    """Integer shifts ``dy``, ``dx`` uniform in [-padding, padding]: output pixel (i, j) is
    input pixel (i + dy, j + dx), zero outside the image."""
    shifts = (_rand((batch, 2), generator) * (2 * padding + 1)).floor().long() - padding
    return {"dy": shifts[:, 0], "dx": shifts[:, 1]}


def apply_pad_crop(x: torch.Tensor, params: Params) -> torch.Tensor:
    """Random crop of the zero-padded batch, same size as the input (exact pixel copies).

    Output pixel (i, j) gathers input pixel (i + dy, j + dx) and is zero where that falls
    outside the image; the padding is never materialised, so no shift is read on the host."""
    b, c, h, w = x.shape
    p = params_to({"dy": params["dy"], "dx": params["dx"]}, x.device)
    rows = p["dy"].view(b, 1) + torch.arange(h, device=x.device).view(1, h)      # [B, H]
    cols = p["dx"].view(b, 1) + torch.arange(w, device=x.device).view(1, w)      # [B, W]
    inside = (((rows >= 0) & (rows < h)).view(b, h, 1) & ((cols >= 0) & (cols < w)).view(b, 1, w))
    bidx = torch.arange(b, device=x.device).view(b, 1, 1)
    out = x.permute(0, 2, 3, 1)[bidx, rows.clamp(0, h - 1).view(b, h, 1),
                                cols.clamp(0, w - 1).view(b, 1, w)]              # [B, H, W, C]
    out = torch.where(inside.unsqueeze(-1), out, torch.zeros((), dtype=x.dtype, device=x.device))
    return out.permute(0, 3, 1, 2).contiguous()


# --------------------------------------------------------------------------------------
# random resized crop (+ flip), torchvision's sampling, one grid_sample
# --------------------------------------------------------------------------------------


def sample_resized_crop_params(batch: int, height: int, width: int,
                               scale: tuple[float, float] = (0.08, 1.0),
                               ratio: tuple[float, float] = (3 / 4, 4 / 3),
                               generator: Optional[torch.Generator] = None,
                               tries: int = 10) -> Params:
    """Crop boxes (``top``, ``left``, ``h``, ``w`` in input pixels) sampled per image like
    torchvision's ``RandomResizedCrop``: up to ``tries`` draws of (area fraction ~ U(scale),
    log aspect ~ U(log ratio)); the first box that fits is kept, else the centre crop with the
    aspect ratio clamped to ``ratio``."""
    area = height * width
    frac = _uniform(scale[0], scale[1], (batch, tries), generator)
    logr = _uniform(math.log(ratio[0]), math.log(ratio[1]), (batch, tries), generator)
    pos = _rand((batch, tries, 2), generator)
    aspect = torch.exp(logr)
    # round half to even as Python's round() in torchvision
    w = torch.round(torch.sqrt(frac * area * aspect)).long()
    h = torch.round(torch.sqrt(frac * area / aspect)).long()
    ok = (w > 0) & (h > 0) & (w <= width) & (h <= height)
    first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((batch,), -1, device=ok.device))
    k = first.clamp_min(0).view(-1, 1)
    w, h = w.gather(1, k).squeeze(1), h.gather(1, k).squeeze(1)
    top = (pos[:, :, 0].gather(1, k).squeeze(1) * (height - h + 1)).floor().long()
    left = (pos[:, :, 1].gather(1, k).squeeze(1) * (width - w + 1)).floor().long()
    # fallback: centre crop, aspect clamped into ratio
    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fh, fw = height, int(round(height * max(ratio)))
    else:
        fw, fh = width, height
    bad = first < 0
    w, h = torch.where(bad, fw, w), torch.where(bad, fh, h)
    top = torch.where(bad, (height - fh) // 2, top)
    left = torch.where(bad, (width - fw) // 2, left)
    return {"top": top, "left": left, "h": h, "w": w}


def apply_resized_crop(x: torch.Tensor, params: Params, size: Optional[int] = None,
                       flip: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Crop each image to its box and resize it to ``size`` x ``size`` (default: the input's
    height) with bilinear sampling; ``flip`` (bool [B]) mirrors the output horizontally."""
    b, c, hi, wi = x.shape
    size = size or hi
    p = params_to(params, x.device)
    dt = x.dtype
    top, left, h, w = (p[k].to(dt) for k in ("top", "left", "h", "w"))
    sx = w / wi
    if flip is not None:
        sx = torch.where(flip.to(x.device), -sx, sx)
    theta = torch.zeros(b, 2, 3, dtype=dt, device=x.device)
    theta[:, 0, 0] = sx
    theta[:, 0, 2] = (2 * left + w) / wi - 1
    theta[:, 1, 1] = h / hi
    theta[:, 1, 2] = (2 * top + h) / hi - 1
    grid = F.affine_grid(theta, [b, c, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def sample_crop_flip_params(batch: int, height: int, width: int, scale: Sequence[float] = (0.08, 1.0),
                            generator: Optional[torch.Generator] = None) -> Params:
    """A transform T that can be applied to images and to their maps alike: a random resized
    crop box (torchvision's sampling, ratio 3/4-4/3) and a horizontal flip with p 0.5 (CGC's
    T, and the consistency metric's)."""
    params = sample_resized_crop_params(batch, height, width, tuple(scale), generator=generator)
    params.update(sample_flip_params(batch, 0.5, generator))
    return params


def apply_crop_flip(x: torch.Tensor, params: Params) -> torch.Tensor:
    """T of :func:`sample_crop_flip_params` on any [B, C, H, W] (images or maps): crop the box,
    resize it back to the input size (bilinear), flip where flagged."""
    params = params_to(params, x.device)
    return apply_resized_crop(x, params, x.shape[-1], flip=params["flip"])


# --------------------------------------------------------------------------------------
# colour jitter, grayscale, blur
# --------------------------------------------------------------------------------------


def sample_color_jitter_params(batch: int, brightness: float = 0.4, contrast: float = 0.4,
                               saturation: float = 0.4, hue: float = 0.1, p: float = 0.8,
                               generator: Optional[torch.Generator] = None) -> Params:
    """Per-image factors (brightness, contrast, saturation ~ U(1 - s, 1 + s), hue shift ~
    U(-hue, hue)) and whether the jitter is applied (probability ``p``)."""
    u = _rand((batch, 5), generator)
    return {
        "jitter": u[:, 0] < p,
        "brightness": 1 - brightness + 2 * brightness * u[:, 1],
        "contrast": 1 - contrast + 2 * contrast * u[:, 2],
        "saturation": 1 - saturation + 2 * saturation * u[:, 3],
        "hue": -hue + 2 * hue * u[:, 4],
    }


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """RGB [B, 3, H, W] in [0, 1] -> HSV with all three in [0, 1]."""
    r, g, b = x.unbind(1)
    maxc, _ = x.max(1)
    minc, _ = x.min(1)
    delta = maxc - minc
    s = torch.where(maxc > 0, delta / maxc.clamp_min(1e-12), torch.zeros_like(maxc))
    d = delta.clamp_min(1e-12)
    h = torch.where(maxc == r, torch.remainder((g - b) / d, 6.0),
                    torch.where(maxc == g, (b - r) / d + 2.0, (r - g) / d + 4.0)) / 6.0
    h = torch.where(delta > 0, h, torch.zeros_like(h))
    return torch.stack([h, s, maxc], 1)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """HSV [B, 3, H, W] (all in [0, 1]) -> RGB, via the closed form
    c_n = V - V S max(0, min(k, 4 - k, 1)), k = (n + 6 H) mod 6, n = 5, 3, 1 for R, G, B."""
    h, s, v = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    n = _channel_constant((5.0, 3.0, 1.0), x.dtype, x.device)
    k = torch.remainder(n + 6.0 * h, 6.0)
    return v - v * s * torch.minimum(torch.minimum(k, 4.0 - k), torch.ones_like(k)).clamp_min(0.0)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of each image by ``shift`` [B] (in turns, |shift| <= 0.5)."""
    hsv = rgb_to_hsv(x)
    h = torch.remainder(hsv[:, 0:1] + shift.view(-1, 1, 1, 1), 1.0)
    return hsv_to_rgb(torch.cat([h, hsv[:, 1:]], 1))


def apply_color_jitter(x: torch.Tensor, params: Params) -> torch.Tensor:
    """Brightness -> contrast -> saturation -> hue (torchvision's formulas, per-image factors,
    clamped to [0, 1] after each step); images with ``jitter`` False are returned unchanged."""
    p = params_to(params, x.device)
    col = lambda t: t.to(x.dtype).view(-1, 1, 1, 1)  # noqa: E731
    y = (x * col(p["brightness"])).clamp(0, 1)
    mean = grayscale(y).mean((1, 2, 3), keepdim=True)
    y = (col(p["contrast"]) * y + (1 - col(p["contrast"])) * mean).clamp(0, 1)
    y = (col(p["saturation"]) * y + (1 - col(p["saturation"])) * grayscale(y)).clamp(0, 1)
    y = adjust_hue(y, p["hue"].to(x.dtype))
    return _where(p["jitter"], y, x)


def sample_grayscale_params(batch: int, p: float = 0.2,
                            generator: Optional[torch.Generator] = None) -> Params:
    return {"gray": _rand((batch,), generator) < p}


def apply_grayscale(x: torch.Tensor, params: Params) -> torch.Tensor:
    """Luma copied to the three channels where ``gray`` is True."""
    return _where(params["gray"].to(x.device), grayscale(x).expand_as(x), x)


def sample_blur_params(batch: int, sigma: tuple[float, float] = (0.1, 2.0), p: float = 0.5,
                       generator: Optional[torch.Generator] = None) -> Params:
    u = _rand((batch, 2), generator)
    return {"blur": u[:, 0] < p, "sigma": sigma[0] + (sigma[1] - sigma[0]) * u[:, 1]}


def apply_gaussian_blur(x: torch.Tensor, params: Params, kernel_size: int = 23) -> torch.Tensor:
    """Separable Gaussian blur with a per-image sigma (reflect padding, like torchvision's
    ``gaussian_blur``), one grouped convolution per axis; only where ``blur`` is True."""
    b, c, h, w = x.shape
    p = params_to(params, x.device)
    half = (kernel_size - 1) / 2
    t = torch.arange(kernel_size, dtype=x.dtype, device=x.device) - half
    k = torch.exp(-0.5 * (t.view(1, -1) / p["sigma"].to(x.dtype).view(-1, 1)) ** 2)
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0)                  # [B*C, K]
    r = kernel_size // 2
    y = F.pad(x.reshape(1, b * c, h, w), (r, r, r, r), mode="reflect")
    y = F.conv2d(y, k.view(b * c, 1, 1, kernel_size), groups=b * c)
    y = F.conv2d(y, k.view(b * c, 1, kernel_size, 1), groups=b * c)
    return _where(p["blur"], y.view(b, c, h, w), x)


# --------------------------------------------------------------------------------------
# recipes
# --------------------------------------------------------------------------------------


def none_augment(x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """No augmentation (uint8 -> float [0, 1])."""
    _check(x)
    return to_float(x)


def none_imagenet_augment(x: torch.Tensor, generator: Optional[torch.Generator] = None,
                          size: int = 224) -> torch.Tensor:
    """No random augmentation for streamed ImageNet batches (uint8 -> float): the clean view
    the loader delivers is already 224; a larger input is centre-cropped to ``size``."""
    _check(x)
    h, w = x.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return to_float(x[..., top:top + size, left:left + size])


def ce_augment(x: torch.Tensor, generator: Optional[torch.Generator] = None,
               padding: int = 4, p_flip: float = 0.5) -> torch.Tensor:
    """CIFAR CE recipe: random crop (same size) of the zero-padded image + horizontal flip."""
    _check(x)
    x = to_float(x)
    b = x.shape[0]
    params = sample_pad_crop_params(b, padding, generator)
    params.update(sample_flip_params(b, p_flip, generator))
    params = params_to(params, x.device)
    return apply_flip(apply_pad_crop(x, params), params)


def sample_scl_params(batch: int, height: int, width: int, generator: Optional[torch.Generator] = None,
                      scale: tuple[float, float] = (0.2, 1.0),
                      ratio: tuple[float, float] = (3 / 4, 4 / 3), p_flip: float = 0.5,
                      jitter: Optional[tuple[float, float, float, float]] = (0.4, 0.4, 0.4, 0.1),
                      p_jitter: float = 0.8, p_gray: float = 0.2, blur: bool = False,
                      p_blur: float = 0.5, blur_sigma: tuple[float, float] = (0.1, 2.0)) -> Params:
    """All random parameters of one SCL view, drawn in a fixed order from ``generator``."""
    params = sample_resized_crop_params(batch, height, width, scale, ratio, generator)
    params.update(sample_flip_params(batch, p_flip, generator))
    if jitter is not None:
        params.update(sample_color_jitter_params(batch, *jitter, p=p_jitter, generator=generator))
    params.update(sample_grayscale_params(batch, p_gray, generator))
    if blur:
        params.update(sample_blur_params(batch, blur_sigma, p_blur, generator))
    return params


def apply_scl(x: torch.Tensor, params: Params, size: Optional[int] = None,
              blur_kernel: int = 23) -> torch.Tensor:
    """Resized crop + flip -> colour jitter -> grayscale -> blur, with the given parameters."""
    params = params_to(params, x.device)
    y = apply_resized_crop(x, params, size, flip=params["flip"])
    if "jitter" in params:
        y = apply_color_jitter(y, params)
    y = apply_grayscale(y, params)
    if "blur" in params:
        y = apply_gaussian_blur(y, params, blur_kernel)
    return y.clamp_(0.0, 1.0)


def scl_augment(x: torch.Tensor, generator: Optional[torch.Generator] = None, blur: bool = False,
                size: Optional[int] = None, scale: tuple[float, float] = (0.2, 1.0),
                jitter: Optional[tuple[float, float, float, float]] = (0.4, 0.4, 0.4, 0.1),
                p_jitter: float = 0.8, p_gray: float = 0.2, p_blur: float = 0.5,
                blur_kernel: int = 23, blur_sigma: tuple[float, float] = (0.1, 2.0)) -> torch.Tensor:
    """SCL view (SimCLR/SupCon recipe): random resized crop to ``size`` (default: input size)
    with ``scale`` and ratio (3/4, 4/3), flip p 0.5, colour jitter with ``p_jitter``, grayscale
    with ``p_gray``, and with ``blur`` a Gaussian blur with ``p_blur``."""
    _check(x)
    x = to_float(x)
    params = sample_scl_params(x.shape[0], x.shape[2], x.shape[3], generator, scale=scale,
                               jitter=jitter, p_jitter=p_jitter, p_gray=p_gray, blur=blur,
                               p_blur=p_blur, blur_sigma=blur_sigma)
    return apply_scl(x, params, size, blur_kernel)


def ce_imagenet_augment(x: torch.Tensor, generator: Optional[torch.Generator] = None,
                        p_flip: float = 0.5) -> torch.Tensor:
    """ImageNet CE recipe on views the loader already cropped (its workers take the random
    resized crop to 224 of the whole image, :mod:`xai_utils.study.data.streaming`): horizontal flip p 0.5."""
    _check(x)
    x = to_float(x)
    params = params_to(sample_flip_params(x.shape[0], p_flip, generator), x.device)
    return apply_flip(x, params)


def sample_scl_imagenet_params(batch: int, generator: Optional[torch.Generator] = None,
                               p_flip: float = 0.5,
                               jitter: tuple[float, float, float, float] = (0.8, 0.8, 0.8, 0.2),
                               p_jitter: float = 0.8, p_gray: float = 0.2, p_blur: float = 0.5,
                               blur_sigma: tuple[float, float] = (0.1, 2.0)) -> Params:
    """All random parameters of one ImageNet SCL view but the crop (drawn by the loader), in a
    fixed order: flip, colour jitter, grayscale, blur."""
    params = sample_flip_params(batch, p_flip, generator)
    params.update(sample_color_jitter_params(batch, *jitter, p=p_jitter, generator=generator))
    params.update(sample_grayscale_params(batch, p_gray, generator))
    params.update(sample_blur_params(batch, blur_sigma, p_blur, generator))
    return params


def apply_scl_imagenet(x: torch.Tensor, params: Params, blur_kernel: int = 23) -> torch.Tensor:
    """Flip -> colour jitter -> grayscale -> blur of float views, with the given parameters."""
    params = params_to(params, x.device)
    y = apply_flip(x, params)
    y = apply_grayscale(apply_color_jitter(y, params), params)
    return apply_gaussian_blur(y, params, blur_kernel).clamp_(0.0, 1.0)


def scl_imagenet_augment(x: torch.Tensor, generator: Optional[torch.Generator] = None,
                         blur_kernel: int = 23, **recipe) -> torch.Tensor:
    """ImageNet SCL recipe on views the loader already cropped (random resized crop 224 of the
    whole image, scale 0.08-1, as ImageNet CE; the paper's SCL recipe *adds* to it): flip,
    colour jitter (0.8, 0.8, 0.8, 0.2) p 0.8, grayscale p 0.2, Gaussian blur (kernel 23,
    sigma 0.1-2) p 0.5. ``recipe``: keyword arguments of :func:`sample_scl_imagenet_params`."""
    _check(x)
    x = to_float(x)
    return apply_scl_imagenet(x, sample_scl_imagenet_params(x.shape[0], generator, **recipe), blur_kernel)


AUGMENTATIONS: dict[str, Augmentation] = {
    "none": none_augment,
    "none_imagenet": none_imagenet_augment,
    "ce": ce_augment,
    "scl": scl_augment,
    "ce_imagenet": ce_imagenet_augment,
    "scl_imagenet": scl_imagenet_augment,
}
# datasets whose images need the ImageNet variant of a recipe (input: the loader's 224 crops,
# the random resized crop already taken from the whole image)
_DATASET_VARIANTS = {"imagenet_s50": "_imagenet"}


def get_augmentation(name: str, dataset: Optional[str] = None) -> Augmentation:
    """The augmentation ``name`` (see :data:`AUGMENTATIONS`); with ``dataset='imagenet_s50'``,
    ``ce``/``scl``/``none`` resolve to their ImageNet variants (for views the loader already
    cropped to 224: no crop of their own)."""
    if dataset in _DATASET_VARIANTS and name + _DATASET_VARIANTS[dataset] in AUGMENTATIONS:
        name = name + _DATASET_VARIANTS[dataset]
    if name not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {name!r}; valid: {', '.join(AUGMENTATIONS)}")
    return AUGMENTATIONS[name]
