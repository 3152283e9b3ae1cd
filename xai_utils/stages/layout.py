"""Layout of a run folder and small, atomic file helpers shared by every stage.

One folder per run (``results/<profile>/<dataset>/<objective>/seed<k>/``)::

    config.json                 resolved RunConfig (written by training)
    train_log.jsonl             one JSON object per epoch (and probe summary)
    checkpoint.pt               latest training state, for resuming
    checkpoint.prev.pt          the one before it (read when checkpoint.pt is unreadable)
    model.pt                    final explained model: {"config": ..., "state_dict": ...}
    train_summary.json          test accuracy, wall time, epochs
    predictions.npz             fp32 logits, predicted classes and labels of every test image
    embeddings.npz              test features (pooled backbone) and a 2-D projection
    attributions/<method>.npz   maps [N,1,H,W] float32, targets, preds, labels, indices, options
    results.csv                 per-sample metric values (long format)
    curves/<method>.npz         pixel-flipping curves per sample
    stages/<stage>.json         completion marker with the config hash of that stage
    fingerprint.json            the machine and software of each stage that computed here (stages.fingerprint)
    notebooks/NN_<stage>.ipynb  executed notebooks (pipeline)
    calibration.json            temperature of the explained model, ECE before/after (if a metric needs it)
    protocols/<name>/           the same run explained and scored under another evaluation protocol:
                                config.json, attributions/, results.csv, curves/, stages/, notebooks/
                                (the model is the run's own)
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Union

import numpy as np
import torch

from ..errors import ArtefactError
from ..settings.run_config import RunConfig

PathLike = Union[str, Path]

CONFIG = "config.json"
TRAIN_LOG = "train_log.jsonl"
CHECKPOINT = "checkpoint.pt"
PREVIOUS_CHECKPOINT = "checkpoint.prev.pt"
MODEL = "model.pt"
TRAIN_SUMMARY = "train_summary.json"
EMBEDDINGS = "embeddings.npz"
PREDICTIONS = "predictions.npz"
RESULTS = "results.csv"


def trained_run_dir(folder: PathLike) -> Path:
    """The run folder holding the trained model for ``folder``: itself, or for an evaluation
    folder ``<run>/protocols/<name>/`` the run folder above it."""
    folder = Path(folder)
    if not (folder / MODEL).is_file() and folder.parent.name == "protocols":
        return folder.parent.parent
    return folder


def trained_model_path(folder: PathLike) -> Path:
    return trained_run_dir(folder) / MODEL


def attribution_path(run_dir: PathLike, method: str) -> Path:
    return Path(run_dir) / "attributions" / f"{method}.npz"


def curves_path(run_dir: PathLike, method: str) -> Path:
    return Path(run_dir) / "curves" / f"{method}.npz"


def stage_marker(run_dir: PathLike, stage: str) -> Path:
    return Path(run_dir) / "stages" / f"{stage}.json"


def _atomic(path: PathLike, write: Callable[[str], None]) -> Path:
    """Write through a temporary file in the same folder, then rename: never half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def save_json(path: PathLike, obj: Any) -> Path:
    return _atomic(path, lambda t: Path(t).write_text(json.dumps(obj, indent=2, sort_keys=True, default=str)))


def load_json(path: PathLike) -> Any:
    return json.loads(Path(path).read_text())


def save_torch(path: PathLike, obj: Any) -> Path:
    return _atomic(path, lambda t: torch.save(obj, t))


def save_npz(path: PathLike, **arrays: Any) -> Path:
    def write(t: str) -> None:
        with open(t, "wb") as f:
            np.savez_compressed(f, **arrays)
    return _atomic(path, write)


def save_text(path: PathLike, text: str) -> Path:
    return _atomic(path, lambda t: Path(t).write_text(text))


def append_jsonl(path: PathLike, obj: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(obj, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: PathLike) -> list[dict]:
    """The records of a ``.jsonl`` log; a last line cut by a kill during its append (no newline,
    not JSON) is dropped, the record is written again when that epoch is trained again."""
    path = Path(path)
    if not path.is_file():
        return []
    text = path.read_text()
    lines = text.split("\n")
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except ValueError as e:
            if i == len(lines) - 1:           # the unfinished last append
                break
            raise ArtefactError(path, f"line {i + 1} is not JSON: {e}", "train") from e
    return out


def remove_partial_writes(folder: PathLike) -> list[Path]:
    """Delete the temporaries of writes a killed process left (``.<name>.*.tmp`` of
    :func:`_atomic`) in ``folder`` and below; call it only while holding the run's lock."""
    gone = [p for p in Path(folder).rglob(".*.tmp") if p.is_file()]
    for p in gone:
        p.unlink(missing_ok=True)
    return gone


def load_run_config(run_dir: Union[str, Path]) -> RunConfig:
    """Read ``config.json`` written by the training stage of a run."""
    p = Path(run_dir) / CONFIG
    if not p.is_file():
        raise FileNotFoundError(f"{p} not found: train the run first (notebook 01_train or "
                                f"`python -m xai_utils.pipeline --stage train`)")
    try:
        stored = json.loads(p.read_text())
    except ValueError as e:
        raise ArtefactError(p, f"{type(e).__name__}: {e}", "train") from e
    return RunConfig.from_dict(stored)
