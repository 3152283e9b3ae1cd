"""Explanation-quality metrics on whole batches of tensors (CPU or GPU).

The paper's metrics are Quantus 0.6.0 metrics (and scikit-image SSIM) called one image at
a time. Here every metric takes batches — images ``x`` float [N, C, H, W] in pixel space
[0, 1] (the :class:`~xai_utils.study.models.ExplainedModel` normalises inside), attribution maps
``a`` float [N, 1, H, W], labels / targets int64 [N], masks bool [N, 1, H, W] — and returns
one value per image, on the device of its inputs. ``tests/test_metrics.py`` checks each
against Quantus / scikit-image called per image on the same numpy arrays.

What Quantus 0.6.0 does (read from its source) and we reproduce:

* **Normalisation.** ``normalise=True`` divides by ``max |a|`` over *everything passed in
  one call* (all-zero input left as is); the authors call Quantus once per image, so we
  normalise per image, in the maps' own dtype (which matters for exact ties at the max).
  Only Sparseness depends on it (its 1e-7 is added after normalising): a batch call of
  Quantus differs from per-image calls by up to ~1e-4 unless every map has the same max.
  Defaults: PixelFlipping ``abs=False``, Complexity / Sparseness / AttributionLocalisation
  ``abs=True``, PointingGame ``abs=False``, all ``normalise=True``.
* **PixelFlipping.** The 1-channel map is broadcast over the C channels, so there are
  F = C*H*W features and S = ceil(F / features_in_step) steps (96 on 32x32x3 with 32 per
  step). Features are ordered by ``np.argsort(-a)`` — NumPy's default, *unstable* sort, so
  tied features (at least the C channels of every pixel) come in NumPy's own order, which
  we reproduce by calling the same ``np.argsort`` on the same values. At step s the next
  ``features_in_step`` features of a running copy are set to the baseline and the softmax
  probability of class y is recorded (no point for the unperturbed image). Baseline
  "black" = the minimum over all values of the (running) image, i.e. the original image's
  minimum; here in pixel space (our model takes pixel-space images). The authors' Quantus
  saw *normalised* images, so their "black" is the normalised image's minimum given to
  every channel: ``baseline="black_normalised"`` reproduces that (nearly black, per channel). ``return_auc_per_sample=True`` returns ``np.trapz(curve, dx=1)``, *not*
  normalised (range [0, S-1]); the authors divide it by ``len(curve) - 1``, which is our
  ``auc`` (the mean height of the curve, in [0, 1]). They set it to NaN for all-zero maps.
* **Complexity**: entropy ``-sum p log(p + 1e-12)`` of ``p = |a| / sum |a|`` (0/0 = NaN for
  an all-zero map). **Sparseness**: Gini index of ``|a| + 1e-7`` (sorted ascending).
* **PointingGame**: hit if *any* position holding the maximum lies in the mask (ties count).
  On an empty mask Quantus means to return NaN but writes NaN into a boolean array, which
  reads back as True (a hit); we return NaN. **AttributionLocalisation**:
  ``sum(|a| * mask) / (sum |a| + 1e-9)``, NaN for an empty mask or a ratio above 1.
* Perturbation metrics draw their randomness from NumPy's global generator; ours draw from
  one generator per *sample*, seeded by (seed, sample id, metric) (:func:`sample_seed`),
  so every model sees the same perturbation of the same image, whatever the batch.

Quantus refuses (AssertionError) a call whose maps are all zero, all one, constant or all
negative; the authors therefore skip all-zero maps (NaN). Our policy, one per metric:

* *constant maps* (all-zero included: a Grad-CAM whose ReLU kills everything comes out of
  min-max scaling as zeros) give no ranking and no peak: NaN for pixel flipping (its value
  would be NumPy's arbitrary order of ties) and the pointing game (every position is "the
  maximum"; Quantus, in a batch call, would score a hit);
* *all-zero maps* have no attribution mass: NaN for complexity (0/0, as Quantus), attribution
  localisation (Quantus's 1e-9 guard would give 0), max-sensitivity (divides by
  ``||a|| = 0``) and the correlations (constant input). A constant non-zero map keeps its
  well-defined value there (complexity log(H*W), localisation = the mask's area share);
* always defined: sparseness (0 for any flat map, the Gini index of equal values) and SSIM.

NaNs are kept in ``results.csv`` (written ``nan``); statistics pair samples first and then
drop NaNs, and :func:`xai_utils.analysis.stats.run_summary` reports how many there are.
"""
from ._common import (DEFAULT_BATCH, is_constant_map, is_zero_map, normalise_by_max, num_classes_of,
                      resolve_method, sample_seed)
from .complexity import complexity, sparseness
from .consistency import consistency, consistency_transforms, cosine
from .faithfulness import (BASELINES, FLIP_SCORES, SORTERS, TIE_BREAKS, curve_auc, faithfulness_correlation, flip_curves,
                           pixel_flipping, pixel_flipping_logits, resolve_tie_break)
from .localisation import attribution_localisation, pointing_game
from .randomisation import model_randomisation, randomise_model
from . import catalogue  # noqa: F401  (registers every metric)
from .spec import (METRICS, SETTINGS, MetricInputs, MetricResult, MetricSpec, check_metrics,
                   register_metric)
from .road import ORDERS, noisy_linear_impute, removal_masks, road_logits
from .robustness import (NOISE_SPACES, continuity_perturbation, continuity_ssim, contrastivity_ssim,
                         gaussian_noise, max_sensitivity, other_classes)
from .map_similarity import SIMILARITIES, pearson, spearman, ssim
