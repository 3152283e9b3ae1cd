"""A rehearsal: a study exactly as configured, shrunk to minutes, to find a broken stage before a
long run does.

Everything that decides *what* runs stays: networks and their widths, augmentation recipes,
objectives and their settings, optimisers, attribution methods and their options, metrics,
protocols, the pair analysis, calibration, the tables and figures. What shrinks is *how much*
runs (:func:`shrink`): two epochs of one optimisation step each, two probe steps, small
batches, at most two seeds, a few evaluation images and pairs, pixel-flipping and insertion
curves of eight steps, ROAD at two fractions (the first and the last), two noise draws where
a metric averages many. Where a profile's data are not on disk, the rehearsal reads stand-in
files written in the dataset's real format (:func:`data_roots`,
:mod:`xai_utils.study.data.generated`) with the real loaders.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Callable, Iterable, Optional

from ..ops.attribution import resolve_options
from ..ops.pairs.methods import resolve_pair_options
from ..study.data import DATASETS, files_present
from ..study.objectives import get_objective
from .run_config import RunConfig

SUFFIX = "-rehearsal"          # <profile>-rehearsal: its results folder, its tables and figures
SEEDS = 2                      # at most this many seeds
CURVE_STEPS = 8                # points of a pixel-flipping or insertion/deletion curve
SMALL_IMAGES = 64              # up to this side a batch of 16, above it (224 px) a batch of 8


def shrink(cfg: RunConfig) -> RunConfig:
    """``cfg`` with every amount of work cut to a rehearsal's (see the module docstring); every
    choice of the study left as it is."""
    size = DATASETS[cfg.dataset].image_size
    batch = max(get_objective(cfg.objective).min_batch, min(cfg.batch_size, 16 if size <= SMALL_IMAGES else 8))
    features = 3 * size * size
    changes = {
        "epochs": min(cfg.epochs, 2),
        "warmup_epochs": min(cfg.warmup_epochs, 1),
        "excon_warmup_epochs": min(cfg.excon_warmup_epochs, 1),   # one plain epoch, one with masks
        "batch_size": batch,
        "train_subset": batch if cfg.train_subset is None else min(cfg.train_subset, batch),   # one step an epoch
        "probe_epochs": min(cfg.probe_epochs, 2),
        "checkpoint_every": 1,
        "num_workers": min(cfg.num_workers, 2),
        "eval_samples": min(cfg.eval_samples, 8),
        "batch_size_eval": min(cfg.batch_size_eval, 8),
        "calibration_samples": min(cfg.calibration_samples, 16),
        "features_in_step": max(cfg.features_in_step, math.ceil(features / CURVE_STEPS)),
        "max_sensitivity_samples": min(cfg.max_sensitivity_samples, 2),
        "faithfulness_correlation_runs": min(cfg.faithfulness_correlation_runs, 2),
        "pair_samples": min(cfg.pair_samples, 2),
        "pair_max_sensitivity_samples": min(cfg.pair_max_sensitivity_samples, 2),
        "pair_pixels_per_step": max(cfg.pair_pixels_per_step, math.ceil(size * size / CURVE_STEPS)),
        "road_fractions": _ends(cfg.road_fractions),
        "method_options": _fewer(cfg.methods, cfg.method_options, resolve_options),
        "pair_method_options": _fewer(cfg.pair_methods, cfg.pair_method_options, resolve_pair_options),
        "kept_images": "all",             # near-chance models: the statistics keep every image
    }
    return dataclasses.replace(cfg, **changes)


def _ends(values: list[float]) -> list[float]:
    """At most two of ``values``, the first and the last (ROAD's fractions: each one an
    imputation solve and a forward pass per image and order; two make an area)."""
    return list(values) if len(values) <= 2 else [values[0], values[-1]]


# options of attribution methods that are amounts of work: at most this many in a rehearsal
AMOUNT_OPTIONS = {"nt_samples": 2, "samples": 2, "n_steps": 4, "steps": 2, "transforms": 2}


def _fewer(methods: list[str], given: dict[str, dict], resolve: Callable[..., dict]) -> dict[str, dict]:
    """``given`` (method -> options) with every amount-of-work option of the listed methods cut
    (:data:`AMOUNT_OPTIONS`) and occluding windows that no longer overlap (stride = window)."""
    out = {m: dict(o) for m, o in given.items()}
    for method in methods:
        options = resolve(method, **given.get(method, {}))
        for key, most in AMOUNT_OPTIONS.items():
            if key in options and options[key] > most:
                out.setdefault(method, {})[key] = most
        if options.get("window") and options.get("stride") and options["stride"] < options["window"]:
            out.setdefault(method, {})["stride"] = options["window"]
    return out


def what_shrank(runs: Iterable[tuple[RunConfig, RunConfig]]) -> list[str]:
    """One line per key a rehearsal changed, ``key: old -> new``, from (study, rehearsal) pairs of
    the same run (several values where runs differ)."""
    seen: dict[str, set[tuple[str, str]]] = {}
    for full, small in runs:
        for key, value in dataclasses.asdict(small).items():
            old = getattr(full, key)
            if value != old:
                seen.setdefault(key, set()).add((repr(old), repr(value)))
    return [f"{key}: " + ", ".join(f"{a} -> {b}" for a, b in sorted(pairs)) for key, pairs in seen.items()]


def data_roots(given: dict[str, Optional[str]], results_dir: Path) -> dict[str, str]:
    """The data root of each dataset (``given``: dataset -> the root its profile names, None for
    the default places) whose files are not there: a folder of the rehearsal's results, where
    the pipeline writes stand-in files in the real format before any stage runs. Datasets that
    are on disk keep their root."""
    out = {}
    for name, root in given.items():
        spec = DATASETS[name]
        if spec.generate is not None and not all(files_present(name, split, root) for split in spec.splits):
            out[name] = str((results_dir / "data" / name).resolve())
    return out
