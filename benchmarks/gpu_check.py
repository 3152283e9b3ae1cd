"""The prepared GPU check: what a first run on a GPU machine measures, in one script that
finishes within a time budget (8 minutes on one GPU), written to a Markdown and a JSON report.

    python benchmarks/gpu_check.py                            # on the GPU: benchmarks/results/gpu_check-<device>.*
    python benchmarks/gpu_check.py --small --out /tmp/check   # anywhere, at toy sizes (the test suite runs this)

Sections, in the order they run (each timed; one that fails is reported with its error and
the others still run; the report is rewritten after each, so a run cut short keeps what it
measured; a section is skipped once too little of the budget is left for it, except ``grid_hours``):

1. ``environment`` — device, driver, torch, CUDA and cuDNN versions, CPU cores;
2. ``training`` — training images/s and peak device memory of every objective (CE, SCL, TL,
   ExCon, ExConB, CGC) with the full-width CIFAR ResNet-18 at the batch sizes of ``cifar10`` /
   ``cifar10_extensions``, and of CE, SCL, TL, ExCon and CGC with the timm ResNet-50 at 224 px
   at the batch size of ``imagenet_s50`` (a row that runs out of memory says so);
3. ``pixel_flipping`` — our batched pixel flipping against Quantus's per-image loop (as the
   authors ran it) on the same images and maps: largest difference, speed-up (needs quantus;
   carry its wheel to a machine without it);
4. ``rehearsal_cifar10``, ``rehearsal_imagenet_s50`` — ``python -m xai_utils.pipeline --profile
   <p> --rehearse --executor inline`` on this device (bf16 autocast and channels-last on CUDA),
   in a child process with a time limit: its wall time, exit status and figures;
5. ``first_seed`` — the real training stage of ``cifar10`` seed 0, CE then SCL, at the paper's
   settings on full-size stand-in CIFAR-10 files (50,000 training images in the real format),
   each for a slice of the remaining time: epochs done, seconds per epoch, images/s, peak
   device memory and the projected hours of the run;
6. ``grid_hours`` — the training device-hours of the ``cifar10``, ``cifar10_extensions`` and
   ``imagenet_s50`` grids from the measured rates (seeds x epochs x training images / rate;
   the first seed's epoch times where measured, else the training rates; the probe, the test
   pass and the evaluation not included). It always runs;
7. ``evaluation_224`` — images/s and peak memory of each metric of ``imagenet_s50`` on one
   evaluation chunk of 224 px images (ResNet-50);
8. ``loader`` — images/s of the streamed ImageNet-S50 training loader with this machine's
   cores, on stand-in JPEGs, against the ResNet-50 training rate (which is the bottleneck);
9. ``training_compiled`` — ``torch.compile`` on for CE and SCL (ResNet-18): cold compile time
   and images/s (not at toy size).

It needs torch, timm and the companion's own dependencies that a GPU image usually has; no
Jupyter (the rehearsal runs inline) and no captum (the paper's methods are ours).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from xai_utils.ops.augment import get_augmentation  # noqa: E402
from xai_utils.ops.devices import resolve_device  # noqa: E402
from xai_utils.ops.metrics import METRICS, MetricInputs, pixel_flipping, resolve_method, resolve_tie_break  # noqa: E402
from xai_utils.ops.seeds import epoch_generator  # noqa: E402
from xai_utils.settings import RunConfig, load_profile  # noqa: E402
from xai_utils.study.data import load_dataset  # noqa: E402
from xai_utils.study.objectives import OBJECTIVES, TrainBatch, explained_model  # noqa: E402
from xai_utils.study.training import (OPTIMIZERS, Engine, EpochTotals, build_scheduler,  # noqa: E402
                                      resolve_augmentation, train_step)

GRIDS = ("cifar10", "cifar10_extensions", "imagenet_s50")
TRAIN_IMAGES = {"cifar10": 50_000, "imagenet_s50": 65_000}   # ImageNet-S50: 50 classes x about 1,300


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------- sizes

def sizes(small: bool) -> dict[str, Any]:
    """How much each section measures: the real sizes, or toy ones for a CPU (``small``)."""
    if small:
        return {"widths18": [8, 16, 32, 64], "widths50": [8, 16, 32, 64], "batch_cap": 8, "steps": 2,
                "warmup": 1, "size50": 64, "pf_images": 4, "quantus_images": 2, "eval_images": 4,
                "loader_images": 16, "rehearsal_toy": True, "objectives50": ("ce",),
                "compile": False, "seed_images": (256, 16), "seed_slice_s": (240.0, 240.0),
                "seed_changes": {"widths": [8, 16, 32, 64], "epochs": 3, "warmup_epochs": 1,
                                                         "probe_epochs": 2}}
    return {"widths18": None, "widths50": None, "batch_cap": None, "steps": 10, "warmup": 3, "size50": 224,
            "pf_images": 256, "quantus_images": 8, "eval_images": 64, "loader_images": 1024,
            "rehearsal_toy": False, "objectives50": ("ce", "scl", "tl", "excon", "cgc"), "compile": True,
            "seed_images": (TRAIN_IMAGES["cifar10"], 10_000), "seed_slice_s": (60.0, 90.0), "seed_changes": {}}


# ----------------------------------------------------------------------------- sections

def _versions(names: tuple[str, ...]) -> dict[str, str]:
    from importlib import metadata
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def environment(device: torch.device, s: dict) -> dict[str, Any]:
    out = {"device": str(device), "python": platform.python_version(), "torch": torch.__version__,
           "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(), "cpu_cores": os.cpu_count(),
           "platform": platform.platform(), "packages": _versions(("timm", "numpy", "pandas", "scipy", "quantus"))}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        out.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2 ** 30, 1), multiprocessors=p.multi_processor_count)
        smi = shutil.which("nvidia-smi")
        if smi:
            res = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                                 text=True, timeout=30)
            out["driver"] = res.stdout.strip()
    return out


def _child_env() -> dict[str, str]:
    """The environment of a child process: this checkout first on its import path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _timed_out_output(e: subprocess.TimeoutExpired) -> str:
    """What a child stopped at its limit printed (bytes even with ``text=True``)."""
    return "".join(x.decode() if isinstance(x, bytes) else (x or "") for x in (e.stdout, e.stderr))


def rehearsal(device: torch.device, s: dict, profile: str, limit_s: float) -> dict[str, Any]:
    """The rehearsal of ``profile`` inline on ``device``, in a child process cut at ``limit_s``."""
    with tempfile.TemporaryDirectory() as tmp:
        argv = [sys.executable, "-m", "xai_utils.pipeline", "--profile", profile, "--rehearse", "--executor",
                "inline", "--no-progress", "--set", f"results_root={tmp}", "--set", f"device={device}"]
        if s["rehearsal_toy"]:            # toy size: one narrow run, no pair analysis
            widths = s["widths50"] if profile == "imagenet_s50" else s["widths18"]
            argv += ["--only", f"{profile}/ce/0", "--set", f"widths={widths}", "--set", "pair_methods=[]",
                     "--set", "pair_metrics=[]"]
        t0 = time.perf_counter()
        try:
            done = subprocess.run(argv, cwd=ROOT, env=_child_env(), capture_output=True, text=True,
                                  timeout=max(limit_s, 1.0))
        except subprocess.TimeoutExpired as e:
            return {"exit_status": "cut at the time limit", "limit_s": round(limit_s, 1),
                    "wall_s": round(time.perf_counter() - t0, 1), "output_tail": _tail(_timed_out_output(e))}
        seconds = time.perf_counter() - t0
        figures = sorted(p.name for p in (Path(tmp) / f"{profile}-rehearsal").glob("figures*/*.png"))
    result = {"exit_status": done.returncode, "wall_s": round(seconds, 1), "figures": len(figures)}
    if done.returncode != 0:
        result["output_tail"] = _tail(done.stdout + done.stderr)
    return result


def _peak_gib(device: torch.device) -> float:
    return round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 2) if device.type == "cuda" else float("nan")


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _train_rate(cfg: RunConfig, device: torch.device, steps: int, warmup: int, classes: int, size: int) -> float:
    """Source images per second of the real training step of ``cfg`` on synthetic uint8 images."""
    torch.manual_seed(0)
    n = cfg.batch_size * 2
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, device=device)
    labels = torch.arange(n, device=device) % classes
    model = explained_model(cfg, classes, (0.5,) * 3, (0.25,) * 3).to(device).train()
    objective = OBJECTIVES[cfg.objective](cfg, model).to(device)
    engine = Engine(cfg, model, device, compile=cfg.compile and not objective.uncompiled_reason)
    augment = get_augmentation(resolve_augmentation(cfg))
    clean = get_augmentation("none", cfg.dataset)
    optimizer = OPTIMIZERS[cfg.optimizer](objective.trainable(model), cfg)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch=1000)
    gen, totals = epoch_generator(0, cfg.epochs), EpochTotals.zeros(device)   # past any warm-up

    def step() -> None:
        idx = torch.randint(0, n, (cfg.batch_size,), generator=gen).to(device, non_blocking=True)
        train_step(objective, model, engine, optimizer, scheduler, TrainBatch(images[idx], labels[idx], cfg.epochs,
                                                                            gen, augment, clean), totals)
    for _ in range(warmup):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return steps * cfg.batch_size / (time.perf_counter() - t0)


def _profile_run(profile: str, objective: str, device: torch.device, s: dict, **changes: Any) -> RunConfig:
    prof = load_profile(profile)
    cfg = prof.run_config(prof.datasets[0], objective, 0)
    widths = s["widths50"] if cfg.arch == "resnet50" else s["widths18"]
    batch = cfg.batch_size if s["batch_cap"] is None else min(cfg.batch_size, s["batch_cap"])
    return RunConfig(**{**cfg.to_dict(), "widths": widths, "batch_size": batch, "device": str(device), **changes})


def _training_rows(device: torch.device, s: dict, runs: list[tuple[str, str, bool]]) -> list[dict[str, Any]]:
    rows = []
    for profile, objective, compiled in runs:
        cfg = _profile_run(profile, objective, device, s, compile=compiled)
        size = s["size50"] if cfg.dataset == "imagenet_s50" else 32
        classes = 50 if cfg.dataset == "imagenet_s50" else 10
        row: dict[str, Any] = {"profile": profile, "objective": objective, "arch": cfg.arch, "image_size": size,
                               "batch_size": cfg.batch_size, "compile": compiled,
                               "amp_bf16": cfg.amp and device.type == "cuda"}
        _reset_peak(device)
        t0 = time.perf_counter()
        try:
            rate = _train_rate(cfg, device, s["steps"], s["warmup"] + (2 if compiled else 0), classes, size)
        except torch.OutOfMemoryError:
            row.update(images_per_s="out of memory", peak_gpu_gib=_peak_gib(device))
        else:
            row.update(images_per_s=round(rate, 1), peak_gpu_gib=_peak_gib(device))
        row["measured_s"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        _reset_peak(device)
    return rows


def training(device: torch.device, s: dict) -> dict[str, Any]:
    cifar = [("cifar10", o) for o in ("ce", "scl", "tl")] + [("cifar10_extensions", o) for o in ("excon", "exconb", "cgc")]
    runs = [(p, o, False) for p, o in cifar] + [("imagenet_s50", o, False) for o in s["objectives50"]]
    return {"rows": _training_rows(device, s, runs)}


def training_compiled(device: torch.device, s: dict) -> dict[str, Any]:
    """CE and SCL (ResNet-18) with torch.compile; ``measured_s`` includes the cold compile."""
    if not s["compile"]:
        return {"rows": [], "note": "not at toy size (a cold compile takes longer than the rest)"}
    return {"rows": _training_rows(device, s, [("cifar10", "ce", True), ("cifar10", "scl", True)])}


def _cam_like(n: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    low = torch.relu(torch.randn(n, 1, 7, 7, generator=g))
    low[:, 0, 0, 0] += 0.5                                   # never an all-zero map
    up = torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    flat = up.flatten(1)
    return ((flat - flat.min(1, keepdim=True).values) / (flat.max(1, keepdim=True).values
                                                         - flat.min(1, keepdim=True).values)).view_as(up)


def pixel_flipping_check(device: torch.device, s: dict) -> dict[str, Any]:
    """Ours (batched, on the device) against Quantus's PixelFlipping called per image."""
    ds = load_dataset("shapes", "test")
    n = s["pf_images"]
    x, y = ds.batch(torch.arange(n))
    maps = _cam_like(n, 32)
    torch.manual_seed(0)
    model = explained_model(RunConfig(arch="resnet18", widths=s["widths18"]), 10, ds.mean, ds.std).eval()
    model_dev = model.to(device).to(memory_format=torch.channels_last)
    tie = resolve_tie_break("auto", device)
    pixel_flipping(model_dev, x[:2].to(device), y[:2].to(device), maps[:2].to(device), features_in_step=32,
                   batch_size=256, tie_break=tie)                      # warm-up: kernels loaded, cuDNN chosen
    _sync(device)
    t0 = time.perf_counter()
    pixel_flipping(model_dev, x.to(device), y.to(device), maps.to(device), features_in_step=32, batch_size=256,
                   tie_break=tie)
    _sync(device)
    ours_s = (time.perf_counter() - t0) / n
    out: dict[str, Any] = {"images_ours": n, "ours_ms_per_image": round(1e3 * ours_s, 3), "tie_break": tie}
    try:
        import quantus
    except ImportError:
        return {**out, "quantus": "not installed (carry its wheel)"}
    if not hasattr(np, "trapz"):          # quantus 0.6.0 calls np.trapz, which NumPy 2.4 removed
        np.trapz = np.trapezoid
        out["numpy_trapz"] = "np.trapezoid (NumPy >= 2.4)"
    k = s["quantus_images"]
    metric = quantus.PixelFlipping(features_in_step=32, perturb_baseline="black", disable_warnings=True,
                                   return_auc_per_sample=True)
    model_cpu = explained_model(RunConfig(arch="resnet18", widths=s["widths18"]), 10, ds.mean, ds.std)
    model_cpu.load_state_dict(model.state_dict())
    model_cpu.eval()
    t0 = time.perf_counter()
    ref = [metric(model=model_cpu, x_batch=x[i:i + 1].numpy(), y_batch=y[i:i + 1].numpy(),
                  a_batch=maps[i:i + 1].numpy())[0] for i in range(k)]
    quantus_s = (time.perf_counter() - t0) / k
    ref = np.asarray(ref, dtype=float) / (int(np.ceil(3 * 32 * 32 / 32)) - 1)   # the authors' AUC / (steps - 1)
    # the comparison in Quantus's order of tied features (the three channels of a pixel)
    _, same_order = pixel_flipping(model_dev, x[:k].to(device), y[:k].to(device), maps[:k].to(device),
                                   features_in_step=32, batch_size=256, tie_break="quantus")
    diff = float(np.nanmax(np.abs(same_order.detach().cpu().double().numpy() - ref)))
    return {**out, "images_quantus": k, "quantus_ms_per_image": round(1e3 * quantus_s, 3),
            "speed_up": round(quantus_s / ours_s, 1), "max_abs_diff_auc": diff}


def evaluation_224(device: torch.device, s: dict) -> dict[str, Any]:
    """Each metric of imagenet_s50 on one chunk of 224 px images with a ResNet-50."""
    prof = load_profile("imagenet_s50")
    cfg = prof.run_config("imagenet_s50", "ce", 0)
    n, size = s["eval_images"], s["size50"]
    torch.manual_seed(0)
    model = explained_model(RunConfig(**{**cfg.to_dict(), "widths": s["widths50"]}), 50, (0.485, 0.456, 0.406),
                            (0.229, 0.224, 0.225)).to(device).eval().to(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, 3, size, size, generator=g).to(device)
    labels = torch.randint(0, 50, (n,), generator=g).to(device)
    masks = (torch.rand(n, 1, size, size, generator=g) > 0.7).to(device)
    maps = _cam_like(n, size).to(device)
    with torch.no_grad():
        model(x[:2])                                          # warm-up: kernels loaded before the first metric
    rows = []
    for metric in cfg.metrics:
        inputs = MetricInputs(model=model, x=x, maps=maps, labels=labels, preds=labels, targets=labels,
                              sample_ids=torch.arange(n), masks=masks, method=resolve_method("gradcam"),
                              method_name="gradcam", batch_size=min(cfg.batch_size_eval, n),
                              features_in_step=max(cfg.features_in_step, 3 * size * size // 64),
                              pixel_flipping_tie_break=resolve_tie_break("auto", device))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        _sync(device)
        t0 = time.perf_counter()
        try:
            METRICS[metric].compute(inputs)
            _sync(device)
        except torch.OutOfMemoryError:
            rows.append({"metric": metric, "images_per_s": "out of memory", "peak_gpu_gib": _peak_gib(device)})
            _reset_peak(device)
            continue
        seconds = time.perf_counter() - t0
        rows.append({"metric": metric, "images_per_s": round(n / seconds, 2), "peak_gpu_gib": _peak_gib(device)})
    return {"images": n, "image_size": size, "pixel_flipping_steps": 64, "rows": rows}


def loader(device: torch.device, s: dict, rate50: Optional[float]) -> dict[str, Any]:
    """The streamed training loader on stand-in JPEGs, with the machine's cores as workers."""
    from xai_utils.study.data.generated import write_imagenet_s50
    with tempfile.TemporaryDirectory() as tmp:
        per_class = max(1, s["loader_images"] // 50)
        write_imagenet_s50(tmp, train_per_class=per_class, val_per_class=1)
        ds = load_dataset("imagenet_s50", "train", tmp)
        workers = max(1, (os.cpu_count() or 2) - 1)
        dl = ds.train_loader(min(64, len(ds)), views=2, seed=0, num_workers=workers,
                             pin_memory=device.type == "cuda", clean=False)
        dl.sampler.set_epoch(0)
        for _ in dl:                                          # warm-up epoch: the workers start
            pass
        dl.sampler.set_epoch(1)
        t0, seen = time.perf_counter(), 0
        for crops, _, labels in dl:
            crops.to(device, non_blocking=True)
            seen += labels.shape[0]
        _sync(device)
        rate = seen / (time.perf_counter() - t0)
    out = {"workers": workers, "views": 2, "images": seen, "images_per_s": round(rate, 1)}
    if rate50:
        out["resnet50_scl_images_per_s"] = round(rate50, 1)
        out["bottleneck"] = "loader" if rate < rate50 else "GPU"
    return out


def _train_slice_child(run: str, data_root: str, run_dir: str, device: str, changes: dict[str, Any]) -> None:
    """In a child process: the training stage of ``run`` (profile/objective/seed) at the profile's
    settings (with ``changes`` at toy size: narrow, three epochs, to the end), until the parent stops it; its peak device memory into ``run_dir/memory.json``
    every two seconds (the epochs are in ``train_log.jsonl``)."""
    import resource
    import threading

    from xai_utils.stages.train import train_run
    profile, objective, seed = run.split("/")
    prof = load_profile(profile)
    base = prof.run_config(prof.datasets[0], objective, int(seed))
    cfg = RunConfig(**{**base.to_dict(), "data_root": data_root, "device": device, **changes})
    dev = resolve_device(device)
    out = Path(run_dir)
    out.mkdir(parents=True, exist_ok=True)

    def watch() -> None:
        while True:
            peak = {"peak_gpu_gib": _peak_gib(dev),
                    "peak_reserved_gib": round(torch.cuda.max_memory_reserved(dev) / 2 ** 30, 2)
                    if dev.type == "cuda" else float("nan"),
                    "peak_host_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 2)}
            (out / "memory.json").write_text(json.dumps(peak))
            time.sleep(2.0)
    threading.Thread(target=watch, daemon=True).start()
    train_run(cfg, out, progress=False)


def _slice(run: str, data_root: str, images: int, device: torch.device, limit_s: float, work: Path,
           s: dict) -> dict[str, Any]:
    """One training slice of ``run`` in a child process, stopped after ``limit_s``: what its log says."""
    run_dir = work / run.replace("/", "-")
    argv = [sys.executable, str(Path(__file__).resolve()), "--train-slice", run, "--data-root", data_root,
            "--run-dir", str(run_dir), "--device", str(device)]
    if s["seed_changes"]:
        argv += ["--changes", json.dumps(s["seed_changes"])]
    t0 = time.perf_counter()
    try:
        done = subprocess.run(argv, cwd=ROOT, env=_child_env(), capture_output=True, text=True, timeout=limit_s)
        stopped, output = f"ended by itself (exit status {done.returncode})", done.stdout + done.stderr
        failed = done.returncode != 0
    except subprocess.TimeoutExpired as e:
        stopped, failed, output = f"stopped after {limit_s:.0f} s", False, _timed_out_output(e)
    wall = time.perf_counter() - t0
    log = run_dir / "train_log.jsonl"
    epochs = [r for r in (json.loads(line) for line in log.read_text().splitlines()) if "epoch" in r] \
        if log.is_file() else []
    memory = json.loads((run_dir / "memory.json").read_text()) if (run_dir / "memory.json").is_file() else {}
    profile, objective, _ = run.split("/")
    cfg = load_profile(profile).run_config("cifar10", objective, 0)
    result: dict[str, Any] = {"run": run, "batch_size": cfg.batch_size, "epochs_of_run": cfg.epochs,
                              "slice_s": round(wall, 1), "stopped": stopped, "epochs_done": len(epochs), **memory}
    steady = [r["seconds"] for r in epochs[1:]] or [r["seconds"] for r in epochs]
    if steady:
        per_epoch = float(np.median(steady))
        result.update(first_epoch_s=epochs[0]["seconds"], seconds_per_epoch=round(per_epoch, 3),
                      images_per_s=round(images / per_epoch, 1), train_images=images,
                      projected_run_hours=round(cfg.epochs * per_epoch / 3600, 2))
    if failed or not steady:
        result["output_tail"] = _tail(output)
    return result


def first_seed(device: torch.device, s: dict, limit_s: float) -> dict[str, Any]:
    """cifar10 seed 0, CE then SCL, on full-size stand-in CIFAR-10 files, each for a slice of ``limit_s``."""
    from xai_utils.study.data.generated import write_cifar10
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        n_train, n_test = s["seed_images"]
        write_cifar10(tmp, n_train=n_train, n_test=n_test)
        written = time.perf_counter() - t0
        wanted = dict(zip(("ce", "scl"), s["seed_slice_s"]))
        scale = min(1.0, max(limit_s - written, 0.0) / sum(wanted.values()))
        rows = [_slice(f"cifar10/{o}/0", tmp, n_train, device, max(wanted[o] * scale, 10.0), Path(tmp) / "runs", s)
                for o in wanted]
    return {"data": f"stand-in CIFAR-10 files ({n_train:,} training images, written in {written:.0f} s)",
            "rows": rows}


def grid_hours(training_rows: list[dict], seed_rows: list[dict]) -> dict[str, Any]:
    """Training device-hours of each grid: the first seed's epoch times where measured, else the
    training step's rate."""
    rates = {(r["profile"], r["objective"]): r["images_per_s"] for r in training_rows
             if not r["compile"] and isinstance(r["images_per_s"], float)}
    measured = {r["run"].split("/")[1]: r["images_per_s"] for r in seed_rows
                if "images_per_s" in r and r["train_images"] == TRAIN_IMAGES["cifar10"]}
    rows = []
    for profile in GRIDS:
        prof = load_profile(profile)
        source = "cifar10" if profile == "cifar10_extensions" else profile
        for objective in prof.objectives:
            if profile == "cifar10" and objective in measured:
                rate, basis = measured[objective], "first seed's epochs"
            else:
                rate, basis = rates.get((profile, objective)) or rates.get((source, objective)), "training step"
            if not rate:
                continue
            cfg = prof.run_config(prof.datasets[0], objective, prof.seeds[0])
            hours = len(prof.seeds) * cfg.epochs * TRAIN_IMAGES[prof.datasets[0]] / rate / 3600
            rows.append({"profile": profile, "objective": objective, "seeds": len(prof.seeds),
                         "epochs": cfg.epochs, "images_per_s": rate, "from": basis, "gpu_hours": round(hours, 2)})
    totals = {p: round(sum(r["gpu_hours"] for r in rows if r["profile"] == p), 2) for p in GRIDS}
    return {"rows": rows, "total_gpu_hours": totals}


# ----------------------------------------------------------------------------- report

def _markdown(report: dict) -> str:
    lines = [f"# GPU check ({report['environment'].get('gpu', report['environment']['device'])})", "",
             f"Made by `{report.get('command', 'python benchmarks/gpu_check.py')}` on "
             f"{report['date']}; {report['total_s']} s in all (budget {report['budget_s']} s).", "",
             "## environment", ""]
    lines += [f"- {k}: {v}" for k, v in report["environment"].items()] + [""]
    for name, section in report["sections"].items():
        lines += [f"## {name}", "", f"status: {section['status']} ({section['seconds']} s)", ""]
        data = section.get("result") or {}
        tables = {k: v for k, v in data.items() if isinstance(v, list) and v and isinstance(v[0], dict)}
        for key, value in data.items():
            if key not in tables:
                lines.append(f"- {key}: {value}")
        for key, rows in tables.items():
            cols = list(dict.fromkeys(k for r in rows for k in r))      # every key, in first-seen order
            lines += ["", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
            lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
        if section.get("error"):
            lines += ["", "```", section["error"].rstrip(), "```"]
        lines.append("")
    return "\n".join(lines)


def _rows(results: dict, section: str) -> list[dict]:
    return results.get(section, {}).get("rows", [])


def _write(report: dict, out: Path, device: torch.device, small: bool) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    slug = "".join(c if c.isalnum() else "-" for c in report["environment"].get("gpu", device.type)).strip("-").lower()
    stem = out / f"gpu_check-{slug}{'-small' if small else ''}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    stem.with_suffix(".md").write_text(_markdown(report))
    return stem


def main(argv: Optional[list[str]] = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--small", action="store_true", help="toy sizes: the same code, quickly, on any device")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="folder of the report")
    ap.add_argument("--budget", type=float, default=480.0, help="seconds; later sections are skipped once spent")
    ap.add_argument("--skip", default="", help="comma-separated sections to leave out")
    ap.add_argument("--train-slice", help=argparse.SUPPRESS)       # the child process of first_seed
    ap.add_argument("--data-root", help=argparse.SUPPRESS)
    ap.add_argument("--run-dir", help=argparse.SUPPRESS)
    ap.add_argument("--changes", type=json.loads, default={}, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.train_slice:
        _train_slice_child(args.train_slice, args.data_root, args.run_dir, args.device, args.changes)
        return {}
    device = resolve_device(args.device)
    s = sizes(args.small)
    start = time.perf_counter()
    left = lambda reserve=0.0: args.budget - (time.perf_counter() - start) - reserve  # noqa: E731
    command = " ".join(["python benchmarks/gpu_check.py", *(sys.argv[1:] if argv is None else argv)])
    report: dict[str, Any] = {"command": command, "small": args.small, "date": time.strftime("%Y-%m-%d %H:%M"),
                              "budget_s": args.budget,
                              "environment": environment(device, s), "sections": {}}
    results: dict[str, Any] = {}
    rate50 = lambda: next((r["images_per_s"] for r in _rows(results, "training")  # noqa: E731
                           if r["profile"] == "imagenet_s50" and r["objective"] == "scl"), None)
    sections: list[tuple[str, Callable[[], Any]]] = [
        ("training", lambda: training(device, s)),
        ("pixel_flipping", lambda: pixel_flipping_check(device, s)),
        ("rehearsal_cifar10", lambda: rehearsal(device, s, "cifar10", min(180.0, left(60.0)))),
        ("rehearsal_imagenet_s50", lambda: rehearsal(device, s, "imagenet_s50", min(180.0, left(60.0)))),
        ("first_seed", lambda: first_seed(device, s, left(60.0))),
        ("grid_hours", lambda: grid_hours(_rows(results, "training"), _rows(results, "first_seed"))),
        ("evaluation_224", lambda: evaluation_224(device, s)),
        ("loader", lambda: loader(device, s, rate50() if isinstance(rate50(), float) else None)),
        ("training_compiled", lambda: training_compiled(device, s)),
    ]
    # the least time a section is started with (the others have a limit of their own, or are short)
    needs = {"evaluation_224": 40.0, "loader": 20.0, "training_compiled": 100.0} if not args.small else {}
    skip = {x.strip() for x in args.skip.split(",") if x.strip()}
    for name, run in sections:
        if name in skip or (left() <= needs.get(name, 0.0) and name != "grid_hours"):
            report["sections"][name] = {"status": "skipped" + (" (budget spent)" if name not in skip else ""),
                                        "seconds": 0.0}
            continue
        t0 = time.perf_counter()
        entry: dict[str, Any] = {}
        try:
            results[name] = run()
            entry.update(status="ok", result=results[name])
        except Exception:  # noqa: BLE001 - a failing section is reported, the others run
            entry.update(status="failed", error=traceback.format_exc()[-4000:])
        entry["seconds"] = round(time.perf_counter() - t0, 1)
        report["sections"][name] = entry
        report["total_s"] = round(time.perf_counter() - start, 1)
        _write(report, Path(args.out), device, args.small)      # what is measured is kept if the run is cut
        print(f"{name}: {entry['status']} in {entry['seconds']} s", flush=True)
    stem = _write(report, Path(args.out), device, args.small)
    print(f"report: {stem}.md, {stem}.json")
    return report


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
