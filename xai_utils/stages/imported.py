"""The first stage of a run whose model is brought as a file: import it instead of training.

``import_run(cfg, run_dir)`` checks the checkpoint (its SHA-256 is the one the run's settings
were hashed with: a file changed since the study was planned is refused), loads it without
running code into the network of its ``arch`` (:mod:`xai_utils.study.brought`), and writes
what a trained run's folder holds for the later stages: ``config.json``, ``train_log.jsonl`` (one
``imported`` event, no epoch), ``model.pt`` (the
weights, so that the run folder stands on its own), ``predictions.npz`` and ``embeddings.npz``
from one IEEE float32 pass over the test split, ``train_summary.json`` (the test accuracy,
the checkpoint and its SHA-256; no training) and the fingerprint. With ``probe: fit`` the
checkpoint is an encoder: its classifier is the paper's linear probe, fitted first on the
frozen, L2-normalised features of the train split (a second ``train_log.jsonl`` line).
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
from ..settings.hashing import stage_hash
from ..settings.run_config import RunConfig
from ..study.brought import (brought_network, features_and_logits, file_sha256, load_checkpoint, set_classifier,
                             weights_of)
from ..study.data import load_dataset
from ..study.training import test_outputs, train_probe
from . import files
from .artefacts import load_json
from .fingerprint import record_fingerprint

PathLike = Union[str, Path]


def brought_model(cfg: RunConfig, num_classes: int, mean: Any, std: Any, weights: dict[str, torch.Tensor],
                  encoder_only: bool = False) -> torch.nn.Module:
    """The explained model of a brought run with ``weights`` loaded: :func:`brought_network` with
    the run's settings (``encoder_only``: its classifier is still to be fitted)."""
    return brought_network(weights, cfg.checkpoint, cfg.arch, num_classes, mean, std, cfg.widths,
                           cfg.normalize_features, cfg.probe, encoder_only=encoder_only)


def _passes(model: torch.nn.Module, dataset: Any, batch_size: int, device: torch.device
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled features and logits of every image of ``dataset``, one IEEE float32 pass."""
    feats, logits = [], []
    with torch.no_grad(), ieee_float32(device):
        for s in range(0, len(dataset), batch_size):
            x, _ = dataset.batch(slice(s, s + batch_size), device=device)
            h, z = features_and_logits(model, x)
            feats.append(h.float())
            logits.append(z.float())
    return torch.cat(feats), torch.cat(logits)


def _fit_probe(cfg: RunConfig, model: torch.nn.Module, device: torch.device) -> dict[str, Any]:
    """The paper's linear probe on the encoder's frozen features of the train split
    (:func:`~xai_utils.study.training.train_probe`), put in place of the classifier."""
    t0 = time.perf_counter()
    train = load_dataset(cfg.dataset, "train", cfg.data_root)
    feats, _ = _passes(model, train, cfg.batch_size_eval, device)
    probe, final = train_probe(feats, train.labels.to(device), cfg.num_classes, cfg)
    set_classifier(model, probe)
    return {"stage": "probe", "epochs": cfg.probe_epochs, **final, "n_train": len(train),
            "seconds": round(time.perf_counter() - t0, 3)}


def import_run(cfg: RunConfig, run_dir: PathLike, progress: bool = True) -> dict[str, Any]:
    """Import (or skip, when done with the same file and the same settings of this stage: a
    changed probe setting refits the probe) the brought model of run ``cfg``; returns
    ``train_summary.json``."""
    run_dir = Path(run_dir)
    summary_path = run_dir / runs.TRAIN_SUMMARY
    done = [run_dir / name for name in (runs.TRAIN_SUMMARY, runs.MODEL, runs.CONFIG)]
    if all(p.is_file() for p in done):
        before = RunConfig.from_dict(load_json(run_dir / runs.CONFIG))
        if stage_hash(before, runs.Stage.TRAIN) == stage_hash(cfg, runs.Stage.TRAIN):
            files.save_json(run_dir / runs.CONFIG, cfg.to_dict())
            return load_json(summary_path)
    sha = file_sha256(cfg.checkpoint)
    if cfg.checkpoint_sha256 is not None and sha != cfg.checkpoint_sha256:
        raise ConfigError(f"checkpoint {cfg.checkpoint} changed since the study was planned (SHA-256 {sha[:12]}, "
                          f"planned {cfg.checkpoint_sha256[:12]}): run the pipeline again")
    t0 = time.perf_counter()
    device = resolve_device(cfg.device)
    test = load_dataset(cfg.dataset, "test", cfg.data_root)
    mean = cfg.mean if cfg.mean is not None else list(test.mean)
    std = cfg.std if cfg.std is not None else list(test.std)
    fit = cfg.probe == "fit"
    model = brought_model(cfg, cfg.num_classes, mean, std, load_checkpoint(cfg.checkpoint), encoder_only=fit)
    model = model.to(device).eval()
    probe = _fit_probe(cfg, model, device) if fit else None
    feats, logits = _passes(model, test, cfg.batch_size_eval, device)
    acc, n_test, emb, predictions = test_outputs(feats, logits, test.labels.to(device))
    files.save_json(run_dir / runs.CONFIG, cfg.to_dict())
    log = [{"event": "imported", "checkpoint": cfg.checkpoint, "checkpoint_sha256": sha}] + ([probe] if fit else [])
    files.save_text(run_dir / runs.TRAIN_LOG, "".join(json.dumps(r) + "\n" for r in log))
    files.save_npz(run_dir / runs.EMBEDDINGS, **emb)
    files.save_npz(run_dir / runs.PREDICTIONS, **predictions)
    files.save_torch(run_dir / runs.MODEL, {      # the checkpoint's weights, as load_model reads them back
        "config": cfg.to_dict(), "num_classes": cfg.num_classes, "mean": [float(v) for v in mean],
        "std": [float(v) for v in std], "weights": {k: v.detach().cpu() for k, v in weights_of(model).items()}})
    summary = {"run_id": cfg.run_id, "dataset": cfg.dataset, "objective": cfg.objective, "seed": cfg.seed,
               "arch": cfg.arch, "widths": cfg.widths, "test_accuracy": acc, "n_test": n_test,
               "n_train": probe["n_train"] if fit else None, "epochs": 0,
               "probe_train_accuracy": probe["train_acc"] if fit else None,
               "wall_time_s": probe["seconds"] if fit else 0.0,
               "eval_time_s": round(time.perf_counter() - t0, 3), "device": str(device),
               "checkpoint": cfg.checkpoint, "checkpoint_sha256": sha, "resumed_from": None, "recovered": []}
    record_fingerprint(run_dir, runs.Stage.TRAIN, device)
    files.save_json(summary_path, summary)
    return summary
