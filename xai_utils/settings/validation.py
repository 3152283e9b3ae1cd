"""Every value of every run checked before any work starts.

:func:`check_run` checks one resolved :class:`~xai_utils.settings.RunConfig` against the
registries (objectives, optimisers, backbones, augmentations, mining rules, attribution
methods and their options, metrics, perturbation baselines, ...), the allowed ranges, the
metric/method/dataset compatibility, the values bounded by the image size (:data:`SIZE_BOUNDS`)
and, with ``data=True``, that the dataset's files are there and that the values bounded by
a split's number of images fit it (:func:`check_sizes`, the sizes counted without loading
the data). :func:`check_runs` does it for every run of a study. Both raise on the first
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

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import numpy as np
import torch

from ..errors import ConfigError
from ..ops.attribution import METHODS, TARGET_KINDS, check_method_options, is_class_agnostic
from ..ops.augment import AUGMENTATIONS
from ..ops.devices import resolve_device
from ..ops.losses import MINING
from ..ops.metrics import BASELINES, METRICS, NOISE_SPACES, SIMILARITIES, TIE_BREAKS
from ..ops.pairs import PAIR_KINDS, PAIR_METHODS, PAIR_METRICS, SPACES
from ..ops.pairs.methods import check_pair_method_options
from ..study.brought import CheckpointError, brought_network, is_timm_model, load_checkpoint
from ..study.data import (DATASETS, check_available, dataset_label, eval_indices, files_present, has_masks,
                          is_planted, resolve_split, split_sizes, train_indices, train_permutation)
from ..study.data.imagefolder import check_imagefolder, class_names
from ..study.models import BACKBONES, EXPLAIN_FEATURES
from ..study.objectives import OBJECTIVES, get_objective
from ..study.training import OPTIMIZERS
from .layout import RUN_STAGES, Stage
from .run_config import CALIBRATIONS, PROTOCOLS, RunConfig, resolve_calibration

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


def check_brought(cfg: RunConfig) -> None:
    """The settings of a model brought as a file (no training): its architecture, classes and
    normalisation."""
    _one_of(cfg, "dataset", DATASETS)
    if cfg.arch not in BACKBONES and not is_timm_model(cfg.arch):
        raise _fail(cfg, "arch", f"must be a timm model name or a registered backbone ({', '.join(BACKBONES)}), "
                                 f"got {cfg.arch!r}")
    if cfg.num_classes is None or cfg.num_classes < 1:
        raise _fail(cfg, "num_classes", f"must be the number of classes of the brought model, got {cfg.num_classes!r}")
    for key in ("mean", "std"):
        value = getattr(cfg, key)
        if value is not None and (len(value) != 3 or (key == "std" and min(value) <= 0)):
            raise _fail(cfg, key, f"must be null (the data's) or 3 values per channel{', > 0' if key == 'std' else ''}, "
                                  f"got {value!r}")
    if cfg.widths is not None and (len(cfg.widths) != 4 or min(cfg.widths) < 1):
        raise _fail(cfg, "widths", f"must be null or 4 positive stage widths, got {cfg.widths!r}")
    if cfg.probe not in (None, "fit"):
        raise _fail(cfg, "probe", f"must be null (the checkpoint's own classifier) or 'fit' (a linear probe fitted on "
                                  f"the train split), got {cfg.probe!r}")
    if cfg.probe == "fit" and cfg.probe_epochs < 1:
        raise _fail(cfg, "probe_epochs", f"must be >= 1 to fit the probe, got {cfg.probe_epochs}")


def check_training(cfg: RunConfig) -> None:
    """The settings of the training stage (of the import, for a model brought as a file)."""
    if cfg.brought:
        return check_brought(cfg)
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
        if METRICS[metric].facet == "ground truth" and not is_planted(cfg.dataset):
            raise _fail(cfg, "metrics", f"'{metric}' scores maps against a planted cue, which {cfg.dataset} does not "
                                        f"draw: use a planted dataset (planted_fashion_mnist_100, ...)")
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
    if cfg.pair_space == "projection" and (cfg.brought or "proj_dim" not in get_objective(cfg.objective).settings):
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


@dataclass(frozen=True)
class DataSize:
    """What the size checks know of a run's data: images in its training and evaluation
    splits (None: not counted, the files are absent) and the side and channels of its images."""

    label: str
    train: Optional[int]
    eval: Optional[int]
    side: int
    channels: int

    @property
    def pixels(self) -> int:
        return self.side * self.side

    @property
    def features(self) -> int:
        return self.channels * self.pixels


# A bound: (largest allowed value, why) for a run and its data, or None where it does not apply
# (the setting unused, or the split not counted).
Bound = Callable[[RunConfig, DataSize], Optional[tuple[int, str]]]


def _uses_calibration(cfg: RunConfig) -> bool:
    return any("calibration" in METRICS[m].needs for m in cfg.metrics)


def _heldout_images(cfg: RunConfig, n_train: int) -> int:
    """How many training images a ``heldout`` calibration can use: those after ``train_subset``
    in the fixed permutation, less the evaluation images when the run is evaluated on its
    training split (as :func:`xai_utils.stages.calibrate.calibration_indices` picks them)."""
    rest = n_train - cfg.train_subset
    if resolve_split(cfg.dataset, cfg.eval_split) == "train":
        later = train_permutation(n_train, seed=0)[cfg.train_subset:]
        rest -= int(np.isin(later, eval_indices(n_train, cfg.eval_samples, seed=0)).sum())
    return rest


def _pair_bound(cfg: RunConfig, d: DataSize) -> Optional[tuple[int, str]]:
    """Pairs of each kind come from the evaluation subset (``eval_samples`` images, at most the
    split): one view pair per image, distinct pairs of two images for the other kinds. Checked
    with the counted split only, like the other image counts: ``load_profile`` checks a study
    before ``--rehearse`` shrinks ``pair_samples`` with the evaluation subset."""
    if not cfg.pair_methods or d.eval is None:
        return None
    n = min(cfg.eval_samples, d.eval)
    if "view" in cfg.pair_kinds:
        return n, f"one 'view' pair per evaluation image, {n} images"
    return math.comb(n, 2), f"the distinct pairs of the {n} evaluation images"


# Every setting bounded by the data's size, checked in this order (a bound may assume the
# earlier ones hold). Unbounded on purpose: batch_size_eval and eval_chunk (the evaluation
# batches are slices of the images, so a batch larger than the images holds them all and
# changes no result), and the attribution batch sizes of method options (same slicing).
SIZE_BOUNDS: dict[str, Bound] = {
    # first train_subset of a fixed permutation of the training split: more would be cut silently
    "train_subset": lambda cfg, d: None if d.train is None or cfg.train_subset is None else (
        d.train, f"the training images of {d.label}"),
    # a batch larger than the training images would be cut to all of them, silently (with
    # train_subset set, check_training already asks for train_subset >= batch_size)
    "batch_size": lambda cfg, d: None if d.train is None or cfg.train_subset is not None else (
        d.train, f"the training images of {d.label}, all in one batch"),
    # a fixed subset of the evaluation split: more would be cut silently
    "eval_samples": lambda cfg, d: None if d.eval is None else (
        d.eval, f"the images of {d.label} split '{cfg.eval_split}'"),
    # held-out training images after train_subset (xai_utils.stages.calibrate): fewer are used silently
    "calibration_samples": lambda cfg, d: None if (
        d.train is None or cfg.train_subset is None or not _uses_calibration(cfg)
        or resolve_calibration(cfg) != "heldout") else (
        _heldout_images(cfg, d.train), f"the {d.label} training images that train_subset ({cfg.train_subset}) "
                                       f"leaves out, held out for calibration; or set calibration: crossfit"),
    "pair_samples": _pair_bound,
    # pixel flipping and faithfulness correlation count features: the map broadcast over the channels
    "features_in_step": lambda cfg, d: (d.features, f"the {d.channels}x{d.side}x{d.side} features of an image"),
    "faithfulness_correlation_subset": lambda cfg, d: (
        d.features, f"the {d.channels}x{d.side}x{d.side} features of an image"),
    # insertion and deletion count pixels (all channels at once)
    "pair_pixels_per_step": lambda cfg, d: (d.pixels, f"the {d.side}x{d.side} pixels of an image"),
    # the blur's reflect padding (kernel // 2) must be smaller than the image side
    "pair_blur_kernel": lambda cfg, d: (2 * d.side - 1, f"twice the image side ({d.side} px) less one"),
    # occluding windows larger than the image: Captum's occlusion and conditional_occlusion raise
    "method_options.occlusion.window": lambda cfg, d: (d.side, f"the image side ({d.side} px)"),
    "pair_method_options.conditional_occlusion.window": lambda cfg, d: (d.side, f"the image side ({d.side} px)"),
}


TRAINING_BOUNDS = ("train_subset", "batch_size")     # bounds of training, not of a brought model


def _setting(cfg: RunConfig, key: str) -> Any:
    """The value of a (dotted) key, e.g. ``method_options.occlusion.window``; None when unset."""
    first, *rest = key.split(".")
    value = getattr(cfg, first)
    for part in rest:
        value = value.get(part) if isinstance(value, dict) else None
    return value


def data_size(cfg: RunConfig, sizes: Optional[Mapping[str, int]]) -> DataSize:
    """The :class:`DataSize` of a run from the images per split (:func:`~xai_utils.study.data.split_sizes`)."""
    spec, sizes = DATASETS[cfg.dataset], sizes or {}
    return DataSize(dataset_label(cfg.dataset), sizes.get("train"),
                    sizes.get(resolve_split(cfg.dataset, cfg.eval_split)), spec.image_size, spec.channels)


def check_sizes(cfg: RunConfig, sizes: Optional[Mapping[str, int]]) -> None:
    """Every value of :data:`SIZE_BOUNDS` against the run's data: ``sizes`` (images per split,
    :func:`~xai_utils.study.data.split_sizes`) bounds the numbers of images, the image size
    the numbers of pixels. A split not in ``sizes`` (None: none counted) is not checked, so
    a dry run without the data still works; the data check reports missing files."""
    data = data_size(cfg, sizes)
    for key, bound in SIZE_BOUNDS.items():
        if cfg.brought and key in TRAINING_BOUNDS:
            continue                                # a brought model is not trained here
        value, limit = _setting(cfg, key), bound(cfg, data)
        number = isinstance(value, (int, float)) and not isinstance(value, bool)   # None: unset
        if number and limit is not None and value > limit[0]:
            raise _fail(cfg, key, f"must be at most {limit[0]} ({limit[1]}), got {value}")
    _check_trained_on(cfg, data)


def _check_trained_on(cfg: RunConfig, d: DataSize) -> None:
    """Evaluated on its training split, a run may be explained and scored only on images it
    was not trained on (those after ``train_subset`` in the fixed permutation): a model's
    attributions on its own training images answer another question."""
    if d.train is None or resolve_split(cfg.dataset, cfg.eval_split) != "train":
        return
    trained = train_indices(d.train, cfg.train_subset, seed=0)
    evaluated = eval_indices(d.train, cfg.eval_samples, seed=0)
    seen = int(np.isin(evaluated, trained).sum())
    if seen:
        raise _fail(cfg, "eval_split", f"'train' would evaluate {seen} of the {len(evaluated)} evaluation images "
                                       f"the model was trained on (train_subset: {cfg.train_subset}); evaluate "
                                       "on the held-out split ('test' or 'val')")


def check_data(cfg: RunConfig, stages: Sequence[Stage]) -> None:
    """The dataset's files of the splits the stages read (raises DatasetNotFoundError), and
    every image of an image folder (readable, square, a class folder not empty)."""
    if Stage.TRAIN in stages:
        if not cfg.brought:                       # an import reads the test split only
            check_available(cfg.dataset, "train", cfg.data_root)
        check_available(cfg.dataset, "test", cfg.data_root)
    if {Stage.ATTRIBUTE, Stage.EVALUATE} & set(stages):
        check_available(cfg.dataset, cfg.eval_split, cfg.data_root)
    if DATASETS[cfg.dataset].kind == "imagefolder":
        for split in ("train", "test"):
            if files_present(cfg.dataset, split, cfg.data_root):
                check_imagefolder(cfg.data_root, split)


def check_model_file(cfg: RunConfig, stages: Sequence[Stage]) -> None:
    """A brought checkpoint, where the import will run: readable without running code (a
    pickle that needs code is refused before any of it runs), fitting its ``arch`` and
    ``num_classes``, which must be the image folder's number of classes (CheckpointError or
    ConfigError)."""
    if not cfg.brought or Stage.TRAIN not in stages:
        return
    if DATASETS[cfg.dataset].kind == "imagefolder":
        classes = len(class_names(cfg.data_root))
        if classes != cfg.num_classes:
            raise _fail(cfg, "num_classes", f"is {cfg.num_classes}, but the image folder {cfg.data_root} has "
                                            f"{classes} classes")
    try:
        brought_network(load_checkpoint(cfg.checkpoint), cfg.checkpoint, cfg.arch, cfg.num_classes,
                        cfg.mean or (0.0,) * 3, cfg.std or (1.0,) * 3, cfg.widths, cfg.normalize_features, cfg.probe,
                        encoder_only=cfg.probe == "fit")
    except CheckpointError:                    # the file: its message names it and what to do
        raise
    except ConfigError as e:                   # the architecture itself
        raise _fail(cfg, "arch", str(e)) from None


def check_run(cfg: RunConfig, stages: Sequence[Stage] = RUN_STAGES, data: bool = False) -> None:
    """Check every setting ``stages`` of run ``cfg`` read (the data files too when ``data``).

    Ranges and names are always checked for every stage (a bad evaluation setting is
    reported before a training starts); ``stages`` selects which data files are needed.
    """
    check_ranges(cfg)
    check_training(cfg)
    check_attribution(cfg)
    check_evaluation(cfg, data_masks=data)
    check_pairs(cfg)
    check_sizes(cfg, None)                        # the image size's bounds, known without the data
    if data:
        check_device(cfg)
        check_data(cfg, stages)
        check_model_file(cfg, stages)
        check_sizes(cfg, split_sizes(cfg.dataset, cfg.data_root))


def check_runs(runs: Iterable[RunConfig], stages: Sequence[Stage] = RUN_STAGES, data: bool = False) -> None:
    """:func:`check_run` for every run of a study (``profile.runs()``, or the runs whose
    stages will run); data files are looked for once per (dataset, root, split), the
    splits counted once per (dataset, root)."""
    seen: set[tuple] = set()
    sizes: dict[tuple, Optional[dict[str, int]]] = {}
    for cfg in runs:
        check_run(cfg, stages, data=False)
        if data:
            check_evaluation(cfg, data_masks=True)
            check_device(cfg)
            key = (cfg.dataset, cfg.data_root, cfg.eval_split, tuple(stages))
            if key not in seen:
                seen.add(key)
                check_data(cfg, stages)
            check_model_file(cfg, stages)
            where = (cfg.dataset, cfg.data_root)
            if where not in sizes:
                sizes[where] = split_sizes(cfg.dataset, cfg.data_root)
            check_sizes(cfg, sizes[where])
