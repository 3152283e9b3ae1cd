"""Throughput (images/s) of the streamed ImageNet-S50 training loader, one warm-up epoch excluded.

    python benchmarks/loader_throughput.py                          # 512 JPEGs, workers 0,2,4,8, V 1,2
    python benchmarks/loader_throughput.py --images 128 --workers 0,2 --batch-size 32
    python benchmarks/loader_throughput.py --root /data/ins50 --device cuda   # real images, to the GPU

It writes ``--images`` JPEGs of ImageNet-like sizes (long side 500, short side 333-500, three
in four landscape; smooth content plus noise, so files and decoding cost are close to a photo's)
into a temporary folder in the ImageNet-S50 layout (``train/<wnid>/*.JPEG`` over the 50
classes), unless ``--root`` names a real one. For each number of workers (capped at the CPU
count) and each number of random views V it builds the run's loader
(:meth:`xai_utils.study.data.StreamingImageDataset.train_loader`: per image V random resized crops
to 224 of the whole decoded image and the clean centre crop), runs one untimed warm-up epoch
(it starts the workers), then times ``--epochs`` epochs. "images/s" counts source images (each
yields V crops + 1 clean view); "persisted" says whether the same worker processes served every
epoch. With ``--device cuda`` every batch is also copied to the GPU (pinned, non-blocking).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from xai_utils.study.data import imagenet_s50_classes, load_dataset
from xai_utils.study.data.streaming import loader_worker_pids
from xai_utils.ops.devices import resolve_device


def imagenet_like_size(rng: np.random.Generator) -> tuple[int, int]:
    """(width, height): long side 500, short side 333-500 (most often 375 or 333), three in four landscape."""
    short = int(rng.choice([333, 375, 375, 400, 500]) if rng.random() < 0.7 else rng.integers(333, 501))
    return (500, short) if rng.random() < 0.75 else (short, 500)


def write_jpegs(root: Path, n: int, seed: int = 0) -> Path:
    """``n`` JPEGs (quality 90) in ``root/train/<wnid>/``, spread over the 50 classes."""
    wnids, _ = imagenet_s50_classes()
    rng = np.random.default_rng(seed)
    for k in range(n):
        w, h = imagenet_like_size(rng)
        coarse = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
        pixels = np.asarray(coarse, dtype=np.int16) + rng.integers(-12, 13, (h, w, 3), dtype=np.int16)
        folder = root / "train" / wnids[k % len(wnids)]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"img_{k:05d}.JPEG", quality=90)
    return root


def run_epoch(loader: torch.utils.data.DataLoader, epoch: int, device: torch.device) -> int:
    """Iterate one epoch (batches copied to ``device`` unless it is the CPU); images seen."""
    loader.sampler.set_epoch(epoch)
    seen = 0
    for crops, clean, labels in loader:
        if device.type != "cpu":
            crops.to(device, non_blocking=True), clean.to(device, non_blocking=True)
        seen += labels.shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return seen


def measure(ds, workers: int, views: int, args, device: torch.device) -> tuple[float, float, str]:
    """(seconds of the warm-up epoch, images/s over the timed epochs, workers persisted)."""
    loader = ds.train_loader(args.batch_size, views, seed=0, num_workers=workers,
                             pin_memory=device.type == "cuda")
    t0 = time.perf_counter()
    run_epoch(loader, 0, device)
    warmup = time.perf_counter() - t0
    pids = loader_worker_pids(loader)
    t0, seen = time.perf_counter(), 0
    for epoch in range(1, args.epochs + 1):
        seen += run_epoch(loader, epoch, device)
    rate = seen / (time.perf_counter() - t0)
    persisted = "-" if workers == 0 else ("yes" if pids and loader_worker_pids(loader) == pids else "no")
    return warmup, rate, persisted


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=512, help="JPEGs to write (ignored with --root)")
    p.add_argument("--root", default=None, help="an ImageNet-S50 folder to read instead (root/train/<wnid>/)")
    p.add_argument("--workers", type=_ints, default=[0, 2, 4, 8], help="worker counts, capped at the CPU count")
    p.add_argument("--views", type=_ints, default=[1, 2], help="random crops per image (CE/TL 1, SCL 2)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=1, help="timed epochs after the warm-up epoch")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto: where the batches are copied")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    cpus = os.cpu_count() or 1
    workers = sorted({min(w, cpus) for w in args.workers})
    with tempfile.TemporaryDirectory(prefix="loader_bench_") as tmp:
        root = Path(args.root) if args.root else write_jpegs(Path(tmp), args.images)
        ds = load_dataset("imagenet_s50", "train", root=root)
        n = len(ds) // args.batch_size * args.batch_size
        print(f"device={device} cpus={cpus} images={len(ds)} ({'given' if args.root else 'generated'}, "
              f"{n} per epoch) batch={args.batch_size} crop={ds.crop} epochs={args.epochs} (+1 warm-up) "
              f"torch={torch.__version__}")
        capped = [w for w in args.workers if w > cpus]
        if capped:
            print(f"workers {', '.join(map(str, capped))} capped at the CPU count ({cpus})")
        print(f"{'workers':>7} {'V':>2} {'warm-up s':>9} {'images/s':>9} {'crops/s':>9} {'persisted':>9}")
        for v in args.views:
            for w in workers:
                warmup, rate, persisted = measure(ds, w, v, args, device)
                print(f"{w:>7} {v:>2} {warmup:>9.2f} {rate:>9.1f} {rate * v:>9.1f} {persisted:>9}")


if __name__ == "__main__":
    main()
