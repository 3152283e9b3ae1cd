"""Training throughput (images/s) of each objective on one device, warm-up steps excluded.

    python benchmarks/train_throughput.py --device cpu --widths 16,32,64,128 --steps 5
    python benchmarks/train_throughput.py --device cpu --widths 8,16,32,64 --batch-size 64 --objectives scl,excon,exconb
    python benchmarks/train_throughput.py --device cuda --widths full --batch-size 256

Each objective runs its real training step (``Objective.step``: augmentation on the device,
forward, loss, backward, SGD step; ExCon's saliency, mask and filter passes included, no
warm-up) on synthetic uint8 images held on the device. "images/s" counts source images (an
SCL step sees two views of each). It prints the time of ExCon's and ExConB's step relative to
SupCon's, and of CGC's relative to CE's (CGC runs uncompiled: double backward). On CUDA (or with
``--compare-loader``) it also times the input pipeline alone, ours (uint8 batch indexed on
the device + batched augmentation) against a torchvision DataLoader with the same recipe as
PIL transforms in worker processes, and prints the ratio.
"""
from __future__ import annotations

import argparse
import time
from typing import Callable

import numpy as np
import torch

from xai_utils.augment import get_augmentation
from xai_utils.config import RunConfig
from xai_utils.runs import resolve_device
from xai_utils.objectives import OBJECTIVES, TrainBatch
from xai_utils.train import OPTIMIZERS, _Engine, build_model, resolve_augmentation

NUM_CLASSES = 10


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(step: Callable[[int], None], warmup: int, steps: int, device: torch.device) -> float:
    """Seconds for ``steps`` calls of ``step`` after ``warmup`` untimed ones."""
    for i in range(warmup):
        step(i)
    _sync(device)
    t0 = time.perf_counter()
    for i in range(steps):
        step(warmup + i)
    _sync(device)
    return time.perf_counter() - t0


def train_images_per_s(objective: str, args, device: torch.device) -> float:
    cfg = RunConfig(dataset="cifar10", objective=objective, arch=args.arch, widths=args.widths,
                    batch_size=args.batch_size, device=str(device), compile=args.compile)
    torch.manual_seed(0)
    n = args.batch_size * 4
    images = torch.randint(0, 256, (n, 3, args.image_size, args.image_size), dtype=torch.uint8, device=device)
    labels = torch.arange(n, device=device) % NUM_CLASSES
    model = build_model(cfg, NUM_CLASSES, (0.5,) * 3, (0.25,) * 3).to(device).train()
    obj = OBJECTIVES[objective](cfg, model).to(device)
    engine = _Engine(cfg, model, device)
    aug = get_augmentation(resolve_augmentation(cfg))
    clean = get_augmentation("none")
    opt = OPTIMIZERS["sgd"](obj.trainable(model), cfg)
    gen = torch.Generator(device=device).manual_seed(0)

    def step(i: int) -> None:
        idx = torch.randint(0, n, (args.batch_size,), generator=gen, device=device)
        batch = TrainBatch(images[idx], labels[idx], 0, gen, aug, clean)    # epoch 0: ExCon without warm-up
        with engine.autocast():
            out = obj.step(batch, model, engine)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()

    seconds = _timed(step, args.warmup, args.steps, device)
    return args.steps * args.batch_size / seconds


# ----------------------------------------------------------------------------- input pipelines

def _torchvision_transform(recipe: str, size: int):
    from torchvision import transforms as T
    recipes = {
        "ce": [T.RandomCrop(size, padding=4), T.RandomHorizontalFlip()],
        "scl": [T.RandomResizedCrop(size, scale=(0.2, 1.0)), T.RandomHorizontalFlip(),
                T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8), T.RandomGrayscale(p=0.2)],
    }
    return T.Compose(recipes[recipe] + [T.ToTensor()])


class _PILDataset(torch.utils.data.Dataset):
    def __init__(self, images: np.ndarray, transform):
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        from PIL import Image
        return self.transform(Image.fromarray(self.images[i])), i % NUM_CLASSES


def pipeline_ratio(recipe: str, args, device: torch.device) -> tuple[float, float]:
    """(ours, torchvision) images/s delivered to ``device`` as augmented float batches."""
    n = args.batch_size * (args.steps + args.warmup)
    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, (n, args.image_size, args.image_size, 3), dtype=np.uint8)

    images = torch.from_numpy(hwc).permute(0, 3, 1, 2).contiguous().to(device)
    aug = get_augmentation(recipe)
    gen = torch.Generator(device=device).manual_seed(0)
    perm = torch.randperm(n, generator=gen, device=device)

    def ours(i: int) -> None:
        aug(images[perm[i * args.batch_size:(i + 1) * args.batch_size]], gen)

    t_ours = _timed(ours, args.warmup, args.steps, device)

    loader = torch.utils.data.DataLoader(
        _PILDataset(hwc, _torchvision_transform(recipe, args.image_size)), batch_size=args.batch_size,
        shuffle=True, num_workers=args.workers, pin_memory=device.type == "cuda", drop_last=True,
        persistent_workers=args.workers > 0)
    it = iter(loader)

    def theirs(i: int) -> None:
        x, _ = next(it)
        x.to(device, non_blocking=True)

    t_tv = _timed(theirs, args.warmup, args.steps, device)
    per = args.steps * args.batch_size
    return per / t_ours, per / t_tv


def _widths(text: str):
    if text.lower() in ("full", "none", ""):
        return None
    return [int(w) for w in text.split(",")]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--widths", type=_widths, default=None,
                   help="stage widths, e.g. 16,32,64,128; 'full' for the architecture's own")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed warm-up steps")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--objectives", default="ce,scl,tl,excon,exconb,cgc")
    p.add_argument("--compile", action="store_true", help="torch.compile the backbone")
    p.add_argument("--workers", type=int, default=4, help="DataLoader workers of the torchvision pipeline")
    p.add_argument("--compare-loader", action="store_true",
                   help="also compare the input pipelines on a CPU device (always done on CUDA)")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    widths = "full" if args.widths is None else ",".join(map(str, args.widths))
    print(f"device={device} arch={args.arch} widths={widths} batch={args.batch_size} "
          f"image={args.image_size} steps={args.steps} (+{args.warmup} warm-up) threads={torch.get_num_threads()}")
    rates = {}
    for objective in args.objectives.split(","):
        rates[objective] = train_images_per_s(objective, args, device)
        print(f"train {objective:>6}: {rates[objective]:9.1f} images/s")
    for objective, base, target in (("excon", "scl", 1.8), ("exconb", "scl", 1.8), ("cgc", "ce", 3.5)):
        if objective in rates and base in rates:      # explanation-aware steps against their base
            print(f"time per step {objective} / {base}: {rates[base] / rates[objective]:.2f}x "
                  f"(target on CPU: at most {target}x)")
    if device.type == "cuda" or args.compare_loader:
        for recipe in ("ce", "scl"):
            ours, tv = pipeline_ratio(recipe, args, device)
            print(f"input pipeline {recipe:>3}: on-device {ours:10.1f} images/s, torchvision DataLoader "
                  f"({args.workers} workers) {tv:9.1f} images/s, ratio {ours / tv:6.1f}x")


if __name__ == "__main__":
    main()
