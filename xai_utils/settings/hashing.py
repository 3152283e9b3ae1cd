"""Which settings each stage's results depend on, and their hash.

A stage is skipped when its marker holds the hash of the same settings (:func:`stage_hash`):
the settings of the stage and of every stage before it, without the keys that change only
where or how fast something runs (:data:`NO_RESULT_KEYS`), without the keys only other
objectives read, and without the pair analysis's when a run has none. A change of a setting
therefore re-runs exactly the stages it affects.
"""
from __future__ import annotations

from ..study.objectives import foreign_settings
from .layout import Stage
from .run_config import RUN_KEYS, RunConfig

# Which settings each stage's results depend on (for skipping finished stages). Keys that
# change only where or how fast something runs (device, workers, batch sizes of inference,
# checkpoint period) are in no hash.
NO_RESULT_KEYS = ("device", "num_workers", "checkpoint_every", "batch_size_eval", "eval_chunk", "data_root",
                  "checkpoint")         # a brought checkpoint is hashed by its content (checkpoint_sha256)
STAGE_KEYS: dict[Stage, tuple[str, ...]] = {
    Stage.ATTRIBUTE: ("eval_split", "eval_samples", "target", "protocol", "explain_features", "methods",
                      "method_options", "pair_methods", "pair_method_options", "pair_kinds", "pair_samples",
                      "pair_seed", "pair_space"),
    Stage.EVALUATE: ("metrics", "metric_seed", "features_in_step", "pixel_flipping_baseline",
                     "pixel_flipping_tie_break", "continuity_sigma", "continuity_sigmas", "noise_space",
                     "calibration_samples", "calibration", "max_sensitivity_samples", "max_sensitivity_radius",
                     "faithfulness_correlation_subset", "faithfulness_correlation_runs", "randomisation_similarity",
                     "consistency_crop_scale", "road_fractions", "road_noise", "pair_metrics", "pair_pixels_per_step", "pair_blur_kernel",
                     "pair_blur_sigma", "pair_max_sensitivity_samples", "pair_max_sensitivity_radius"),
    Stage.FIGURES: ("nan_pairing", "kept_images"),
}
STAGE_KEYS[Stage.TRAIN] = tuple(k for k in RUN_KEYS if k not in NO_RESULT_KEYS and k not in
                               STAGE_KEYS[Stage.ATTRIBUTE] + STAGE_KEYS[Stage.EVALUATE] + STAGE_KEYS[Stage.FIGURES])
STAGE_ORDER = tuple(Stage)


# Keys added after results existed: hashed only when set away from their default, so that
# adding one re-runs nothing (on the CPU ``deterministic`` changes no number either).
HASHED_WHEN_SET = ("deterministic", "kept_images", "road_fractions", "road_noise", "calibration",
                   "checkpoint_sha256", "num_classes", "mean", "std", "normalize_features", "probe", "data_kind",
                   "image_size")
_DEFAULTS = RunConfig().to_dict()


def stage_keys(cfg: RunConfig, stage: Stage) -> list[str]:
    """The settings a stage of this run depends on: the stage's keys, without those only
    other objectives read (so a new objective, or another objective's setting, changes no hash),
    without the pair analysis's when the run has none, and without the keys of
    :data:`HASHED_WHEN_SET` left at their default."""
    foreign = set(foreign_settings(cfg.objective))
    foreign |= {k for k in HASHED_WHEN_SET if getattr(cfg, k) == _DEFAULTS[k]}
    if not cfg.pair_methods:                 # no pair analysis: its settings change nothing
        foreign |= {k for k in RUN_KEYS if k.startswith("pair_") and k != "pair_methods"}
    elif not cfg.pair_metrics:
        foreign |= set(PAIR_METRIC_KEYS)
    return [k for k in STAGE_KEYS[stage] if k not in foreign]


# the evaluation settings of the pair analysis (read only when a run lists pair_metrics)
PAIR_METRIC_KEYS = ("pair_pixels_per_step", "pair_blur_kernel", "pair_blur_sigma", "pair_max_sensitivity_samples",
                    "pair_max_sensitivity_radius")


def stage_hash(cfg: RunConfig, stage: Stage) -> str:
    """Hash of the settings that a stage and the stages before it depend on."""
    keys = [k for s in STAGE_ORDER[:STAGE_ORDER.index(stage) + 1] for k in stage_keys(cfg, s)]
    return cfg.config_hash(keys)
