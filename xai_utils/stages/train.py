"""The training stage of one run (CE, SCL, TL or an extension): train, or resume, or skip,
and write the run folder.

``train_run(cfg, run_dir)`` is the single entry point, for every objective and dataset; the
computation is :mod:`xai_utils.study.training`. Shuffling and augmentation draw from a CPU
generator seeded by (seed, epoch), on every device, so a run resumed from ``checkpoint.pt``
ends with exactly the weights of an uninterrupted one (bit-exact on CPU; on CUDA the same
augmentations and order, up to the non-determinism of cuDNN kernels).

Files written into the run folder: see :mod:`xai_utils.settings.layout` and :func:`train_run`.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import torch
from tqdm.auto import tqdm

from ..errors import ArtefactError, ConfigError
from ..ops.augment import get_augmentation
from ..ops.devices import deterministic_algorithms, resolve_device
from ..ops.seeds import epoch_generator, seed_everything
from ..settings.hashing import stage_keys
from ..settings.run_config import RunConfig
from ..settings.validation import check_run
from ..study.objectives import OBJECTIVES, TrainBatch, explained_model
from ..study.training import (OPTIMIZERS, Engine, EpochTotals, TrainData, build_scheduler, evaluate_test,
                              resolve_augmentation, train_probe, train_step)
from ..settings import layout as runs
from . import files
from .artefacts import read_jsonl
from .artefacts import load_json, load_torch
from .fingerprint import record_fingerprint
from .imported import import_run
from .model_io import model_state

PathLike = Union[str, Path]


def _training_differences(saved: dict[str, Any], cfg: RunConfig) -> list[str]:
    """Keys that change the trained weights and differ between ``saved`` and ``cfg``."""
    now = cfg.to_dict()
    return [k for k in stage_keys(cfg, runs.Stage.TRAIN) if saved.get(k) != now.get(k)]


def _mismatch_error(run_dir: Path, what: str, keys: list[str], saved: dict, cfg: RunConfig) -> ConfigError:
    diffs = ", ".join(f"{k}: {saved.get(k)!r} -> {getattr(cfg, k)!r}" for k in keys)
    return ConfigError(
        f"{run_dir} holds a {what} trained with different settings ({diffs}). Delete the folder "
        f"to retrain it, or give a new run_dir.")


def _refresh_configs(run_dir: Path, cfg: RunConfig, stored: Optional[dict[str, Any]], state: dict[str, Any]) -> None:
    """Settings that do not change the weights (evaluation, device, ...) may change between
    calls: keep config.json and the config inside model.pt up to date with them. ``stored``:
    config.json as read (None: absent); ``state``: model.pt as read."""
    if stored != cfg.to_dict():
        files.save_json(run_dir / runs.CONFIG, cfg.to_dict())
        state["config"] = cfg.to_dict()
        files.save_torch(run_dir / runs.MODEL, state)


def _truncate_log(run_dir: Path, last_epoch: int) -> None:
    """Drop epoch records after the checkpoint (they will be trained again)."""
    log = run_dir / runs.TRAIN_LOG
    keep = [r for r in read_jsonl(log)
            if "event" in r or ("stage" not in r and r.get("epoch", 0) <= last_epoch)]
    files.save_text(log, "".join(json.dumps(r, default=str) + "\n" for r in keep))


def _last_good_checkpoint(run_dir: Path) -> tuple[Optional[dict[str, Any]], str, list[str]]:
    """The newest readable checkpoint (``checkpoint.pt``, else ``checkpoint.prev.pt``) or None,
    its file name, and one line for each unreadable one. An unreadable ``checkpoint.pt`` is deleted, so that
    the next checkpoint does not push it into the place of the good one."""
    recovered: list[str] = []
    for name in (runs.CHECKPOINT, runs.PREVIOUS_CHECKPOINT):
        path = run_dir / name
        if not path.is_file():
            continue
        try:
            ckpt = load_torch(path)                  # states move to the device on load
        except ArtefactError as e:
            recovered.append(e.damage)
            if name == runs.CHECKPOINT:
                path.unlink()
            continue
        if recovered:
            recovered[-1] += f"; resumed from {name} (epoch {int(ckpt['epoch'])})"
        return ckpt, name, recovered
    if recovered:
        recovered[-1] += "; no readable checkpoint left: training from the start"
    return None, "", recovered


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        try:
            torch.cuda.set_rng_state_all(state["cuda"])
        except RuntimeError:        # a different number of GPUs: not needed for exact resume
            pass


# ----------------------------------------------------------------------------- entry point

def train_run(cfg: RunConfig, run_dir: PathLike, progress: bool = True) -> dict[str, Any]:
    """Train (or resume, or skip) one run and write its files; returns ``train_summary.json``.

    Files in ``run_dir``: ``config.json``; ``train_log.jsonl`` (per epoch: epoch, loss, lr,
    train_acc (CE, %), seconds; a ``{"stage": "probe", ...}`` record; ``{"event": "resumed",
    "from_epoch": k}`` on resume); ``checkpoint.pt`` (every ``checkpoint_every`` epochs and at
    the end); ``model.pt`` (:func:`~xai_utils.stages.model_io.model_state`); ``train_summary.json`` (test accuracy
    in % on the full test split, wall time, ...); ``predictions.npz`` (fp32 logits, predicted
    classes and labels of every test image, from the pass that gives the accuracy);
    ``embeddings.npz`` (features, labels, preds, indices and a 2-D PCA of a fixed subset of
    1000 test images).

    A run whose model is brought as a file is imported instead (:func:`~.imported.import_run`).
    A finished run is not retrained (its summary is returned); an interrupted one resumes from
    its checkpoint. Both require the same training settings (a :class:`ConfigError` otherwise).
    A checkpoint replaces the one before only after moving it to ``checkpoint.prev.pt``; an
    unreadable ``checkpoint.pt`` gives way to that one, and an unreadable ``model.pt`` of a
    finished run is rebuilt from the last checkpoint. Each such repair is one line, printed
    and kept in the summary (``recovered``).
    """
    check_run(cfg, stages=(runs.Stage.TRAIN,), data=False)       # the loader says itself if data is missing
    if cfg.brought:
        return import_run(cfg, run_dir, progress)
    run_dir = Path(run_dir)
    summary_path = run_dir / runs.TRAIN_SUMMARY
    notes: list[str] = []                                # files found damaged and what was done
    if summary_path.is_file() and (run_dir / runs.MODEL).is_file():
        try:
            state = load_torch(run_dir / runs.MODEL)         # verified: a damaged one is rebuilt below
        except ArtefactError as e:
            notes.append(e.damage)                           # completed by _train
        else:
            stored = load_json(run_dir / runs.CONFIG) if (run_dir / runs.CONFIG).is_file() else None
            saved = stored if stored is not None else state["config"]
            diff = _training_differences(saved, cfg)
            if diff:
                raise _mismatch_error(run_dir, "finished run", diff, saved, cfg)
            _refresh_configs(run_dir, cfg, stored, state)    # model.pt and config.json read once
            return load_json(summary_path)
    with deterministic_algorithms(cfg.deterministic):     # bit-exact GPU kernels, if asked
        return _train(cfg, run_dir, summary_path, progress, notes)


def _train(cfg: RunConfig, run_dir: Path, summary_path: Path, progress: bool, notes: list[str]) -> dict[str, Any]:
    """Train (or resume) the run; write its files (see :func:`train_run`). ``notes``: a damaged
    ``model.pt`` found by :func:`train_run`, reported with what was done about it and with the
    damaged checkpoints found here, in the summary's ``recovered``."""
    run = _Run.build(cfg, run_dir)
    start_epoch, resumed_from, recovered = _resume(run, notes)
    files.save_json(run_dir / runs.CONFIG, cfg.to_dict())
    if cfg.compile and run.eager:
        print(f"{cfg.run_id}: training without torch.compile: {run.eager}")
        files.append_jsonl(run_dir / runs.TRAIN_LOG, {"event": "not compiled", "reason": run.eager})
    run.model.train()
    epochs_bar = tqdm(range(start_epoch, cfg.epochs), desc=f"{cfg.run_id} train", unit="epoch",
                      initial=start_epoch, total=cfg.epochs, disable=not progress)
    for epoch in epochs_bar:
        record = _train_epoch(run, epoch, progress)
        epochs_bar.set_postfix(loss=f"{record['loss']:.4f}")
        if (epoch + 1) % cfg.checkpoint_every == 0 or epoch + 1 == cfg.epochs:
            _save_checkpoint(run, epoch + 1)
    probe_acc = _fit_probe(run) if run.objective.needs_probe else None
    return _finish(run, summary_path, probe_acc, resumed_from, recovered)


@dataclass
class _Run:
    """What a training run works with, built in :meth:`build`'s order (the seeds make it
    bit-exact), and the seconds spent training so far."""
    cfg: RunConfig
    run_dir: Path
    device: torch.device
    data: TrainData
    model: Any
    objective: Any
    engine: Engine
    augment: Any
    clean_view: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    eager: Optional[str]                 # why the objective trains without torch.compile, if it must
    train_seconds: float = 0.0

    @classmethod
    def build(cls, cfg: RunConfig, run_dir: Path) -> "_Run":
        device = resolve_device(cfg.device)
        data = TrainData(cfg, device)
        seed_everything(cfg.seed)
        model = explained_model(cfg, data.num_classes, data.mean, data.std).to(device)
        objective = OBJECTIVES[cfg.objective](cfg, model).to(device)
        eager = OBJECTIVES[cfg.objective].uncompiled_reason
        engine = Engine(cfg, model, device, compile=cfg.compile and not eager)
        augment = get_augmentation(resolve_augmentation(cfg), cfg.dataset)
        clean_view = get_augmentation("none", cfg.dataset)     # un-augmented (ImageNet: centre crop)
        optimizer = OPTIMIZERS[cfg.optimizer](objective.trainable(model), cfg)
        scheduler = build_scheduler(optimizer, cfg, data.steps)
        return cls(cfg, Path(run_dir), device, data, model, objective, engine, augment, clean_view, optimizer,
                   scheduler, eager)


def _resume(run: _Run, notes: list[str]) -> tuple[int, Optional[int], list[str]]:
    """Load the newest readable checkpoint, if any (its settings must be the run's): (the epoch
    to start from, the epoch resumed from or None, one line for each damaged file found)."""
    cfg, run_dir = run.cfg, run.run_dir
    ckpt, source, recovered = _last_good_checkpoint(run_dir)
    rebuilt = f"rebuilt from {source} (epoch {int(ckpt['epoch'])})" if ckpt else "no checkpoint: trained again"
    recovered = [f"{note}; {rebuilt}" for note in notes] + recovered
    for line in recovered:
        print(f"{cfg.run_id}: {line}")
    if ckpt is None:
        if (run_dir / runs.TRAIN_LOG).is_file():
            files.save_text(run_dir / runs.TRAIN_LOG, "")   # killed before its first checkpoint
        return 0, None, recovered
    diff = _training_differences(ckpt["config"], cfg)
    if diff:
        raise _mismatch_error(run_dir, "checkpoint", diff, ckpt["config"], cfg)
    run.model.load_state_dict(ckpt["model"])
    run.objective.load_state_dict(ckpt["objective"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.scheduler.load_state_dict(ckpt["scheduler"])
    _set_rng_state(ckpt["rng"])
    start_epoch, run.train_seconds = int(ckpt["epoch"]), float(ckpt["train_seconds"])
    _truncate_log(run_dir, start_epoch)
    files.append_jsonl(run_dir / runs.TRAIN_LOG, {"event": "resumed", "from_epoch": start_epoch})
    return start_epoch, start_epoch, recovered


def _save_checkpoint(run: _Run, epoch: int) -> None:
    """``checkpoint.pt`` after ``epoch``; the one before it kept as ``checkpoint.prev.pt`` (a
    write killed or cut costs one interval)."""
    ckpt_path = run.run_dir / runs.CHECKPOINT
    if ckpt_path.is_file():
        os.replace(ckpt_path, run.run_dir / runs.PREVIOUS_CHECKPOINT)
    files.save_torch(ckpt_path, {
        "config": run.cfg.to_dict(), "epoch": epoch, "train_seconds": run.train_seconds,
        "model": run.model.state_dict(), "objective": run.objective.state_dict(),
        "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
        "rng": _rng_state()})


def _train_epoch(run: _Run, epoch: int, progress: bool) -> dict[str, Any]:
    """One epoch of training; its record, appended to ``train_log.jsonl`` (the epoch's one host
    read of the device's totals). FloatingPointError on a non-finite loss."""
    cfg, optimizer = run.cfg, run.optimizer
    t0 = time.perf_counter()
    gen = epoch_generator(cfg.seed, epoch)
    totals = EpochTotals.zeros(run.device)
    lr = optimizer.param_groups[0]["lr"]
    for xb, yb in tqdm(run.data.epoch(epoch, gen), total=run.data.steps, leave=False, unit="batch",
                       desc=f"epoch {epoch + 1}", disable=not progress):
        batch = TrainBatch(xb, yb, epoch, gen, run.augment, run.clean_view)
        lr = optimizer.param_groups[0]["lr"]
        train_step(run.objective, run.model, run.engine, optimizer, run.scheduler, batch, totals)
    steps = max(run.data.steps, 1)
    seconds = time.perf_counter() - t0
    run.train_seconds += seconds
    record = {"epoch": epoch + 1, "loss": float(totals.loss) / steps, "lr": lr, "seconds": round(seconds, 3)}
    record.update({k: float(v) / steps for k, v in totals.terms.items()})
    if not run.objective.needs_probe:
        record["train_acc"] = 100.0 * int(totals.correct) / max(totals.seen, 1)
    if not math.isfinite(record["loss"]):
        raise FloatingPointError(f"run {cfg.run_id}: training loss is {record['loss']} at epoch "
                                 f"{epoch + 1}; lower lr (now {cfg.lr}) or check the data")
    files.append_jsonl(run.run_dir / runs.TRAIN_LOG, record)
    return record


def _fit_probe(run: _Run) -> float:
    """The linear probe of a contrastive model on its frozen features; its training accuracy."""
    cfg = run.cfg
    t0 = time.perf_counter()
    feats, labels = run.engine.extract(run.data.plain_batches(cfg.batch_size_eval))
    probe, final = train_probe(feats, labels, run.data.num_classes, cfg)
    run.model.head.load_state_dict(probe.state_dict())
    seconds = time.perf_counter() - t0
    run.train_seconds += seconds
    files.append_jsonl(run.run_dir / runs.TRAIN_LOG, {
        "stage": "probe", "epochs": cfg.probe_epochs, **final, "seconds": round(seconds, 3)})
    return final["train_acc"]


def _finish(run: _Run, summary_path: Path, probe_acc: Optional[float], resumed_from: Optional[int],
            recovered: list[str]) -> dict[str, Any]:
    """The fp32 test pass and the run's final files: embeddings, predictions, model.pt, the
    fingerprint and, last, train_summary.json (returned)."""
    cfg, run_dir, model = run.cfg, run.run_dir, run.model
    model.eval()
    t0 = time.perf_counter()
    acc, n_test, emb, predictions = evaluate_test(run.engine, cfg, run.device)
    files.save_npz(run_dir / runs.EMBEDDINGS, **emb)
    files.save_npz(run_dir / runs.PREDICTIONS, **predictions)
    if run.engine.channels_last:
        model.to(memory_format=torch.contiguous_format)
    files.save_torch(run_dir / runs.MODEL, model_state(model, cfg, run.data.num_classes,
                                                      getattr(run.objective, "projection", None)))
    summary = {"run_id": cfg.run_id, "dataset": cfg.dataset, "objective": cfg.objective,
               "seed": cfg.seed, "arch": cfg.arch, "widths": cfg.widths,
               "test_accuracy": acc, "n_test": n_test, "n_train": run.data.n, "epochs": cfg.epochs,
               "probe_train_accuracy": probe_acc, "wall_time_s": round(run.train_seconds, 3),
               "eval_time_s": round(time.perf_counter() - t0, 3), "device": str(run.device),
               "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),   # --devices: this run's GPU
               "resumed_from": resumed_from, "recovered": recovered}
    record_fingerprint(run_dir, runs.Stage.TRAIN, run.device)        # where these weights were made
    files.save_json(summary_path, summary)
    return summary
