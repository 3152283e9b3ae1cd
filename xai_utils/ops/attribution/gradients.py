"""Input-gradient and perturbation methods through Captum, turned into one map per image
(:func:`~xai_utils.ops.attribution.maps.channel_map`)."""
from __future__ import annotations

import warnings
from typing import Optional

import torch
from torch import Tensor

from ..contract import Explainable
from .maps import REDUCTIONS, channel_map, grad_input
from .registry import register_method


@register_method("saliency", label="Saliency", choices={"reduction": REDUCTIONS})
def saliency(model: Explainable, x: Tensor, target: Tensor, *, reduction: str = "sum",
             abs: bool = True, scale: bool = False) -> Tensor:
    """Input gradient dy_t/dx (Simonyan et al. 2014), Captum ``Saliency``; default map: L1 norm over channels."""
    from captum.attr import Saliency   # reason: captum loads only when a method of its runs
    with torch.enable_grad():
        g = Saliency(model).attribute(grad_input(x), target=target, abs=False)
    return channel_map(g.detach(), reduction, abs, scale)


@register_method("input_x_gradient", label="Input x Gradient", choices={"reduction": REDUCTIONS})
def input_x_gradient(model: Explainable, x: Tensor, target: Tensor, *, reduction: str = "sum",
                     abs: bool = True, scale: bool = False) -> Tensor:
    """x * dy_t/dx in pixel space (Captum ``InputXGradient``)."""
    from captum.attr import InputXGradient   # reason: captum loads only when a method of its runs
    with torch.enable_grad():
        g = InputXGradient(model).attribute(grad_input(x), target=target)
    return channel_map(g.detach(), reduction, abs, scale)


@register_method("integrated_gradients", label="Integrated Gradients", choices={
    "reduction": REDUCTIONS,
    "method": ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")})
def integrated_gradients(model: Explainable, x: Tensor, target: Tensor, *, n_steps: int = 50,
                         baseline: float = 0.0, method: str = "gausslegendre",
                         internal_batch_size: Optional[int] = None, reduction: str = "sum",
                         abs: bool = True, scale: bool = False) -> Tensor:
    """Integrated Gradients (Sundararajan et al. 2017), Captum ``IntegratedGradients``.

    Baseline: a constant image in pixel space (0.0 = black); ``n_steps=50`` (Captum's default,
    Gauss-Legendre; enough for 32 px and 224 px ResNets). ``internal_batch_size`` (None: the
    batch size N) bounds the images per forward/backward, so memory is that of N images.
    """
    from captum.attr import IntegratedGradients   # reason: captum loads only when a method of its runs
    ibs = internal_batch_size or x.shape[0]
    with torch.enable_grad():
        g = IntegratedGradients(model).attribute(
            grad_input(x), baselines=float(baseline), target=target, n_steps=n_steps,
            method=method, internal_batch_size=max(ibs, x.shape[0]))
    return channel_map(g.detach(), reduction, abs, scale)


@register_method("smoothgrad", label="SmoothGrad", choices={"reduction": REDUCTIONS})
def smoothgrad(model: Explainable, x: Tensor, target: Tensor, *, nt_samples: int = 16,
               stdevs: float = 0.15, seed: int = 0, nt_samples_batch_size: int = 1,
               reduction: str = "sum", abs: bool = True, scale: bool = False) -> Tensor:
    """SmoothGrad (Smilkov et al. 2017): mean input gradient over ``nt_samples`` noisy copies.

    Same computation as Captum's ``NoiseTunnel(Saliency(model)).attribute(nt_type=
    "smoothgrad", abs=False)`` (the test checks it), with the noise drawn from a private
    generator seeded with ``seed``: deterministic, the global RNG untouched, and the same
    ``nt_samples`` noise images ([S, C, H, W], N(0, stdevs^2) in pixel units; 0.15 = 15% of
    the [0, 1] range, Smilkov's recommended 10-20%) used for every image of the batch, so a
    map does not depend on the batch it was computed in. ``nt_samples_batch_size`` noisy
    copies of the whole batch go through one forward/backward (memory: that many batches).
    """
    from captum.attr import Saliency   # reason: captum loads only when a method of its runs
    gen = torch.Generator(device=x.device).manual_seed(seed)
    noise = torch.normal(0.0, float(stdevs), size=(nt_samples, *x.shape[1:]), generator=gen,
                         device=x.device, dtype=x.dtype)
    sal, n = Saliency(model), x.shape[0]
    total = torch.zeros_like(x)
    k = max(1, int(nt_samples_batch_size))
    with torch.enable_grad():
        for s in range(0, nt_samples, k):
            chunk = noise[s:s + k]                                   # [k, C, H, W]
            xn = (x.unsqueeze(1) + chunk.unsqueeze(0)).flatten(0, 1)  # [N*k, C, H, W], image-major
            g = sal.attribute(grad_input(xn), target=target.repeat_interleave(chunk.shape[0]), abs=False)
            total += g.detach().view(n, chunk.shape[0], *x.shape[1:]).sum(dim=1)
    return channel_map(total / nt_samples, reduction, abs, scale)


@register_method("guided_backprop", label="Guided Backprop", choices={"reduction": REDUCTIONS})
def guided_backprop(model: Explainable, x: Tensor, target: Tensor, *, reduction: str = "sum",
                    abs: bool = True, scale: bool = False) -> Tensor:
    """Guided backpropagation (Springenberg et al. 2015), Captum ``GuidedBackprop``.

    Runs with the model's in-place ReLUs switched to out-of-place (see :func:`~xai_utils.ops.attribution.registry.explaining`).
    """
    from captum.attr import GuidedBackprop   # reason: captum loads only when a method of its runs
    with torch.enable_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
        g = GuidedBackprop(model).attribute(grad_input(x), target=target)
    return channel_map(g.detach(), reduction, abs, scale)


def _check_occlusion(options: dict) -> None:
    """A stride longer than the window leaves pixels that no window covers (their map is 0)."""
    window, stride = options.get("window"), options.get("stride")
    if window is not None and stride is not None and stride > window:
        raise ValueError(f"method 'occlusion': stride {stride} > window {window} leaves pixels that no window "
                         "covers; use a stride of at most the window")


@register_method("occlusion", label="Occlusion", choices={"reduction": REDUCTIONS}, check=_check_occlusion)
def occlusion(model: Explainable, x: Tensor, target: Tensor, *, window: Optional[int] = None,
              stride: Optional[int] = None, baseline: float = 0.0, perturbations_per_eval: int = 1,
              reduction: str = "mean", abs: bool = True, scale: bool = False) -> Tensor:
    """Occlusion (Zeiler & Fergus 2014), Captum ``Occlusion``: drop of the target logit when a
    square window (all channels) is set to ``baseline`` (0.0 = black), averaged over windows.

    Defaults: ``window = H // 8`` and ``stride = window // 2`` (4/2 px on 32 px inputs, 28/14
    on 224 px), i.e. 15 x 15 window positions covering the image exactly. Each evaluation
    runs ``perturbations_per_eval`` occluded copies of the batch. ``reduction="mean"``:
    the channels are identical, so the map is the occlusion score itself.
    """
    from captum.attr import Occlusion   # reason: captum loads only when a method of its runs
    c, h = x.shape[1], x.shape[-2]
    window = window or max(1, h // 8)
    stride = stride or max(1, window // 2)
    _check_occlusion({"window": window, "stride": stride})
    with torch.no_grad():
        a = Occlusion(model).attribute(
            x, sliding_window_shapes=(c, window, window), strides=(c, stride, stride),
            baselines=float(baseline), target=target, perturbations_per_eval=perturbations_per_eval)
    return channel_map(a, reduction, abs, scale)
