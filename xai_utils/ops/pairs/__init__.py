"""Explaining similarity: pairwise explanations and pair metrics for the embedding models.

SCL and TL are trained on pairs, and what they compute is a similarity; a class logit only
explains the probe on top. Following Sammani et al. (IEEE TIP 2023; ../shared/related/
PAIRWISE.md), this package explains the similarity ``s`` of two images with one map per
image that depends on the other, and scores such maps:

* :mod:`.similarity` — ``similarity(model, x1, x2, space)``: the scalar explained;
* :mod:`.methods` — ``pair_attribute(model, x1, x2, method, space, **options)`` and the
  registry :data:`PAIR_METHODS` (pair Grad-CAM, Interaction-CAM, conditional occlusion,
  averaged transforms, input x gradient, SmoothGrad);
* :mod:`.sets` — seeded pair sets (two views, same class, different classes);
* :mod:`.metrics` — the registry :data:`PAIR_METRICS` (insertion, deletion, average drop and
  increase, max-sensitivity).

The pair part of the attribution and evaluation stages is :mod:`xai_utils.stages.pairs`; the
pair table and figure are :mod:`xai_utils.analysis.pair_figures`.

A study turns it on with the run keys ``pair_methods`` and ``pair_metrics``.
"""
from .methods import PAIR_METHODS, get_pair_method, pair_attribute, register_pair_method  # noqa: F401
from .metrics import PAIR_METRICS, PairInputs, check_pair_metrics  # noqa: F401
from .sets import PAIR_KINDS, make_pairs, pair_ids  # noqa: F401
from .spaces import SPACES, embed, similarity  # noqa: F401
