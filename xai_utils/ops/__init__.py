"""Layer 1 — computations on tensors: no files, no settings.

Everything here takes tensors (and a model where it must run one) and returns tensors:
:mod:`.augment` (batched augmentations), :mod:`.losses` (SupCon, triplet),
:mod:`.attribution` (attribution methods and their registry), :mod:`.metrics` (explanation
metrics and their registry), :mod:`.pairs` (explaining the similarity of two images),
:mod:`.calibration` (temperature scaling), :mod:`.devices` and :mod:`.seeds`. It imports
nothing else of the package but :mod:`xai_utils.errors`.
"""
