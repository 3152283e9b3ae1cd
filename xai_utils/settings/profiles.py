"""Study profiles: one YAML format, one loader that rejects unknown keys.

A profile (``configs/<name>.yaml``) describes a whole study: which datasets, objectives
and seeds to run, and the settings of every run. Settings are flat keys (the fields of
:class:`RunConfig`) given in a ``settings`` mapping under *selectors*, merged from the
least to the most specific::

    default            -> every run
    <objective>        -> every run of that objective        (e.g. ``scl``)
    <dataset>          -> every run on that dataset          (e.g. ``shapes``)
    <dataset>/<objective>                                    (e.g. ``cifar10/scl``)

Instead of ``objectives`` to train, a profile may bring models as files (``models:``, label ->
``{arch, checkpoint, num_classes, ...}``; a list of checkpoints are the replicates, which play
the seeds' part) and image folders (``data:``, name -> ``{kind: imagefolder, root, image_size}``):
the runs are then ``<dataset>/<label>/seed<k>``, the k-th checkpoint, imported instead of
trained (``docs/own-models.md``). Relative paths in them are read from the profile's folder.
``results_root`` and ``figures_root`` default to the repository's ``results/`` and ``figures/``
(or ``$XAI_RESULTS`` and ``$XAI_FIGURES``); a relative one is the repository's
(:func:`xai_utils.settings.layout.project_path`), never the working directory's.

``load_profile(name, **overrides)`` applies overrides last: a top-level key (``seeds``,
``objectives``, ``datasets``, ``protocols``, ``results_root``, ``figures_root``) replaces the profile's value, a run key
(``epochs=3``) applies to every run. Mapping-valued keys (``method_options``) are merged
key by key, so ``{"eigencam": {"sign": "numpy"}}`` changes one option and keeps the others.

:mod:`xai_utils.settings.run_config` checks the *form* of every value (keys, types). Whether a
value is allowed (names in the registries of objectives, methods, metrics, ...; ranges; data
present) is checked by :mod:`xai_utils.settings.validation`, which :func:`load_profile` calls
before returning.
"""

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import yaml

from ..errors import ConfigError
from ..study.brought import file_sha256
from ..study.data import DATA_KINDS, DATASETS, register_imagefolder
from ..study.objectives import OBJECTIVES, paper_objectives
from .layout import PROJECT_DIR, SEED_PREFIX, figures_home, project_path, protocol_dir, results_home, study_dir
from .rehearsal import SEEDS, SUFFIX, data_roots, shrink
from .run_config import PROTOCOLS, RUN_KEYS, RunConfig, merge_settings, validate_run_keys
from .validation import check_runs

# Profiles live in the repository's configs/ (an editable install, as the README and the
# notebooks' Colab cell do); XAI_CONFIG_DIR points elsewhere.
CONFIG_DIR = Path(os.environ.get("XAI_CONFIG_DIR", PROJECT_DIR / "configs"))

PROFILE_KEYS = ("description", "seeds", "objectives", "models", "datasets", "data", "protocols", "reference",
                "results_root", "figures_root", "settings")
# a brought model (``models: <label>: {...}``): its keys, the run settings they set
MODEL_KEYS = ("arch", "checkpoint", "num_classes", "widths", "mean", "std", "normalize_features", "probe")
DATA_KEYS = ("kind", "root", "image_size")


@dataclass(frozen=True)
class ModelFiles:
    """A model of a profile's ``models:``: its settings (``arch``, ``num_classes``, ...) and its
    checkpoints, one per replicate (absolute paths)."""
    settings: dict[str, Any]
    checkpoints: tuple[str, ...]


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
    figures_root: str = field(default_factory=lambda: str(figures_home()))
    overrides: dict[str, Any] = field(default_factory=dict)
    path: Optional[str] = None
    protocols: Optional[list[str]] = None
    reference: Optional[str] = None          # paired tests against this objective only (default: every pair)
    rehearse: bool = False                   # every run shrunk to minutes (:meth:`rehearsal`)
    figures_path: Optional[str] = None       # where the tables and figures go (default figures_root/name)
    stand_ins: dict[str, str] = field(default_factory=dict)   # rehearsal: dataset -> root of stand-in files
    given: dict[str, Any] = field(default_factory=dict)       # the overrides load_profile was given (--set)
    models: dict[str, ModelFiles] = field(default_factory=dict)   # label -> a model brought as files

    def run_config(self, dataset: str, objective: str, seed: int, protocol: Optional[str] = None) -> RunConfig:
        """Resolve the settings of one run: default < objective < dataset < dataset/objective < overrides
        (< ``protocol``, or the first of the profile's ``protocols``)."""
        merged = RunConfig().to_dict()
        for selector in ("default", objective, dataset, f"{dataset}/{objective}"):
            merged = merge_settings(merged, self.settings.get(selector, {}))
        merged = merge_settings(merged, {k: v for k, v in self.overrides.items() if k in RUN_KEYS})
        merged.update(dataset=dataset, objective=objective, seed=seed)
        if objective in self.models:                  # the model's own settings, and its seed-th checkpoint
            model = self.models[objective]
            path = model.checkpoints[seed]
            merged.update(model.settings, checkpoint=path, checkpoint_sha256=file_sha256(path))
        if protocol is not None or self.protocols:
            merged["protocol"] = protocol or self.protocols[0]
        cfg = RunConfig(**merged)
        return shrink(cfg) if self.rehearse else cfg

    def seeds_of(self, objective: str) -> list[int]:
        """The seeds of an objective: the profile's, or a brought model's replicates."""
        if objective in self.models:
            return list(range(len(self.models[objective].checkpoints)))
        return list(self.seeds)

    def runs(self) -> Iterator[RunConfig]:
        for dataset in self.datasets:
            for objective in self.objectives:
                for seed in self.seeds_of(objective):
                    yield self.run_config(dataset, objective, seed)

    def run_dir(self, run: RunConfig) -> Path:
        return run.key.folder(study_dir(self.results_root, self.name))

    def evaluations(self, run: RunConfig) -> list[tuple[RunConfig, Path]]:
        """(settings, folder) of every evaluation of a trained run: its own protocol in the
        run folder, each further protocol of the profile in ``protocols/<name>/`` under it."""
        out = [(run, self.run_dir(run))]
        for p in (self.protocols or [])[1:]:
            out.append((self.run_config(run.dataset, run.objective, run.seed, p),
                        protocol_dir(self.run_dir(run), p)))
        return out

    def figures_dir(self) -> Path:
        return Path(self.figures_path) if self.figures_path else Path(self.figures_root) / self.name

    def rehearsal(self) -> "Profile":
        """The same study shrunk to minutes (:mod:`xai_utils.settings.rehearsal`): at most two
        seeds, every run's amounts of work cut; results, tables and figures under
        ``<results_root>/<name>-rehearsal/`` (nothing under ``figures/``); stand-in data where
        a dataset's files are not on disk."""
        if self.rehearse:
            return self
        if self.models:
            raise ConfigError(f"profile '{self.name}' brings its models: nothing is trained, so there is nothing "
                              "to rehearse; run it as it is")
        name = self.name + SUFFIX
        results = Path(self.results_root) / name
        settings = {k: dict(v) for k, v in self.settings.items()}
        given = {d: self.run_config(d, self.objectives[0], self.seeds[0]).data_root for d in self.datasets}
        stand_ins = data_roots(given, results)
        for dataset, root in stand_ins.items():
            settings.setdefault(dataset, {})["data_root"] = root
        overrides = dict(self.overrides)
        if stand_ins and "data_root" in overrides:           # the others keep the root they were given
            root = overrides.pop("data_root")
            for dataset in self.datasets:
                if dataset not in stand_ins:
                    settings.setdefault(dataset, {})["data_root"] = root
        return dataclasses.replace(self, name=name, seeds=self.seeds[:SEEDS], settings=settings, overrides=overrides,
                                   rehearse=True, figures_path=str(results / "figures"), stand_ins=stand_ins)


def _check_list(value: Any, key: str, allowed: Optional[tuple] = None, item=str) -> list:
    if not isinstance(value, list) or not value or not all(
            isinstance(v, item) and not isinstance(v, bool) for v in value):
        raise ConfigError(f"profile: '{key}' must be a non-empty list of {item.__name__}, got {value!r}")
    if allowed is not None:
        bad = [v for v in value if v not in allowed]
        if bad:
            raise ConfigError(f"profile: '{key}' has unknown entries {bad}; valid: {', '.join(allowed)}")
    return list(value)


def _mapping(value: Any, where: str, keys: Optional[tuple[str, ...]] = None) -> dict[str, Any]:
    """``value`` as a mapping whose keys are among ``keys`` (any keys when None)."""
    if not isinstance(value, dict):
        raise ConfigError(f"profile: '{where}' must be a mapping, got {value!r}")
    unknown = [] if keys is None else sorted(set(value) - set(keys))
    if unknown:
        raise ConfigError(f"profile: '{where}' has unknown key '{unknown[0]}'; valid: {', '.join(keys)}")
    return value


def _path(value: Any, base: Path, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"profile: '{where}' must be a path, got {value!r}")
    return str((base / Path(value).expanduser()).resolve())


def _data(raw: Any, base: Path) -> dict[str, dict[str, Any]]:
    """``data:`` -> the run settings of each image folder (registered as a dataset here)."""
    out: dict[str, dict[str, Any]] = {}
    for name, block in _mapping(raw or {}, "data").items():
        block = _mapping(block, f"data.{name}", DATA_KEYS)
        if block.get("kind") not in DATA_KINDS:
            raise ConfigError(f"profile: 'data.{name}.kind' must be one of {', '.join(DATA_KINDS)}, "
                              f"got {block.get('kind')!r}")
        size = block.get("image_size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ConfigError(f"profile: 'data.{name}.image_size' must be a positive int, got {size!r}")
        try:
            register_imagefolder(str(name), size)
        except ValueError as e:
            raise ConfigError(f"profile: 'data.{name}': {e}") from None
        out[str(name)] = {"data_kind": block["kind"], "image_size": size,
                          "data_root": _path(block.get("root"), base, f"data.{name}.root")}
    return out


def _models(raw: dict[str, Any], base: Path) -> dict[str, ModelFiles]:
    """``models:`` -> label -> :class:`ModelFiles` (its checkpoints as absolute paths, each a file)."""
    if raw.get("models") is None:
        return {}
    for key in ("objectives", "seeds"):
        if key in raw:
            raise ConfigError(f"profile: '{key}' and 'models' exclude each other (the models are not trained; "
                              "their checkpoints are the seeds)")
    out = {}
    for label, block in _mapping(raw["models"], "models").items():
        label = str(label)
        if not label or "/" in label or label.startswith((".", SEED_PREFIX)):
            raise ConfigError(f"profile: model label {label!r} must be a plain folder name")
        block = _mapping(dict(block) if isinstance(block, dict) else block, f"models.{label}", MODEL_KEYS)
        for key in ("arch", "checkpoint", "num_classes"):
            if key not in block:
                raise ConfigError(f"profile: 'models.{label}' needs '{key}'")
        files = block.pop("checkpoint")
        files = files if isinstance(files, list) else [files]
        if not files:
            raise ConfigError(f"profile: 'models.{label}.checkpoint' is an empty list")
        paths = tuple(_path(f, base, f"models.{label}.checkpoint") for f in files)
        for p in paths:
            if not Path(p).is_file():
                raise ConfigError(f"profile: checkpoint {p} of model '{label}' not found")
        settings = validate_run_keys(block, where=f"profile: models.{label}")
        out[label] = ModelFiles(settings, paths)
    return out


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
    :func:`xai_utils.settings.validation.check_run` rejects for some run (the data files are not
    looked for here: :func:`xai_utils.settings.validation.check_runs` with ``data=True`` does).
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

    base = path.resolve().parent
    data = _data(raw.get("data"), base)
    models = _models(raw, base)
    seeds = _check_list(raw.get("seeds", [0]), "seeds", item=int)
    if models:
        objectives = list(models)
        seeds = list(range(max(len(m.checkpoints) for m in models.values())))
    else:
        objectives = _check_list(raw.get("objectives", paper_objectives()), "objectives", tuple(OBJECTIVES))
    datasets = _check_list(raw.get("datasets"), "datasets", tuple(DATASETS))
    roots = {"results_root": results_home(), "figures_root": figures_home()}
    for key in roots:          # a relative folder is the repository's, wherever we run from
        if key in raw:
            if not isinstance(raw[key], str) or not raw[key]:
                raise ConfigError(f"profile: '{key}' must be a folder, got {raw[key]!r}")
            roots[key] = project_path(raw[key])
    results_root, figures_root = (str(roots[k]) for k in ("results_root", "figures_root"))
    description = raw.get("description", "")
    protocols = raw.get("protocols")
    if protocols is not None:
        protocols = _check_list(protocols, "protocols", tuple(PROTOCOLS))
    reference = raw.get("reference")
    if reference is not None and reference not in objectives:
        raise ConfigError(f"profile: 'reference' must be one of the study's {'models' if models else 'objectives'} "
                          f"({', '.join(objectives)}), got {reference!r}")

    settings_raw = raw.get("settings") or {}
    if not isinstance(settings_raw, dict):
        raise ConfigError("profile: 'settings' must be a mapping of selector -> settings")
    # any registered objective or dataset may have settings, used or not (--set objectives=[ce]
    # keeps a profile's scl block valid); a typo is still an error
    kinds = list(OBJECTIVES) + [m for m in models if m not in OBJECTIVES]
    valid_selectors = (["default"] + kinds + list(DATASETS) + [f"{d}/{o}" for d in DATASETS for o in kinds])
    settings = {}
    for selector, block in settings_raw.items():
        if selector not in valid_selectors:
            raise ConfigError(f"profile '{path.name}': unknown settings selector '{selector}'; "
                              f"valid: {', '.join(valid_selectors)}")
        settings[selector] = validate_run_keys(block or {}, where=f"profile '{path.name}' settings.{selector}")
    for name, block in data.items():                  # the folder's own settings win over any selector's
        settings[name] = {**settings.get(name, {}), **block}
    run_over = validate_run_keys(run_over, where="override")
    profile = Profile(name=path.stem, description=description, seeds=seeds, objectives=objectives,
                      datasets=datasets, results_root=results_root, figures_root=figures_root,
                      settings=settings, overrides=run_over, path=str(path.resolve()), protocols=protocols,
                      reference=reference, given=dict(overrides), models=models)
    check_runs(profile.runs(), data=False)
    return profile
