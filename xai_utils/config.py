"""Study profiles: one YAML format, one loader that rejects unknown keys.

A profile (``configs/<name>.yaml``) describes a whole study: which datasets, objectives
and seeds to run, and the settings of every run. Settings are flat keys (the fields of
:class:`RunConfig`) given in a ``settings`` mapping under *selectors*, merged from the
least to the most specific::

    default            -> every run
    <objective>        -> every run of that objective        (e.g. ``scl``)
    <dataset>          -> every run on that dataset          (e.g. ``shapes``)
    <dataset>/<objective>                                    (e.g. ``cifar10/scl``)

``load_profile(name, **overrides)`` applies overrides last: a top-level key (``seeds``,
``objectives``, ``datasets``, ``protocols``, ``results_root``, ``figures_root``) replaces the profile's value, a run key
(``epochs=3``) applies to every run. Mapping-valued keys (``method_options``) are merged
key by key, so ``{"eigencam": {"sign": "numpy"}}`` changes one option and keeps the others.

This module checks the *form* of every value (keys, types). Whether a value is allowed
(names in the registries of objectives, methods, metrics, ...; ranges; data present) is
checked by :mod:`xai_utils.validation`, which :func:`load_profile` calls before returning.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator, Optional, Union, get_args, get_origin

import yaml

# Profiles live in the repository's configs/ (an editable install, as the README and the
# notebooks' Colab cell do); XAI_CONFIG_DIR points elsewhere.
CONFIG_DIR = Path(os.environ.get("XAI_CONFIG_DIR", Path(__file__).resolve().parent.parent / "configs"))

class ConfigError(ValueError):
    """A profile or override is invalid; the message is one line saying what and how to fix it."""


def _official_protocol(cfg: "RunConfig") -> dict[str, Any]:
    """Every quirk of the authors' evaluation code (../shared/PAPER.md, "Quirks")."""
    return {
        "noise_space": "official",                       # noise on the normalised image, clamped to [0, 1]
        "method_options": merge_settings(cfg.method_options, {"eigencam": {"sign": "numpy"}}),  # SVD's sign
        "pixel_flipping_baseline": "black_normalised",   # "black" = the normalised image's minimum
        "pixel_flipping_tie_break": "quantus",           # NumPy's order of ties, on every device
        "explain_features": "raw" if cfg.dataset == "cifar10" else "trained",   # CIFAR probe on raw features
        "nan_pairing": "per_model",                      # NaNs dropped per model before the t-test
        "pair_methods": [], "pair_metrics": [],          # their code has no pair analysis
    }


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
    arch: str = "resnet18"                     # registry name in xai_utils.models
    widths: Optional[list[int]] = None         # stage widths; None = the architecture's own (64..512)
    proj_dim: int = 128                        # SCL projection head output
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
    # ExCon / ExConB (xai_utils.objectives.excon)
    excon_threshold: float = 0.5               # keep the pixels whose min-max scaled saliency exceeds it
    excon_warmup_epochs: int = 0               # epochs of plain SupCon before masked views are used
    excon_layer: str = "layer2.-1.conv2"       # the saliency's layer in the backbone (16x16 on 32 px inputs)
    # CGC (xai_utils.objectives.cgc)
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
    # (on the device, ties in feature order) | auto (stable on CUDA, quantus elsewhere); the
    # resolved rule is what the evaluation hash records
    pixel_flipping_tie_break: str = "auto"
    continuity_sigma: float = 0.02
    continuity_sigmas: list[float] = field(default_factory=list)   # extra sigmas: rows continuity[sigma=s]
    noise_space: str = "pixel"                 # pixel | official (see metrics.continuity_ssim)
    calibration_samples: int = 2000            # held-out training images for the temperature (pixel_flipping_calibrated)
    max_sensitivity_samples: int = 20          # noise draws per image (Quantus default 200)
    max_sensitivity_radius: float = 0.2        # uniform noise in [-r, r] (Quantus lower_bound)
    faithfulness_correlation_subset: int = 224  # features per random subset (Quantus default)
    faithfulness_correlation_runs: int = 100    # random subsets per image (Quantus default)
    randomisation_similarity: str = "ssim"     # model_randomisation: ssim | spearman
    consistency_crop_scale: list[float] = field(default_factory=lambda: [0.08, 1.0])   # consistency: area of T's crop
    # pair analysis (xai_utils.pairs): explanations of the similarity of two images; empty lists: none
    pair_methods: list[str] = field(default_factory=list)     # registry names in xai_utils.pairs.PAIR_METHODS
    pair_method_options: dict[str, dict[str, Any]] = field(default_factory=dict)   # {method: {option: value}}
    pair_kinds: list[str] = field(default_factory=lambda: ["view", "same", "different"])
    pair_samples: int = 32                     # pairs of each kind, drawn from the evaluation subset
    pair_seed: int = 0                         # the pair set and the second views
    pair_space: str = "cosine"                 # cosine (pooled features) | projection (SCL head) | distance (-||.||^2)
    pair_metrics: list[str] = field(default_factory=list)     # registry names in xai_utils.pairs.PAIR_METRICS
    pair_pixels_per_step: int = 32             # insertion / deletion: pixels per step (32 steps on 32 px)
    pair_blur_kernel: int = 5                  # insertion: the blurred start image
    pair_blur_sigma: float = 2.0
    pair_max_sensitivity_samples: int = 10
    pair_max_sensitivity_radius: float = 0.2
    # statistics
    nan_pairing: str = "pairs"                 # pairs (pair by image, then drop NaN pairs) | per_model (authors')

    def __post_init__(self) -> None:
        rule = PROTOCOLS.get(self.protocol)
        if rule is not None:
            for key, value in rule(self).items():
                setattr(self, key, value)

    @property
    def run_id(self) -> str:
        return f"{self.dataset}/{self.objective}/seed{self.seed}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def config_hash(self, keys: Optional[typing.Iterable[str]] = None) -> str:
        """Short stable hash of the resolved settings (or of ``keys`` only)."""
        d = self.to_dict()
        if d.get("pixel_flipping_tie_break") == "auto":     # hash the rule that will be used
            from .metrics.faithfulness import resolve_tie_break
            d["pixel_flipping_tie_break"] = resolve_tie_break("auto", _device_kind(self.device))
        if keys is not None:
            d = {k: d[k] for k in keys}
        blob = json.dumps(d, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        return cls(**_validate_run_keys(d, where="run config"))


RUN_KEYS: dict[str, Any] = {f.name: f for f in fields(RunConfig)}


def _device_kind(device: str) -> str:
    """'cuda' or 'cpu' (or another torch device type) for a device setting, without failing
    where the device is absent (hashes are computed before any check)."""
    if device == "auto":
        import torch
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device).split(":", 1)[0]

# Which settings each stage's results depend on (for skipping finished stages). Keys that
# change only where or how fast something runs (device, workers, batch sizes of inference,
# checkpoint period) are in no hash.
NO_RESULT_KEYS = ("device", "num_workers", "checkpoint_every", "batch_size_eval", "eval_chunk", "data_root")
STAGE_KEYS: dict[str, tuple[str, ...]] = {
    "attribute": ("eval_split", "eval_samples", "target", "protocol", "explain_features", "methods",
                  "method_options", "pair_methods", "pair_method_options", "pair_kinds", "pair_samples",
                  "pair_seed", "pair_space"),
    "evaluate": ("metrics", "metric_seed", "features_in_step", "pixel_flipping_baseline",
                 "pixel_flipping_tie_break", "continuity_sigma", "continuity_sigmas", "noise_space",
                 "calibration_samples", "max_sensitivity_samples", "max_sensitivity_radius",
                 "faithfulness_correlation_subset", "faithfulness_correlation_runs", "randomisation_similarity",
                 "consistency_crop_scale", "pair_metrics", "pair_pixels_per_step", "pair_blur_kernel",
                 "pair_blur_sigma", "pair_max_sensitivity_samples", "pair_max_sensitivity_radius"),
    "figures": ("nan_pairing",),
}
STAGE_KEYS["train"] = tuple(k for k in RUN_KEYS if k not in NO_RESULT_KEYS
                            and k not in STAGE_KEYS["attribute"] + STAGE_KEYS["evaluate"] + STAGE_KEYS["figures"])
STAGE_ORDER = ("train", "attribute", "evaluate", "figures")


def stage_keys(cfg: "RunConfig", stage: str) -> list[str]:
    """The settings a stage of this run depends on: the stage's keys, without those only
    other objectives read (so a new objective, or another objective's setting, changes no hash)
    and without the pair analysis's when the run has none."""
    from .objectives import foreign_settings
    foreign = set(foreign_settings(cfg.objective))
    if not cfg.pair_methods:                 # no pair analysis: its settings change nothing
        foreign |= {k for k in RUN_KEYS if k.startswith("pair_") and k != "pair_methods"}
    elif not cfg.pair_metrics:
        foreign |= set(PAIR_METRIC_KEYS)
    return [k for k in STAGE_KEYS[stage] if k not in foreign]


# the evaluation settings of the pair analysis (read only when a run lists pair_metrics)
PAIR_METRIC_KEYS = ("pair_pixels_per_step", "pair_blur_kernel", "pair_blur_sigma", "pair_max_sensitivity_samples",
                    "pair_max_sensitivity_radius")


def stage_hash(cfg: "RunConfig", stage: str) -> str:
    """Hash of the settings that a stage and the stages before it depend on."""
    keys = [k for s in STAGE_ORDER[:STAGE_ORDER.index(stage) + 1] for k in stage_keys(cfg, s)]
    return cfg.config_hash(keys)


def merge_settings(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``update``; mappings are merged key by key (recursively)."""
    out = dict(base)
    for k, v in update.items():
        out[k] = merge_settings(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


PROFILE_KEYS = ("description", "seeds", "objectives", "datasets", "protocols", "reference", "results_root",
                "figures_root", "settings")


@dataclass
class Profile:
    """A study: the cross product of datasets x objectives x seeds, with resolved settings.

    ``protocols`` (optional): evaluation protocols every trained run is explained and scored
    under, without retraining. The first is the run's own (its folder); each further one
    lives in ``<run folder>/protocols/<name>/`` (:meth:`evaluations`).
    """

    name: str
    description: str
    seeds: list[int]
    objectives: list[str]
    datasets: list[str]
    results_root: str
    settings: dict[str, dict[str, Any]]
    figures_root: str = str(CONFIG_DIR.parent / "figures")
    overrides: dict[str, Any] = field(default_factory=dict)
    path: Optional[str] = None
    protocols: Optional[list[str]] = None
    reference: Optional[str] = None          # paired tests against this objective only (default: every pair)

    def run_config(self, dataset: str, objective: str, seed: int, protocol: Optional[str] = None) -> RunConfig:
        """Resolve the settings of one run: default < objective < dataset < dataset/objective < overrides
        (< ``protocol``, or the first of the profile's ``protocols``)."""
        merged = RunConfig().to_dict()
        for selector in ("default", objective, dataset, f"{dataset}/{objective}"):
            merged = merge_settings(merged, self.settings.get(selector, {}))
        merged = merge_settings(merged, {k: v for k, v in self.overrides.items() if k in RUN_KEYS})
        merged.update(dataset=dataset, objective=objective, seed=seed)
        if protocol is not None or self.protocols:
            merged["protocol"] = protocol or self.protocols[0]
        return RunConfig(**merged)

    def runs(self) -> Iterator[RunConfig]:
        for dataset in self.datasets:
            for objective in self.objectives:
                for seed in self.seeds:
                    yield self.run_config(dataset, objective, seed)

    def run_dir(self, run: RunConfig) -> Path:
        return Path(self.results_root) / self.name / run.dataset / run.objective / f"seed{run.seed}"

    def evaluations(self, run: RunConfig) -> list[tuple[RunConfig, Path]]:
        """(settings, folder) of every evaluation of a trained run: its own protocol in the
        run folder, each further protocol of the profile in ``protocols/<name>/`` under it."""
        out = [(run, self.run_dir(run))]
        for p in (self.protocols or [])[1:]:
            out.append((self.run_config(run.dataset, run.objective, run.seed, p),
                        self.run_dir(run) / "protocols" / p))
        return out

    def figures_dir(self) -> Path:
        return Path(self.figures_root) / self.name


# ----------------------------------------------------------------------------- validation

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


def _validate_run_keys(d: dict[str, Any], where: str) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected a mapping of settings, got {d!r}")
    out = {}
    for key, value in d.items():
        if key not in RUN_KEYS:
            raise ConfigError(
                f"{where}: unknown key '{key}'; valid keys are: {', '.join(sorted(RUN_KEYS))}")
        out[key] = _coerce(value, _HINTS[key], key, where)
    return out


def _check_list(value: Any, key: str, allowed: Optional[tuple] = None, item=str) -> list:
    if not isinstance(value, list) or not value or not all(
            isinstance(v, item) and not isinstance(v, bool) for v in value):
        raise ConfigError(f"profile: '{key}' must be a non-empty list of {item.__name__}, got {value!r}")
    if allowed is not None:
        bad = [v for v in value if v not in allowed]
        if bad:
            raise ConfigError(f"profile: '{key}' has unknown entries {bad}; valid: {', '.join(allowed)}")
    return list(value)


def available_profiles() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def _resolve_path(name_or_path: Union[str, Path]) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        if not p.is_file():
            raise ConfigError(f"profile file '{p}' does not exist")
        return p
    candidate = CONFIG_DIR / f"{name_or_path}.yaml"
    if not candidate.is_file():
        raise ConfigError(
            f"unknown profile '{name_or_path}'; available: {', '.join(available_profiles())} "
            f"(or give a path to a .yaml file)")
    return candidate


def load_profile(name_or_path: Union[str, Path], **overrides: Any) -> Profile:
    """Load and validate a profile by name (``configs/<name>.yaml``) or path.

    Raises :class:`ConfigError` with a one-line message for a missing profile, an unknown
    key (listing the valid ones), a value of the wrong type, or a value that
    :func:`xai_utils.validation.check_run` rejects for some run (the data files are not
    looked for here: :func:`xai_utils.validation.check_profile` with ``data=True`` does).
    """
    path = _resolve_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"profile '{path}': not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"profile '{path}': top level must be a mapping")
    unknown = set(raw) - set(PROFILE_KEYS)
    if unknown:
        raise ConfigError(f"profile '{path.name}': unknown key '{sorted(unknown)[0]}'; "
                          f"valid top-level keys are: {', '.join(PROFILE_KEYS)}")

    top_over = {k: v for k, v in overrides.items() if k in PROFILE_KEYS and k != "settings"}
    run_over = {k: v for k, v in overrides.items() if k not in top_over}
    raw.update(top_over)

    from .data import DATASETS
    from .objectives import OBJECTIVES, paper_objectives
    seeds = _check_list(raw.get("seeds", [0]), "seeds", item=int)
    objectives = _check_list(raw.get("objectives", paper_objectives()), "objectives", tuple(OBJECTIVES))
    datasets = _check_list(raw.get("datasets"), "datasets", tuple(DATASETS))
    results_root = raw.get("results_root", "results")
    figures_root = raw.get("figures_root", str(CONFIG_DIR.parent / "figures"))
    for key, value in (("results_root", results_root), ("figures_root", figures_root)):
        if not isinstance(value, str):
            raise ConfigError(f"profile: '{key}' must be a str, got {value!r}")
    description = raw.get("description", "")
    protocols = raw.get("protocols")
    if protocols is not None:
        protocols = _check_list(protocols, "protocols", tuple(PROTOCOLS))
    reference = raw.get("reference")
    if reference is not None and reference not in objectives:
        raise ConfigError(f"profile: 'reference' must be one of the study's objectives "
                          f"({', '.join(objectives)}), got {reference!r}")

    settings_raw = raw.get("settings") or {}
    if not isinstance(settings_raw, dict):
        raise ConfigError("profile: 'settings' must be a mapping of selector -> settings")
    # any registered objective or dataset may have settings, used or not (--set objectives=[ce]
    # keeps a profile's scl block valid); a typo is still an error
    valid_selectors = (["default"] + list(OBJECTIVES) + list(DATASETS)
                       + [f"{d}/{o}" for d in DATASETS for o in OBJECTIVES])
    settings = {}
    for selector, block in settings_raw.items():
        if selector not in valid_selectors:
            raise ConfigError(f"profile '{path.name}': unknown settings selector '{selector}'; "
                              f"valid: {', '.join(valid_selectors)}")
        settings[selector] = _validate_run_keys(block or {}, where=f"profile '{path.name}' settings.{selector}")
    run_over = _validate_run_keys(run_over, where="override")
    profile = Profile(name=path.stem, description=description, seeds=seeds, objectives=objectives,
                      datasets=datasets, results_root=results_root, figures_root=figures_root,
                      settings=settings, overrides=run_over, path=str(path), protocols=protocols,
                      reference=reference)
    from .validation import check_profile
    check_profile(profile, data=False)
    return profile


def load_run_config(run_dir: Union[str, Path]) -> RunConfig:
    """Read ``config.json`` written by the training stage of a run."""
    p = Path(run_dir) / "config.json"
    if not p.is_file():
        raise FileNotFoundError(f"{p} not found: train the run first (notebook 01_train or "
                                f"`python -m xai_utils.pipeline --stage train`)")
    return RunConfig.from_dict(json.loads(p.read_text()))
