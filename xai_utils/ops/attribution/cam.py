"""Class activation maps: Grad-CAM (also the saliency an objective computes while training)
and Eigen-CAM, batched, at a layer of the network."""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Optional

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from ..contract import Explainable, require
from .maps import grad_input, minmax_scale, upsample
from .registry import register_method


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


def _cam_layer(model: Explainable) -> nn.Module:
    """The layer a CAM explains; a model without one is refused in one line (:func:`require`)."""
    if not hasattr(model, "cam_layer"):
        require(model)
    return model.cam_layer


@register_method("gradcam", label="Grad-CAM")
def gradcam(model: Explainable, x: Tensor, target: Tensor, *, scale: bool = True) -> Tensor:
    """Grad-CAM (Selvaraju et al. 2017) of ``model.cam_layer`` (:func:`grad_cam`).

    Map = ReLU(sum_c mean_hw(dy_t/dA_c) * A_c), upsampled bilinearly to the input size,
    then min-max scaled per map (``scale=True``, the paper's convention).
    """
    cam = grad_cam(model, _cam_layer(model), grad_input(x), target).detach()
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
def eigencam(model: Explainable, x: Tensor, target: Tensor, *, scale: bool = True,
             sign: str = "activation") -> Tensor:
    """Eigen-CAM (Muhammad & Yeasin 2020): ReLU of the first-principal-component projection
    of ``model.cam_layer``'s activations (class-agnostic: ``target`` is ignored), upsampled
    bilinearly and min-max scaled per map (``scale=True``)."""
    with torch.no_grad(), _captured_output(_cam_layer(model)) as out:
        model(x)
    cam = eigencam_projection(out[0], sign=sign).clamp_min(0).unsqueeze(1)
    cam = upsample(cam, x.shape[-2:])
    return minmax_scale(cam) if scale else cam
