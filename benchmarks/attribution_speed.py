"""Speed of the CAM attributions on the paper's CIFAR model (full-width ResNet-18, CIFAR stem).

    python benchmarks/attribution_speed.py                      # 1,000 images, batch 256, auto device
    python benchmarks/attribution_speed.py --device cpu --batch-size 128 --methods gradcam

Times a bare forward pass (no_grad) over ``--n`` random 32x32 images and each method over
the same images in batches (after one warm-up batch each), and prints images/s, total
seconds and the ratio to the forward pass. With ``--repeats k`` the passes are interleaved
k times and the fastest of each is kept (robust to other processes on a shared machine).
Random weights: the cost does not depend on them.
"""
from __future__ import annotations

import argparse
import time
from typing import Callable

import torch

from xai_utils.ops.attribution import METHODS, attribute
from xai_utils.settings import RunConfig
from xai_utils.study.objectives import explained_model
from xai_utils.ops.devices import resolve_device

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def _timed(fn: Callable[[torch.Tensor, torch.Tensor], object], x: torch.Tensor, t: torch.Tensor,
           batch_size: int, device: torch.device) -> float:
    fn(x[:batch_size], t[:batch_size])                      # warm-up (kernels, allocator)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for s in range(0, x.shape[0], batch_size):
        fn(x[s:s + batch_size], t[s:s + batch_size])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main(argv=None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1000, help="number of images (default 1000)")
    p.add_argument("--batch-size", type=int, default=256, help="images per call (default 256)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:k] (default auto)")
    p.add_argument("--methods", nargs="+", default=["gradcam", "eigencam"],
                   help=f"methods to time (default gradcam eigencam); available: {', '.join(METHODS)}")
    p.add_argument("--widths", type=int, nargs=4, default=None, help="stage widths (default: full, 64..512)")
    p.add_argument("--repeats", type=int, default=1, help="interleaved repeats, fastest kept (default 1)")
    args = p.parse_args(argv)
    bad = [m for m in args.methods if m not in METHODS]
    if bad:
        p.error(f"unknown method(s) {bad}; available: {', '.join(METHODS)}")

    device = resolve_device(args.device)
    torch.manual_seed(0)
    cfg = RunConfig(arch="resnet18", widths=args.widths, objective="ce")
    model = explained_model(cfg, 10, CIFAR_MEAN, CIFAR_STD).to(device).eval()
    x = torch.rand(args.n, 3, 32, 32, device=device)
    t = torch.randint(0, 10, (args.n,), device=device)

    def forward(xb, tb):
        with torch.no_grad():
            return model(xb)

    threads = f", {torch.get_num_threads()} CPU threads" if device.type == "cpu" else ""
    print(f"ResNet-18 (CIFAR stem, widths {args.widths or 'full'}), {args.n} images 32x32, "
          f"batch {args.batch_size}, device {device}{threads}")
    fns = {"forward": forward}
    fns.update({m: (lambda xb, tb, m=m: attribute(model, xb, tb, m)) for m in args.methods})
    out = {k: float("inf") for k in fns}
    for _ in range(max(1, args.repeats)):
        for k, fn in fns.items():
            out[k] = min(out[k], _timed(fn, x, t, args.batch_size, device))
    for k, sec in out.items():
        name = "forward (no_grad)" if k == "forward" else k
        print(f"{name:20s} {args.n / sec:9.1f} images/s {sec:8.2f} s   x{sec / out['forward']:.2f} forward")
    return out


if __name__ == "__main__":
    main()
