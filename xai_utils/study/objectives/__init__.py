"""Training objectives, by family: the paper's (CE, SCL, TL) and the explanation-aware
extensions (ExCon, CGC). One registry, :data:`OBJECTIVES`, is the single source of objective
names and properties; see :mod:`xai_utils.study.objectives.base` for the interface."""
from .base import (OBJECTIVES, Objective, RunSettings, StepOutput, StreamedViews, TrainBatch, explained_model,
                   foreign_settings, get_objective, objective_color, objective_label, order_objectives,
                   paper_objectives, register_objective)
from . import paper  # noqa: F401  (registers ce, scl, tl; the order of registration is the order of tables)
from . import excon  # noqa: F401  (registers excon, exconb)
from . import cgc  # noqa: F401  (registers cgc)
