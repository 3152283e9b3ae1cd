"""Training throughput (images/s) of each objective on one device, warm-up steps excluded,
and the device-hours of a profile's grid computed from the measured rates.

    python benchmarks/train_throughput.py --device cpu --widths 16,32,64,128 --steps 5
    python benchmarks/train_throughput.py --device cpu --widths 8,16,32,64 --batch-size 64 --objectives scl,excon,exconb
    python benchmarks/train_throughput.py --device cuda --profile cifar10          # + GPU-hours of the grid
    python benchmarks/train_throughput.py --device cuda --profile imagenet_s50 --compile
    python benchmarks/train_throughput.py --device cpu --profile quick --compare-compile --steps 40 --warmup 3

With ``--profile`` each objective runs with that profile's network, batch size, optimiser,
image size (32, or the 224 px ImageNet crops) and ``compile``/``amp`` settings, and the script
prints seeds x epochs x training images / rate per objective and in total (training only:
the probe, the test pass and the evaluation are not included).

Each objective runs its real training step (:func:`xai_utils.study.training.train_step`: augmentation
parameters from the CPU generator, forward, loss, backward, optimiser and scheduler step;
ExCon's saliency, mask and filter passes included, no warm-up) on synthetic uint8 images
held on the device. "images/s" counts source images (an
SCL step sees two views of each). It prints the time of ExCon's and ExConB's step relative to
SupCon's, and of CGC's relative to CE's (CGC runs uncompiled: double backward). On CUDA (or with
``--compare-loader``) it also times the input pipeline alone, ours (uint8 batch indexed on
the device + batched augmentation) against a torchvision DataLoader with the same recipe as
PIL transforms in worker processes, and prints the ratio.
"""
from __future__ import annotations

import argparse
import time
from typing import Callable, Optional

import numpy as np
import torch

from xai_utils.ops.augment import get_augmentation
from xai_utils.settings import RunConfig
from xai_utils.ops.devices import resolve_device
from xai_utils.study.objectives import OBJECTIVES, TrainBatch
from xai_utils.ops.seeds import epoch_generator
from xai_utils.study.objectives import explained_model
from xai_utils.study.training import (OPTIMIZERS, Engine, EpochTotals, build_scheduler, resolve_augmentation,
                                      train_step)

NUM_CLASSES = 10
# training images per epoch: CIFAR-10's train split; ImageNet-S50's 50 ImageNet-1k classes
# have at most 1,300 training images each (the user's copy decides; --train-images overrides)
TRAIN_IMAGES = {"cifar10": 50_000, "imagenet_s50": 65_000, "fashion_mnist": 60_000, "shapes": 10_000}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(step: Callable[[int], None], warmup: int, steps: int, device: torch.device,
           warmup_seconds: Optional[list] = None) -> float:
    """Seconds for ``steps`` calls of ``step`` after ``warmup`` untimed ones (their seconds,
    compilation included, appended to ``warmup_seconds`` when given)."""
    t0 = time.perf_counter()
    for i in range(warmup):
        step(i)
    _sync(device)
    if warmup_seconds is not None:
        warmup_seconds.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    for i in range(steps):
        step(warmup + i)
    _sync(device)
    return time.perf_counter() - t0


def train_images_per_s(objective: str, args, device: torch.device, cfg: Optional[RunConfig] = None,
                       warmup_seconds: Optional[list] = None) -> float:
    """Source images per second of ``objective``'s training step (``cfg``: a profile's run;
    ``warmup_seconds``: gets the seconds of the warm-up steps, torch.compile's compilation
    included)."""
    if cfg is None:
        cfg = RunConfig(dataset="cifar10", objective=objective, arch=args.arch, widths=args.widths,
                        batch_size=args.batch_size, device=str(device), compile=args.compile)
    size = 224 if cfg.dataset == "imagenet_s50" else args.image_size
    classes = 50 if cfg.dataset == "imagenet_s50" else NUM_CLASSES
    torch.manual_seed(0)
    n = cfg.batch_size * 4
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, device=device)
    labels = torch.arange(n, device=device) % classes
    model = explained_model(cfg, classes, (0.5,) * 3, (0.25,) * 3).to(device).train()
    obj = OBJECTIVES[objective](cfg, model).to(device)
    engine = Engine(cfg, model, device, compile=cfg.compile and not obj.uncompiled_reason)
    aug = get_augmentation(resolve_augmentation(cfg))
    clean = get_augmentation("none", cfg.dataset)
    opt = OPTIMIZERS[cfg.optimizer](obj.trainable(model), cfg)
    sched = build_scheduler(opt, cfg, steps_per_epoch=1000)
    gen = epoch_generator(0, 0)                   # epoch 0: ExCon without warm-up
    totals = EpochTotals.zeros(device)

    def step(i: int) -> None:
        idx = torch.randint(0, n, (cfg.batch_size,), generator=gen).to(device, non_blocking=True)
        train_step(obj, model, engine, opt, sched, TrainBatch(images[idx], labels[idx], 0, gen, aug, clean), totals)

    seconds = _timed(step, args.warmup, args.steps, device, warmup_seconds)
    return args.steps * cfg.batch_size / seconds


def grid_hours(profile: str, rates: dict[str, float], train_images: Optional[int]) -> list[tuple[str, float]]:
    """(objective, device-hours) of training every seed of ``profile`` at the measured rates."""
    from xai_utils.settings import load_profile
    prof = load_profile(profile)
    dataset = prof.datasets[0]
    rows = []
    for objective in prof.objectives:
        if objective not in rates:
            continue
        cfg = prof.run_config(dataset, objective, prof.seeds[0])
        n = train_images or cfg.train_subset or TRAIN_IMAGES[dataset]
        rows.append((objective, len(prof.seeds) * cfg.epochs * n / rates[objective] / 3600))
    return rows


def compare_compile(prof, objectives: list[str], args, device: torch.device) -> None:
    """Each objective's training step eager and under ``torch.compile`` (inductor), with the
    profile's settings otherwise, in this one process, alternated ``--repeats`` times (a VM's
    speed drifts): the median images/s of each, compiled / eager, and the warm-up seconds of
    the first compiled measurement (the compilation; inductor's on-disk cache makes later
    ones, and later runs on the same machine, cheaper)."""
    for objective in objectives:
        rates: dict[bool, list[float]] = {False: [], True: []}
        warm: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.repeats):
            for compiled in (False, True):
                cfg = prof.run_config(prof.datasets[0], objective, prof.seeds[0])
                cfg.compile = compiled
                torch._dynamo.reset()             # no compiled graph carried over from another measurement
                rates[compiled].append(train_images_per_s(objective, args, device, cfg, warm[compiled]))
        eager, comp = float(np.median(rates[False])), float(np.median(rates[True]))
        print(f"compile {objective:>6}: eager {eager:8.1f} images/s, compiled {comp:8.1f} images/s, ratio "
              f"{comp / eager:5.2f}x (medians of {args.repeats}); warm-up {warm[False][0]:.1f} s eager, "
              f"{warm[True][0]:.1f} s compiled ({cfg.arch}, batch {cfg.batch_size}, channels_last={cfg.channels_last})")


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
    gen = torch.Generator().manual_seed(0)
    perm = torch.randperm(n, generator=gen).to(device)

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
    p.add_argument("--compare-compile", action="store_true",
                   help="with --profile: each objective eager and compiled (inductor) in one run, their ratio and "
                        "the compilation's seconds")
    p.add_argument("--repeats", type=int, default=3, help="--compare-compile: alternations of eager and compiled")
    p.add_argument("--workers", type=int, default=4, help="DataLoader workers of the torchvision pipeline")
    p.add_argument("--compare-loader", action="store_true",
                   help="also compare the input pipelines on a CPU device (always done on CUDA)")
    p.add_argument("--profile", default=None,
                   help="measure with this profile's settings per objective and print its grid's device-hours")
    p.add_argument("--train-images", type=int, default=None,
                   help="training images per epoch for the grid (default: the profile's train_subset or the split)")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    rates = {}
    if args.profile:
        from xai_utils.settings import load_profile
        prof = load_profile(args.profile, device=str(device))
        objectives = [o for o in args.objectives.split(",") if o in prof.objectives] or prof.objectives
        print(f"device={device} ({name}) profile={args.profile} steps={args.steps} (+{args.warmup} warm-up) "
              f"threads={torch.get_num_threads()}")
        if args.compare_compile:
            compare_compile(prof, objectives, args, device)
            return
        for objective in objectives:
            cfg = prof.run_config(prof.datasets[0], objective, prof.seeds[0])
            cfg.compile = cfg.compile or args.compile
            warm: list[float] = []
            rates[objective] = train_images_per_s(objective, args, device, cfg, warm)
            print(f"train {objective:>6}: {rates[objective]:9.1f} images/s  ({cfg.arch}, batch {cfg.batch_size}, "
                  f"{cfg.optimizer}, amp={cfg.amp and device.type == 'cuda'}, compile={cfg.compile}; "
                  f"{args.warmup} warm-up steps {warm[0]:.1f} s)")
        rows = grid_hours(args.profile, rates, args.train_images)
        for objective, hours in rows:
            print(f"grid {objective:>6}: {hours:8.2f} device-hours on {name} ({len(prof.seeds)} seeds, training only)")
        print(f"grid  total: {sum(h for _, h in rows):8.2f} device-hours on {name}")
        return
    widths = "full" if args.widths is None else ",".join(map(str, args.widths))
    print(f"device={device} ({name}) arch={args.arch} widths={widths} batch={args.batch_size} "
          f"image={args.image_size} steps={args.steps} (+{args.warmup} warm-up) threads={torch.get_num_threads()}")
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
