"""Where a study's files are: the key of a run, its folder, and the name of every file in it.

Results go under the repository's ``results/`` and tables and figures under its ``figures/``
(the environment variables ``XAI_RESULTS`` and ``XAI_FIGURES`` move them); a relative folder
given anywhere (a profile, ``--set``, a notebook parameter) is read against the repository,
never the working directory, so a notebook opened in ``notebooks/`` and ``make reproduce``
find the same files.

One folder per study (``<results_root>/<profile>/``), one per run below it::

    <dataset>/<objective>/seed<k>/
        config.json                 resolved RunConfig (written by training)
        train_log.jsonl             one JSON object per epoch (and probe summary)
        checkpoint.pt               latest training state, for resuming
        checkpoint.prev.pt          the one before it (read when checkpoint.pt is unreadable)
        model.pt                    final explained model: {"config": ..., "state_dict": ...}
        train_summary.json          test accuracy, wall time, epochs
        predictions.npz             fp32 logits, predicted classes and labels of every test image
        embeddings.npz              test features (pooled backbone) and a 2-D projection
        calibration.json            temperature of the explained model, ECE before/after (if a metric needs it)
        attributions/<method>.npz   maps [N,1,H,W] float32, targets, preds, labels, indices, options
        pairs/<method>.npz          pair maps of the pair analysis; pairs/curves_<method>.npz their curves
        results.csv                 per-sample metric values (long format)
        curves/<method>.npz         pixel-flipping curves per sample
        stages/<stage>.json         completion marker with the config hash of that stage
        fingerprint.json            the machine and software of each stage that computed here
        notebooks/NN_<stage>.ipynb  executed notebooks (pipeline)
        protocols/<name>/           the same run explained and scored under another evaluation
                                    protocol: config.json, attributions/, results.csv, curves/,
                                    stages/, notebooks/ (the model is the run's own)

Only names and paths live here; reading and writing them is the stages' (``stages.files``
writes, ``stages.artefacts`` reads and checks).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from ..registry import StrEnum

PathLike = Union[str, Path]

PROJECT_DIR = Path(__file__).resolve().parents[2]   # the repository (the package is installed editable)


def project_path(path: PathLike) -> Path:
    """``path`` itself when absolute (``~`` expanded), else read against the repository."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else PROJECT_DIR / path


def results_home() -> Path:
    """Where studies' results go unless a profile says otherwise: ``$XAI_RESULTS`` or ``results/``."""
    return project_path(os.environ.get("XAI_RESULTS") or "results")


def figures_home() -> Path:
    """Where studies' tables and figures go: ``$XAI_FIGURES`` or ``figures/`` (one folder per profile)."""
    return project_path(os.environ.get("XAI_FIGURES") or "figures")


def run_folder(run: PathLike) -> Path:
    """A run's folder from its path under :func:`results_home`, ``<profile>/<dataset>/<objective>/seed<k>``
    (e.g. ``smoke/shapes/ce/seed0``; ``.../protocols/<name>`` for another protocol's evaluation),
    or from its folder's absolute path."""
    path = Path(run).expanduser()
    return path if path.is_absolute() else results_home() / path


class Stage(StrEnum):
    """The stages of a study, in order: three for each run, then the study's figures."""
    TRAIN = "train"
    ATTRIBUTE = "attribute"
    EVALUATE = "evaluate"
    FIGURES = "figures"


RUN_STAGES = (Stage.TRAIN, Stage.ATTRIBUTE, Stage.EVALUATE)

# files of a run folder
CONFIG = "config.json"
TRAIN_LOG = "train_log.jsonl"
CHECKPOINT = "checkpoint.pt"
PREVIOUS_CHECKPOINT = "checkpoint.prev.pt"
MODEL = "model.pt"
TRAIN_SUMMARY = "train_summary.json"
PREDICTIONS = "predictions.npz"
EMBEDDINGS = "embeddings.npz"
CALIBRATION = "calibration.json"
RESULTS = "results.csv"
GROUND_TRUTH = "ground_truth.csv"       # planted datasets: what the model uses, by intervention
FINGERPRINT = "fingerprint.json"
# folders of a run folder (a study folder has stages/ and notebooks/ too, for its figures)
ATTRIBUTIONS = "attributions"
PAIRS = "pairs"
CURVES = "curves"
STAGES = "stages"
NOTEBOOKS = "notebooks"
PROTOCOLS = "protocols"
SEED_PREFIX = "seed"
# the columns of results.csv, in order: one row per image (or pair) x method x metric
RESULT_COLUMNS = ("run_id", "dataset", "objective", "seed", "sample_index", "pair", "true", "pred", "correct",
                  "method", "metric", "value")


@dataclass(frozen=True)
class RowName:
    """The ``metric`` column of a row of ``results.csv``: a metric's name, qualified in brackets
    where one metric gives several rows: a variant (``continuity[sigma=0.05]``), a pair kind
    (``pair_deletion[same]``) or both (``pair_deletion[same,conditional]``). Built and read
    back only here."""
    metric: str
    qualifiers: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.metric}[{','.join(self.qualifiers)}]" if self.qualifiers else self.metric

    @classmethod
    def parse(cls, name: str) -> "RowName":
        metric, _, rest = str(name).partition("[")
        return cls(metric, tuple(rest[:-1].split(",")) if rest.endswith("]") else ())

    @classmethod
    def of_pair(cls, metric: str, kind: str, variant: str = "") -> "RowName":
        """A pair metric's row for one kind of pair (and one of its variants)."""
        return cls(metric, (kind, variant) if variant else (kind,))

    @property
    def kind_and_variant(self) -> tuple[str, str]:
        """(pair kind, variant) of a pair row ("" where absent)."""
        kind, variant = (*self.qualifiers, "", "")[:2]
        return kind, variant


@dataclass(frozen=True, order=True)
class RunKey:
    """What names a run of a study: its dataset, objective and seed; ``id`` is how it is
    written (``fashion_mnist/ce/seed0``) and :meth:`folder` where it lives."""

    dataset: str
    objective: str
    seed: int

    @property
    def id(self) -> str:
        return f"{self.dataset}/{self.objective}/{SEED_PREFIX}{self.seed}"

    def folder(self, study: PathLike) -> Path:
        """The run's folder in the study folder ``study`` (``<results_root>/<profile>``)."""
        return Path(study) / self.dataset / self.objective / f"{SEED_PREFIX}{self.seed}"

    @classmethod
    def of_folder(cls, run_dir: PathLike) -> "RunKey":
        """The key a run folder's path spells (``.../<dataset>/<objective>/seed<k>``)."""
        run_dir = Path(run_dir)
        return cls(run_dir.parent.parent.name, run_dir.parent.name, seed_number(run_dir.name))


def seed_number(text: str) -> int:
    """``3`` for ``"seed3"`` or ``"3"``."""
    return int(text.removeprefix(SEED_PREFIX))


def study_dir(results_root: Optional[PathLike], profile: str) -> Path:
    """A study's folder: ``<results_root>/<profile>`` (``results_root``: :func:`project_path`;
    None: :func:`results_home`)."""
    return (results_home() if results_root is None else project_path(results_root)) / profile


def run_folders(study: PathLike) -> list[Path]:
    """The run folders present in a study folder, sorted (whatever their state)."""
    return [p for p in sorted(Path(study).glob(f"*/*/{SEED_PREFIX}*")) if p.is_dir()]


def protocol_dir(run_dir: PathLike, protocol: str) -> Path:
    """Where a run is explained and scored under a further evaluation protocol."""
    return Path(run_dir) / PROTOCOLS / protocol


def protocol_dirs(run_dir: PathLike) -> list[Path]:
    """The further protocols' evaluation folders present in a run folder, sorted."""
    return sorted(p for p in (Path(run_dir) / PROTOCOLS).glob("*") if p.is_dir())


def trained_run_dir(folder: PathLike) -> Path:
    """The run folder holding the trained model for ``folder``: itself, or for an evaluation
    folder ``<run>/protocols/<name>/`` the run folder above it."""
    folder = Path(folder)
    if not (folder / MODEL).is_file() and folder.parent.name == PROTOCOLS:
        return folder.parent.parent
    return folder


def trained_model_path(folder: PathLike) -> Path:
    """The ``model.pt`` a run (or one of its protocol folders) explains: its trained run's."""
    return trained_run_dir(folder) / MODEL


def attribution_path(run_dir: PathLike, method: str) -> Path:
    """Where a run keeps one method's maps: ``attributions/<method>.npz``."""
    return Path(run_dir) / ATTRIBUTIONS / f"{method}.npz"


def curves_path(run_dir: PathLike, method: str) -> Path:
    """Where a run keeps one method's metric curves: ``curves/<method>.npz``."""
    return Path(run_dir) / CURVES / f"{method}.npz"


def pairs_path(run_dir: PathLike, method: str) -> Path:
    """A method's pair maps (the pair analysis)."""
    return Path(run_dir) / PAIRS / f"{method}.npz"


def pair_curves_path(run_dir: PathLike, method: str) -> Path:
    """The deletion curves of a method's pair maps."""
    return Path(run_dir) / PAIRS / f"curves_{method}.npz"


def stage_marker(folder: PathLike, stage: Stage) -> Path:
    """The file that says a stage finished, with its hash: ``stages/<stage>.json``."""
    return Path(folder) / STAGES / f"{stage}.json"


def notebook_path(folder: PathLike, notebook: str) -> Path:
    """Where the executed copy of a notebook is kept: ``notebooks/<notebook>``."""
    return Path(folder) / NOTEBOOKS / notebook
