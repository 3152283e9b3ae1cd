"""Feature-attribution maps for a batch of images: one registry, one call.

    maps = attribute(model, x, target, "gradcam")      # float32 [N, 1, H, W] on x.device

``model`` is an :class:`~xai_utils.study.models.ExplainedModel` (pixel-space [0, 1] images in,
logits out), ``x`` a float batch [N, C, H, W] in [0, 1] on the model's device and ``target``
the class explained for each image (int64 [N]). Every method handles the whole batch in
tensor operations (no per-image Python loop), so its result for an image does not depend
on the other images of the batch (BatchNorm runs in eval mode).

Methods (the registry :data:`METHODS`; add one with ``@register_method("name", label=...)``):

* ``gradcam`` — :func:`grad_cam` on ``model.cam_layer`` (``layer4[-1]``), ReLU,
  bilinear upsampling to the input size, min-max scaling per map to [0, 1] (the
  pytorch-grad-cam convention the paper's authors used; ``scale=False`` keeps the
  upsampled, ReLU'd map).
* ``eigencam`` — projection of the CAM layer's activations on their first principal
  component (class-agnostic), ReLU, same post-processing. See :func:`eigencam_projection`
  for the sign rule.
* Captum input-gradient methods: ``saliency``, ``integrated_gradients``, ``smoothgrad``,
  ``input_x_gradient``, ``guided_backprop`` and the perturbation method ``occlusion``.
  Their per-channel attributions [N, C, H, W] are turned into one map by
  :func:`channel_map`: absolute value per channel first (``abs=True`` by default: maps are
  magnitudes, non-negative like the CAM maps, so every metric treats all methods alike),
  then a channel reduction (``reduction="sum"`` by default, i.e. the per-pixel L1 norm;
  ``"mean"`` for occlusion, whose channels are identical, so the map is the occlusion
  score itself; ``"max_abs"`` keeps the value of largest magnitude). Not min-max scaled
  unless ``scale=True``.

Constant maps (e.g. an all-zero Grad-CAM after the ReLU) are scaled to all zeros, never NaN
(:func:`minmax_scale`). While a method runs the model is switched to eval mode and, for
guided backprop, every in-place activation is made out-of-place; both are restored
afterwards, and every hook is removed, so the model's logits are unchanged by a call.

Modules: :mod:`.registry` (the registry, option checks, :func:`attribute`), :mod:`.maps`
(post-processing), :mod:`.cam` (Grad-CAM, Eigen-CAM), :mod:`.gradients` (Captum methods),
:mod:`.control` (``random``: seeded uniform maps, the floor a real explanation must beat).
"""
from .registry import (METHODS, TARGET_KINDS, attribute, check_method_options, check_methods, check_options,
                       explaining, get_method, is_class_agnostic, keyword_options, per_batch_logits, predict,
                       register_method, resolve_options, targets_for)
from .maps import REDUCTIONS, channel_map, minmax_scale, upsample
from .cam import EIGEN_SIGNS, eigencam, eigencam_projection, grad_cam, gradcam, module_at  # registers gradcam, eigencam
from . import gradients  # noqa: F401  (registers the Captum methods)
from .control import image_seed, random_map  # registers random, the control
