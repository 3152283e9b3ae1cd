"""What a metric is: its inputs, its result and its entry in the metric registry, the single
source of every metric's name, label, facet, direction and needs (the entries: :mod:`.catalogue`).

A metric is registered with :func:`register_metric` as ``compute(MetricInputs) -> MetricResult``.
Tables, figures, statistics and the configuration all read what they need to know about a
metric from :data:`METRICS` (its order is the order of rows in the tables):

* ``higher_is_better`` (direction), ``facet``, ``label`` (the name shown), ``in_paper``;
* ``needs``: ``model`` (forward passes), ``method`` (recomputes maps), ``masks`` (object
  masks of the evaluation split), ``class_specific`` (undefined for a class-agnostic method),
  ``calibration`` (the run's temperature, fitted on held-out training images);
* ``binary``: per-image values are 0 or 1 (a hit rate is reported, with a binomial interval);
* ``bounds``: the range of possible values (None: unbounded on that side), for axes.

Every setting a metric reads is a field of :class:`MetricInputs` named as the run
configuration key it comes from (``seed`` comes from ``metric_seed``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor

from ...registry import Registry
from ..contract import Explainable
from ._common import AttributionFn
from .road import FRACTIONS


@dataclass
class MetricInputs:
    """Everything a registered metric may need, for one method on one run's samples."""

    model: Explainable
    x: Tensor                                  # pixel space [N, C, H, W]
    maps: Tensor                               # stored maps [N, 1, H, W]
    labels: Tensor                             # true classes [N]
    preds: Tensor                              # predicted classes [N]
    targets: Tensor                            # classes the maps explain [N]
    sample_ids: Tensor                         # indices into the evaluation split [N]
    masks: Optional[Tensor] = None             # bool [N, 1, H, W]
    method: Optional[AttributionFn] = None     # to recompute maps (noise, other class, ...)
    method_name: str = ""                      # the method's registry name and options, where a
    method_options: dict = field(default_factory=dict)   # metric needs them (e.g. unscaled maps)
    batch_size: Optional[int] = None
    # settings: the run configuration keys of the same name (seed = metric_seed)
    seed: int = 0
    features_in_step: int = 32
    pixel_flipping_baseline: str = "black"
    pixel_flipping_tie_break: str = "quantus"
    continuity_sigma: float = 0.02
    noise_space: str = "pixel"
    max_sensitivity_samples: int = 20
    max_sensitivity_radius: float = 0.2
    faithfulness_correlation_subset: int = 224
    faithfulness_correlation_runs: int = 100
    randomisation_similarity: str = "ssim"
    continuity_sigmas: tuple[float, ...] = ()
    consistency_crop_scale: tuple[float, ...] = (0.08, 1.0)
    road_fractions: tuple[float, ...] = FRACTIONS
    road_noise: float = 0.01
    temperature: Any = 1.0                     # of the explained model (xai_utils.stages.calibrate): one, or one per image
    calibrated: bool = False                   # a temperature was fitted (scores on calibrated probabilities)
    cache: dict = field(default_factory=dict)  # shared work between metrics of one method


# MetricInputs fields that come from the run configuration (config key -> field)
SETTINGS: dict[str, str] = {"metric_seed": "seed", **{k: k for k in (
    "features_in_step", "pixel_flipping_baseline", "pixel_flipping_tie_break", "continuity_sigma",
    "noise_space", "max_sensitivity_samples", "max_sensitivity_radius", "faithfulness_correlation_subset",
    "faithfulness_correlation_runs", "randomisation_similarity", "continuity_sigmas", "consistency_crop_scale",
    "road_fractions", "road_noise")}}


@dataclass
class MetricResult:
    values: Tensor                             # one value per sample [N]
    curves: Optional[Tensor] = None            # pixel-flipping curves [N, S]
    extras: dict[str, Tensor] = field(default_factory=dict)   # stored beside the curves
    variants: dict[str, Tensor] = field(default_factory=dict)  # rows "<metric>[<variant>]", one value per sample


@dataclass(frozen=True)
class MetricSpec:
    name: str
    compute: Callable[[MetricInputs], MetricResult]
    label: str = ""
    needs: frozenset = field(default_factory=frozenset)   # model | method | masks | class_specific
    higher_is_better: bool = True
    facet: str = ""
    in_paper: bool = True
    binary: bool = False
    bounds: tuple[Optional[float], Optional[float]] = (None, None)
    description: str = ""

    @property
    def direction(self) -> str:
        return "higher" if self.higher_is_better else "lower"


METRICS: Registry[MetricSpec] = Registry("metric")


def register_metric(name: str, label: str, facet: str, higher_is_better: bool = True,
                    needs: Sequence[str] = (), in_paper: bool = True, binary: bool = False,
                    bounds: tuple[Optional[float], Optional[float]] = (None, None),
                    description: str = "", override: bool = False) -> Callable:
    """Register ``compute(MetricInputs) -> MetricResult`` under ``name`` (a results.csv name);
    a name already registered is refused unless ``override``."""
    def wrap(fn: Callable[[MetricInputs], MetricResult]) -> Callable[[MetricInputs], MetricResult]:
        METRICS.register(name, MetricSpec(name, fn, label, frozenset(needs), higher_is_better, facet, in_paper,
                                          binary, tuple(bounds), description), override)
        return fn
    return wrap


def check_metrics(names: Sequence[str]) -> list[str]:
    """Validate metric names at once: one error listing the unknown names and the valid ones."""
    return METRICS.check(names)
