"""Feature-attribution maps for a batch of images: one registry, one call.

    maps = attribute(model, x, target, "gradcam")      # float32 [N, 1, H, W] on x.device

``model`` is an :class:`~xai_utils.models.ExplainedModel` (pixel-space [0, 1] images in,
logits out), ``x`` a float batch [N, C, H, W] in [0, 1] on the model's device and ``target``
the class explained for each image (int64 [N]). Every method handles the whole batch in
tensor operations (no per-image Python loop), so its result for an image does not depend
on the other images of the batch (BatchNorm runs in eval mode).

Methods (the registry :data:`METHODS`; add one with ``@register_method("name", label=...)``):

* ``gradcam`` — :func:`grad_cam` on ``model.cam_layer`` (``layer4[-1]``), ReLU,
  bilinear upsampling to the input size, min-max scaling per map to [0, 1] (the
  pytorch-grad-cam convention the paper's authors used; ``scale=False`` keeps the
  upsampled, ReLU'd map).
* ``eigencam`` — projection of the CAM layer's activations on their first principal
  component (class-agnostic), ReLU, same post-processing. See :func:`eigencam_projection`
  for the sign rule.
* Captum input-gradient methods: ``saliency``, ``integrated_gradients``, ``smoothgrad``,
  ``input_x_gradient``, ``guided_backprop`` and the perturbation method ``occlusion``.
  Their per-channel attributions [N, C, H, W] are turned into one map by
  :func:`channel_map`: absolute value per channel first (``abs=True`` by default: maps are
  magnitudes, non-negative like the CAM maps, so every metric treats all methods alike),
  then a channel reduction (``reduction="sum"`` by default, i.e. the per-pixel L1 norm;
  ``"mean"`` for occlusion, whose channels are identical, so the map is the occlusion
  score itself; ``"max_abs"`` keeps the value of largest magnitude). Not min-max scaled
  unless ``scale=True``.

Constant maps (e.g. an all-zero Grad-CAM after the ReLU) are scaled to all zeros, never NaN
(:func:`minmax_scale`). While a method runs the model is switched to eval mode and, for
guided backprop, every in-place activation is made out-of-place; both are restored
afterwards, and every hook is removed, so the model's logits are unchanged by a call.
"""
from __future__ import annotations

import contextlib
import inspect
import json
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from . import runs

Method = Callable[..., Tensor]
METHODS: dict[str, Method] = {}


def register_method(name: str, label: str, class_agnostic: bool = False,
                    choices: Optional[dict[str, Sequence[str]]] = None) -> Callable[[Method], Method]:
    """Register ``fn(model, x, target, *, **options) -> [N, 1, H, W]`` under ``name``.

    ``label``: the name tables and figures show. ``class_agnostic``: the map ignores
    ``target`` (e.g. contrastivity is undefined for such a method). ``choices``: the allowed
    values of options that take a name (checked with the run's configuration). All three
    are stored on the function (``fn.label``, ``fn.class_agnostic``, ``fn.choices``); the
    options themselves are the function's keyword-only arguments and their defaults.
    """
    def wrap(fn: Method) -> Method:
        fn.label = label  # type: ignore[attr-defined]
        fn.class_agnostic = class_agnostic  # type: ignore[attr-defined]
        fn.choices = {k: tuple(v) for k, v in (choices or {}).items()}  # type: ignore[attr-defined]
        METHODS[name] = fn
        return fn
    return wrap


def method_label(name: str) -> str:
    """Display name of a method (``Grad-CAM``), single-image or pairwise
    (:data:`xai_utils.pairs.PAIR_METHODS`); an unregistered name is shown as is."""
    from .pairs.methods import PAIR_METHODS
    return getattr(METHODS.get(name) or PAIR_METHODS.get(name), "label", str(name))


def is_class_agnostic(name: str) -> bool:
    """The method's map does not depend on the class explained (its registry flag)."""
    return bool(getattr(METHODS.get(name), "class_agnostic", False))


def check_method_options(name: str, options: dict[str, Any]) -> None:
    """Raise ValueError for an unknown method or option, an option value whose type differs
    from its default's, or a name outside the option's registered choices."""
    check_options(get_method(name), f"method '{name}'", options)


def keyword_options(fn: Callable, what: str, **options: Any) -> dict[str, Any]:
    """The keyword-only options of ``fn`` with their defaults, updated by ``options``
    (an unknown name is an error naming ``what``)."""
    params = inspect.signature(fn).parameters
    valid = {k: p.default for k, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    bad = sorted(set(options) - set(valid))
    if bad:
        raise ValueError(f"{what} has no option(s) {bad}; valid options: {', '.join(valid) or 'none'}")
    return {**valid, **options}


def check_options(fn: Callable, what: str, options: dict[str, Any]) -> None:
    """Check ``options`` of a registered function: known names, values of their default's
    type (ints for floats allowed), names within the registered ``fn.choices``."""
    defaults = keyword_options(fn, what)
    keyword_options(fn, what, **options)
    for k, v in options.items():
        allowed = getattr(fn, "choices", {}).get(k)
        if allowed is not None and v not in allowed:
            raise ValueError(f"{what} option '{k}' must be one of {', '.join(allowed)}, got {v!r}")
        d = defaults[k]
        numeric = isinstance(d, (int, float)) and not isinstance(d, bool)
        if d is not None and not (numeric and isinstance(v, (int, float)) and not isinstance(v, bool)) \
                and not isinstance(v, type(d)):
            raise ValueError(f"{what} option '{k}' must be a {type(d).__name__} "
                             f"like its default {d!r}, got {v!r}")


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown attribution method '{name}'; available: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def check_methods(methods: Sequence[str]) -> list[str]:
    """Validate a list of method names at once (one error listing all unknown names)."""
    methods = list(methods)
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise ValueError(f"unknown attribution method(s) {bad}; available: {', '.join(sorted(METHODS))}")
    return methods


def resolve_options(name: str, **options: Any) -> dict[str, Any]:
    """The method's options: its defaults updated by ``options`` (unknown names are an error)."""
    return keyword_options(get_method(name), f"method '{name}'", **options)


# ----------------------------------------------------------------------------- post-processing

def upsample(maps: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinear resize of [N, 1, h, w] maps to ``size`` (half-pixel centres, as cv2.resize)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps, size=tuple(size), mode="bilinear", align_corners=False)


def minmax_scale(maps: Tensor) -> Tensor:
    """Scale each map of [N, ...] to [0, 1]; a constant map becomes all zeros (not NaN).

    pytorch-grad-cam divides by ``max - min + 1e-7`` instead; for a map of range r the two
    differ by at most 1e-7 / (r + 1e-7) (relative), and both give zeros for constant maps.
    """
    flat = maps.flatten(1)
    lo = flat.min(dim=1, keepdim=True).values
    rng = flat.max(dim=1, keepdim=True).values - lo
    ok = rng > 0
    out = torch.where(ok, (flat - lo) / torch.where(ok, rng, torch.ones_like(rng)), torch.zeros_like(flat))
    return out.view_as(maps)


REDUCTIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "sum": lambda a: a.sum(dim=1, keepdim=True),
    "mean": lambda a: a.mean(dim=1, keepdim=True),
    "max_abs": lambda a: a.gather(1, a.abs().argmax(dim=1, keepdim=True)),
}


def channel_map(attr: Tensor, reduction: str = "sum", abs: bool = True, scale: bool = False) -> Tensor:
    """[N, C, H, W] attributions -> [N, 1, H, W]: |.| per channel (if ``abs``), reduce, scale."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction '{reduction}'; available: {', '.join(REDUCTIONS)}")
    if abs:
        attr = attr.abs()
    out = REDUCTIONS[reduction](attr)
    return minmax_scale(out) if scale else out


def _grad_input(x: Tensor) -> Tensor:
    """A view of ``x`` that requires grad, leaving the caller's tensor untouched."""
    return x.detach().requires_grad_(True)


# ----------------------------------------------------------------------------- model state

@contextlib.contextmanager
def explaining(model: nn.Module, out_of_place: bool = False) -> Iterator[nn.Module]:
    """Run with ``model`` in eval mode (and, if asked, no in-place activations); restore after.

    Captum's guided backprop replaces ReLU gradients with hooks on ``nn.ReLU`` modules; timm
    ResNets use ``nn.ReLU(inplace=True)``, whose in-place write can defeat tensor hooks on
    some torch versions. Switching ``inplace`` off is numerically identical and is undone here.
    """
    training = {m: m.training for m in model.modules()}
    inplace = [m for m in model.modules() if isinstance(getattr(m, "inplace", None), bool) and m.inplace]
    model.eval()
    if out_of_place:
        for m in inplace:
            m.inplace = False
    try:
        yield model
    finally:
        for m in inplace:
            m.inplace = True
        for m, flag in training.items():
            m.training = flag


@contextlib.contextmanager
def _captured_output(layer: nn.Module) -> Iterator[list[Tensor]]:
    """Collect the outputs of ``layer`` during the block; the hook is always removed."""
    store: list[Tensor] = []
    handle = layer.register_forward_hook(lambda mod, inp, out: store.append(out))
    try:
        yield store
    finally:
        handle.remove()


# ----------------------------------------------------------------------------- CAM methods

def module_at(root: nn.Module, path: str) -> nn.Module:
    """The submodule of ``root`` at a dotted path; integers index sequences, negative ones
    from the end: ``"layer2.-1.conv2"`` is the last convolution of the last block of stage 2."""
    mod = root
    for part in path.split("."):
        try:
            mod = mod[int(part)] if part.lstrip("-").isdigit() else getattr(mod, part)
        except (AttributeError, IndexError, TypeError):
            raise ValueError(f"no module '{part}' on the path '{path}' of {type(root).__name__}") from None
    return mod


def grad_cam(forward: Callable[[Tensor], Tensor], layer: nn.Module, x: Tensor, target: Tensor, *,
             relu: bool = True, create_graph: bool = False) -> Tensor:
    """Grad-CAM (Selvaraju et al. 2017) at ``layer``'s resolution, float32 [N, 1, h, w].

    ``A`` = the output of ``layer`` while ``forward(x)`` computes the logits; for image i the
    map is ``sum_c mean_hw(d logit_{t_i} / d A_c) * A_c`` (ReLU'd when ``relu``). The one
    implementation behind the ``gradcam`` method (eval mode, the model's own logits) and the
    saliency an objective computes inside a training step (train mode; its own ``forward``,
    e.g. a jointly trained classifier; ``create_graph`` keeps it differentiable). The map
    arithmetic is float32 under autocast too. Each image's map depends on that image only
    when the network does (BatchNorm in eval mode).
    """
    store: list[Tensor] = []
    handle = layer.register_forward_hook(lambda mod, inp, out: store.append(out))
    with torch.enable_grad():
        try:
            logits = forward(x)
        finally:
            handle.remove()
        acts = store[-1]
        score = logits.float().gather(1, target.view(-1, 1).to(logits.device)).sum()
        (grads,) = torch.autograd.grad(score, acts, create_graph=create_graph)
        weights = grads.float().mean(dim=(2, 3), keepdim=True)
        cam = (weights * acts.float()).sum(dim=1, keepdim=True)
        return cam.clamp_min(0) if relu else cam


@register_method("gradcam", label="Grad-CAM")
def gradcam(model: nn.Module, x: Tensor, target: Tensor, *, scale: bool = True) -> Tensor:
    """Grad-CAM (Selvaraju et al. 2017) of ``model.cam_layer`` (:func:`grad_cam`).

    Map = ReLU(sum_c mean_hw(dy_t/dA_c) * A_c), upsampled bilinearly to the input size,
    then min-max scaled per map (``scale=True``, the paper's convention).
    """
    cam = grad_cam(model, model.cam_layer, _grad_input(x), target).detach()
    cam = upsample(cam, x.shape[-2:])
    return minmax_scale(cam) if scale else cam


def _sign_activation(proj: Tensor, acts: Tensor) -> Tensor:
    """+1/-1 per image so that the projection correlates positively with the channel-mean activation."""
    return torch.where((proj * acts.mean(dim=1).flatten(1)).sum(dim=1) < 0, -1.0, 1.0)


def _sign_max(proj: Tensor, acts: Tensor) -> Tensor:
    """Seg-Eigen-CAM's rule: flip when |min| > |max| (pytorch-grad-cam's sign-corrected projection)."""
    return torch.where(proj.min(dim=1).values.abs() > proj.max(dim=1).values.abs(), -1.0, 1.0)


def _sign_numpy(proj: Tensor, acts: Tensor) -> Tensor:
    """The sign pytorch-grad-cam's EigenCAM gets: NumPy's (LAPACK) SVD, on the CPU."""
    a = acts.flatten(2).transpose(1, 2)
    a = (a - a.mean(dim=1, keepdim=True)).detach().cpu().numpy()
    v1 = np.linalg.svd(a, full_matrices=False)[2][:, 0]                  # batched, [N, C]
    ref = torch.from_numpy(np.einsum("npc,nc->np", a, v1)).to(proj)
    return torch.where((proj * ref).sum(dim=1) < 0, -1.0, 1.0)


EIGEN_SIGNS: dict[str, Optional[Callable[[Tensor, Tensor], Tensor]]] = {
    "activation": _sign_activation,
    "numpy": _sign_numpy,
    "max": _sign_max,
    "none": None,
}


def eigencam_projection(acts: Tensor, sign: str = "activation") -> Tensor:
    """Signed Eigen-CAM projection of activations [N, C, h, w] -> [N, h, w], batched.

    Per image: A = activations as [h*w, C], centred over positions; first right singular
    vector v1 of A (one batched ``torch.linalg.svd`` over [N, h*w, C]); projection A v1.
    The sign of v1 is arbitrary (it depends on the SVD library and device), and since a
    ReLU follows, flipping it selects the complementary region. ``sign="activation"``
    (default, deterministic) picks the sign for which the projection correlates positively
    with the mean activation over channels, i.e. the component points toward where the layer
    fires. pytorch-grad-cam's ``EigenCAM`` (used by the paper's authors) keeps whatever sign
    NumPy's LAPACK returns: it agrees with this rule on most images but not all (46 and 54
    of 64 shapes images for a briefly fitted and a random narrow ResNet-18), and on the
    others its map is the complementary region. ``sign="numpy"`` reproduces that sign
    (a batched NumPy SVD on the CPU; it depends on NumPy's LAPACK build) for side-by-side
    comparison with the official code; ``sign="none"`` keeps torch's raw SVD sign (MKL on
    CPU gave the opposite of NumPy's on every image tried; other on CUDA); ``sign="max"``
    is the |min| > |max| flip of pytorch-grad-cam's Seg-Eigen-CAM.
    """
    if sign not in EIGEN_SIGNS:
        raise ValueError(f"unknown Eigen-CAM sign rule '{sign}'; available: {', '.join(EIGEN_SIGNS)}")
    n, c, h, w = acts.shape
    a = acts.float().flatten(2).transpose(1, 2)                 # [N, h*w, C]
    a = a - a.mean(dim=1, keepdim=True)
    _, _, vh = torch.linalg.svd(a, full_matrices=False)
    proj = (a @ vh[:, 0, :].unsqueeze(-1)).squeeze(-1)          # [N, h*w]
    rule = EIGEN_SIGNS[sign]
    if rule is not None:
        proj = proj * rule(proj, acts.float()).unsqueeze(1)
    return proj.view(n, h, w)


@register_method("eigencam", label="Eigen-CAM", class_agnostic=True, choices={"sign": EIGEN_SIGNS})
def eigencam(model: nn.Module, x: Tensor, target: Tensor, *, scale: bool = True,
             sign: str = "activation") -> Tensor:
    """Eigen-CAM (Muhammad & Yeasin 2020): ReLU of the first-principal-component projection
    of ``model.cam_layer``'s activations (class-agnostic: ``target`` is ignored), upsampled
    bilinearly and min-max scaled per map (``scale=True``)."""
    with torch.no_grad(), _captured_output(model.cam_layer) as out:
        model(x)
    cam = eigencam_projection(out[0], sign=sign).clamp_min(0).unsqueeze(1)
    cam = upsample(cam, x.shape[-2:])
    return minmax_scale(cam) if scale else cam


# ----------------------------------------------------------------------------- Captum methods

@register_method("saliency", label="Saliency", choices={"reduction": REDUCTIONS})
def saliency(model: nn.Module, x: Tensor, target: Tensor, *, reduction: str = "sum",
             abs: bool = True, scale: bool = False) -> Tensor:
    """Input gradient dy_t/dx (Simonyan et al. 2014), Captum ``Saliency``; default map: L1 norm over channels."""
    from captum.attr import Saliency
    with torch.enable_grad():
        g = Saliency(model).attribute(_grad_input(x), target=target, abs=False)
    return channel_map(g.detach(), reduction, abs, scale)


@register_method("input_x_gradient", label="Input x Gradient", choices={"reduction": REDUCTIONS})
def input_x_gradient(model: nn.Module, x: Tensor, target: Tensor, *, reduction: str = "sum",
                     abs: bool = True, scale: bool = False) -> Tensor:
    """x * dy_t/dx in pixel space (Captum ``InputXGradient``)."""
    from captum.attr import InputXGradient
    with torch.enable_grad():
        g = InputXGradient(model).attribute(_grad_input(x), target=target)
    return channel_map(g.detach(), reduction, abs, scale)


@register_method("integrated_gradients", label="Integrated Gradients", choices={
    "reduction": REDUCTIONS,
    "method": ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")})
def integrated_gradients(model: nn.Module, x: Tensor, target: Tensor, *, n_steps: int = 50,
                         baseline: float = 0.0, method: str = "gausslegendre",
                         internal_batch_size: Optional[int] = None, reduction: str = "sum",
                         abs: bool = True, scale: bool = False) -> Tensor:
    """Integrated Gradients (Sundararajan et al. 2017), Captum ``IntegratedGradients``.

    Baseline: a constant image in pixel space (0.0 = black); ``n_steps=50`` (Captum's default,
    Gauss-Legendre; enough for 32 px and 224 px ResNets). ``internal_batch_size`` (None: the
    batch size N) bounds the images per forward/backward, so memory is that of N images.
    """
    from captum.attr import IntegratedGradients
    ibs = internal_batch_size or x.shape[0]
    with torch.enable_grad():
        g = IntegratedGradients(model).attribute(
            _grad_input(x), baselines=float(baseline), target=target, n_steps=n_steps,
            method=method, internal_batch_size=max(ibs, x.shape[0]))
    return channel_map(g.detach(), reduction, abs, scale)


@register_method("smoothgrad", label="SmoothGrad", choices={"reduction": REDUCTIONS})
def smoothgrad(model: nn.Module, x: Tensor, target: Tensor, *, nt_samples: int = 16,
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
    from captum.attr import Saliency
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
            g = sal.attribute(_grad_input(xn), target=target.repeat_interleave(chunk.shape[0]), abs=False)
            total += g.detach().view(n, chunk.shape[0], *x.shape[1:]).sum(dim=1)
    return channel_map(total / nt_samples, reduction, abs, scale)


@register_method("guided_backprop", label="Guided Backprop", choices={"reduction": REDUCTIONS})
def guided_backprop(model: nn.Module, x: Tensor, target: Tensor, *, reduction: str = "sum",
                    abs: bool = True, scale: bool = False) -> Tensor:
    """Guided backpropagation (Springenberg et al. 2015), Captum ``GuidedBackprop``.

    Runs with the model's in-place ReLUs switched to out-of-place (see :func:`explaining`).
    """
    from captum.attr import GuidedBackprop
    with torch.enable_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
        g = GuidedBackprop(model).attribute(_grad_input(x), target=target)
    return channel_map(g.detach(), reduction, abs, scale)


@register_method("occlusion", label="Occlusion", choices={"reduction": REDUCTIONS})
def occlusion(model: nn.Module, x: Tensor, target: Tensor, *, window: Optional[int] = None,
              stride: Optional[int] = None, baseline: float = 0.0, perturbations_per_eval: int = 1,
              reduction: str = "mean", abs: bool = True, scale: bool = False) -> Tensor:
    """Occlusion (Zeiler & Fergus 2014), Captum ``Occlusion``: drop of the target logit when a
    square window (all channels) is set to ``baseline`` (0.0 = black), averaged over windows.

    Defaults: ``window = H // 8`` and ``stride = window // 2`` (4/2 px on 32 px inputs, 28/14
    on 224 px), i.e. 15 x 15 window positions covering the image exactly. Each evaluation
    runs ``perturbations_per_eval`` occluded copies of the batch. ``reduction="mean"``:
    the channels are identical, so the map is the occlusion score itself.
    """
    from captum.attr import Occlusion
    c, h = x.shape[1], x.shape[-2]
    window = window or max(1, h // 8)
    stride = stride or max(1, window // 2)
    with torch.no_grad():
        a = Occlusion(model).attribute(
            x, sliding_window_shapes=(c, window, window), strides=(c, stride, stride),
            baselines=float(baseline), target=target, perturbations_per_eval=perturbations_per_eval)
    return channel_map(a, reduction, abs, scale)


# ----------------------------------------------------------------------------- entry points

def attribute(model: nn.Module, x: Tensor, target: Union[Tensor, Sequence[int]], method: str,
              **options: Any) -> Tensor:
    """Attribution maps float32 [N, 1, H, W] on ``x.device`` for the whole batch ``x``.

    ``target``: class index per image (int64 [N]). ``options``: the method's keyword options
    (see its docstring; :func:`resolve_options` lists them with their defaults).
    """
    fn = get_method(method)
    resolve_options(method, **options)                # clear error for a wrong option name
    if x.dim() != 4:
        raise ValueError(f"x must be a batch [N, C, H, W], got shape {tuple(x.shape)}")
    dev = next(model.parameters()).device
    if dev != x.device:
        raise ValueError(f"x is on {x.device} but the model is on {dev}; move one of them")
    target = torch.as_tensor(target, dtype=torch.long, device=x.device).reshape(-1)
    if target.numel() != x.shape[0]:
        raise ValueError(f"target must have one class per image ({x.shape[0]}), got {target.numel()}")
    x = x.float()
    with explaining(model, out_of_place=method == "guided_backprop"):
        maps = fn(model, x, target, **options)
    return maps.detach().float().contiguous()


def predict(model: nn.Module, x: Tensor, batch_size: int = 256) -> Tensor:
    """Predicted class per image (int64 [N] on ``x.device``), in eval mode, batch by batch."""
    dev = next(model.parameters()).device
    out = []
    with explaining(model), torch.no_grad():
        for s in range(0, x.shape[0], batch_size):
            out.append(model(x[s:s + batch_size].to(dev).float()).argmax(dim=1).to(x.device))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long, device=x.device)


TARGET_KINDS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "pred": lambda preds, labels: preds,
    "true": lambda preds, labels: labels,
}


def targets_for(model: nn.Module, x: Tensor, labels: Tensor, kind: str,
                preds: Optional[Tensor] = None) -> Tensor:
    """Classes to explain: ``"pred"`` (the model's prediction) or ``"true"`` (the label)."""
    if kind not in TARGET_KINDS:
        raise ValueError(f"unknown target kind '{kind}'; use one of: {', '.join(TARGET_KINDS)}")
    if kind == "pred" and preds is None:
        preds = predict(model, x)
    return TARGET_KINDS[kind](preds, labels.to(x.device)).long()


# ----------------------------------------------------------------------------- storage

MAP_DTYPES = ("float32", "float16")


def save_attributions(path: Union[str, Path], maps: Any, targets: Any, preds: Any, labels: Any,
                      indices: Any, options: Union[dict, str], dtype: str = "float32") -> Path:
    """Write one run's maps of one method to ``path`` (.npz, atomic, compressed).

    Keys: maps [N, 1, H, W] (float32 by default, lossless; ``dtype="float16"`` halves the
    size), targets, preds, labels, indices (int64 [N]) and options (a JSON string: method,
    its options, run id, ...), so the file is readable without the model.
    """
    if dtype not in MAP_DTYPES:
        raise ValueError(f"dtype must be one of {MAP_DTYPES}, got {dtype!r}")
    as_np = lambda a: a.detach().cpu().numpy() if isinstance(a, Tensor) else np.asarray(a)
    maps = as_np(maps).astype(dtype)
    if maps.ndim != 4 or maps.shape[1] != 1:
        raise ValueError(f"maps must be [N, 1, H, W], got shape {maps.shape}")
    ints = {k: as_np(v).astype(np.int64).reshape(-1) for k, v in
            dict(targets=targets, preds=preds, labels=labels, indices=indices).items()}
    bad = {k: len(v) for k, v in ints.items() if len(v) != len(maps)}
    if bad:
        raise ValueError(f"{len(maps)} maps but lengths {bad}: every array needs one entry per map")
    text = options if isinstance(options, str) else json.dumps(options, sort_keys=True, default=str)
    return runs.save_npz(path, maps=maps, options=np.array(text), **ints)


def load_attributions(path: Union[str, Path]) -> dict[str, Any]:
    """Read a file of :func:`save_attributions`: numpy arrays (maps as float32) and
    ``options`` parsed from its JSON string into a dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the attribution stage first (notebook 02_attribute)")
    with np.load(path, allow_pickle=False) as z:
        out: dict[str, Any] = {k: z[k] for k in z.files}
    out["maps"] = out["maps"].astype(np.float32)
    out["options"] = json.loads(str(out["options"]))
    return out


def stored_predictions(run_dir: Union[str, Path], cfg: Any, idx: np.ndarray, labels: Tensor) -> Optional[Tensor]:
    """Predicted classes of evaluation images ``idx`` from the run's ``predictions.npz``
    (the fp32 pass that gave the test accuracy), or None when the evaluation split is not
    the test split, the explained model is not the trained one (``explain_features``), or
    the file is absent (a run trained before it existed)."""
    from .data import resolve_split
    path = runs.trained_run_dir(run_dir) / runs.PREDICTIONS
    if (resolve_split(cfg.dataset, cfg.eval_split) != resolve_split(cfg.dataset, "test") or not path.is_file()
            or cfg.explain_features != "trained"):
        return None
    with np.load(path) as z:
        preds, stored_labels = z["preds"], z["labels"]
    if len(preds) <= int(idx.max(initial=0)) or not np.array_equal(stored_labels[idx], labels.numpy()):
        raise ValueError(f"{path} does not match the evaluation split of {cfg.dataset}: retrain the run")
    return torch.from_numpy(preds[idx].astype(np.int64))


def attribute_run(run_dir: Union[str, Path], methods: Optional[Sequence[str]] = None,
                  n_samples: Optional[int] = None, target: Optional[str] = None,
                  batch_size: Optional[int] = None, device: str = "auto",
                  method_options: Optional[dict[str, dict]] = None) -> dict[str, Path]:
    """Explain a trained run's fixed evaluation subset with each method; one .npz per method.

    Settings come from the run's ``config.json`` (kept up to date by the pipeline), not from
    the copy inside ``model.pt``. Empty values (None, [], 0, "") take that config:
    ``methods``, ``eval_samples``, ``target`` ("pred" | "true"), ``batch_size_eval``.
    ``method_options``: optional {method: {option: value}}. Unknown methods, options or
    target kinds are reported before anything is loaded. When the run lists ``pair_methods``,
    the maps of its pair set follow (:func:`xai_utils.pairs.stage.attribute_pairs`), under
    the keys ``pairs/<method>``. Returns {method: written .npz path}.
    """
    from tqdm import tqdm
    from .config import load_run_config
    from .data import eval_indices, load_dataset
    from .models import load_model

    cfg = load_run_config(run_dir)
    methods = check_methods([methods] if isinstance(methods, str) else (methods or cfg.methods))
    target = target or cfg.target
    if target not in TARGET_KINDS:
        raise ValueError(f"unknown target kind '{target}'; use one of: {', '.join(TARGET_KINDS)}")
    method_options_ = {m: dict(cfg.method_options.get(m, {})) for m in methods}
    for m, opts in (method_options or {}).items():
        if m not in method_options_:
            raise ValueError(f"method_options given for '{m}', which is not in methods {methods}")
        method_options_[m].update(opts)
    for m, opts in method_options_.items():
        check_method_options(m, opts)
    resolved = {m: resolve_options(m, **o) for m, o in method_options_.items()}
    n_samples = n_samples or cfg.eval_samples
    batch_size = batch_size or cfg.batch_size_eval

    dev = runs.resolve_device(device)
    model, _ = load_model(run_dir, dev, explain_features=cfg.explain_features)   # settings: config.json
    ds = load_dataset(cfg.dataset, cfg.eval_split, cfg.data_root)
    idx = np.asarray(eval_indices(len(ds), n_samples, seed=0), dtype=np.int64)
    batches = [idx[s:s + batch_size] for s in range(0, len(idx), batch_size)]

    labels_t = ds.labels[torch.as_tensor(idx)].long()
    preds_t = stored_predictions(run_dir, cfg, idx, labels_t)
    if preds_t is None:                          # an evaluation split other than the test split
        preds_t = torch.cat([predict(model, ds.batch(b, device=dev)[0], batch_size=batch_size).cpu()
                             for b in batches])
    targets_t = TARGET_KINDS[target](preds_t, labels_t)

    paths: dict[str, Path] = {}
    for m in methods:
        maps, pos = [], 0
        for b in tqdm(batches, desc=f"{cfg.run_id} {m}", unit="batch"):
            xb, _ = ds.batch(b, device=dev)
            tb = targets_t[pos:pos + len(b)].to(dev)
            maps.append(attribute(model, xb, tb, m, **method_options_[m]).cpu())
            pos += len(b)
        all_maps = torch.cat(maps)
        options = {"method": m, "options": resolved[m], "run_id": cfg.run_id, "target": target,
                   "dataset": cfg.dataset, "eval_split": cfg.eval_split, "n_samples": len(idx),
                   "input_size": list(all_maps.shape[-2:])}
        paths[m] = save_attributions(runs.attribution_path(run_dir, m), all_maps, targets_t, preds_t,
                                     labels_t, idx, options)
    if cfg.pair_methods:                         # the pair analysis (xai_utils.pairs): pairs/<method>.npz
        from .pairs.stage import attribute_pairs
        pair_paths = attribute_pairs(Path(run_dir), cfg, model, ds, idx, labels_t, preds_t, dev, batch_size)
        paths.update({f"pairs/{m}": p for m, p in pair_paths.items()})
    return paths


def summarize_attributions(run_dir: Union[str, Path], methods: Optional[Sequence[str]] = None):
    """One row per stored method: samples, map size, target kind, number of constant maps
    (degenerate explanations, e.g. an all-zero Grad-CAM) and the range and mean of the values."""
    import pandas as pd
    folder = Path(run_dir) / "attributions"
    methods = list(methods) if methods else sorted(p.stem for p in folder.glob("*.npz"))
    rows = []
    for m in methods:
        d = load_attributions(runs.attribution_path(run_dir, m))
        flat = d["maps"].reshape(len(d["maps"]), -1)
        rows.append({"method": m, "samples": len(flat), "map_size": "x".join(map(str, d["maps"].shape[-2:])),
                     "target": d["options"].get("target", ""),
                     "constant_maps": int((flat.max(1) == flat.min(1)).sum()) if len(flat) else 0,
                     "min": float(flat.min()) if flat.size else float("nan"),
                     "max": float(flat.max()) if flat.size else float("nan"),
                     "mean": float(flat.mean()) if flat.size else float("nan")})
    return pd.DataFrame(rows)
