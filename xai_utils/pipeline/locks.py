"""One process works on a run at a time: a lock per run folder, and one for the study's figures.

Two invocations on one results folder (two terminals, a rerun while cluster jobs still run)
would otherwise train the same run twice at once and trip over each other's files. Before a
run's stages execute, the pipeline takes ``<run_dir>/stages/run.lock`` (the figures:
``<study>/stages/figures.lock``); another invocation prints one line naming the holder and
waits, then skips what the holder finished (or, with ``--no-wait``, skips the run and says so).

The lock is filelock's :class:`~filelock.SoftFileLease`: a marker file made by exclusive
creation, which works on the shared filesystems of clusters (NFS, Lustre, GPFS), where
``flock`` may not. **Stale locks:** the holder refreshes the marker every
``LEASE_SECONDS / 3`` from a background thread. A marker whose process is gone from this host
is taken over at once; a marker of another host is taken over once it has not been refreshed
for :data:`LEASE_SECONDS` (its holder was killed, or its machine lost). Every contender must
use the same lease length, which is why it is a constant here and not a setting.
"""
from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

from filelock import SoftFileLease, Timeout

from ..errors import ArtefactError
from ..settings.layout import STAGES
from ..stages.artefacts import load_json
from ..stages.files import save_json

LEASE_SECONDS = 60.0          # a holder silent this long (another host) is considered dead
POLL_SECONDS = 1.0            # how often a waiting invocation looks again


@dataclass(frozen=True)
class Holder:
    """Who holds a lock: written beside the marker once it is taken, for the waiting side."""

    pid: int
    host: str
    since: str
    command: str = ""

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host} since {self.since}"


class RunLock:
    """The lock of one run folder (``name="run"``) or of a study's figures (``name="figures"``)."""

    def __init__(self, folder: Path, name: str = "run", lease_seconds: float = LEASE_SECONDS):
        stages = Path(folder) / STAGES
        self.path = stages / f"{name}.lock"
        self.holder_path = stages / f"{name}.lock.json"
        self._lease = SoftFileLease(str(self.path), lease_duration=lease_seconds, poll_interval=POLL_SECONDS)

    def holder(self) -> Optional[Holder]:
        """The current holder as it described itself, or None (free, or not written yet)."""
        try:
            return Holder(**load_json(self.holder_path))
        except (OSError, ValueError, TypeError, ArtefactError):
            return None

    def acquire(self, wait: bool = True, on_wait: Optional[Callable[[str], None]] = None) -> bool:
        """Take the lock; if another process holds it, call ``on_wait`` with one line naming
        the holder and wait (``wait``) or return False at once."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._lease.acquire(blocking=False)
        except Timeout:
            if not wait:
                return False
            if on_wait is not None:
                held = self.holder()
                on_wait(f"locked by {held.describe() if held else 'another process'} ({self.path})")
            self._lease.acquire()
        save_json(self.holder_path, {"pid": os.getpid(), "host": socket.gethostname(),
                                     "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                                     "command": " ".join(sys.argv)[:300]})
        return True

    def release(self) -> None:
        self.holder_path.unlink(missing_ok=True)
        self._lease.release()


@contextlib.contextmanager
def holding(folder: Path, label: str, wait: bool = True, log: Callable[[str], None] = print,
            name: str = "run") -> Iterator[bool]:
    """``with holding(run_dir, "shapes/ce/seed0") as held:`` the body runs with the lock (held
    True), or, with ``wait=False`` and the lock taken elsewhere, without it (held False: do
    nothing). Waiting and skipping are each said in one line."""
    lock = RunLock(folder, name)
    held = lock.acquire(wait, on_wait=lambda text: log(f"{label}: waiting, {text}"))
    if not held:
        other = lock.holder()
        log(f"{label}: skipped (--no-wait), locked by {other.describe() if other else 'another process'} "
            f"({lock.path})")
    try:
        yield held
    finally:
        if held:
            lock.release()
