"""Models a user brings: any classifier from normalised images to logits (a timm or
torchvision model as it comes), wrapped so that the study's methods and metrics explain it
exactly as they explain the study's own models.

The study's code asks a model for four things, the contract of
:class:`~xai_utils.ops.contract.Explainable` (the study's own models hold it): pixel-space images
in, logits out; ``mean`` and ``std`` (the pixel normalisation); ``normalize_input``; and
``cam_layer``, the layer Grad-CAM and Eigen-CAM explain.
:func:`bring` gives a plain model these: the normalisation given or read from timm's
pretrained configuration, the layer given (a module or its dotted name) or found: timm's
``feature_info`` (the last stage), a torchvision ResNet's ``layer4``, else the last module that
holds a convolution.

A model brought as a file (a profile's ``models:``) is a checkpoint of the network's weights,
loaded without running code (:func:`load_checkpoint`: safetensors, or a PyTorch state dict read
with ``weights_only=True``), into the network :func:`build_network` makes for its ``arch`` (a
backbone of the study's registry, then the study's own model, or a timm model name), checked
key by key and shape by shape first (:func:`fit_weights`).
"""
from __future__ import annotations

import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError
from ..ops.contract import Explainable, holds
from .data import file_digest
from .models import BACKBONES, ExplainedModel, build_model

Layer = Union[nn.Module, str, None]
PathLike = Union[str, Path]
SHOWN_KEYS = 3                   # keys named in a mismatch message


class CheckpointError(ConfigError):
    """A brought checkpoint cannot be used: unreadable, code inside, or weights that do not fit
    its ``arch``; the message names the file and what to do."""


class BroughtModel(nn.Module):
    """Pixel-space images -> the brought model's logits; the CAM layer and normalisation the
    study's methods and metrics read."""

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float], cam_layer: nn.Module,
                 normalize_features: bool = False):
        super().__init__()
        self.net = net
        self.normalize_features = normalize_features      # the classifier reads L2-normalised features (a probe)
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))
        self._cam = (cam_layer,)                 # a reference, not a second registration of the module

    @property
    def cam_layer(self) -> nn.Module:
        return self._cam[0]

    def normalize_input(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalize_features:
            return self.logits_from_features(self.features(x))
        return self.net(self.normalize_input(x))

    def logits_from_features(self, h: torch.Tensor) -> torch.Tensor:
        """The classifier on pooled features (L2-normalised first for a probe)."""
        return self.net.get_classifier()(F.normalize(h, dim=1) if self.normalize_features else h)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features (timm models: ``forward_head(..., pre_logits=True)``)."""
        if not (hasattr(self.net, "forward_features") and hasattr(self.net, "forward_head")):
            raise TypeError(f"{type(self.net).__name__} has no forward_features/forward_head: its pooled "
                            "features are unknown (a timm model has them)")
        return self.net.forward_head(self.net.forward_features(self.normalize_input(x)), pre_logits=True)


def find_cam_layer(net: nn.Module) -> nn.Module:
    """The layer a CAM explains when none is given: the last stage of timm's ``feature_info``,
    a torchvision ResNet's ``layer4``, else the last module whose subtree holds a convolution."""
    info = getattr(net, "feature_info", None)
    if info is not None:
        last = info[-1] if isinstance(info, (list, tuple)) else info.get_dicts()[-1]
        return net.get_submodule(last["module"])
    if isinstance(getattr(net, "layer4", None), nn.Module):
        return net.layer4
    children = list(net.children())
    for child in reversed(children):
        if any(isinstance(m, nn.Conv2d) for m in child.modules()):
            return child if not list(child.children()) else find_cam_layer(child)
    raise ValueError(f"no convolutional layer found in {type(net).__name__}: give target_layer")


def cam_layer_of(net: nn.Module, target_layer: Layer) -> nn.Module:
    """``target_layer`` as a module (given as one, or by its dotted name), or :func:`find_cam_layer`."""
    if target_layer is None:
        return find_cam_layer(net)
    if isinstance(target_layer, str):
        try:
            return net.get_submodule(target_layer)
        except AttributeError:
            raise ValueError(f"target_layer '{target_layer}' is not a module of {type(net).__name__}") from None
    if not any(m is target_layer for m in net.modules()):
        raise ValueError("target_layer is not a module of the model")
    return target_layer


def normalisation_of(net: nn.Module, mean: Optional[Sequence[float]], std: Optional[Sequence[float]]
                     ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per channel: as given, else timm's pretrained configuration's."""
    cfg = getattr(net, "pretrained_cfg", None) or getattr(net, "default_cfg", None) or {}
    mean = mean if mean is not None else cfg.get("mean")
    std = std if std is not None else cfg.get("std")
    if mean is None or std is None:
        raise ValueError(f"the input normalisation of {type(net).__name__} is unknown: give mean and std")
    if len(mean) != len(std):
        raise ValueError(f"mean has {len(mean)} channels and std {len(std)}")
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def bring(net: nn.Module, target_layer: Layer = None, mean: Optional[Sequence[float]] = None,
          std: Optional[Sequence[float]] = None) -> Explainable:
    """``net`` (normalised images -> logits) as a model the study explains (pixel-space input),
    in ``net``'s mode (training or eval); a model that holds the contract already
    (:class:`~xai_utils.ops.contract.Explainable`: the study's own, a :class:`BroughtModel`, a
    user's class) is returned as it is."""
    if holds(net, Explainable):
        return net
    m, s = normalisation_of(net, mean, std)
    return BroughtModel(net, m, s, cam_layer_of(net, target_layer)).train(net.training)


# ----------------------------------------------------------------------------- models brought as files

def file_sha256(path: PathLike) -> str:
    """The SHA-256 of a checkpoint (hex; :func:`~xai_utils.study.data.base.file_digest`): the
    profile that plans a study and the import that checks the file against the plan read it
    once between them."""
    return file_digest(path, "sha256")


def load_checkpoint(path: PathLike) -> dict[str, torch.Tensor]:
    """The weights in ``path`` (name -> tensor), on the CPU: a ``.safetensors`` file, or a
    PyTorch state dict (``torch.save(model.state_dict(), f)``, or a dict holding one under
    ``state_dict``) read with ``weights_only=True``, so that nothing in the file is executed: a
    pickled object that needs code to load is refused before any of it runs."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"checkpoint {path} is not a readable safetensors file ({e})") from None
    try:
        with warnings.catch_warnings():           # torch's note on an old pickle protocol: the refusal says it all
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(f"checkpoint {path} holds pickled objects that need code to load (refused: loading "
                              "them would run it); save the weights instead: torch.save(model.state_dict(), f) or "
                              "safetensors.torch.save_file(model.state_dict(), f)") from None
    except (OSError, EOFError, RuntimeError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"checkpoint {path} is unreadable ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''})") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"checkpoint {path} is not a state dict (a mapping of names to tensors)")
    return obj


def is_timm_model(arch: str) -> bool:
    import timm   # reason: 2-3 s at import; only a process that builds a brought network pays it
    return bool(timm.is_model(arch))


def holds_study_model(weights: dict[str, torch.Tensor]) -> bool:
    """Whether a checkpoint holds the study's own model (``backbone.*`` and ``head.*``, as this
    companion's runs save it, or ``backbone.*`` alone: its encoder) rather than a timm model's
    own keys."""
    return (any(k.startswith("backbone.") for k in weights)
            and all(k.split(".")[0] in ("backbone", "head") for k in weights))


def build_network(arch: str, num_classes: int, mean: Sequence[float], std: Sequence[float],
                  widths: Optional[Sequence[int]] = None, normalize_features: bool = False,
                  study_model: bool = False) -> nn.Module:
    """The explained model of a brought checkpoint, before its weights: with ``study_model``
    (:func:`holds_study_model`) the study's own model on the registered backbone ``arch`` at
    ``widths`` (``normalize_features``: its head reads L2-normalised features, as a linear probe
    of a contrastive encoder), else the timm model ``arch`` with ``num_classes`` outputs,
    wrapped as a :class:`BroughtModel` (``normalize_features`` likewise)."""
    if study_model:
        if arch not in BACKBONES:
            raise ConfigError(f"the checkpoint holds the study's model (backbone.*, head.*), whose arch must be a "
                              f"registered backbone ({', '.join(BACKBONES)}), got '{arch}'")
        return build_model(arch, widths, num_classes, mean, std, normalize_features)
    if not is_timm_model(arch):
        raise ConfigError(f"arch '{arch}' is not a timm model (a checkpoint of the study's own model, with "
                          f"backbone.* and head.* keys, may name a registered backbone: {', '.join(BACKBONES)})")
    import timm   # reason: as in is_timm_model
    net = timm.create_model(arch, pretrained=False, num_classes=num_classes)
    return BroughtModel(net, mean, std, find_cam_layer(net), normalize_features)


def _weights_of(model: nn.Module) -> tuple[nn.Module, dict[str, torch.Tensor], str]:
    """(the module the checkpoint holds the weights of, its own weights by name, its classifier's
    weight name): the brought network itself, or the study's model without its normalisation."""
    if isinstance(model, BroughtModel):
        net = model.net
        classifier = (getattr(net, "pretrained_cfg", None) or {}).get("classifier", "fc")
        return net, net.state_dict(), f"{classifier}.weight"
    own = {k: v for k, v in model.state_dict().items() if k not in ("mean", "std")}
    return model, own, "head.weight"


def weights_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """The weights of a model as its checkpoint holds them (:func:`fit_weights` reads them back)."""
    return _weights_of(model)[1]


def _some(keys: Sequence[str]) -> str:
    more = len(keys) - SHOWN_KEYS
    return ", ".join(keys[:SHOWN_KEYS]) + (f" (+{more} more)" if more > 0 else "")


def classifier_keys(model: nn.Module) -> tuple[str, str]:
    """The names of the classifier's weight and bias in the model's checkpoint."""
    weight = _weights_of(model)[2]
    return weight, weight[:-len("weight")] + "bias"


def set_classifier(model: nn.Module, probe: nn.Linear) -> None:
    """Put a fitted linear probe in place of the model's classifier (same shapes)."""
    head = model.net.get_classifier() if isinstance(model, BroughtModel) else model.head
    head.load_state_dict(probe.state_dict())


def fit_weights(model: nn.Module, weights: dict[str, torch.Tensor], path: PathLike, arch: str,
                encoder_only: bool = False) -> nn.Module:
    """Load ``weights`` into ``model`` (:func:`build_network`) after checking that they fit: the
    same names (the first missing and unexpected ones named otherwise) and the same shapes (a
    classifier of another size named as a ``num_classes`` that differs). ``encoder_only``: the
    classifier is fitted afterwards (``probe: fit``), so its keys are neither needed nor read."""
    target, own, classifier = _weights_of(model)
    if encoder_only:
        skipped = classifier_keys(model)
        own = {k: v for k, v in own.items() if k not in skipped}
        weights = {k: v for k, v in weights.items() if k not in skipped}
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    if missing or unexpected:
        parts = ([f"missing keys {_some(missing)}"] if missing else []) + \
                ([f"unexpected keys {_some(unexpected)}"] if unexpected else [])
        raise CheckpointError(f"checkpoint {path} does not fit arch '{arch}': {'; '.join(parts)}")
    for k, v in own.items():
        got = tuple(weights[k].shape)
        if got != tuple(v.shape):
            if k == classifier and got[1:] == tuple(v.shape)[1:]:
                raise CheckpointError(f"checkpoint {path} has {got[0]} classes ({k}), num_classes says {v.shape[0]}")
            raise CheckpointError(f"checkpoint {path} does not fit arch '{arch}': {k} is {list(got)} there, "
                                  f"{list(v.shape)} in the model")
    target.load_state_dict({k: weights[k].to(v.dtype) for k, v in own.items()}, strict=False)
    return model


def brought_network(weights: dict[str, torch.Tensor], path: PathLike, arch: str, num_classes: int,
                    mean: Sequence[float], std: Sequence[float], widths: Optional[Sequence[int]] = None,
                    normalize_features: bool = False, probe: Optional[str] = None,
                    encoder_only: bool = False) -> nn.Module:
    """The network a brought checkpoint is for (:func:`holds_study_model`), built by
    :func:`build_network` and loaded by :func:`fit_weights`. A probe fitted at import
    (``probe="fit"``) reads L2-normalised features, as the paper's linear probe does;
    ``encoder_only``: the classifier is still to be fitted (the checkpoint's own is not read)."""
    net = build_network(arch, num_classes, mean, std, widths, normalize_features or probe == "fit",
                        study_model=holds_study_model(weights))
    return fit_weights(net, weights, path, arch, encoder_only=encoder_only)


def features_and_logits(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled features and logits of pixel-space images, from one forward pass."""
    if isinstance(model, ExplainedModel) or model.normalize_features:
        h = model.features(x)
        return h, model.logits_from_features(h)
    net = model.net
    maps = net.forward_features(model.normalize_input(x))
    return net.forward_head(maps, pre_logits=True), net.forward_head(maps)
