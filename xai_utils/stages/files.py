"""Writing the files of a run atomically, and its append-only training log.

Every file a stage writes goes through a temporary file in the same folder renamed over the
target (:func:`_atomic`): a killed or failed write leaves the previous file, never half a one.
Names and places of the files: :mod:`xai_utils.settings.layout`; reading them back, checked:
:mod:`.artefacts`.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Union

import numpy as np
import torch


PathLike = Union[str, Path]


def new_file_mode() -> int:
    """The mode ``open()`` gives a new file: 0o666 less the process's umask (0o644 under the
    usual 022), so that a study on a shared filesystem is readable as the user's group allows."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)                       # no /proc: read it by setting it back at once
    os.umask(mask)
    return 0o666 & ~mask


def _atomic(path: PathLike, write: Callable[[str], None]) -> Path:
    """Write through a temporary file in the same folder, then rename: never half a file. The
    file gets the mode a plain write would (``mkstemp`` alone makes it 0o600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, new_file_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def save_json(path: PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON with sorted keys, atomically (a reader never sees half)."""
    return _atomic(path, lambda t: Path(t).write_text(json.dumps(obj, indent=2, sort_keys=True, default=str)))


def save_torch(path: PathLike, obj: Any) -> Path:
    """Write ``obj`` with ``torch.save``, atomically."""
    return _atomic(path, lambda t: torch.save(obj, t))


def save_npz(path: PathLike, **arrays: Any) -> Path:
    """Write ``arrays`` as one compressed ``.npz``, atomically."""
    def write(t: str) -> None:
        with open(t, "wb") as f:
            np.savez_compressed(f, **arrays)
    return _atomic(path, write)


def save_text(path: PathLike, text: str) -> Path:
    """Write ``text``, atomically."""
    return _atomic(path, lambda t: Path(t).write_text(text))


def append_jsonl(path: PathLike, obj: Any) -> None:
    """Append ``obj`` as one JSON line (a log: each line is whole or absent)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(obj, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def remove_partial_writes(folder: PathLike) -> list[Path]:
    """Delete the temporaries of writes a killed process left (``.<name>.*.tmp`` of
    :func:`_atomic`) in ``folder`` and below; call it only while holding the run's lock."""
    gone = [p for p in Path(folder).rglob(".*.tmp") if p.is_file()]
    for p in gone:
        p.unlink(missing_ok=True)
    return gone
