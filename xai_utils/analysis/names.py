"""Names, colours, directions, facets and order of everything a table or figure shows.

Every label, colour and order comes from the registry of its concept, single-image and
pairwise alike: objectives (:data:`xai_utils.study.objectives.OBJECTIVES`), attribution
methods (:data:`xai_utils.ops.attribution.METHODS`, :data:`xai_utils.ops.pairs.PAIR_METHODS`),
metrics (:data:`xai_utils.ops.metrics.METRICS`, :data:`xai_utils.ops.pairs.PAIR_METRICS`) and
datasets (:data:`xai_utils.study.data.DATASETS`). An unregistered name is shown as it is.
"""
from __future__ import annotations

from typing import Any, Iterable, Optional, Sequence

from ..ops.attribution import METHODS
from ..ops.metrics import FLIP_SCORES, METRICS, MetricSpec
from ..ops.pairs import PAIR_METHODS, PAIR_METRICS
from ..settings.layout import RowName
from ..study.data import dataset_label
from ..study.objectives import OBJECTIVES, objective_color, objective_label
from ..study.objectives import order_objectives as _order_objectives

ACCURACY = "test_accuracy"        # a model-level number, not a registered metric: higher is better

__all__ = ["ACCURACY", "dataset_label", "facet", "method_label", "metric_direction", "metric_label", "metric_order",
           "metric_sort_key", "metric_spec", "objective_color", "objective_label", "order_objectives",
           "ordered_methods", "ordered_metrics", "ordered_objectives"]


def method_label(name: str) -> str:
    """Display name of a method (``Grad-CAM``), single-image or pairwise; an unregistered name
    is shown as is."""
    return getattr(METHODS.get(name) or PAIR_METHODS.get(name), "label", str(name))


def metric_spec(name: str) -> Optional[MetricSpec]:
    """The registry entry of a row name (variants share their metric's entry), single-image
    or pair metric, or None."""
    base = RowName.parse(name).metric
    return METRICS.get(base) or PAIR_METRICS.get(base)


def metric_direction(metric: str) -> Optional[str]:
    """'lower' or 'higher' (is better), from the metric registries; None when unknown."""
    if metric == ACCURACY:
        return "higher"
    spec = metric_spec(metric)
    return spec.direction if spec else None


def metric_label(name: str, arrow: bool = False) -> str:
    """Display name of a row name; a variant adds its parameter (``Continuity (SSIM), σ=0.05``);
    with ``arrow`` a ↓ (lower is better) or ↑ (higher is better); an unregistered name is
    shown with its underscores as spaces."""
    spec = metric_spec(name)
    if spec is None:
        text = str(name).replace("_", " ")
    else:
        variant = str(name)[len(spec.name):].strip("[]")
        text = spec.label + (f", {variant.replace('sigma=', 'σ=').replace(',', ', ')}" if variant else "")
    if arrow and spec is not None:
        text += {"lower": " ↓", "higher": " ↑"}.get(spec.direction, "")
    return text


def facet(metric: str) -> str:
    """The metric's facet, from the metric registries ("other" when unknown)."""
    if metric == ACCURACY:
        return "accuracy"
    spec = metric_spec(metric)
    return spec.facet if spec else "other"


def metric_order(metric: str) -> int:
    """Position of a metric (or of the metric of a variant) in the metric registries (unknown last)."""
    names = list(METRICS) + list(PAIR_METRICS)
    base = RowName.parse(metric).metric
    return names.index(base) if base in names else len(names)


def metric_sort_key(metric: str) -> tuple[int, int, str]:
    """Where a row name sorts in every table and figure: its metric's place in the registries,
    then the metric before its variants, the variants that are pixel-flipping scores (ROAD's
    ``[normalised]``, ``[calibrated]``, ``[logit]``) in the order of the pixel-flipping metrics
    (:data:`~xai_utils.ops.metrics.FLIP_SCORES`), then any other variant by name."""
    variant = ",".join(RowName.parse(metric).qualifiers)
    scores = list(FLIP_SCORES)
    rank = -1 if not variant else scores.index(variant) if variant in scores else len(scores)
    return metric_order(metric), rank, str(metric)


def order_objectives(values: Iterable[str]) -> list[str]:
    """Objectives in the order of the objective registry, then any others alphabetically."""
    return _order_objectives(values)


def _ordered(values: Any, order: Sequence[str]) -> list[str]:
    """Known names in ``order`` first, then any others alphabetically."""
    vals = list(dict.fromkeys(str(v) for v in values))
    return [v for v in order if v in vals] + sorted(v for v in vals if v not in order)


def ordered_objectives(values: Any) -> list[str]:
    return _ordered(values, list(OBJECTIVES))


def ordered_methods(values: Any) -> list[str]:
    return _ordered(values, list(METHODS) + list(PAIR_METHODS))


def ordered_metrics(values: Any) -> list[str]:
    """Registry order; a variant (``continuity[sigma=0.05]``) right after its metric
    (:func:`metric_sort_key`)."""
    return sorted(dict.fromkeys(str(v) for v in values), key=metric_sort_key)
