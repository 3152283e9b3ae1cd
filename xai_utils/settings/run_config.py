"""The settings of one run: :class:`RunConfig`, every key with its default, flat so that a profile
or an override can set any of them; the evaluation protocols (:data:`PROTOCOLS`); the form of
every value (keys, types).

Whether a value is allowed (names in the registries, ranges, data present) is checked by
:mod:`xai_utils.settings.validation`; which keys each stage depends on by
:mod:`xai_utils.settings.hashing`; a study of many runs is a profile
(:mod:`xai_utils.settings.profiles`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field, fields
from typing import Any, Optional, Union, get_args, get_origin

from ..errors import ConfigError
from ..study.data import register_imagefolder
from .layout import RunKey


def _official_protocol(cfg: "RunConfig") -> dict[str, Any]:
    """Every quirk of the authors' evaluation code (../shared/PAPER.md, "Quirks")."""
    return {
        "noise_space": "official",                       # noise on the normalised image, clamped to [0, 1]
        "method_options": merge_settings(cfg.method_options, {"eigencam": {"sign": "numpy"}}),  # SVD's sign
        "pixel_flipping_baseline": "black_normalised",   # "black" = the normalised image's minimum
        "pixel_flipping_tie_break": "quantus",           # NumPy's order of ties, on every device
        "explain_features": "raw" if cfg.dataset == "cifar10" else "trained",   # CIFAR probe on raw features
        "nan_pairing": "per_model",                      # NaNs dropped per model before the t-test
        "pair_methods": [], "pair_metrics": [],          # their code has no pair analysis,
        "methods": [m for m in cfg.methods if m not in NOT_IN_THEIR_CODE],     # no random control,
        "metrics": [m for m in cfg.metrics if m not in NOT_IN_THEIR_CODE],     # and no ROAD
    }


# what the authors' evaluation does not have, left out of the official protocol
NOT_IN_THEIR_CODE = ("random", "road_morf", "road_lerf", "road")


# An evaluation protocol is a named set of settings it imposes on a run (RunConfig.protocol).
PROTOCOLS: dict[str, Any] = {
    "corrected": lambda cfg: {},             # this companion's defaults: nothing imposed
    "official": _official_protocol,
}


@dataclass
class RunConfig:
    """Every setting of one run (dataset x objective x seed), flat so it can be overridden.

    Defaults are the paper's CIFAR-10 CE settings (../shared/PAPER.md) where one exists.
    ``protocol`` imposes its settings on construction (:data:`PROTOCOLS`): with
    ``protocol="official"`` the noise space, Eigen-CAM sign, pixel-flipping baseline,
    explained features and NaN pairing are the authors', whatever else was given.
    """

    dataset: str = "cifar10"
    objective: str = "ce"
    seed: int = 0
    data_root: Optional[str] = None
    # model
    arch: str = "resnet18"                     # registry name in xai_utils.study.models
    widths: Optional[list[int]] = None         # stage widths; None = the architecture's own (64..512)
    proj_dim: int = 128                        # SCL projection head output
    # a model brought as a file instead of trained (a profile's ``models:``, xai_utils.study.brought)
    checkpoint: Optional[str] = None           # its weights (.safetensors or a state dict); None: the run trains
    checkpoint_sha256: Optional[str] = None    # of that file, read with the profile: what the stage hashes see
    num_classes: Optional[int] = None          # outputs of its classifier
    mean: Optional[list[float]] = None         # its input normalisation per channel; None: the data's
    std: Optional[list[float]] = None
    normalize_features: bool = False           # the classifier reads L2-normalised features (a probe)
    probe: Optional[str] = None                # "fit": the checkpoint is an encoder; its classifier is the paper's
                                               # linear probe, fitted here on the train split (probe_* settings)
    # data a user brings (a profile's ``data:``): its kind (None: a registered dataset) and image side
    data_kind: Optional[str] = None            # imagefolder (xai_utils.study.data.imagefolder)
    image_size: Optional[int] = None
    # data for training
    train_subset: Optional[int] = None         # first-k of a fixed permutation of the train split
    augmentation: str = "auto"                 # auto | ce | scl | none (+ _imagenet variants); auto: scl for SCL, ce otherwise
    # optimisation
    epochs: int = 200
    batch_size: int = 128
    optimizer: str = "sgd"                     # sgd | adamw | radam
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: int = 0
    temperature: float = 0.07                  # SCL
    margin: float = 0.3                        # TL
    mining: str = "semi-hard"                  # TL: semi-hard (authors': every semi-hard triplet) | semi-hard-hardest | batch-hard
    # ExCon / ExConB (xai_utils.study.objectives.excon)
    excon_threshold: float = 0.5               # keep the pixels whose min-max scaled saliency exceeds it
    excon_warmup_epochs: int = 0               # epochs of plain SupCon before masked views are used
    excon_layer: str = "layer2.-1.conv2"       # the saliency's layer in the backbone (16x16 on 32 px inputs)
    # CGC (xai_utils.study.objectives.cgc)
    cgc_lambda: float = 0.5                    # weight of the consistency loss
    cgc_temperature: float = 0.5
    cgc_negatives: str = "augmented"           # augmented (the authors' code) | aligned (the paper's form)
    cgc_crop_scale: list[float] = field(default_factory=lambda: [0.08, 1.0])   # area of T's crop box
    # linear probe for SCL / TL (frozen, L2-normalised features)
    probe_epochs: int = 100
    probe_lr: float = 0.1
    probe_momentum: float = 0.9
    probe_weight_decay: float = 1e-4
    # engineering
    device: str = "auto"                       # auto | cpu | cuda | cuda:N
    amp: bool = True                           # bf16 autocast on CUDA (ignored on CPU)
    channels_last: bool = True                 # memory format of training and evaluation (faster on CPU and GPU)
    compile: bool = False                      # torch.compile
    deterministic: bool = False                # bit-exact GPU kernels: cuDNN deterministic, no TF32, deterministic algorithms (slower)
    num_workers: int = 4                       # streamed datasets (imagenet_s50) only
    checkpoint_every: int = 1                  # epochs between checkpoints
    # explanation
    eval_split: str = "test"
    eval_samples: int = 1000                   # fixed subset of the evaluation split, same for all models
    batch_size_eval: int = 256
    eval_chunk: int = 512                      # images on the device at once in the evaluation (bounds its memory)
    target: str = "pred"                       # pred | true: class explained
    protocol: str = "corrected"                # corrected | official (the authors' evaluation; see PROTOCOLS)
    explain_features: str = "trained"          # trained (as the head was trained) | raw (authors' CIFAR-10 quirk)
    methods: list[str] = field(default_factory=lambda: ["gradcam", "eigencam"])
    # options of the attribution methods, {method: {option: value}} (see each method's docstring);
    # Eigen-CAM's sign rule: activation (ours, deterministic) | numpy (pytorch-grad-cam's, the authors') | none | max
    method_options: dict[str, dict[str, Any]] = field(default_factory=lambda: {"eigencam": {"sign": "activation"}})
    # evaluation
    metrics: list[str] = field(default_factory=lambda: [
        "pixel_flipping", "continuity", "complexity", "contrastivity", "sparseness"])
    metric_seed: int = 0                       # seeds every random draw of the metrics (noise, classes, subsets)
    features_in_step: int = 32                 # pixel flipping: features set to the baseline per step
    pixel_flipping_baseline: str = "black"     # black (image minimum, pixel space) | white | black_normalised (authors')
    # order of exactly tied features: quantus (NumPy's argsort on the host, as Quantus) | stable
    # (on the device, ties in feature order) | auto (stable on CUDA, quantus elsewhere), resolved
    # where the evaluation runs (the hash records "auto", so a plan made on a host without a GPU
    # and the job on a GPU node agree; curves/<method>.npz records the rule used)
    pixel_flipping_tie_break: str = "auto"
    continuity_sigma: float = 0.02
    continuity_sigmas: list[float] = field(default_factory=list)   # extra sigmas: rows continuity[sigma=s]
    noise_space: str = "pixel"                 # pixel | official (see metrics.continuity_ssim)
    calibration_samples: int = 2000            # held-out training images for the temperature (pixel_flipping_calibrated)
    # where the temperature of the calibrated scores is fitted: heldout (calibration_samples training images the
    # run never trained on) | crossfit (two folds of the evaluation subset, each image scaled by the temperature
    # of the other fold) | auto (heldout when the run trains on a subset, crossfit when on the whole split)
    calibration: str = "auto"
    max_sensitivity_samples: int = 20          # noise draws per image (Quantus default 200)
    max_sensitivity_radius: float = 0.2        # uniform noise in [-r, r] (Quantus lower_bound)
    faithfulness_correlation_subset: int = 224  # features per random subset (Quantus default)
    faithfulness_correlation_runs: int = 100    # random subsets per image (Quantus default)
    randomisation_similarity: str = "ssim"     # model_randomisation: ssim | spearman
    consistency_crop_scale: list[float] = field(default_factory=lambda: [0.08, 1.0])   # consistency: area of T's crop
    # ROAD (road_morf, road_lerf, road): fractions of pixels removed and imputed, noise of the imputation
    road_fractions: list[float] = field(default_factory=lambda: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    road_noise: float = 0.01
    # pair analysis (xai_utils.ops.pairs): explanations of the similarity of two images; empty lists: none
    pair_methods: list[str] = field(default_factory=list)     # registry names in xai_utils.ops.pairs.PAIR_METHODS
    pair_method_options: dict[str, dict[str, Any]] = field(default_factory=dict)   # {method: {option: value}}
    pair_kinds: list[str] = field(default_factory=lambda: ["view", "same", "different"])
    pair_samples: int = 32                     # pairs of each kind, drawn from the evaluation subset
    pair_seed: int = 0                         # the pair set and the second views
    pair_space: str = "cosine"                 # cosine (pooled features) | projection (SCL head) | distance (-||.||^2)
    pair_metrics: list[str] = field(default_factory=list)     # registry names in xai_utils.ops.pairs.PAIR_METRICS
    pair_pixels_per_step: int = 32             # insertion / deletion: pixels per step (32 steps on 32 px)
    pair_blur_kernel: int = 5                  # insertion: the blurred start image
    pair_blur_sigma: float = 2.0
    pair_max_sensitivity_samples: int = 10
    pair_max_sensitivity_radius: float = 0.2
    # statistics
    nan_pairing: str = "pairs"                 # pairs (pair by image, then drop NaN pairs) | per_model (authors')
    kept_images: str = "correct"               # the images the statistics keep: correct (the paper's) | all (rehearsals)

    def __post_init__(self) -> None:
        if self.data_kind == "imagefolder" and self.image_size:   # every process that reads the run knows its data
            register_imagefolder(self.dataset, self.image_size)
        rule = PROTOCOLS.get(self.protocol)
        if rule is not None:
            for key, value in rule(self).items():
                setattr(self, key, value)

    @property
    def brought(self) -> bool:
        """Whether the run's model is brought as a file (imported, not trained)."""
        return self.checkpoint is not None

    @property
    def key(self) -> RunKey:
        return RunKey(self.dataset, self.objective, self.seed)

    @property
    def run_id(self) -> str:
        return self.key.id

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def config_hash(self, keys: Optional[typing.Iterable[str]] = None) -> str:
        """Short stable hash of the resolved settings (or of ``keys`` only)."""
        d = self.to_dict()
        if keys is not None:
            d = {k: d[k] for k in keys}
        blob = json.dumps(d, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        return cls(**validate_run_keys(d, where="run config"))


RUN_KEYS: dict[str, Any] = {f.name: f for f in fields(RunConfig)}
CALIBRATIONS = ("auto", "heldout", "crossfit")


def resolve_calibration(cfg: RunConfig) -> str:
    """Where a run's temperature is fitted: ``calibration``, with ``auto`` resolved to held-out
    training images when the run trains on a subset, else to cross-fitting on the evaluation subset."""
    if cfg.calibration != "auto":
        return cfg.calibration
    return "crossfit" if cfg.train_subset is None else "heldout"


def merge_settings(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``update``; mappings are merged key by key (recursively)."""
    out = dict(base)
    for k, v in update.items():
        out[k] = merge_settings(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# ----------------------------------------------------------------------------- the form of values

def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        return " or ".join(_type_name(a) for a in args) + " or null"
    if origin is list:
        return f"list of {_type_name(get_args(tp)[0])}"
    if origin is dict:
        return f"mapping of {_type_name(get_args(tp)[0])} to {_type_name(get_args(tp)[1])}"
    if tp is Any:
        return "value"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted for floats."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key, where)
    if tp is Any:
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: '{key}' must be a {_type_name(tp)}, got {value!r}")
        return [_coerce(v, get_args(tp)[0], key, where) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: '{key}' must be a {_type_name(tp)}, got {value!r}")
        kt, vt = get_args(tp)
        return {_coerce(k, kt, key, where): _coerce(v, vt, f"{key}.{k}", where) for k, v in value.items()}
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(f"{where}: '{key}' must be true or false, got {value!r}")
    if tp is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{where}: '{key}' must be an int, got {value!r}")
    if not isinstance(value, tp):
        raise ConfigError(f"{where}: '{key}' must be a {_type_name(tp)}, got {value!r}")
    return value


_HINTS = typing.get_type_hints(RunConfig)


def validate_run_keys(d: dict[str, Any], where: str) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected a mapping of settings, got {d!r}")
    out = {}
    for key, value in d.items():
        if key not in RUN_KEYS:
            raise ConfigError(
                f"{where}: unknown key '{key}'; valid keys are: {', '.join(sorted(RUN_KEYS))}")
        out[key] = _coerce(value, _HINTS[key], key, where)
    return out
