"""The metric registry: the single source of every metric's name, label, facet, direction and needs.

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
import torch.nn as nn
from torch import Tensor

from ...registry import Registry
from ._common import AttributionFn
from .complexity import complexity, sparseness
from ._common import sample_seed
from .faithfulness import FLIP_SCORES, faithfulness_correlation, flip_curves, pixel_flipping_logits
from .localisation import attribution_localisation, pointing_game
from .randomisation import model_randomisation
from .consistency import consistency
from .road import FRACTIONS, road_logits
from .robustness import contrastivity_ssim, continuity_ssim, max_sensitivity


@dataclass
class MetricInputs:
    """Everything a registered metric may need, for one method on one run's samples."""

    model: nn.Module
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


def base_metric(name: str) -> str:
    """The registered metric of a row name: ``continuity[sigma=0.05]`` -> ``continuity``."""
    return str(name).split("[", 1)[0]


# ----------------------------------------------------------------------------- the paper's metrics

@register_metric("pixel_flipping", "Pixel-flipping AUC", "faithfulness", higher_is_better=False,
                 needs=("model",), bounds=(0.0, 1.0),
                 description="AUC / (steps - 1) of the softmax probability of the true class while "
                             "the most relevant features are set to the baseline, features_in_step at a time")
def _m_pixel_flipping(d: MetricInputs) -> MetricResult:
    logits = _flip_logits(d)
    curves, auc = flip_curves(logits, d.labels, "probability", a=d.maps)
    p0 = torch.softmax(logits[:, 0], dim=-1).gather(1, d.labels[:, None])[:, 0]
    return MetricResult(auc, curves, {"unperturbed": p0})


def _flip_logits(d: MetricInputs) -> Tensor:
    """The logits along the pixel-flipping perturbation, computed once per method and shared
    by every pixel-flipping score."""
    key = ("pixel_flipping_logits", d.features_in_step, d.pixel_flipping_baseline, d.pixel_flipping_tie_break)
    if key not in d.cache:
        d.cache[key] = pixel_flipping_logits(d.model, d.x, d.maps, d.features_in_step, d.pixel_flipping_baseline,
                                             d.batch_size, d.pixel_flipping_tie_break)
    return d.cache[key]


def _flip_score(score: str) -> Callable[[MetricInputs], MetricResult]:
    def compute(d: MetricInputs) -> MetricResult:
        curves, auc = flip_curves(_flip_logits(d), d.labels, score, d.temperature, a=d.maps)
        return MetricResult(auc, curves)
    compute.__doc__ = FLIP_SCORES[score].__doc__
    return compute


register_metric("pixel_flipping_normalised", "Pixel-flipping AUC, normalised", "faithfulness",
                higher_is_better=False, needs=("model",), in_paper=False, bounds=(0.0, None),
                description="the paper's curve divided by the unperturbed probability, that point included "
                            "(confidence removed)")(_flip_score("normalised"))
register_metric("pixel_flipping_calibrated", "Pixel-flipping AUC, calibrated", "faithfulness",
                higher_is_better=False, needs=("model", "calibration"), in_paper=False, bounds=(0.0, 1.0),
                description="the paper's curve on probabilities of the temperature-scaled model")(
    _flip_score("calibrated"))
register_metric("pixel_flipping_logit", "Pixel-flipping AUC, logit", "faithfulness",
                higher_is_better=False, needs=("model",), in_paper=False,
                description="the true-class logit minus the mean logit, divided by its unperturbed value "
                            "(that point included): free of the logit scale")(_flip_score("logit"))


@register_metric("continuity", "Continuity (SSIM)", "continuity", needs=("model", "method"), bounds=(-1.0, 1.0),
                 description="SSIM between the maps of x and of x + N(0, sigma^2), same target; rows "
                             "continuity[sigma=s] for each further noise level of continuity_sigmas")
def _m_continuity(d: MetricInputs) -> MetricResult:
    def at(sigma: float) -> Tensor:
        return continuity_ssim(d.model, d.x, d.targets, d.method, sigma, d.noise_space, d.seed, d.sample_ids,
                               maps=d.maps, batch_size=d.batch_size)
    return MetricResult(at(d.continuity_sigma),
                        variants={f"sigma={s:g}": at(s) for s in d.continuity_sigmas if s != d.continuity_sigma})


@register_metric("complexity", "Complexity (entropy)", "complexity", higher_is_better=False, bounds=(0.0, None),
                 description="entropy of the normalised absolute map (Quantus Complexity)")
def _m_complexity(d: MetricInputs) -> MetricResult:
    return MetricResult(complexity(d.maps))


@register_metric("contrastivity", "Contrastivity (SSIM)", "contrastivity", higher_is_better=False, bounds=(-1.0, 1.0),
                 needs=("model", "method", "class_specific"),
                 description="SSIM between the maps for the predicted class and a random other class")
def _m_contrastivity(d: MetricInputs) -> MetricResult:
    maps = d.maps if bool((d.targets == d.preds).all()) else None
    return MetricResult(contrastivity_ssim(d.model, d.x, d.preds, d.method, seed=d.seed,
                                           sample_ids=d.sample_ids, maps=maps, batch_size=d.batch_size))


@register_metric("sparseness", "Sparseness (Gini)", "complexity", bounds=(0.0, 1.0),
                 description="Gini index of the absolute map (Quantus Sparseness; computed, not reported)")
def _m_sparseness(d: MetricInputs) -> MetricResult:
    return MetricResult(sparseness(d.maps))


@register_metric("pointing_game", "Pointing game", "coherence", needs=("masks",), binary=True, bounds=(0.0, 1.0),
                 description="the map's maximum lies on the object (Quantus PointingGame)")
def _m_pointing_game(d: MetricInputs) -> MetricResult:
    return MetricResult(pointing_game(d.maps, d.masks))


@register_metric("attribution_localisation", "Attribution localisation", "coherence", needs=("masks",),
                 bounds=(0.0, 1.0),
                 description="share of the attribution inside the object mask (Quantus AttributionLocalisation)")
def _m_attribution_localisation(d: MetricInputs) -> MetricResult:
    return MetricResult(attribution_localisation(d.maps, d.masks))


# ----------------------------------------------------------------------------- extras (not in the paper)

def _road_logits(d: MetricInputs, order: str) -> Tensor:
    """The logits along ROAD's removals of one order, computed once per method and shared by
    every ROAD score; the imputation noise of an image is seeded by its index."""
    key = ("road_logits", order, tuple(d.road_fractions), d.road_noise)
    if key not in d.cache:
        generators = [torch.Generator().manual_seed(sample_seed(d.seed, int(i), f"road_{order}"))
                      for i in d.sample_ids.tolist()]
        d.cache[key] = road_logits(d.model, d.x, d.maps, order, d.road_fractions, d.road_noise, generators,
                                   d.batch_size)
    return d.cache[key]


def _road_scores(d: MetricInputs, order: str) -> dict[str, tuple[Tensor, Tensor]]:
    """(curves, area) of every score of one ROAD order: ``probability`` and the variants
    ``normalised``, ``logit`` and, when the run fitted a temperature, ``calibrated``."""
    logits = _road_logits(d, order)
    scores = ["probability", "normalised", "logit"] + (["calibrated"] if d.calibrated else [])
    return {s: flip_curves(logits, d.labels, s, d.temperature, a=d.maps) for s in scores}


def _road(order: str) -> Callable[[MetricInputs], MetricResult]:
    def compute(d: MetricInputs) -> MetricResult:
        scores = _road_scores(d, order)
        curves, area = scores.pop("probability")
        p0 = torch.softmax(_road_logits(d, order)[:, 0], dim=-1).gather(1, d.labels[:, None])[:, 0]
        return MetricResult(area, curves, {"unperturbed": p0}, {s: a for s, (_, a) in scores.items()})
    return compute


_ROAD_TEXT = ("fractions f = road_fractions of the pixels ranked by the map are removed and imputed from their "
              "neighbours (noisy linear imputation, noise road_noise; ROAD, Rong et al. 2022); area over the "
              "fractions of the true-class probability; rows [normalised], [logit] and [calibrated] as for pixel "
              "flipping")
register_metric("road_morf", "ROAD, most relevant first", "faithfulness", higher_is_better=False, needs=("model",),
                in_paper=False, bounds=(0.0, 1.0),
                description="the most relevant " + _ROAD_TEXT)(_road("morf"))
register_metric("road_lerf", "ROAD, least relevant first", "faithfulness", higher_is_better=True, needs=("model",),
                in_paper=False, bounds=(0.0, 1.0),
                description="the least relevant " + _ROAD_TEXT)(_road("lerf"))


@register_metric("road", "ROAD, (LeRF − MoRF) / 2", "faithfulness", needs=("model",), in_paper=False,
                 bounds=(-0.5, 0.5),
                 description="half the difference of road_lerf and road_morf, score by score (higher: the map "
                             "separates the evidence from the rest)")
def _m_road(d: MetricInputs) -> MetricResult:
    morf, lerf = _road_scores(d, "morf"), _road_scores(d, "lerf")
    combined = {s: (lerf[s][1] - morf[s][1]) / 2 for s in morf}
    return MetricResult(combined.pop("probability"), variants=combined)


@register_metric("consistency", "Consistency (cosine)", "consistency", needs=("model", "method"), in_paper=False,
                 bounds=(-1.0, 1.0),
                 description="cosine between T(map(x)) and map(T(x)), T a seeded random resized crop and flip; "
                             "rows consistency[ssim] with the SSIM of the same pair")
def _m_consistency(d: MetricInputs) -> MetricResult:
    cos, structural = consistency(d.model, d.x, d.targets, d.method_name or d.method,
                                  crop_scale=d.consistency_crop_scale, seed=d.seed, sample_ids=d.sample_ids,
                                  batch_size=d.batch_size, method_options=d.method_options if d.method_name else None)
    return MetricResult(cos, variants={"ssim": structural})


@register_metric("faithfulness_correlation", "Faithfulness correlation", "faithfulness", needs=("model",),
                 bounds=(-1.0, 1.0),
                 in_paper=False,
                 description="Pearson correlation of subset attribution sums and logit drops "
                             "(Quantus FaithfulnessCorrelation)")
def _m_faithfulness_correlation(d: MetricInputs) -> MetricResult:
    return MetricResult(faithfulness_correlation(
        d.model, d.x, d.targets, d.maps, subset_size=d.faithfulness_correlation_subset,
        nr_runs=d.faithfulness_correlation_runs, baseline=d.pixel_flipping_baseline, seed=d.seed,
        sample_ids=d.sample_ids, batch_size=d.batch_size))


@register_metric("max_sensitivity", "Max-sensitivity", "robustness", higher_is_better=False, bounds=(0.0, None),
                 needs=("model", "method"), in_paper=False,
                 description="largest relative change of the map under uniform noise (Quantus MaxSensitivity)")
def _m_max_sensitivity(d: MetricInputs) -> MetricResult:
    return MetricResult(max_sensitivity(d.model, d.x, d.targets, d.method, a=d.maps,
                                        nr_samples=d.max_sensitivity_samples,
                                        lower_bound=d.max_sensitivity_radius, seed=d.seed,
                                        sample_ids=d.sample_ids, batch_size=d.batch_size))


@register_metric("model_randomisation", "Model randomisation", "sanity", higher_is_better=False, bounds=(-1.0, 1.0),
                 needs=("model", "method"), in_paper=False,
                 description="similarity between the maps of the trained model and of a fully re-initialised copy")
def _m_model_randomisation(d: MetricInputs) -> MetricResult:
    return MetricResult(model_randomisation(d.model, d.x, d.targets, d.method, a=d.maps,
                                            similarity=d.randomisation_similarity, seed=d.seed,
                                            batch_size=d.batch_size))
