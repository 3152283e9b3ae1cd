"""A copy of the repository's package, profiles and notebooks for the notebook tests: kernels that
import the copy (its folder first on PYTHONPATH) treat it as 'the repository', so what the
notebooks write lands in the copy and the real checkout is never written."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ("01_train", "02_attribute", "03_evaluate", "04_figures")
# the smoke run, smaller still: 01_train's `overrides` (every other parameter keeps its default)
SMALL = {"train_subset": 256, "epochs": 1, "probe_epochs": 5, "eval_samples": 4, "calibration_samples": 64,
         "methods": ["gradcam"], "metrics": ["pixel_flipping", "complexity", "pointing_game"],
         "pair_methods": ["pair_gradcam"], "pair_metrics": ["pair_deletion"], "pair_samples": 2}


def copy_repository(where: Path) -> Path:
    """``xai_utils/``, ``configs/`` and ``notebooks/`` copied into ``where`` (returned)."""
    for part in ("xai_utils", "configs", "notebooks"):
        shutil.copytree(ROOT / part, where / part, ignore=shutil.ignore_patterns("__pycache__"))
    return where


def python_path(repo: Path) -> str:
    """PYTHONPATH with the copy first (the test environment's own entries kept after it)."""
    return os.pathsep.join([str(repo), *filter(None, [os.environ.get("PYTHONPATH")])])
