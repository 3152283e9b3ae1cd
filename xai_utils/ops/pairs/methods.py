"""Pairwise explanations: one map per image of a pair, explaining their similarity.

    maps1, maps2 = pair_attribute(model, x1, x2, "pair_gradcam")   # each float32 [N, 1, H, W]

The scalar explained is ``s = similarity(model, x1, x2, space)`` (:mod:`.similarity`), so
the map of x1 depends on x2 and vice versa (Sammani et al., IEEE TIP 2023; facts in
../shared/related/PAIRWISE.md; written anew here). Notation: ``A_k`` = the activations of
image k at the explained layer, ``G_k = ds/dA_k``.

Methods (the registry :data:`PAIR_METHODS`; add one with ``@register_pair_method``):

* ``pair_gradcam``: ``M_k = sum_c A_k^c * ReLU(G_k^c)`` (element-wise gradients, no channel
  average), one joint forward and one backward of s;
* ``interaction_cam``: channel weights from both images, ``w = P(A_1) * P(A_2)`` with P the
  global ``mean``, ``max`` or ``attention`` pooling (a softmax over positions of the mean
  feature's dot product with each position's feature); ``M_k = sum_c w_c A_k^c ReLU(g_k^c)``
  with ``g_k = G_k`` (``gradients="element"``) or the gradient interaction
  ``C = sum_p G_1(p) G_2(p)^T``, ``g_1 = max over columns``, ``g_2 = max over rows``
  (``gradients="interaction"``);
* ``conditional_occlusion``: a window (``window`` x ``window``, moved by ``stride``) of one
  image set to ``baseline`` while the other stays intact; the drop ``s - s_occluded`` is
  given to the window's pixels, averaged over the windows covering a pixel (as Captum's
  occlusion); sized for 32 px (window 8, stride 2: 13 x 13 positions);
* ``averaged_transforms``: input x gradient averaged along the path from each image to its
  colour-jittered copy, ``x_k(l) = l x_k + (1 - l) J(x_k)``, l = 1.0, 0.9, ..., 0.1, with
  ``transforms`` jitter draws (SimCLR strengths, the same draw for both images, so the
  method is symmetric); map = channel max of ``|x_k * mean gradient|``;
* ``pair_input_x_gradient``: channel max of ``|x_k * ds/dx_k|``;
* ``pair_smoothgrad``: the same with the gradient averaged over ``samples`` noisy copies
  (the same noise on both images, N(0, stdev^2) in pixel units).

Post-processing (``postprocess``): ``"scale"`` (default) upsamples a CAM map bilinearly to
the input size and min-max scales every map to [0, 1], the convention of the single-image
maps; ``"upsample"`` (CAM methods) only upsamples; ``"none"`` keeps the raw map (a CAM map
at the layer's resolution). ``layer`` (CAM methods): a dotted path in the backbone (e.g.
``"layer3"``, 8 x 8 on the 32 px CIFAR stem); empty = the model's CAM layer (``layer4[-1]``).

Every method is batched over pairs and, with BatchNorm in eval mode and its random draws
shared by every pair, a pair's maps do not depend on the other pairs of the batch.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn as nn
from torch import Tensor

from ...registry import Registry
from ..augment import apply_color_jitter, sample_color_jitter_params
from ..attribution import check_options, explaining, keyword_options, minmax_scale, module_at, upsample
from ..contract import Embedding
from .spaces import embed, get_space, score

PairMethod = Callable[..., tuple[Tensor, Tensor]]
PAIR_METHODS: Registry[PairMethod] = Registry("pair method")
POSTPROCESS_CAM = ("scale", "upsample", "none")
POSTPROCESS_PIXEL = ("scale", "none")


def register_pair_method(name: str, label: str, symmetric: bool = True,
                         choices: Optional[dict[str, Sequence[str]]] = None,
                         override: bool = False) -> Callable[[PairMethod], PairMethod]:
    """Register ``fn(model, x1, x2, *, space, **options) -> (maps1, maps2)`` under ``name``.

    ``symmetric``: swapping the images swaps the maps (tested). ``choices``: the allowed
    values of options that take a name. The options are the keyword-only arguments. A name
    already registered is refused unless ``override``."""
    def wrap(fn: PairMethod) -> PairMethod:
        fn.label = label  # type: ignore[attr-defined]
        fn.symmetric = symmetric  # type: ignore[attr-defined]
        fn.choices = {k: tuple(v) for k, v in (choices or {}).items()}  # type: ignore[attr-defined]
        return PAIR_METHODS.register(name, fn, override)
    return wrap


def get_pair_method(name: str) -> PairMethod:
    """The registered pair method (an unknown name: :class:`~xai_utils.errors.UnknownNameError`)."""
    return PAIR_METHODS[name]


def resolve_pair_options(name: str, **options: Any) -> dict[str, Any]:
    """The pair method's options: its defaults updated by ``options`` (``space`` excluded)."""
    out = keyword_options(get_pair_method(name), f"pair method '{name}'", **options)
    out.pop("space", None)
    return out


def check_pair_method_options(name: str, options: dict[str, Any]) -> None:
    """Unknown pair method or option, wrong type, or a name outside the option's choices."""
    if "space" in options:
        raise ValueError(f"pair method '{name}': the space is the run key 'pair_space', not a method option")
    check_options(get_pair_method(name), f"pair method '{name}'", options)


# ----------------------------------------------------------------------------- helpers

def _layer(model: Embedding, layer: str) -> nn.Module:
    return module_at(model.backbone, layer) if layer else model.cam_layer


def _joint_activations(model: Embedding, x1: Tensor, x2: Tensor, layer: nn.Module, space: str
                       ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One joint forward of both images: (A_1, A_2, G_1, G_2) at ``layer`` (float32)."""
    store: list[Tensor] = []
    handle = layer.register_forward_hook(lambda mod, inp, out: store.append(out))
    n = x1.shape[0]
    with torch.enable_grad():
        try:
            e = embed(model, torch.cat([x1, x2]).detach(), space)
        finally:
            handle.remove()
        acts = store[-1]
        s = score(e[:n], e[n:], space)
        (grads,) = torch.autograd.grad(s.sum(), acts)
    a, g = acts.detach().float(), grads.float()
    return a[:n], a[n:], g[:n], g[n:]


def _cam_post(maps: Tensor, size: Sequence[int], postprocess: str) -> Tensor:
    if postprocess == "none":
        return maps
    maps = upsample(maps, size)
    return minmax_scale(maps) if postprocess == "scale" else maps


def _pixel_post(maps: Tensor, postprocess: str) -> Tensor:
    return minmax_scale(maps) if postprocess == "scale" else maps


def _input_gradients(model: Embedding, x1: Tensor, x2: Tensor, space: str) -> tuple[Tensor, Tensor]:
    """(ds/dx1, ds/dx2) of every pair, one joint forward and backward."""
    n = x1.shape[0]
    with torch.enable_grad():
        x = torch.cat([x1, x2]).detach().requires_grad_(True)
        e = embed(model, x, space)
        (g,) = torch.autograd.grad(score(e[:n], e[n:], space).sum(), x)
    return g[:n], g[n:]


def _channel_max_abs(x: Tensor, g: Tensor) -> Tensor:
    """Channel max of |x * g| -> [N, 1, H, W] (the pairwise papers' input x gradient map)."""
    return (x * g).abs().amax(dim=1, keepdim=True)


# ----------------------------------------------------------------------------- CAM methods

@register_pair_method("pair_gradcam", label="Pair Grad-CAM", choices={"postprocess": POSTPROCESS_CAM})
def pair_gradcam(model: Embedding, x1: Tensor, x2: Tensor, *, space: str = "cosine", layer: str = "",
                 postprocess: str = "scale") -> tuple[Tensor, Tensor]:
    """Pairwise Grad-CAM: ``M_k = sum_c A_k^c * ReLU(ds/dA_k^c)`` at ``layer``."""
    a1, a2, g1, g2 = _joint_activations(model, x1, x2, _layer(model, layer), space)
    maps = [(a * g.clamp_min(0)).sum(dim=1, keepdim=True) for a, g in ((a1, g1), (a2, g2))]
    return tuple(_cam_post(m, x1.shape[-2:], postprocess) for m in maps)  # type: ignore[return-value]


def _pool(a: Tensor, pooling: str) -> Tensor:
    """[N, C, h, w] -> [N, C]: global mean, global max or attention pooling."""
    if pooling == "mean":
        return a.mean(dim=(2, 3))
    if pooling == "max":
        return a.amax(dim=(2, 3))
    flat = a.flatten(2)                                            # [N, C, P]
    attn = torch.softmax((flat.mean(dim=2, keepdim=True) * flat).sum(dim=1), dim=1)   # [N, P]
    return (flat * attn[:, None, :]).sum(dim=2)


POOLINGS = ("mean", "max", "attention")
GRADIENTS = ("element", "interaction")


@register_pair_method("interaction_cam", label="Interaction-CAM",
                      choices={"pooling": POOLINGS, "gradients": GRADIENTS, "postprocess": POSTPROCESS_CAM})
def interaction_cam(model: Embedding, x1: Tensor, x2: Tensor, *, space: str = "cosine", layer: str = "",
                    pooling: str = "mean", gradients: str = "element",
                    postprocess: str = "scale") -> tuple[Tensor, Tensor]:
    """Interaction-CAM: ``M_k = sum_c w_c A_k^c ReLU(g_k^c)``, ``w = P(A_1) * P(A_2)``."""
    a1, a2, g1, g2 = _joint_activations(model, x1, x2, _layer(model, layer), space)
    w = (_pool(a1, pooling) * _pool(a2, pooling))[:, :, None, None]           # [N, C, 1, 1]
    if gradients == "interaction":
        inter = torch.einsum("ncp,ndp->ncd", g1.flatten(2), g2.flatten(2))   # sum_p G_1(p) G_2(p)^T
        g1 = inter.amax(dim=2)[:, :, None, None]                              # max over columns
        g2 = inter.amax(dim=1)[:, :, None, None]                              # max over rows
    maps = [(w * a * g.clamp_min(0)).sum(dim=1, keepdim=True) for a, g in ((a1, g1), (a2, g2))]
    return tuple(_cam_post(m, x1.shape[-2:], postprocess) for m in maps)  # type: ignore[return-value]


# ----------------------------------------------------------------------------- perturbation

def window_masks(height: int, width: int, window: int, stride: int, device: torch.device) -> Tensor:
    """bool [P, 1, H, W]: one square window per position, row-major, stride ``stride``."""
    rows = range(0, height - window + 1, stride)
    cols = range(0, width - window + 1, stride)
    masks = torch.zeros(len(rows) * len(cols), 1, height, width, dtype=torch.bool, device=device)
    for k, (r, c) in enumerate((r, c) for r in rows for c in cols):
        masks[k, :, r:r + window, c:c + window] = True
    return masks


def embed_chunked(model: Embedding, x: Tensor, space: str, batch_size: int = 256) -> Tensor:
    """Embeddings of many images, ``batch_size`` at a time, without gradients."""
    with torch.inference_mode():
        return torch.cat([embed(model, x[s:s + batch_size], space) for s in range(0, x.shape[0], batch_size)])


@register_pair_method("conditional_occlusion", label="Conditional occlusion",
                      choices={"postprocess": POSTPROCESS_PIXEL})
def conditional_occlusion(model: Embedding, x1: Tensor, x2: Tensor, *, space: str = "cosine", window: int = 8,
                          stride: int = 2, baseline: float = 0.0, batch_size: int = 256,
                          postprocess: str = "scale") -> tuple[Tensor, Tensor]:
    """Drop of s when a window of one image is set to ``baseline`` and the other image is
    intact, averaged over the windows covering each pixel."""
    n, _, h, w = x1.shape
    if window > min(h, w) or window < 1 or stride < 1:
        raise ValueError(f"conditional_occlusion: window {window} / stride {stride} do not fit {h}x{w} images")
    masks = window_masks(h, w, window, stride, x1.device)                      # [P, 1, H, W]
    cover = masks.float().sum(dim=0)                                           # [1, H, W]
    e = embed_chunked(model, torch.cat([x1, x2]), space, batch_size)
    s0 = score(e[:n], e[n:], space)
    base = torch.as_tensor(baseline, dtype=x1.dtype, device=x1.device)
    step = max(1, batch_size // max(n, 1))                                     # positions per forward batch
    out = []
    for x, other in ((x1, e[n:]), (x2, e[:n])):
        drops = []
        for p in range(0, masks.shape[0], step):
            mk = masks[p:p + step]
            occluded = torch.where(mk.unsqueeze(0), base, x.unsqueeze(1))      # [N, p, C, H, W]
            eo = embed_chunked(model, occluded.flatten(0, 1), space, batch_size)
            drops.append(s0[:, None] - score(eo, other.repeat_interleave(mk.shape[0], dim=0), space).view(n, -1))
        m = torch.einsum("np,phw->nhw", torch.cat(drops, dim=1), masks[:, 0].float()) / cover.clamp_min(1)
        out.append(_pixel_post(m.unsqueeze(1), postprocess))
    return out[0], out[1]


# ----------------------------------------------------------------------------- gradients

@register_pair_method("pair_input_x_gradient", label="Pair input × gradient", choices={"postprocess": POSTPROCESS_PIXEL})
def pair_input_x_gradient(model: Embedding, x1: Tensor, x2: Tensor, *, space: str = "cosine",
                          postprocess: str = "scale") -> tuple[Tensor, Tensor]:
    """Channel max of ``|x_k * ds/dx_k|``."""
    g1, g2 = _input_gradients(model, x1, x2, space)
    return _pixel_post(_channel_max_abs(x1, g1), postprocess), _pixel_post(_channel_max_abs(x2, g2), postprocess)


@register_pair_method("pair_smoothgrad", label="Pair SmoothGrad", choices={"postprocess": POSTPROCESS_PIXEL})
def pair_smoothgrad(model: Embedding, x1: Tensor, x2: Tensor, *, space: str = "cosine", samples: int = 50,
                    stdev: float = 0.15, seed: int = 0, postprocess: str = "scale") -> tuple[Tensor, Tensor]:
    """Input x gradient with the gradient averaged over ``samples`` noisy copies of the pair
    (the same noise image on both, drawn from a private generator seeded with ``seed``)."""
    gen = torch.Generator(device=x1.device).manual_seed(seed)
    noise = torch.normal(0.0, float(stdev), size=(samples, *x1.shape[1:]), generator=gen, device=x1.device)
    t1, t2 = torch.zeros_like(x1), torch.zeros_like(x2)
    for k in range(samples):
        g1, g2 = _input_gradients(model, x1 + noise[k], x2 + noise[k], space)
        t1 += g1
        t2 += g2
    return (_pixel_post(_channel_max_abs(x1, t1 / samples), postprocess),
            _pixel_post(_channel_max_abs(x2, t2 / samples), postprocess))


@register_pair_method("averaged_transforms", label="Averaged transforms", choices={"postprocess": POSTPROCESS_PIXEL})
def averaged_transforms(model: Embedding, x1: Tensor, x2: Tensor, *, space: str = "cosine", transforms: int = 4,
                        steps: int = 10, seed: int = 0, postprocess: str = "scale") -> tuple[Tensor, Tensor]:
    """Input x gradient averaged along ``x_k(l) = l x_k + (1 - l) J(x_k)``, l = 1, 1 - 1/steps,
    ..., 1/steps, for ``transforms`` colour-jitter draws J (SimCLR's strengths 0.4, 0.4, 0.4,
    0.1, always applied; one draw for every image, both images of a pair alike)."""
    gen = torch.Generator().manual_seed(seed)
    params = sample_color_jitter_params(transforms, p=1.0, generator=gen)
    t1, t2 = torch.zeros_like(x1), torch.zeros_like(x2)
    for t in range(transforms):
        one = {k: v[t:t + 1].expand(x1.shape[0]) for k, v in params.items()}
        j1, j2 = apply_color_jitter(x1, one), apply_color_jitter(x2, one)
        for i in range(steps):
            lam = 1.0 - i / steps
            g1, g2 = _input_gradients(model, lam * x1 + (1 - lam) * j1, lam * x2 + (1 - lam) * j2, space)
            t1 += g1
            t2 += g2
    k = transforms * steps
    return (_pixel_post(_channel_max_abs(x1, t1 / k), postprocess),
            _pixel_post(_channel_max_abs(x2, t2 / k), postprocess))


# ----------------------------------------------------------------------------- entry point

def pair_attribute(model: Embedding, x1: Tensor, x2: Tensor, method: str, space: str = "cosine",
                   **options: Any) -> tuple[Tensor, Tensor]:
    """Maps (float32 [N, 1, H, W] each, on the images' device) of every pair (x1[i], x2[i])
    explaining their similarity in ``space``, with the pair method ``method``."""
    fn = get_pair_method(method)
    check_pair_method_options(method, options)
    get_space(space)
    if x1.dim() != 4 or x1.shape != x2.shape:
        raise ValueError(f"x1 and x2 must be batches [N, C, H, W] of one shape, got {tuple(x1.shape)} "
                         f"and {tuple(x2.shape)}")
    dev = next(model.parameters()).device
    if x1.device != dev or x2.device != dev:
        raise ValueError(f"the images are on {x1.device}/{x2.device} but the model is on {dev}; move them")
    with explaining(model):
        m1, m2 = fn(model, x1.float(), x2.float(), space=space, **options)
    return m1.detach().float().contiguous(), m2.detach().float().contiguous()
