"""The first stage of a run whose model is brought as a file: import it instead of training.

``import_run(cfg, run_dir)`` checks the checkpoint (its SHA-256 is the one the run's settings
were hashed with: a file changed since the study was planned is refused), loads it without
running code into the network of its ``arch`` (:mod:`xai_utils.study.brought`), and writes
what a trained run's folder holds for the later stages: ``config.json``, ``train_log.jsonl`` (one
``imported`` event, no epoch), ``model.pt`` (the
weights, so that the run folder stands on its own), ``predictions.npz`` and ``embeddings.npz``
from one IEEE float32 pass over the test split, ``train_summary.json`` (the test accuracy,
the checkpoint and its SHA-256; no training) and the fingerprint.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Union

import torch

from ..errors import ConfigError
from ..ops.devices import ieee_float32, resolve_device
from ..settings import layout as runs
from ..settings.run_config import RunConfig
from ..study.brought import (build_network, features_and_logits, file_sha256, fit_weights, holds_study_model,
                             load_checkpoint, weights_of)
from ..study.data import load_dataset
from ..study.training import test_outputs
from . import files
from .artefacts import load_json
from .fingerprint import record_fingerprint

PathLike = Union[str, Path]


def brought_model(cfg: RunConfig, num_classes: int, mean: Any, std: Any, weights: dict[str, torch.Tensor]
                  ) -> torch.nn.Module:
    """The explained model of a brought run with ``weights`` loaded (:func:`build_network`; the
    checkpoint's keys say whether it is the study's own model or a timm model)."""
    model = build_network(cfg.arch, num_classes, mean, std, cfg.widths, cfg.normalize_features,
                          study_model=holds_study_model(weights))
    return fit_weights(model, weights, cfg.checkpoint, cfg.arch)


def import_run(cfg: RunConfig, run_dir: PathLike, progress: bool = True) -> dict[str, Any]:
    """Import (or skip, when done with the same file) the brought model of run ``cfg``; returns
    ``train_summary.json``."""
    run_dir = Path(run_dir)
    summary_path = run_dir / runs.TRAIN_SUMMARY
    if summary_path.is_file() and (run_dir / runs.MODEL).is_file():
        summary = load_json(summary_path)
        if summary.get("checkpoint_sha256") == cfg.checkpoint_sha256:
            files.save_json(run_dir / runs.CONFIG, cfg.to_dict())
            return summary
    sha = file_sha256(cfg.checkpoint)
    if cfg.checkpoint_sha256 is not None and sha != cfg.checkpoint_sha256:
        raise ConfigError(f"checkpoint {cfg.checkpoint} changed since the study was planned (SHA-256 {sha[:12]}, "
                          f"planned {cfg.checkpoint_sha256[:12]}): run the pipeline again")
    t0 = time.perf_counter()
    device = resolve_device(cfg.device)
    test = load_dataset(cfg.dataset, "test", cfg.data_root)
    mean = cfg.mean if cfg.mean is not None else list(test.mean)
    std = cfg.std if cfg.std is not None else list(test.std)
    model = brought_model(cfg, cfg.num_classes, mean, std, load_checkpoint(cfg.checkpoint)).to(device).eval()
    feats, logits = [], []
    with torch.no_grad(), ieee_float32(device):
        for s in range(0, len(test), cfg.batch_size_eval):
            x, _ = test.batch(slice(s, s + cfg.batch_size_eval), device=device)
            h, z = features_and_logits(model, x)
            feats.append(h.float())
            logits.append(z.float())
    acc, n_test, emb, predictions = test_outputs(torch.cat(feats), torch.cat(logits), test.labels.to(device))
    files.save_json(run_dir / runs.CONFIG, cfg.to_dict())
    files.save_text(run_dir / runs.TRAIN_LOG, json.dumps({"event": "imported", "checkpoint": cfg.checkpoint,
                                                          "checkpoint_sha256": sha}) + "\n")
    files.save_npz(run_dir / runs.EMBEDDINGS, **emb)
    files.save_npz(run_dir / runs.PREDICTIONS, **predictions)
    files.save_torch(run_dir / runs.MODEL, {      # the checkpoint's weights, as load_model reads them back
        "config": cfg.to_dict(), "num_classes": cfg.num_classes, "mean": [float(v) for v in mean],
        "std": [float(v) for v in std], "weights": {k: v.detach().cpu() for k, v in weights_of(model).items()}})
    summary = {"run_id": cfg.run_id, "dataset": cfg.dataset, "objective": cfg.objective, "seed": cfg.seed,
               "arch": cfg.arch, "widths": cfg.widths, "test_accuracy": acc, "n_test": n_test, "n_train": None,
               "epochs": 0, "probe_train_accuracy": None, "wall_time_s": 0.0,
               "eval_time_s": round(time.perf_counter() - t0, 3), "device": str(device),
               "checkpoint": cfg.checkpoint, "checkpoint_sha256": sha, "resumed_from": None, "recovered": []}
    record_fingerprint(run_dir, runs.Stage.TRAIN, device)
    files.save_json(summary_path, summary)
    return summary
