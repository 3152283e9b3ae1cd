"""The files of an earlier stage, read and verified: a truncated or unreadable file is named in
one line (:class:`~xai_utils.errors.ArtefactError`, with the stage that remakes it) instead of
reaching the next stage as a deep traceback.

Every file is written atomically (:mod:`.layout`), so a killed or failed write leaves the
previous file; what these readers catch is damage from outside (a copy cut short, a full disk
under another tool, a file edited by hand). What each kind can detect:

* ``.pt`` and ``.npz`` are zip archives whose directory sits at the end: a cut file does not
  open. :func:`load_npz` decompresses every array it returns, so a damaged member is caught too.
* ``.csv`` (:func:`read_csv`): a file that does not end with a newline was cut inside a row;
  a row with more fields than the header is a parse error. A cut exactly at a row boundary
  leaves a valid, shorter table, which no reader of the file alone can tell.
* ``.json`` (:func:`load_json`): anything that does not parse.
"""
from __future__ import annotations

import contextlib
import json
import pickle
import zipfile
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np
import pandas as pd
import torch

from ..errors import ArtefactError
from . import layout as runs

PathLike = Union[str, Path]

# Which stage writes each file of a run folder (by name, then by folder): the stage to re-run.
PRODUCED_BY: dict[str, str] = {
    runs.MODEL: "train", runs.CHECKPOINT: "train", runs.PREVIOUS_CHECKPOINT: "train", runs.CONFIG: "train",
    runs.TRAIN_SUMMARY: "train", runs.PREDICTIONS: "train", runs.EMBEDDINGS: "train", runs.TRAIN_LOG: "train",
    runs.RESULTS: "evaluate", "calibration.json": "evaluate",
}
PRODUCED_IN: dict[str, str] = {"attributions": "attribute", "pairs": "attribute", "curves": "evaluate"}

# What a damaged file raises in the readers below (torch: RuntimeError from its zip reader).
DAMAGE = (OSError, EOFError, ValueError, KeyError, RuntimeError, zipfile.BadZipFile, pickle.UnpicklingError,
          UnicodeDecodeError, pd.errors.ParserError)


def producing_stage(path: PathLike) -> str:
    """The stage that writes ``path`` (``pairs/curves_*.npz`` are the evaluation's)."""
    path = Path(path)
    if path.name in PRODUCED_BY:
        return PRODUCED_BY[path.name]
    if path.parent.name == "pairs" and path.name.startswith("curves_"):
        return "evaluate"
    return PRODUCED_IN.get(path.parent.name, "evaluate")


@contextlib.contextmanager
def reading(path: PathLike) -> Iterator[None]:
    """Turn any error of reading ``path`` into an :class:`ArtefactError` naming it; a missing
    file stays a FileNotFoundError (the callers say which stage to run first)."""
    try:
        yield
    except (ArtefactError, FileNotFoundError):
        raise
    except DAMAGE as e:
        detail = str(e).splitlines()[0].split(". ")[0] if str(e) else "no detail"   # its first sentence
        reason = f"{type(e).__name__}: {detail}"[:160]
        raise ArtefactError(path, reason, producing_stage(path)) from e


def load_torch(path: PathLike) -> Any:
    """A ``torch.save`` file (model, checkpoint), on the CPU. Loaded with ``weights_only``:
    what the stages save is tensors, numbers, strings, lists and dicts, and a file holding
    anything else (code that unpickling would run) is refused as unreadable."""
    with reading(path):
        return torch.load(path, map_location="cpu", weights_only=True)


def load_npz(path: PathLike, keys: Optional[Sequence[str]] = None) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` (every one, or ``keys``), decompressed here so that damage
    shows now rather than where an array is first used."""
    with reading(path), np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in (z.files if keys is None else keys)}


def read_csv(path: PathLike, **kwargs: Any) -> pd.DataFrame:
    """A CSV of a stage (``pandas.read_csv`` arguments), refused when it was cut inside a row."""
    with reading(path):
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            if size == 0:
                raise ValueError("empty file")
            f.seek(size - 1)
            if f.read(1) != b"\n":
                raise ValueError("the last row has no end: the file was cut")
        return pd.read_csv(path, **kwargs)


def load_json(path: PathLike) -> Any:
    """A JSON file of a stage (config, calibration, summary)."""
    with reading(path):
        return json.loads(Path(path).read_text())
