"""A study's saved results, read back: its run folders and their keys, every run's
``results.csv`` (one long table, with each evaluation's protocol) and every run's training
summary and calibration. Everything is read through the checked readers of
:mod:`xai_utils.stages.artefacts`; the statistics (:mod:`.stats`) start from these tables."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import pandas as pd

from ..settings import layout as runs
from ..stages.artefacts import load_json, load_results, load_run_config

log = logging.getLogger(__name__)
PathLike = Union[str, Path]


def find_run_dirs(results_root: Optional[PathLike], profile: str) -> list[Path]:
    """The run folders of a study (:func:`~xai_utils.settings.layout.run_folders`) that have a
    config, results or a training summary (``results_root``: as :func:`~xai_utils.settings.layout.study_dir`
    reads it, None for the repository's ``results/``)."""
    return [p for p in runs.run_folders(runs.study_dir(results_root, profile))
            if any((p / f).is_file() for f in (runs.CONFIG, runs.RESULTS, runs.TRAIN_SUMMARY))]


def run_key(run_dir: Path) -> runs.RunKey:
    """The key of a run folder, from its config.json when present, else from its path."""
    if not (run_dir / runs.CONFIG).is_file():
        return runs.RunKey.of_folder(run_dir)
    return load_run_config(run_dir).key


def empty_results() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(
        runs.RESULT_COLUMNS, ("str", "str", "str", "int64", "int64", "str", "int64", "int64", "bool", "str", "str",
                              "float64"))})


def evaluation_dirs(run_dirs: Sequence[Path]) -> list[Path]:
    """Every evaluation folder of the runs: the run folders, then their ``protocols/<name>/``."""
    return [*run_dirs, *(p for rd in run_dirs for p in runs.protocol_dirs(rd))]


def _setting(folder: Path, key: str, default: str) -> str:
    """A setting of a run or evaluation folder (its config.json; ``default`` without one)."""
    path = Path(folder) / runs.CONFIG
    return str(load_json(path).get(key, default)) if path.is_file() else default


def protocol_of(folder: Path) -> str:
    """The evaluation protocol of a run or evaluation folder (its config.json; "corrected" if absent)."""
    return _setting(folder, "protocol", "corrected")


def kept_images(df: pd.DataFrame, folder: PathLike) -> pd.DataFrame:
    """A run's ``results.csv`` rows with ``correct`` as the statistics read it: the correctly
    classified images, or every image when the run's setting ``kept_images`` is ``all`` (a
    rehearsal's near-chance models may classify none of its few images correctly)."""
    return df.assign(correct=True) if _setting(Path(folder), "kept_images", "correct") == "all" else df


def study_results(results_root: Optional[PathLike] = None, profile: str = "smoke",
                  run_dirs: Optional[Sequence[Path]] = None, all_protocols: bool = False) -> pd.DataFrame:
    """The ``results.csv`` of every run of a study (or of ``run_dirs``), read by
    :func:`~xai_utils.stages.artefacts.load_results` and concatenated (long format, one row per
    run x sample x method x metric, plus the column ``protocol``). With ``all_protocols`` also
    every further protocol's evaluation (``<run>/protocols/<name>/``). Runs without results are
    logged and skipped. The column ``correct`` says which rows the statistics keep: the
    correctly classified images, or every image of a run whose setting ``kept_images`` is
    ``all`` (a rehearsal's near-chance models)."""
    frames = []
    folders = find_run_dirs(results_root, profile) if run_dirs is None else list(run_dirs)
    for rd in (evaluation_dirs(folders) if all_protocols else folders):
        if not (rd / runs.RESULTS).is_file():
            log.info("no %s in %s (evaluation not run yet): skipped", runs.RESULTS, rd)
            continue
        df = load_results(rd)[list(runs.RESULT_COLUMNS)].assign(protocol=protocol_of(rd))
        frames.append(kept_images(df, rd))
    if not frames:
        log.warning("no results.csv under %s", runs.study_dir(results_root, profile))
        return empty_results().assign(protocol=pd.Series(dtype="str"))
    out = pd.concat(frames, ignore_index=True)
    out["seed"] = out["seed"].astype(int)
    out["sample_index"] = out["sample_index"].astype(int)
    return out


# from calibration.json (xai_utils.stages.calibrate): NaN for runs without it
CALIBRATION_COLUMNS = ("temperature", "ece_before", "ece_after")


def load_summaries(results_root: Optional[PathLike] = None, profile: str = "smoke",
                   run_dirs: Optional[Sequence[Path]] = None) -> pd.DataFrame:
    """One row per trained run (of the profile, or of ``run_dirs``): run_id, dataset,
    objective, seed, test_accuracy (percent), wall_time_s, run_dir, and the temperature and
    ECE before/after of ``calibration.json`` (NaN without one) and where the temperature was
    fitted, ``calibration`` ("heldout" or "crossfit"; empty without one). Runs without
    ``train_summary.json`` are skipped (logged)."""
    rows = []
    for rd in (find_run_dirs(results_root, profile) if run_dirs is None else run_dirs):
        p = rd / runs.TRAIN_SUMMARY
        if not p.is_file():
            log.info("no %s in %s: skipped", runs.TRAIN_SUMMARY, rd)
            continue
        s = load_json(p)
        key = run_key(rd)
        cal = load_json(rd / runs.CALIBRATION) if (rd / runs.CALIBRATION).is_file() else {}
        rows.append({"run_id": key.id, "dataset": key.dataset, "objective": key.objective, "seed": key.seed,
                     "test_accuracy": float(s["test_accuracy"]) if s.get("test_accuracy") is not None else np.nan,
                     "wall_time_s": float(s.get("wall_time_s", np.nan) or np.nan), "run_dir": str(rd),
                     **{k: float(cal.get(k, np.nan)) for k in CALIBRATION_COLUMNS},
                     "calibration": cal.get("method", "heldout") if cal else ""})
    cols = ["run_id", "dataset", "objective", "seed", "test_accuracy", "wall_time_s", "run_dir", *CALIBRATION_COLUMNS,
            "calibration"]
    return pd.DataFrame(rows, columns=cols)
