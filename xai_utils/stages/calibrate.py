"""The calibration stage: temperature scaling (Guo et al. 2017) of a trained run, one
temperature per model (the fit itself: :mod:`xai_utils.ops.calibration`).

Why: the paper's faithfulness score is the softmax probability of the true class along the
pixel-flipping perturbation, so it also measures how *confident* a model is. A linear probe
on unit-norm features (SCL, TL) has small logits and low probabilities. Dividing the logits
by a temperature T fitted by negative log-likelihood (NLL) makes every model's probabilities
calibrated, so faithfulness can be compared at equal calibration
(``pixel_flipping_calibrated``).

The temperature is fitted on a held-out part of the *training* split: the
``calibration_samples`` training images that follow the run's training subset in the fixed
permutation of :func:`xai_utils.study.data.train_indices` (images the model never trained on, and
never the evaluation images). :func:`calibrate_run` writes ``calibration.json`` into the run
folder: the temperature, NLL on the held-out images before and after, and the expected
calibration error (ECE, 15 equal-width confidence bins) on the full test split before and
after (from ``predictions.npz``, the fp32 test pass).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch

from ..ops.calibration import expected_calibration_error, fit_temperature, nll
from ..ops.devices import resolve_device
from ..study.data import eval_indices, load_dataset, resolve_split, train_permutation
from . import layout as runs
from .layout import load_run_config
from .model_io import load_model

CALIBRATION = "calibration.json"


def calibration_indices(cfg: Any, n_train: int) -> np.ndarray:
    """Indices of the held-out training images of a run: the ``calibration_samples`` that
    follow its training subset in the fixed permutation (fewer when the split runs out),
    without the evaluation images when the run is evaluated on its training split."""
    if cfg.train_subset is None or cfg.train_subset >= n_train:
        return np.zeros(0, dtype=np.int64)                  # every training image was trained on
    rest = train_permutation(n_train, seed=0)[cfg.train_subset:]
    if resolve_split(cfg.dataset, cfg.eval_split) == "train":
        rest = rest[~np.isin(rest, eval_indices(n_train, cfg.eval_samples, seed=0))]
    return rest[:cfg.calibration_samples].astype(np.int64)


@torch.no_grad()
def calibrate_run(run_dir: Union[str, Path], device: str = "auto", batch_size: int = 256) -> dict:
    """Fit the run's temperature on its held-out training images and write ``calibration.json``
    (returned); reuses the file when it was written for the same model and settings."""
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    path = run_dir / CALIBRATION
    model_file = runs.trained_model_path(run_dir)
    key = {"model_mtime_ns": model_file.stat().st_mtime_ns, "calibration_samples": cfg.calibration_samples,
           "explain_features": cfg.explain_features}
    if path.is_file():
        saved = runs.load_json(path)
        if all(saved.get(k) == v for k, v in key.items()):
            return saved
    dev = resolve_device(device)
    model, _ = load_model(run_dir, dev, explain_features=cfg.explain_features)
    train = load_dataset(cfg.dataset, "train", cfg.data_root)
    idx = calibration_indices(cfg, len(train))
    if len(idx) < 2:
        raise ValueError(f"run {cfg.run_id}: no held-out training images to calibrate on (train_subset "
                         f"{cfg.train_subset} of {len(train)}); set train_subset below the split size")
    logits, labels = [], []
    for s in range(0, len(idx), batch_size):
        x, y = train.batch(idx[s:s + batch_size], device=dev)
        logits.append(model(x).float().cpu())
        labels.append(y.cpu())
    z, y = torch.cat(logits), torch.cat(labels)
    t = fit_temperature(z, y)
    out = {**key, "run_id": cfg.run_id, "temperature": t, "n_heldout": int(len(idx)),
           "heldout_first_index": int(idx[0]), "nll_before": nll(z, y), "nll_after": nll(z, y, t)}
    test_logits = _test_logits(run_dir, model, cfg, dev, batch_size)
    if test_logits is not None:
        tz, ty = test_logits
        out.update(ece_before=expected_calibration_error(tz, ty), ece_after=expected_calibration_error(tz, ty, t),
                   n_test=int(len(ty)))
    runs.save_json(path, out)
    return out


def _test_logits(run_dir: Path, model, cfg, dev, batch_size: int):
    """fp32 logits of the test split: from ``predictions.npz`` when the explained model is
    the trained one, else recomputed."""
    pred = Path(run_dir) / runs.PREDICTIONS
    if cfg.explain_features == "trained" and pred.is_file():
        with np.load(pred) as zf:
            return torch.from_numpy(zf["logits"]).float(), torch.from_numpy(zf["labels"]).long()
    test = load_dataset(cfg.dataset, "test", cfg.data_root)
    zs = [model(test.batch(slice(s, min(s + batch_size, len(test))), device=dev)[0]).float().cpu()
          for s in range(0, len(test), batch_size)]
    return torch.cat(zs), test.labels.long()


def temperature_of(run_dir: Union[str, Path]) -> float:
    """The temperature in ``calibration.json`` (1.0, i.e. no scaling, if it is absent)."""
    path = Path(run_dir) / CALIBRATION
    t = runs.load_json(path).get("temperature") if path.is_file() else None
    return float(t) if t is not None and math.isfinite(t) else 1.0
