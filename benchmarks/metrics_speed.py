"""Speed and agreement of the batched metrics against the per-image reference loop.

The authors call Quantus (and scikit-image SSIM) once per image. This script times that loop
and ours on the same images and maps, prints the speed ratio per metric and the largest
difference between the values:

    python benchmarks/metrics_speed.py                       # CPU, 512 shapes images, full-width ResNet-18
    python benchmarks/metrics_speed.py --device cuda --n 2048 --pf-n 0

Pixel flipping is bound by the model's forward passes (96 per image on 32x32x3 with 32
features per step): the per-image Quantus loop runs on ``--quantus-subset`` images and ours
on ``--pf-n`` images (0 = all ``--n``); the script also times the bare forward passes ours
needs (same images x steps, same batch size) and prints ours/bare (bookkeeping overhead,
target <= 1.25) and quantus/ours per image (target >= 2.5 on CPU, >= 50 on a GPU). That last ratio is the
gain of batched over single-image forward passes plus Quantus's overhead. On the 2-core
development CPU (quiet, 2 threads) the full-width model ran at 56 images/s at batch 1 and
at best ~116 images/s batched (channels_last, batch 64), so the ratio was 2.18 (1.44 with a
contiguous model at batch 128); on a GPU it is large. The model has random weights (speed
does not depend on them); maps are CAM-like (a ReLU'd random 4x4 grid, bilinearly
upsampled and min-max scaled, so with zeros and ties like Grad-CAM).
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from xai_utils.ops import metrics as M  # noqa: E402
from xai_utils.settings import RunConfig  # noqa: E402
from xai_utils.study.data import load_dataset  # noqa: E402
from xai_utils.study.objectives import explained_model  # noqa: E402


def cam_like_maps(n: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    low = torch.randn(n, 1, 4, 4, generator=g).relu()
    low[:, 0, 0, 0] += 0.5                                     # never an all-zero map
    up = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    lo = up.flatten(1).amin(1).view(-1, 1, 1, 1)
    hi = up.flatten(1).amax(1).view(-1, 1, 1, 1)
    return (up - lo) / (hi - lo)


def timed(fn: Callable[[], object], sync: Callable[[], None]) -> tuple[object, float]:
    sync()
    t = time.perf_counter()
    out = fn()
    sync()
    return out, time.perf_counter() - t


def row(name: str, n_ref: int, t_ref: float, n_ours: int, t_ours: float, diff: float) -> None:
    r, o = t_ref / n_ref, t_ours / n_ours
    print(f"{name:26s} {n_ref:6d} {r * 1e3:12.3f} {n_ours:6d} {o * 1e3:12.4f} {r / o:10.1f} {diff:12.2e}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--n", type=int, default=512, help="images (all metrics but pixel flipping)")
    p.add_argument("--widths", type=int, nargs=4, default=None,
                   help="ResNet-18 stage widths; default: full width (64 128 256 512), the paper's model")
    p.add_argument("--quantus-subset", type=int, default=12, help="images for the per-image Quantus pixel flipping")
    p.add_argument("--pf-n", type=int, default=32, help="images for our pixel flipping and the bare passes (0 = --n)")
    p.add_argument("--batch-size", type=int, default=64, help="perturbed images per forward pass")
    p.add_argument("--features-in-step", type=int, default=32)
    p.add_argument("--repeats", type=int, default=2, help="alternating timings of ours and the bare passes (best kept)")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    p.add_argument("--memory-format", choices=("channels_last", "contiguous"), default="channels_last",
                   help="memory format of the model for ours and the bare passes (the evaluation stage "
                        "uses channels_last); Quantus always gets the plain model, as the authors' code runs it")
    p.add_argument("--skip-pixel-flipping", action="store_true")
    p.add_argument("--only-pixel-flipping", action="store_true")
    args = p.parse_args()

    import quantus
    from skimage.metrics import structural_similarity
    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    ds = load_dataset("shapes", "test")
    n = min(args.n, len(ds))
    x, y = ds.batch(torch.arange(n))
    masks = ds.mask_batch(torch.arange(n))
    a = cam_like_maps(n, x.shape[-1])
    torch.manual_seed(0)
    model = explained_model(RunConfig(arch="resnet18", widths=args.widths), ds.num_classes, ds.mean, ds.std).eval()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    t_start = time.perf_counter()
    print(f"device {dev}, torch threads {torch.get_num_threads()}, load average {load:.1f}, "
          f"widths {args.widths or 'full (64 128 256 512)'}, {n} shapes images 32x32")
    print(f"{'metric':26s} {'n_ref':>6s} {'ref ms/img':>12s} {'n_ours':>6s} {'ours ms/img':>12s} "
          f"{'ref/ours':>10s} {'max |diff|':>12s}")
    xn, yn, an, sn = x.numpy(), y.numpy(), a.numpy(), masks.numpy().astype(np.float32)

    if not args.only_pixel_flipping:
        per_image = {
            "complexity": (lambda i: quantus.Complexity(disable_warnings=True)(
                model=None, x_batch=xn[i:i + 1], y_batch=yn[i:i + 1], a_batch=an[i:i + 1])[0], lambda: M.complexity(a_d)),
            "sparseness": (lambda i: quantus.Sparseness(disable_warnings=True)(
                model=None, x_batch=xn[i:i + 1], y_batch=yn[i:i + 1], a_batch=an[i:i + 1])[0], lambda: M.sparseness(a_d)),
            "pointing_game": (lambda i: quantus.PointingGame(disable_warnings=True)(
                model=None, x_batch=xn[i:i + 1], y_batch=yn[i:i + 1], a_batch=an[i:i + 1], s_batch=sn[i:i + 1])[0],
                lambda: M.pointing_game(a_d, m_d)),
            "attribution_localisation": (lambda i: quantus.AttributionLocalisation(disable_warnings=True)(
                model=None, x_batch=xn[i:i + 1], y_batch=yn[i:i + 1], a_batch=an[i:i + 1], s_batch=sn[i:i + 1])[0],
                lambda: M.attribution_localisation(a_d, m_d)),
        }
        b = (a + 0.1 * torch.rand(a.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
        bn = b.numpy()
        per_image["ssim (skimage)"] = (lambda i: structural_similarity(an[i, 0], bn[i, 0], data_range=1.0),
                                       lambda: M.ssim(a_d, b_d))
        a_d, b_d, m_d = a.to(dev), b.to(dev), masks.to(dev)
        for name, (ref_fn, ours_fn) in per_image.items():
            ref, t_ref = timed(lambda: np.array([ref_fn(i) for i in range(n)], dtype=float), sync)
            ours_fn()                                              # warm-up (CUDA kernels)
            ours, t_ours = timed(ours_fn, sync)
            t_ours = min(t_ours, min(timed(ours_fn, sync)[1] for _ in range(2)))
            diff = float(np.nanmax(np.abs(ref - ours.cpu().numpy())))
            row(name, n, t_ref, n, t_ours, diff)
            sys.stdout.flush()

    if args.skip_pixel_flipping:
        return
    k, bs = args.features_in_step, args.batch_size
    pf_n = min(args.pf_n or n, n)
    q_n = min(args.quantus_subset, pf_n)
    steps = int(np.ceil(x[0].numel() / k))
    quantus_model = model.to(dev)                      # the authors' way: plain model, one image per call
    model = copy.deepcopy(quantus_model)
    if args.memory_format == "channels_last":
        model = model.to(memory_format=torch.channels_last)
    xd, yd, ad = x[:pf_n].to(dev), y[:pf_n].to(dev), a[:pf_n].to(dev)
    pf = quantus.PixelFlipping(features_in_step=k, perturb_baseline="black", disable_warnings=True)
    qdev = "cuda" if dev.type == "cuda" else "cpu"
    q, t_q = timed(lambda: np.concatenate([pf(model=quantus_model, x_batch=xn[i:i + 1], y_batch=yn[i:i + 1],
                                              a_batch=an[i:i + 1], device=qdev) for i in range(q_n)]), sync)
    print(f"  quantus pixel flipping: {t_q:.1f} s for {q_n} images", flush=True)
    M.pixel_flipping(model, xd, yd, ad, x[0].numel(), batch_size=bs)            # warm-up: one step

    block = min(pf_n, bs)
    per_pass = max(1, bs // block)
    passes = []                                       # (input, times) built outside the timing
    for b0 in range(0, pf_n, block):
        xb = xd[b0:b0 + block]
        full, rest = divmod(steps, per_pass)
        passes.append((xb.repeat(per_pass, 1, 1, 1).contiguous(), full))
        if rest:
            passes.append((xb.repeat(rest, 1, 1, 1).contiguous(), 1))

    def bare() -> None:
        """The forward passes ours makes: same images x steps, same batch composition."""
        with torch.inference_mode():
            for xb, times in passes:
                for _ in range(times):
                    model(xb)

    t_ours, t_bare = float("inf"), float("inf")
    for rep in range(args.repeats):                     # alternate, keep the best: the machine is shared
        (curves, auc), t = timed(lambda: M.pixel_flipping(model, xd, yd, ad, k, batch_size=bs), sync)
        t_ours = min(t_ours, t)
        _, t = timed(bare, sync)
        t_bare = min(t_bare, t)
        print(f"  repeat {rep + 1}: ours {t_ours:.1f} s, bare {t_bare:.1f} s (best so far) for {pf_n} images", flush=True)
    diff_c = float(np.abs(q - curves[:q_n].cpu().numpy()).max())
    diff_a = float(np.abs(np.trapz(q, axis=1) / (steps - 1) - auc[:q_n].cpu().numpy()).max())
    row("pixel_flipping (AUC)", q_n, t_q, pf_n, t_ours, max(diff_c, diff_a))
    print(f"pixel flipping: {steps} steps, batch {bs}, ours in {args.memory_format}; quantus {t_q / q_n:.3f} s/img on {q_n} images, "
          f"ours {t_ours / pf_n:.4f} s/img on {pf_n}, bare forward passes {t_bare / pf_n:.4f} s/img")
    print(f"  ours / bare forward = {t_ours / t_bare:.3f}   (target <= 1.25)")
    print(f"  quantus / ours per image = {(t_q / q_n) / (t_ours / pf_n):.2f}   (target >= 2.5 on CPU, >= 50 on a GPU)")
    print(f"  max |diff| curves {diff_c:.2e}, AUC/(S-1) {diff_a:.2e}")
    print(f"total wall time {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
