"""Every value of every run checked before any work starts.

:func:`check_run` checks one resolved :class:`~xai_utils.settings.RunConfig` against the
registries (objectives, optimisers, backbones, augmentations, mining rules, attribution
methods and their options, metrics, perturbation baselines, ...), the allowed ranges, the
metric/method/dataset compatibility and, with ``data=True``, that the dataset's files are
there. :func:`check_runs` does it for every run of a study. Both raise on the first
problem:

* :class:`~xai_utils.errors.ConfigError` with one line naming the run, the key and the
  problem, e.g. ``run shapes/ce/seed0: 'epochs' must be an integer >= 1, got -1``;
* :class:`~xai_utils.errors.DatasetNotFoundError` saying where the data was looked for and how
  to get it.

The pipeline calls :func:`check_runs` before it starts a kernel or writes a file, so a
typo in ``--set`` costs nothing; ``load_profile`` and ``train_run`` call :func:`check_run`
too, for notebooks and scripts used on their own.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch

from ..errors import ConfigError
from ..ops.attribution import METHODS, TARGET_KINDS, check_method_options, is_class_agnostic
from ..ops.augment import AUGMENTATIONS
from ..ops.devices import resolve_device
from ..ops.losses import MINING
from ..ops.metrics import BASELINES, METRICS, NOISE_SPACES, SIMILARITIES, TIE_BREAKS
from ..ops.pairs import PAIR_KINDS, PAIR_METHODS, PAIR_METRICS, SPACES
from ..ops.pairs.methods import check_pair_method_options
from ..study.data import DATASETS, check_available, has_masks
from ..study.models import BACKBONES, EXPLAIN_FEATURES
from ..study.objectives import OBJECTIVES, get_objective
from ..study.training import OPTIMIZERS
from .run_config import CALIBRATIONS, PROTOCOLS, RunConfig, resolve_calibration

STAGES = ("train", "attribute", "evaluate")

# integer settings and their lower bounds
MIN_INT: dict[str, int] = {
    "seed": 0, "epochs": 1, "batch_size": 1, "warmup_epochs": 0, "proj_dim": 1, "num_workers": 0,
    "checkpoint_every": 1, "eval_samples": 1, "batch_size_eval": 1, "eval_chunk": 1, "metric_seed": 0,
    "features_in_step": 1, "max_sensitivity_samples": 1, "faithfulness_correlation_subset": 1,
    "faithfulness_correlation_runs": 2, "calibration_samples": 2, "pair_samples": 1, "pair_seed": 0,
    "pair_pixels_per_step": 1, "pair_blur_kernel": 1, "pair_max_sensitivity_samples": 1,
}
POSITIVE = ("lr", "temperature", "probe_lr", "max_sensitivity_radius", "pair_blur_sigma",
            "pair_max_sensitivity_radius")
NON_NEGATIVE = ("momentum", "weight_decay", "margin", "probe_momentum", "probe_weight_decay",
                "continuity_sigma", "road_noise")


def _fail(cfg: RunConfig, key: str, problem: str) -> ConfigError:
    return ConfigError(f"run {cfg.run_id}: '{key}' {problem}")


def _one_of(cfg: RunConfig, key: str, allowed: Iterable[str]) -> None:
    allowed = list(allowed)
    value = getattr(cfg, key)
    if value not in allowed:
        raise _fail(cfg, key, f"must be one of {', '.join(map(str, allowed))}, got {value!r}")


def _names(cfg: RunConfig, key: str, registry: Sequence[str]) -> None:
    values = getattr(cfg, key)
    if not values:
        raise _fail(cfg, key, f"must list at least one of {', '.join(registry)}")
    bad = [v for v in values if v not in registry]
    if bad:
        raise _fail(cfg, key, f"has unknown entries {bad}; available: {', '.join(registry)}")
    dup = sorted({v for v in values if values.count(v) > 1})
    if dup:
        raise _fail(cfg, key, f"lists {dup} more than once")


def check_training(cfg: RunConfig) -> None:
    """The settings of the training stage."""
    _one_of(cfg, "dataset", DATASETS)
    _one_of(cfg, "objective", OBJECTIVES)
    _one_of(cfg, "optimizer", OPTIMIZERS)
    _one_of(cfg, "arch", BACKBONES)
    _one_of(cfg, "augmentation", ("auto",) + tuple(AUGMENTATIONS))
    _one_of(cfg, "mining", MINING)
    objective = OBJECTIVES[cfg.objective]
    objective.check(cfg)
    if cfg.batch_size < objective.min_batch:
        raise _fail(cfg, "batch_size", f"must be >= {objective.min_batch} for {cfg.objective} "
                                       f"(it compares the images of a batch), got {cfg.batch_size}")
    if cfg.warmup_epochs > cfg.epochs:
        raise _fail(cfg, "warmup_epochs", f"must be between 0 and epochs ({cfg.epochs}), got {cfg.warmup_epochs}")
    if objective.needs_probe and cfg.probe_epochs < 1:
        raise _fail(cfg, "probe_epochs", f"must be >= 1 for {cfg.objective} (the linear probe is its "
                                         f"classifier), got {cfg.probe_epochs}")
    if cfg.train_subset is not None and cfg.train_subset < max(2, cfg.batch_size):
        raise _fail(cfg, "train_subset", f"must be null (all) or at least batch_size ({cfg.batch_size}) "
                                         f"images, got {cfg.train_subset}")
    if cfg.widths is not None and (len(cfg.widths) != 4 or min(cfg.widths) < 1):
        raise _fail(cfg, "widths", f"must be null or 4 positive stage widths like [16, 32, 64, 128], "
                                   f"got {cfg.widths!r}")


def check_device(cfg: RunConfig) -> None:
    try:
        dev = resolve_device(cfg.device)
    except (RuntimeError, ValueError) as e:
        raise _fail(cfg, "device", f"cannot be used here: {str(e).splitlines()[0]}") from None
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise _fail(cfg, "device", f"names GPU {dev.index} but {torch.cuda.device_count()} are visible")


def check_attribution(cfg: RunConfig) -> None:
    """The settings of the attribution stage (methods, their options, the class explained)."""
    _names(cfg, "methods", list(METHODS))
    _one_of(cfg, "target", TARGET_KINDS)
    _one_of(cfg, "protocol", PROTOCOLS)
    _one_of(cfg, "explain_features", EXPLAIN_FEATURES)
    valid_splits = set(DATASETS[cfg.dataset].splits)
    if valid_splits & {"test", "val"}:             # aliases of the held-out split
        valid_splits |= {"test", "val"}
    if cfg.eval_split not in valid_splits:
        raise _fail(cfg, "eval_split", f"must be one of {', '.join(sorted(valid_splits))} for {cfg.dataset}, "
                                       f"got {cfg.eval_split!r}")
    for method, options in cfg.method_options.items():
        try:
            check_method_options(method, options)
        except ValueError as e:
            raise _fail(cfg, f"method_options.{method}", str(e)) from None


def check_evaluation(cfg: RunConfig, data_masks: bool = True) -> None:
    """The settings of the evaluation stage, and which metric applies to which method/data."""
    _names(cfg, "metrics", list(METRICS))
    _one_of(cfg, "pixel_flipping_baseline", BASELINES)
    _one_of(cfg, "pixel_flipping_tie_break", TIE_BREAKS)
    _one_of(cfg, "noise_space", NOISE_SPACES)
    _one_of(cfg, "randomisation_similarity", SIMILARITIES)
    _one_of(cfg, "nan_pairing", ("pairs", "per_model"))
    _one_of(cfg, "kept_images", ("correct", "all"))
    _one_of(cfg, "calibration", CALIBRATIONS)
    lo, hi = (list(cfg.consistency_crop_scale) + [None, None])[:2]
    if len(cfg.consistency_crop_scale) != 2 or not 0 < lo <= hi <= 1:
        raise _fail(cfg, "consistency_crop_scale", f"must be [low, high] with 0 < low <= high <= 1, "
                                                   f"got {cfg.consistency_crop_scale!r}")
    if not cfg.road_fractions or any(not 0 < f < 1 for f in cfg.road_fractions) \
            or list(cfg.road_fractions) != sorted(set(cfg.road_fractions)):
        raise _fail(cfg, "road_fractions", f"must be increasing fractions strictly between 0 and 1, "
                                           f"got {cfg.road_fractions!r}")
    if any(not s >= 0 for s in cfg.continuity_sigmas):
        raise _fail(cfg, "continuity_sigmas", f"must be noise levels >= 0, got {cfg.continuity_sigmas}")
    for metric in cfg.metrics:
        needs = METRICS[metric].needs
        if "calibration" in needs and resolve_calibration(cfg) == "heldout" and cfg.train_subset is None:
            raise _fail(cfg, "calibration", f"'heldout' fits the temperature of '{metric}' on training images the "
                                            f"run never saw, but it trains on the whole split: set train_subset, "
                                            f"or calibration: crossfit (or auto)")
        if "calibration" in needs and resolve_calibration(cfg) == "crossfit" and cfg.eval_samples < 4:
            raise _fail(cfg, "eval_samples", f"must be >= 4 to cross-fit the temperature of '{metric}' on two "
                                             f"folds of the evaluation images, got {cfg.eval_samples}")
        if "class_specific" in needs and all(is_class_agnostic(m) for m in cfg.methods):
            raise _fail(cfg, "metrics", f"'{metric}' needs a class-specific method, but every method of "
                                        f"{cfg.methods} ignores the class explained")
        if "masks" in needs and data_masks and not has_masks(cfg.dataset, cfg.eval_split, cfg.data_root):
            raise _fail(cfg, "metrics", f"'{metric}' needs object masks, which {cfg.dataset} "
                                        f"split '{cfg.eval_split}' does not have")


def _names_or_none(cfg: RunConfig, key: str, registry: Sequence[str]) -> None:
    if getattr(cfg, key):
        _names(cfg, key, registry)


def check_pairs(cfg: RunConfig) -> None:
    """The settings of the pair analysis (xai_utils.ops.pairs): names, options, space, kinds."""
    _names_or_none(cfg, "pair_methods", list(PAIR_METHODS))
    _names_or_none(cfg, "pair_metrics", list(PAIR_METRICS))
    _names(cfg, "pair_kinds", list(PAIR_KINDS))
    _one_of(cfg, "pair_space", SPACES)
    if cfg.pair_metrics and not cfg.pair_methods:
        raise _fail(cfg, "pair_metrics", "scores pair maps, but 'pair_methods' is empty")
    if cfg.pair_space == "projection" and "proj_dim" not in get_objective(cfg.objective).settings:
        raise _fail(cfg, "pair_space", f"'projection' needs a projection head, which {cfg.objective} does not "
                                       f"train; use cosine or distance")
    if cfg.pair_blur_kernel % 2 == 0:
        raise _fail(cfg, "pair_blur_kernel", f"must be odd, got {cfg.pair_blur_kernel}")
    for method, options in cfg.pair_method_options.items():
        try:
            check_pair_method_options(method, options)
        except ValueError as e:
            raise _fail(cfg, f"pair_method_options.{method}", str(e)) from None


def check_ranges(cfg: RunConfig) -> None:
    for key, low in MIN_INT.items():
        value = getattr(cfg, key)
        if value < low:
            raise _fail(cfg, key, f"must be an integer >= {low}, got {value!r}")
    for key in POSITIVE:
        if not getattr(cfg, key) > 0:
            raise _fail(cfg, key, f"must be > 0, got {getattr(cfg, key)!r}")
    for key in NON_NEGATIVE:
        if not getattr(cfg, key) >= 0:
            raise _fail(cfg, key, f"must be >= 0, got {getattr(cfg, key)!r}")


def check_data(cfg: RunConfig, stages: Sequence[str]) -> None:
    """The dataset's files of the splits the stages read (raises DatasetNotFoundError)."""
    if "train" in stages:
        check_available(cfg.dataset, "train", cfg.data_root)
        check_available(cfg.dataset, "test", cfg.data_root)
    if {"attribute", "evaluate"} & set(stages):
        check_available(cfg.dataset, cfg.eval_split, cfg.data_root)


def check_run(cfg: RunConfig, stages: Sequence[str] = STAGES, data: bool = False) -> None:
    """Check every setting ``stages`` of run ``cfg`` read (the data files too when ``data``).

    Ranges and names are always checked for every stage (a bad evaluation setting is
    reported before a training starts); ``stages`` selects which data files are needed.
    """
    check_ranges(cfg)
    check_training(cfg)
    check_attribution(cfg)
    check_evaluation(cfg, data_masks=data)
    check_pairs(cfg)
    if data:
        check_device(cfg)
        check_data(cfg, stages)


def check_runs(runs: Iterable[RunConfig], stages: Sequence[str] = STAGES, data: bool = False) -> None:
    """:func:`check_run` for every run of a study (``profile.runs()``, or the runs whose
    stages will run); data files are looked for once per (dataset, root, split)."""
    seen: set[tuple] = set()
    for cfg in runs:
        check_run(cfg, stages, data=False)
        if data:
            check_evaluation(cfg, data_masks=True)
            check_device(cfg)
            key = (cfg.dataset, cfg.data_root, cfg.eval_split, tuple(stages))
            if key not in seen:
                seen.add(key)
                check_data(cfg, stages)
