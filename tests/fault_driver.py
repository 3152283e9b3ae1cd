"""The pipeline's command line, killed with SIGKILL at one point (used by test_faults.py).

    python tests/fault_driver.py POINT:N [pipeline arguments ...]

kills this process at the N-th call (counted in this process) of the function behind POINT:

* ``epoch``: a training step (``train_step``), so N past one epoch's steps is inside a later epoch;
* ``checkpoint``: the N-th checkpoint write, after half of the temporary file is written;
* ``attribution``: the N-th method's maps (``attribute``), earlier methods' files written;
* ``evaluation``: the N-th metric result of the evaluation stage;
* ``figures``: the N-th figure file saved.

Use with ``--executor inline`` (the stages in this process), so a kill stops the work where a
kernel's death would.
"""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any, Callable

import matplotlib.figure
import torch

import xai_utils.stages.attribute as attribute_stage
import xai_utils.stages.evaluate as evaluate_stage
import xai_utils.stages.train as train_stage
from xai_utils.pipeline import main


def _kill() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _at_call(n: int, fn: Callable[..., Any], before: bool = True) -> Callable[..., Any]:
    """``fn`` wrapped to kill the process at its n-th call (before it runs, or after)."""
    calls = [0]

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if before and calls[0] == n:
            _kill()
        out = fn(*args, **kwargs)
        if not before and calls[0] == n:
            _kill()
        return out
    return wrapped


def _half_written_checkpoint(n: int) -> None:
    real, calls = torch.save, [0]

    def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        real(obj, f, *args, **kwargs)
        if isinstance(f, (str, Path)) and Path(f).name.startswith(".checkpoint.pt."):
            calls[0] += 1
            if calls[0] == n:
                os.truncate(f, os.path.getsize(f) // 2)      # the write is cut half-way
                _kill()
    torch.save = save


def arm(point: str, n: int) -> None:
    if point == "epoch":
        train_stage.train_step = _at_call(n, train_stage.train_step)
    elif point == "checkpoint":
        _half_written_checkpoint(n)
    elif point == "attribution":
        attribute_stage.attribute = _at_call(n, attribute_stage.attribute)
    elif point == "evaluation":
        evaluate_stage._to_host = _at_call(n, evaluate_stage._to_host)
    elif point == "figures":
        matplotlib.figure.Figure.savefig = _at_call(n, matplotlib.figure.Figure.savefig)
    else:
        raise SystemExit(f"unknown point {point!r}")


if __name__ == "__main__":
    point, count = sys.argv[1].split(":")
    arm(point, int(count))
    sys.exit(main(["--no-progress", *sys.argv[2:]]))
