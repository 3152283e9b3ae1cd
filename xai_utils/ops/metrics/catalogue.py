"""Every metric of the study, registered: the paper's (pixel flipping and its scores,
continuity, complexity, contrastivity, sparseness, the pointing game, attribution
localisation) and the extras (ROAD, consistency, faithfulness correlation, max-sensitivity,
model randomisation), each an adapter from :class:`~.spec.MetricInputs` to the metric's function.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ._common import sample_seed
from .complexity import complexity, sparseness
from .consistency import consistency
from .faithfulness import FLIP_SCORES, faithfulness_correlation, flip_curves, pixel_flipping_logits
from .localisation import attribution_localisation, pointing_game
from .randomisation import model_randomisation
from .road import road_logits
from .robustness import contrastivity_ssim, continuity_ssim, max_sensitivity
from .spec import MetricInputs, MetricResult, register_metric


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


# the ground truth of a planted dataset (xai_utils.study.data.planted): its masks are the cue's square
register_metric("cue_mass", "Mass on the cue", "ground truth", needs=("masks",), in_paper=False, bounds=(0.0, 1.0),
                description="share of the attribution on the cue a planted dataset draws (attribution "
                            "localisation on the cue's square; the random control's is the square's share "
                            "of the image)")(_m_attribution_localisation)
register_metric("cue_pointing", "Pointing at the cue", "ground truth", needs=("masks",), in_paper=False, binary=True,
                bounds=(0.0, 1.0), description="the map's maximum lies on the cue a planted dataset draws")(
    _m_pointing_game)


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
