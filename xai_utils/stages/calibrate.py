"""The calibration stage: temperature scaling (Guo et al. 2017) of a trained run (the fit
itself: :mod:`xai_utils.ops.calibration`).

Why: the paper's faithfulness score is the softmax probability of the true class along the
pixel-flipping perturbation, so it also measures how *confident* a model is. A linear probe
on unit-norm features (SCL, TL) has small logits and low probabilities. Dividing the logits
by a temperature T fitted by negative log-likelihood (NLL) makes every model's probabilities
calibrated, so faithfulness can be compared at equal calibration
(``pixel_flipping_calibrated``).

Where the temperature is fitted (``calibration``): on a held-out part of the *training* split
(``heldout``: the ``calibration_samples`` training images that follow the run's training
subset in the fixed permutation of :func:`xai_utils.study.data.train_indices`, images the model
never trained on and never the evaluation images), or, for a run trained on the whole split
as the paper's, by two-fold cross-fitting on the evaluation subset (``crossfit``: each image is
scaled by the temperature fitted on the other fold, never on itself). :func:`calibrate_run`
writes ``calibration.json`` into the run folder: the temperature(s), NLL before and after, and
the expected calibration error (ECE, 15 equal-width confidence bins) before and after (held
out: on the full test split, from ``predictions.npz``, the fp32 test pass; cross-fitted: on the
evaluation images).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Union

import numpy as np
import torch

from ..ops.calibration import crossfit_folds, crossfit_temperatures, expected_calibration_error, fit_temperature, nll
from ..ops.devices import ieee_float32, resolve_device
from ..settings.run_config import resolve_calibration
from ..study.data import eval_indices, load_dataset, resolve_split, train_permutation
from ..settings import layout as runs
from . import files
from .artefacts import load_run_config
from .artefacts import load_json, load_npz
from .model_io import load_model



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
    """Fit the run's temperature and write ``calibration.json`` (returned); reuses the file when
    it was written for the same model and settings.

    ``heldout`` (:func:`~xai_utils.settings.run_config.resolve_calibration`): one temperature
    fitted on the run's held-out training images, NLL on them before and after, ECE on the full
    test split. ``crossfit``: the evaluation subset in two seeded folds, a temperature fitted on
    each, every image scaled by the other fold's (``indices``, ``image_temperatures``), NLL and
    ECE on the evaluation images with their cross-fitted temperatures; ``temperature`` is then
    the mean of the two. :func:`image_temperatures` reads the temperature of each image."""
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    path = run_dir / runs.CALIBRATION
    model_file = runs.trained_model_path(run_dir)
    method = resolve_calibration(cfg)
    key = {"model_mtime_ns": model_file.stat().st_mtime_ns, "calibration_samples": cfg.calibration_samples,
           "explain_features": cfg.explain_features}
    if method == "crossfit":
        key.update(method=method, eval_split=cfg.eval_split, eval_samples=cfg.eval_samples)
    if path.is_file():
        saved = load_json(path)
        if all(saved.get(k) == v for k, v in key.items()) and saved.get("method", "heldout") == method:
            return saved
    dev = resolve_device(device)
    model, _ = load_model(run_dir, dev, explain_features=cfg.explain_features)
    out = (_crossfit if method == "crossfit" else _heldout)(run_dir, cfg, model, dev, batch_size)
    out = {**key, "method": method, "run_id": cfg.run_id, **out}
    files.save_json(path, out)
    return out


def _logits(model, ds, idx: np.ndarray, dev: torch.device, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """IEEE float32 logits and labels of images ``idx`` of a split (in memory or streamed)."""
    logits, labels = [], []
    with ieee_float32(dev):
        if hasattr(ds, "batch"):
            for s in range(0, len(idx), batch_size):
                x, y = ds.batch(idx[s:s + batch_size], device=dev)
                logits.append(model(x).float().cpu())
                labels.append(y.cpu())
        else:                                                    # a streamed split: decoded by its loader
            for x, y in ds.loader(batch_size, shuffle=False, drop_last=False, indices=idx.tolist()):
                logits.append(model(x.to(dev).float().div_(255.0)).float().cpu())
                labels.append(y)
    return torch.cat(logits), torch.cat(labels)


def _heldout(run_dir: Path, cfg: Any, model, dev: torch.device, batch_size: int) -> dict:
    train = load_dataset(cfg.dataset, "train", cfg.data_root)
    idx = calibration_indices(cfg, len(train))
    if len(idx) < 2:
        raise ValueError(f"run {cfg.run_id}: no held-out training images to calibrate on (train_subset "
                         f"{cfg.train_subset} of {len(train)}); set train_subset below the split size, or "
                         f"calibration: crossfit")
    z, y = _logits(model, train, idx, dev, batch_size)
    t = fit_temperature(z, y)
    out = {"temperature": t, "n_heldout": int(len(idx)), "heldout_first_index": int(idx[0]),
           "nll_before": nll(z, y), "nll_after": nll(z, y, t)}
    test_logits = _test_logits(run_dir, model, cfg, dev, batch_size)
    if test_logits is not None:
        tz, ty = test_logits
        out.update(ece_before=expected_calibration_error(tz, ty), ece_after=expected_calibration_error(tz, ty, t),
                   n_test=int(len(ty)))
    return out


def _crossfit(run_dir: Path, cfg: Any, model, dev: torch.device, batch_size: int) -> dict:
    ds = load_dataset(cfg.dataset, cfg.eval_split, cfg.data_root)
    idx = eval_indices(len(ds), cfg.eval_samples, seed=0)
    z, y = _logits(model, ds, idx, dev, batch_size)
    fold = crossfit_folds(len(idx), seed=0)
    per_image, (t0, t1) = crossfit_temperatures(z, y, fold)
    return {"temperature": (t0 + t1) / 2, "fold_temperatures": [t0, t1], "indices": idx.tolist(),
            "folds": fold.tolist(), "image_temperatures": per_image.tolist(), "n_eval": int(len(idx)),
            "nll_before": nll(z, y), "nll_after": nll(z, y, per_image),
            "ece_before": expected_calibration_error(z, y), "ece_after": expected_calibration_error(z, y, per_image)}


def image_temperatures(calibration: dict, indices: np.ndarray) -> np.ndarray:
    """The temperature of each image of ``indices`` (evaluation split) from a ``calibration.json``:
    the one temperature (held out), or its cross-fitted one (the other fold's)."""
    indices = np.asarray(indices, dtype=np.int64)
    if calibration.get("method", "heldout") != "crossfit":
        return np.full(len(indices), float(calibration["temperature"]))
    lookup = dict(zip(calibration["indices"], calibration["image_temperatures"]))
    missing = [int(i) for i in indices if int(i) not in lookup]
    if missing:
        raise ValueError(f"calibration.json has no cross-fitted temperature for evaluation images {missing[:5]}: "
                         f"recalibrate (delete it)")
    return np.array([lookup[int(i)] for i in indices], dtype=np.float64)


def _test_logits(run_dir: Path, model, cfg, dev, batch_size: int):
    """fp32 logits of the test split: from ``predictions.npz`` when the explained model is
    the trained one, else recomputed."""
    pred = Path(run_dir) / runs.PREDICTIONS
    if cfg.explain_features == "trained" and pred.is_file():
        zf = load_npz(pred, ["logits", "labels"])
        return torch.from_numpy(zf["logits"]).float(), torch.from_numpy(zf["labels"]).long()
    test = load_dataset(cfg.dataset, "test", cfg.data_root)
    with ieee_float32(dev):
        zs = [model(test.batch(slice(s, min(s + batch_size, len(test))), device=dev)[0]).float().cpu()
              for s in range(0, len(test), batch_size)]
    return torch.cat(zs), test.labels.long()
