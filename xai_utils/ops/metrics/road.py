"""ROAD, RemOve And Debias (Rong et al. 2022, arXiv 2202.00449): faithfulness measured with the
removed pixels imputed from their neighbours, so that the perturbed image stays near the data
and the score measures the removed evidence, not how the model reacts to black patches.

:func:`noisy_linear_impute` is the imputation, batched on the device: every removed pixel is
the weighted mean of its 8 neighbours (1/6 for the 4 edge neighbours, 1/12 for the 4 diagonal
ones, renormalised over the neighbours inside the image; removed neighbours are unknowns too),
plus N(0, noise^2). The unknowns of an image form one sparse linear system per channel,
``(D - W_uu) x_u = W_uk x_k``, symmetric positive definite (a weighted graph Laplacian with the
kept pixels as boundary). Two solvers, the same answer up to rounding:

* ``"direct"``: exact block Cholesky over image rows in float64 (:func:`_direct_solve`). With
  the unknowns ordered row by row the matrix is block tridiagonal with W x W blocks; rows are
  eliminated top-down with batched Cholesky factors, one factorisation per image for all its
  channels. Cost grows as H W^3 per image, memory as H W^2 (images are solved in chunks).
* ``"cg"``: Jacobi-preconditioned conjugate gradients on the grid in float32, all images and
  channels together (each step one neighbour sum, :func:`_neighbour_sum`), to a relative
  residual of :data:`CG_TOLERANCE`. Cost grows as (steps) H W, the steps with the image size.

``"auto"`` picks the direct solver on a CPU, and on a GPU up to :data:`DIRECT_MAX_WIDTH` pixels
wide, CG above (:func:`auto_solver`). An image with every pixel removed has nothing to impute
from (its system is singular): both give it zeros plus the noise, as pytorch-grad-cam does.
pytorch-grad-cam's ``NoisyLinearImputer`` (the authors' code) builds the same system per image
and channel and solves it with SciPy's sparse direct solver on the CPU; with noise 0 ours agree
with it to about 1e-7 (direct) and 1e-6 (CG on small images; tested within 1e-4 for both).

:func:`road_logits` removes, for each fraction f of ``fractions``, the top (``"morf"``, most
relevant first) or bottom (``"lerf"``, least relevant first) fraction f of the pixels by the
map, imputes them, and returns the logits. The removed set follows pytorch-grad-cam's
percentile rule, so its ``ROADMostRelevantFirst(percentile=p)`` is our MoRF at f = 1 - p/100
(and its ``ROADLeastRelevantFirst(p)`` our LeRF at f = 1 - p/100): a pixel is removed when
its map value is at least the (1 - f) quantile of the map (NumPy's linear interpolation; for
LeRF, of one minus the map). Their averages over p = 10, ..., 90 use the same nine fractions.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..contract import Explainable
from ._common import DEFAULT_BATCH, _check_maps

ORDERS = ("morf", "lerf")            # most relevant first, least relevant first
FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
CG_TOLERANCE = 1e-6                  # relative residual ||b - A x|| / ||b|| of the imputation's solve
CHECK_EVERY = 16                     # conjugate-gradient steps between convergence checks (host reads)
SOLVERS = ("auto", "direct", "cg")   # noisy_linear_impute's solve
# "auto" solves directly on a CPU at every width: measured on one CPU thread (CAM-like MoRF masks at
# f = 0.5, min of interleaved runs), CG time / direct time: 3.5 at 32 px (64 images), 2.6-4.1 at 96,
# 1.7-3.2 at 128, 2.7 at 160, 2.6-3.8 at 224 (8 images), 2.3 at 256, 1.7 at 320; with 2 threads 1.9
# at 32 and 2.4 at 224. On a GPU (not measured) it solves directly up to DIRECT_MAX_WIDTH pixels wide
# and by CG above: there CG's steps span the whole batch, while the direct solve runs one sequential
# row step per image row on chunks of a few images.
DIRECT_MAX_WIDTH = 128
DIRECT_CHUNK_BYTES = 2 ** 28         # the direct solve's stored factors (H W x W float64 per image) per chunk

Generators = Union[None, torch.Generator, Sequence[torch.Generator]]


def _neighbour_sum(v: Tensor) -> Tensor:
    """The weighted sum of every pixel's 8 neighbours (1/6 edge, 1/12 diagonal; zero outside the
    image), per channel. The stencil is the separable (1, 2, 1)^T (1, 2, 1) / 12 less its centre
    4/12: two shifted-slice passes, about ten times faster on a CPU than a depthwise 3x3
    convolution of one input channel per group (and no slower on a GPU)."""
    p = F.pad(v, (1, 1, 1, 1))
    rows = p[..., :, :-2] + 2.0 * p[..., :, 1:-1] + p[..., :, 2:]
    full = rows[..., :-2, :] + 2.0 * rows[..., 1:-1, :] + rows[..., 2:, :]
    return full * (1.0 / 12.0) - v * (4.0 / 12.0)


def _in_image_weight(h: int, w: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """[H, W]: each pixel's total weight of its neighbours inside the image (the diagonal D of
    the imputation's system; 1 inside, less on the border)."""
    return _neighbour_sum(torch.ones(1, 1, h, w, dtype=dtype, device=device))[0, 0]


def _noise(shape: torch.Size, noise: float, generator: Generators, dtype: torch.dtype,
           device: torch.device) -> Tensor:
    """N(0, noise^2) of ``shape``: from one generator, or one generator per image (drawn on the
    CPU, so that an image gets the same noise on every device and in every batch)."""
    if noise == 0:
        return torch.zeros(shape, dtype=dtype, device=device)
    if generator is None or isinstance(generator, torch.Generator):
        gen_device = generator.device if isinstance(generator, torch.Generator) else device
        z = torch.randn(shape, generator=generator, device=gen_device, dtype=dtype)
    else:
        if len(generator) != shape[0]:
            raise ValueError(f"one generator per image: {shape[0]} images, {len(generator)} generators")
        z = torch.stack([torch.randn(shape[1:], generator=g, dtype=dtype) for g in generator])
    return noise * z.to(device)


def _cg_solve(x: Tensor, uf: Tensor, tolerance: float, max_iter: Optional[int]) -> Tensor:
    """The unknowns of every image and channel (zero on kept pixels; ``uf`` float mask of the
    removed pixels, [N, C, H, W]) by Jacobi-preconditioned conjugate gradients in ``x``'s
    dtype, to a relative residual of ``tolerance`` or ``max_iter`` steps (default 4 x (H + W)).
    Works on the whole batch at once on the grid (``"auto"`` uses it on a GPU above :data:`DIRECT_MAX_WIDTH`)."""
    h, w = x.shape[-2:]
    conv = _neighbour_sum
    d = _in_image_weight(h, w, x.dtype, x.device)
    b = uf * conv(x * (1.0 - uf))                                               # kept neighbours' contribution
    apply = lambda v: uf * (d * v - conv(uf * v))                              # noqa: E731 - (D - W_uu) v
    inv_d = uf / d
    sol = torch.zeros_like(x)
    r = b.clone()
    z = inv_d * r
    p = z.clone()
    rz = (r * z).sum(dim=(2, 3), keepdim=True)
    b_norm = b.flatten(2).norm(dim=2).clamp_min(1e-30)[..., None, None]
    limit = max_iter if max_iter is not None else 4 * (h + w)
    for step in range(limit):
        ap = apply(p)
        pap = (p * ap).sum(dim=(2, 3), keepdim=True)
        alpha = torch.where(pap > 0, rz / pap.clamp_min(1e-30), torch.zeros_like(pap))
        sol += alpha * p
        r -= alpha * ap
        if (step + 1) % CHECK_EVERY == 0 and bool(((r.flatten(2).norm(dim=2)[..., None, None] / b_norm)
                                                    <= tolerance).all()):
            break
        z = inv_d * r
        rz_new = (r * z).sum(dim=(2, 3), keepdim=True)
        beta = torch.where(rz > 0, rz_new / rz.clamp_min(1e-30), torch.zeros_like(rz))
        p = z + beta * p
        rz = rz_new
    return sol


def _tridiagonal(main: Tensor, upper: Tensor, lower: Tensor) -> Tensor:
    """The batch of tridiagonal matrices [N, W, W] with these diagonals ([N, W], [N, W-1],
    [N, W-1]): written into zeros, cheaper than summing ``diag_embed`` matrices."""
    out = main.new_zeros(*main.shape, main.shape[-1])
    out.diagonal(dim1=-2, dim2=-1).copy_(main)
    out.diagonal(1, dim1=-2, dim2=-1).copy_(upper)
    out.diagonal(-1, dim1=-2, dim2=-1).copy_(lower)
    return out


def _row_block(m: Tensor, d: Tensor) -> Tensor:
    """D_i [N, W, W] of one image row (``m`` [N, W] 1 on its removed pixels, 0 on kept ones;
    ``d`` [W] the pixels' in-image weights): d on removed pixels, 1 on kept ones (their
    decoupled equation x = 0), -1/6 between horizontally adjacent removed pixels."""
    pair = m[:, :-1] * m[:, 1:] * (-1.0 / 6.0)
    return _tridiagonal(torch.where(m > 0, d, torch.ones_like(d)), pair, pair)


def _coupling_block(m: Tensor, above: Tensor) -> Tensor:
    """C_i^T [N, W, W], the transposed coupling of row i (``m``) to row i-1 (``above``): -1/6
    straight up, -1/12 diagonally up, only between removed pixels (entry (k, j): pixel k of
    row i-1, pixel j of row i)."""
    return _tridiagonal(above * m * (-1.0 / 6.0), above[:, :-1] * m[:, 1:] * (-1.0 / 12.0),
                        above[:, 1:] * m[:, :-1] * (-1.0 / 12.0))


def _coupling_times(m: Tensor, above: Tensor, v: Tensor) -> Tensor:
    """C_i^T v, row i's values v [N, W, C] (pixels ``m``) as they enter row i-1's equations
    (pixels ``above``): the tridiagonal product as shifted slices."""
    v = v * m[..., None]
    out = v * (-1.0 / 6.0)
    out[:, :-1] += v[:, 1:] * (-1.0 / 12.0)
    out[:, 1:] += v[:, :-1] * (-1.0 / 12.0)
    return out * above[..., None]


def _direct_solve(b: Tensor, u: Tensor) -> Tensor:
    """The exact solution [N, C, H, W] of ``(D - W_uu) x_u = b`` for every image and channel
    (``u`` bool [N, H, W] the removed pixels, ``b`` [N, C, H, W] zero on kept ones), by block
    Cholesky over image rows; every image needs a kept pixel (else the system is singular).

    With the unknowns ordered row by row over the full grid (kept pixels as identity rows, the
    couplings kept between removed pixels only) the matrix is block tridiagonal: D_i on the
    diagonal, C_i between rows i-1 and i. Eliminating rows top-down gives the Schur complements
    S_i = D_i - T_i^T T_i, T_i = L_{i-1}^{-1} C_i^T, L_i = cholesky(S_i); then
    y_i = L_i^{-1} (b_i - T_i^T y_{i-1}) downwards and x_i = L_i^{-T} (y_i - L_i^{-1} C_{i+1}^T x_{i+1})
    upwards. One factorisation per image serves all channels (right-hand sides [N, W, C]); H
    sequential steps of batched W x W algebra in b's dtype."""
    if bool(u.flatten(1).all(1).any()):
        raise ValueError("the direct solve needs at least one kept pixel in every image "
                         "(with every pixel removed the system is singular)")
    h, w = b.shape[-2:]
    d = _in_image_weight(h, w, b.dtype, b.device)
    m = u.to(b.dtype)                                                           # [N, H, W]
    rhs = b.permute(0, 2, 3, 1)                                                 # [N, H, W, C]
    tri = torch.linalg.solve_triangular
    factors, ys = [], []
    for i in range(h):
        s, g = _row_block(m[:, i], d[i]), rhs[:, i]
        if i:
            t = tri(factors[-1], _coupling_block(m[:, i], m[:, i - 1]), upper=False)
            s, g = torch.baddbmm(s, t.mT, t, alpha=-1.0), g - t.mT @ ys[-1]
        factors.append(torch.linalg.cholesky(s))
        ys.append(tri(factors[-1], g, upper=False))
    xs = [tri(factors[-1].mT, ys[-1], upper=True)]
    for i in range(h - 2, -1, -1):
        up = tri(factors[i], _coupling_times(m[:, i + 1], m[:, i], xs[-1]), upper=False)
        xs.append(tri(factors[i].mT, ys[i] - up, upper=True))
    return torch.stack(xs[::-1], dim=1).permute(0, 3, 1, 2)


def _direct_impute(x: Tensor, u: Tensor) -> Tensor:
    """The unknowns [N, C, H, W] (zero on kept pixels; ``u`` bool [N, H, W]) by
    :func:`_direct_solve` in float64, returned in ``x``'s dtype, in chunks of images whose
    factors fit :data:`DIRECT_CHUNK_BYTES`. An image with every pixel removed has nothing to
    impute from: it gets zeros, as from conjugate gradients (and pytorch-grad-cam)."""
    u = u & ~u.flatten(1).all(1)[:, None, None]                                # all removed: solved as all kept
    uf = u[:, None].to(torch.float64)
    b = uf * _neighbour_sum(x.double() * (1.0 - uf))                           # kept neighbours' contribution
    h, w = u.shape[-2:]
    step = max(1, DIRECT_CHUNK_BYTES // (h * w * w * 8))
    return torch.cat([_direct_solve(b[s:s + step], u[s:s + step]) for s in range(0, len(b), step)]).to(x.dtype)


def auto_solver(width: int, device: torch.device) -> str:
    """The solve ``"auto"`` picks for images ``width`` pixels wide on ``device``: the exact one on a
    CPU (faster there at every width measured), conjugate gradients on a GPU above
    :data:`DIRECT_MAX_WIDTH` (the whole batch per step instead of one step per image row)."""
    return "direct" if device.type == "cpu" or width <= DIRECT_MAX_WIDTH else "cg"


@torch.no_grad()
def noisy_linear_impute(images: Tensor, removed: Tensor, noise: float = 0.01, generator: Generators = None,
                        tolerance: float = CG_TOLERANCE, max_iter: Optional[int] = None,
                        solver: str = "auto") -> Tensor:
    """``images`` [N, C, H, W] with the pixels of ``removed`` (bool [N, 1, H, W]) replaced by the
    weighted mean of their 8 neighbours (solved jointly; see the module docstring) plus
    N(0, ``noise``^2) noise drawn from ``generator`` (one, or one per image). Kept pixels are
    returned untouched; an image with every pixel removed gets the noise alone (zeros imputed).
    ``solver``: ``"direct"`` (exact, block Cholesky), ``"cg"`` (conjugate gradients) or
    ``"auto"`` (:func:`auto_solver`: direct on a CPU, CG on a GPU above :data:`DIRECT_MAX_WIDTH`
    pixels wide). ``tolerance`` and ``max_iter`` (default 4 x (H + W) steps) bound CG; the
    direct solver ignores them."""
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {', '.join(SOLVERS)}, got {solver!r}")
    if images.dim() != 4 or removed.shape != (images.shape[0], 1, *images.shape[-2:]):
        raise ValueError(f"images must be [N, C, H, W] and removed [N, 1, H, W] (bool), got "
                         f"{tuple(images.shape)} and {tuple(removed.shape)}")
    x = images.float()
    u = removed.to(torch.bool)
    if solver == "auto":
        solver = auto_solver(x.shape[-1], x.device)
    if solver == "direct":
        sol = _direct_impute(x, u[:, 0])
    else:
        sol = _cg_solve(x, u.expand_as(x).to(x.dtype), tolerance, max_iter)
    filled = sol + _noise(x.shape, float(noise), generator, x.dtype, x.device)
    return torch.where(u, filled.to(images.dtype), images)


def removal_masks(a: Tensor, fractions: Sequence[float], order: str) -> Tensor:
    """bool [F, N, 1, H, W]: for each fraction f the pixels whose map value is at least the
    (1 - f) quantile of the image's map (``"morf"``), or whose ``1 - map`` is (``"lerf"``)."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(ORDERS)}, got {order!r}")
    m = a.float() if order == "morf" else 1.0 - a.float()
    flat = m.flatten(1).double()
    q = torch.tensor([1.0 - f for f in fractions], dtype=flat.dtype, device=flat.device)
    thresholds = torch.quantile(flat, q, dim=1)                                 # [F, N], linear interpolation
    return m.unsqueeze(0).double() >= thresholds[:, :, None, None, None]


def road_logits(model: Explainable, x: Tensor, a: Tensor, order: str, fractions: Sequence[float] = FRACTIONS,
                noise: float = 0.01, generators: Generators = None, batch_size: Optional[int] = None) -> Tensor:
    """The logits of every class with the fraction f of pixels removed in ``order`` and imputed,
    for each f of ``fractions`` (float32 [N, 1 + F, classes]; column 0 the unperturbed image).
    ``generators``: one per image (the same noise for an image in every batch and model)."""
    _check_maps(a, x)
    masks = removal_masks(a[:, :1], fractions, order)
    bs = batch_size or DEFAULT_BATCH
    columns = []
    with torch.inference_mode():
        columns.append(torch.cat([model(x[s:s + bs]).float() for s in range(0, x.shape[0], bs)]))
    for k in range(len(fractions)):
        gens = None if generators is None or isinstance(generators, torch.Generator) else list(generators)
        imputed = noisy_linear_impute(x, masks[k], noise, gens if gens is not None else generators)
        with torch.inference_mode():
            columns.append(torch.cat([model(imputed[s:s + bs]).float() for s in range(0, x.shape[0], bs)]))
    return torch.stack(columns, dim=1)
