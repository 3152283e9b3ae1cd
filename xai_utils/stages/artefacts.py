"""The files of an earlier stage, read and verified: a truncated or unreadable file is named in
one line (:class:`~xai_utils.errors.ArtefactError`, with the stage that remakes it) instead of
reaching the next stage as a deep traceback.

Every file is written atomically (:mod:`.files`), so a killed or failed write leaves the
previous file; what these readers catch is damage from outside (a copy cut short, a full disk
under another tool, a file edited by hand). Each reader turns into an ArtefactError only what
damage raises in it (:data:`ZIP_DAMAGE`, :data:`CSV_DAMAGE`, :data:`JSON_DAMAGE`); anything else
(a missing key after a change of schema, an out-of-memory error) propagates as itself.

* ``.pt`` and ``.npz`` are zip archives whose directory sits at the end, and every member
  carries a CRC: a cut file does not open, a changed byte fails its member's check
  (:func:`check_zip`; ``torch.load`` alone reads a changed byte without complaint).
* ``.csv`` (:func:`read_csv`): a file that does not end with a newline was cut inside a row;
  a row with more fields than the header is a parse error. A cut exactly at a row boundary
  leaves a valid, shorter table, which no reader of the file alone can tell.
* ``.json`` (:func:`load_json`): anything that does not parse; ``.jsonl`` (:func:`read_jsonl`):
  a line that does not parse, but the last (an append cut by a kill).
"""
from __future__ import annotations

import contextlib
import json
import pickle
import zipfile
import zlib
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np
import pandas as pd
import torch

from ..errors import ArtefactError
from ..settings import layout as runs
from ..settings.run_config import RunConfig

PathLike = Union[str, Path]

# Which stage writes each file of a run folder (by name, then by folder): the stage to re-run.
PRODUCED_BY: dict[str, runs.Stage] = {
    **dict.fromkeys((runs.MODEL, runs.CHECKPOINT, runs.PREVIOUS_CHECKPOINT, runs.CONFIG, runs.TRAIN_SUMMARY,
                     runs.PREDICTIONS, runs.EMBEDDINGS, runs.TRAIN_LOG), runs.Stage.TRAIN),
    runs.RESULTS: runs.Stage.EVALUATE, runs.CALIBRATION: runs.Stage.EVALUATE,
}
PRODUCED_IN: dict[str, runs.Stage] = {runs.ATTRIBUTIONS: runs.Stage.ATTRIBUTE, runs.PAIRS: runs.Stage.ATTRIBUTE,
                                      runs.CURVES: runs.Stage.EVALUATE}

# What damage raises in each reader (an I/O error of the disk is OSError in all of them).
ZIP_DAMAGE = (OSError, zipfile.BadZipFile, zlib.error, EOFError, pickle.UnpicklingError)
CSV_DAMAGE = (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError)
JSON_DAMAGE = (OSError, json.JSONDecodeError, UnicodeDecodeError)


def producing_stage(path: PathLike) -> runs.Stage:
    """The stage that writes ``path`` (``pairs/curves_*.npz`` are the evaluation's)."""
    path = Path(path)
    if path.name in PRODUCED_BY:
        return PRODUCED_BY[path.name]
    if path.parent.name == runs.PAIRS and path.name.startswith("curves_"):
        return runs.Stage.EVALUATE
    return PRODUCED_IN.get(path.parent.name, runs.Stage.EVALUATE)


def damaged(path: PathLike, reason: str) -> ArtefactError:
    """The error for a damaged ``path``, naming the stage that remakes it."""
    return ArtefactError(path, reason[:160], producing_stage(path))


@contextlib.contextmanager
def reading(path: PathLike, damage: tuple[type[BaseException], ...]) -> Iterator[None]:
    """Turn the errors in ``damage`` raised while reading ``path`` into an :class:`ArtefactError`
    naming it; a missing file stays a FileNotFoundError (the callers say which stage to run
    first), and any other error propagates unchanged."""
    try:
        yield
    except FileNotFoundError:
        raise
    except damage as e:
        detail = str(e).splitlines()[0].split(". ")[0] if str(e) else "no detail"   # its first sentence
        raise damaged(path, f"{type(e).__name__}: {detail}") from e


def check_zip(path: PathLike, crc: bool = True) -> None:
    """Open a ``.pt``/``.npz`` archive (a cut file has no directory) and, with ``crc``, check
    every member's CRC (raises the archive's error). ``np.load`` checks the CRC of each member
    it decompresses itself; ``torch.load`` does not."""
    with zipfile.ZipFile(path) as z:
        bad = z.testzip() if crc else None
    if bad is not None:
        raise zipfile.BadZipFile(f"member {bad} fails its CRC check")


def load_torch(path: PathLike) -> Any:
    """A ``torch.save`` file (model, checkpoint), on the CPU. Loaded with ``weights_only``:
    what the stages save is tensors, numbers, strings, lists and dicts, and a file holding
    anything else (code that unpickling would run) is refused as unreadable."""
    with reading(path, ZIP_DAMAGE):
        check_zip(path)
        return torch.load(path, map_location="cpu", weights_only=True)


def load_npz(path: PathLike, keys: Optional[Sequence[str]] = None) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` (every one, or ``keys``), decompressed here so that damage
    shows now rather than where an array is first used."""
    with reading(path, ZIP_DAMAGE):
        check_zip(path, crc=False)                 # each member read below is CRC-checked by zipfile
        z = np.load(path, allow_pickle=False)
        with z:
            return {k: z[k] for k in (z.files if keys is None else keys)}


def read_csv(path: PathLike, **kwargs: Any) -> pd.DataFrame:
    """A CSV of a stage (``pandas.read_csv`` arguments), refused when it was cut inside a row."""
    with reading(path, CSV_DAMAGE):
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            f.seek(max(size - 1, 0))
            last = f.read(1)
        if size == 0:
            raise damaged(path, "empty file")
        if last != b"\n":
            raise damaged(path, "the last row has no end: the file was cut")
        return pd.read_csv(path, **kwargs)


def load_json(path: PathLike) -> Any:
    """A JSON file of a stage (config, calibration, summary, marker)."""
    with reading(path, JSON_DAMAGE):
        return json.loads(Path(path).read_text())


def read_jsonl(path: PathLike) -> list[dict]:
    """The records of a ``.jsonl`` log; a last line cut by a kill during its append (no newline,
    not JSON) is dropped, the record is written again when that epoch is trained again."""
    path = Path(path)
    if not path.is_file():
        return []
    with reading(path, JSON_DAMAGE):
        lines = path.read_text().split("\n")
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:
            if i == len(lines) - 1:           # the unfinished last append
                break
            raise damaged(path, f"line {i + 1} is not JSON: {e}") from e
    return out


def load_run_config(run_dir: PathLike) -> RunConfig:
    """The ``config.json`` the training stage of a run wrote."""
    p = Path(run_dir) / runs.CONFIG
    if not p.is_file():
        raise FileNotFoundError(f"{p} not found: train the run first (notebook 01_train or "
                                f"`python -m xai_utils.pipeline --stage train`)")
    return RunConfig.from_dict(load_json(p))


def load_results(folder: PathLike) -> pd.DataFrame:
    """A run's (or evaluation folder's) ``results.csv``: one row per image x method x metric,
    ``correct`` as bool, ``value`` as float (NaN where a score has none), ``pair`` as text
    ("" for the image-level rows; files written before the pair analysis lack the column)."""
    p = Path(folder) / runs.RESULTS
    if not p.is_file():
        raise FileNotFoundError(f"{p} not found: run the evaluation stage first (notebook 03_evaluate)")
    df = read_csv(p, dtype={"pair": str}, keep_default_na=False, na_values={"value": ["nan", "NaN", ""]})
    missing = set(runs.RESULT_COLUMNS) - set(df.columns) - {"pair"}
    if missing:
        raise ValueError(f"{p} lacks columns {sorted(missing)}; expected exactly {', '.join(runs.RESULT_COLUMNS)}")
    if "pair" not in df:
        df.insert(runs.RESULT_COLUMNS.index("pair"), "pair", "")
    df["correct"] = df["correct"].astype(str).str.lower().isin(("true", "1", "1.0"))
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    return df


GROUND_TRUTH_COLUMNS = ("image", "label", "target", "cue_swapped", "pred", "pred_absent", "pred_swapped", "logit",
                        "logit_absent", "reliance")


def load_ground_truth(folder: PathLike) -> pd.DataFrame:
    """A planted run's ``ground_truth.csv`` (:mod:`xai_utils.stages.ground_truth`): one row per
    evaluation image, the columns :data:`GROUND_TRUTH_COLUMNS`."""
    p = Path(folder) / runs.GROUND_TRUTH
    if not p.is_file():
        raise FileNotFoundError(f"{p} not found: run the evaluation stage first (notebook 03_evaluate)")
    df = read_csv(p)
    missing = set(GROUND_TRUTH_COLUMNS) - set(df.columns)
    if missing:
        raise ValueError(f"{p} lacks columns {sorted(missing)}; expected {', '.join(GROUND_TRUTH_COLUMNS)}")
    return df
