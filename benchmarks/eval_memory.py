"""Peak memory of the evaluation, one chunk of images at a time, at ImageNet-S50 size.

    python benchmarks/eval_memory.py --device cuda                       # ResNet-50, 224 px, chunk 512, batch 64
    python benchmarks/eval_memory.py --device cpu --images 64 --features-in-step 37632   # quick, on a CPU

The evaluation stage (:func:`xai_utils.stages.evaluate.evaluate_run`) keeps the evaluation set on
the host and moves ``eval_chunk`` images (and their maps) to the device at a time; each
metric then works in batches of ``batch_size_eval``. This script builds that situation for
one chunk (random ResNet-50 weights, random images and Grad-CAM-like maps: memory does not
depend on their values) and runs each metric of the ImageNet-S50 profile through the metric
registry, each in a fresh process, printing

* on CUDA: ``torch.cuda.max_memory_allocated`` during the metric, and the chunk's data and
  the model already on the device before it;
* on a CPU: the growth of the process's peak resident memory during the metric (the host
  memory the same work needs; not a GPU number).

The number of pixel-flipping steps changes only the small [N, steps, classes] logits array,
so ``--features-in-step`` may be raised on a CPU to keep the run short.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

METRICS = ("pixel_flipping", "continuity", "contrastivity", "complexity")


def _cam_like(n: int, size: int, device: torch.device) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    grid = torch.relu(torch.randn(n, 1, 7, 7, generator=g))
    maps = torch.nn.functional.interpolate(grid, size=(size, size), mode="bilinear", align_corners=False)
    flat = maps.flatten(1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    return ((flat - lo) / (hi - lo).clamp_min(1e-12)).view_as(maps).to(device)


def _one(args) -> dict:
    """Run one metric on one chunk in this process; return its memory figures."""
    from xai_utils.settings import RunConfig
    from xai_utils.ops.metrics import METRICS as REGISTRY, MetricInputs, resolve_method, resolve_tie_break
    from xai_utils.study.objectives import explained_model

    device = torch.device(args.device)
    cfg = RunConfig(dataset="imagenet_s50", objective="ce", arch=args.arch, widths=None)
    model = explained_model(cfg, args.classes, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)).to(device).eval()
    model = model.to(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(args.images, 3, args.size, args.size, generator=g).to(device)
    labels = torch.randint(0, args.classes, (args.images,), generator=g).to(device)
    maps = _cam_like(args.images, args.size, device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    inputs = MetricInputs(model=model, x=x, maps=maps, labels=labels, preds=labels, targets=labels,
                          sample_ids=torch.arange(args.images), method=resolve_method("gradcam"),
                          method_name="gradcam", batch_size=args.batch_size,
                          features_in_step=args.features_in_step,
                          pixel_flipping_tie_break=resolve_tie_break("auto", device))
    t0 = time.perf_counter()
    REGISTRY[args.one].compute(inputs)
    out = {"metric": args.one, "seconds": time.perf_counter() - t0}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        out.update(resident_mb=before / 2**20, peak_mb=torch.cuda.max_memory_allocated(device) / 2**20)
    else:
        out.update(host_growth_mb=(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024)
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--arch", default="resnet50")
    p.add_argument("--classes", type=int, default=50)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--images", type=int, default=512, help="images in the chunk (the profile's eval_chunk)")
    p.add_argument("--batch-size", type=int, default=64, help="batch_size_eval")
    p.add_argument("--features-in-step", type=int, default=224)
    p.add_argument("--metrics", default=",".join(METRICS))
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(_one(args)))
        return
    chunk_mb = args.images * (3 + 1) * args.size ** 2 * 4 / 2**20
    print(f"device={args.device} arch={args.arch} classes={args.classes} size={args.size} chunk={args.images} "
          f"images batch={args.batch_size} features_in_step={args.features_in_step}; "
          f"chunk data (images + maps, float32): {chunk_mb:.0f} MB")
    for metric in args.metrics.split(","):
        cmd = [sys.executable, __file__, "--one", metric] + [
            a for k, v in vars(args).items() if k not in ("one", "metrics")
            for a in (f"--{k.replace('_', '-')}", str(v))]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode:
            print(f"{metric:>16}: failed\n{res.stderr[-2000:]}")
            continue
        r = json.loads(res.stdout.strip().splitlines()[-1])
        if "peak_mb" in r:
            print(f"{metric:>16}: peak {r['peak_mb']:9.0f} MB allocated on the device "
                  f"(model + chunk before it: {r['resident_mb']:.0f} MB), {r['seconds']:.1f} s")
        else:
            print(f"{metric:>16}: host peak grew by {r['host_growth_mb']:7.0f} MB during the metric "
                  f"(CPU; not a GPU figure), {r['seconds']:.1f} s")


if __name__ == "__main__":
    main()
