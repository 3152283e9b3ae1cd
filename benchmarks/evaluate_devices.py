"""The library route (``xai_utils.evaluate``) on a plain timm model: the same images, maps and
scores on the CPU and on a GPU, how far apart they are and how fast each is.

    python benchmarks/evaluate_devices.py --out benchmarks/results     # needs a GPU
    python benchmarks/evaluate_devices.py --small --out /tmp/x         # anywhere: the CPU twice

A timm ResNet-18 (seeded random weights, 10 classes) explains ``--n`` seeded random images of
``--size`` pixels with each method of :data:`METHODS` (settings :data:`SETTINGS`); every metric that needs neither masks nor a fitted
temperature scores them, once with ``device="cpu"`` and once with ``device="cuda"``. Reported
per method and metric: the largest and the median absolute difference of the per-image values,
the share of images whose values differ by more than 1e-4, and the seconds on each device.
Both devices compute in IEEE float32 (no TF32), so a difference comes from the order of
floating-point sums (and, through it, from ties in a ranking), not from lower precision.
Written to ``evaluate_devices-<device>.json`` and ``.md`` under ``--out``.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import timm  # noqa: E402

import xai_utils  # noqa: E402
from xai_utils.ops.metrics import METRICS  # noqa: E402

METHODS = ("gradcam", "eigencam", "saliency", "random")
SETTINGS = {"features_in_step": 64}          # 192 pixel-flipping steps at 64 px


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("resnet18", num_classes=10).eval()


def _run(device: str, images: torch.Tensor, labels: torch.Tensor, metrics: list[str], batch_size: int):
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    table = xai_utils.evaluate(_model(), images, labels, methods=list(METHODS), metrics=metrics,
                               mean=(0.5,) * 3, std=(0.25,) * 3, batch_size=batch_size, device=device, **SETTINGS)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return table, time.perf_counter() - start


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--small", action="store_true", help="8 images of 64 px, the CPU in place of the GPU")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)
    n, size = (8, 64) if args.small else (args.n, args.size)
    gpu = "cpu" if args.small else "cuda"
    if gpu == "cuda" and not torch.cuda.is_available():
        print("evaluate_devices: no GPU here (use --small to run it on the CPU)", file=sys.stderr)
        return 2
    metrics = [m for m in METRICS if not ({"masks", "calibration"} & METRICS[m].needs)]
    g = torch.Generator().manual_seed(0)
    images, labels = torch.rand(n, 3, size, size, generator=g), torch.randint(0, 10, (n,), generator=g)
    _run(gpu, images[:4], labels[:4], ["complexity"], args.batch_size)          # warm-up: kernels, allocator
    cpu, cpu_s = _run("cpu", images, labels, metrics, args.batch_size)
    dev, dev_s = _run(gpu, images, labels, metrics, args.batch_size)
    key = ["image", "method", "metric"]
    both = cpu.merge(dev, on=key, suffixes=("_cpu", "_gpu"))
    assert len(both) == len(cpu) == len(dev)
    same_pred = float((both["pred_cpu"] == both["pred_gpu"]).mean())
    rows = []
    for (method, metric), group in both.groupby(["method", "metric"], sort=False):
        a, b = group["value_cpu"].to_numpy(), group["value_gpu"].to_numpy()
        finite = np.isfinite(a) & np.isfinite(b)
        diff = np.abs(a[finite] - b[finite])
        rows.append({"method": method, "metric": metric, "images": int(len(a)),
                     "nan_agree": bool((np.isnan(a) == np.isnan(b)).all()),
                     "max_abs_diff": float(diff.max()) if diff.size else None,
                     "median_abs_diff": float(np.median(diff)) if diff.size else None,
                     "share_over_1e-4": float((diff > 1e-4).mean()) if diff.size else None})
    name = torch.cuda.get_device_name(0) if gpu == "cuda" else "CPU (twice)"
    report = {"command": "python benchmarks/evaluate_devices.py" + (" --small" if args.small else ""),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "device": name,
              "cpu_cores": __import__("os").cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
              "images": n, "size": size, "methods": list(METHODS), "settings": SETTINGS, "metrics": metrics,
              "seconds": {"cpu": round(cpu_s, 2), gpu: round(dev_s, 2)}, "same_predictions": same_pred,
              "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"evaluate_devices-{'small' if args.small else name.replace(' ', '-').lower()}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    lines = [f"# `xai_utils.evaluate` on the CPU and on {name}", "",
             f"`{report['command']}`, {report['date']}; torch {torch.__version__}, {report['cpu_cores']} CPU cores. "
             f"timm ResNet-18 (seeded random weights), {n} random images of {size} px. Seconds: CPU {cpu_s:.1f}, "
             f"{gpu} {dev_s:.1f}. Same predicted class on both: {same_pred:.3f} of the images.", "",
             "| method | metric | max abs diff | median abs diff | share > 1e-4 | NaN alike |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['metric']} | {r['max_abs_diff']:.3g} | {r['median_abs_diff']:.3g} | "
                     f"{r['share_over_1e-4']:.3f} | {'yes' if r['nan_agree'] else 'no'} |")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
