"""Training of one run (CE, SCL or TL), with the linear probe of the contrastive models.

``train_run(cfg, run_dir)`` is the single entry point, for every objective and dataset::

    CE : images -> backbone -> linear head -> cross-entropy
    SCL: 2 augmented views -> backbone -> ProjectionHead -> SupConLoss; then a linear probe
    TL : 1 view -> backbone features (raw, no head) -> TripletLoss;    then a linear probe

The linear probe (PAPER.md) is trained on the frozen backbone's L2-normalised features of
the un-augmented training subset (full batch, SGD) and becomes the head of the explained
model (``ExplainedModel(normalize_features=True)``); the projection head is not part of it
(``model.pt`` keeps it beside, for the pair analysis's ``pair_space: projection``).

Engineering: in-memory datasets stay as uint8 on the training device and batches are
indexed and augmented there (no DataLoader); the streamed ImageNet-S50 train split uses its
own loader. Shuffling and augmentation draw from a CPU generator seeded by (seed, epoch), on
every device, so a run resumed from ``checkpoint.pt`` ends with exactly the weights of an
uninterrupted one (bit-exact on CPU; on CUDA the same augmentations and order, up to the
non-determinism of cuDNN kernels). A step (:func:`train_step`) never reads a device value on
the host. On CUDA: bf16 autocast, channels-last and optional ``torch.compile``; on CPU:
float32, channels-last.

Files written into the run folder: see :mod:`xai_utils.runs` and :func:`train_run`.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import runs
from .config import ConfigError, RunConfig, stage_keys
from .devices import autocast, float32
from .models import ExplainedModel, build_model, model_state
from .objectives import OBJECTIVES, StreamedViews, TrainBatch

PathLike = Union[str, Path]
EMBED_SAMPLES = 1000          # fixed test subset whose features go to embeddings.npz


# ----------------------------------------------------------------------------- optimisers

def _sgd(params, cfg: RunConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def _adamw(params, cfg: RunConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _radam(params, cfg: RunConfig) -> torch.optim.Optimizer:
    return torch.optim.RAdam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


OPTIMIZERS: dict[str, Callable[[Any, RunConfig], torch.optim.Optimizer]] = {
    "sgd": _sgd,        # momentum = cfg.momentum
    "adamw": _adamw,    # decoupled weight decay
    "radam": _radam,    # torch defaults (L2-style weight decay)
}


# ----------------------------------------------------------------------------- schedule

def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Multiplier of the base learning rate at optimiser step ``step`` (0-based).

    Linear warm-up ``(step + 1) / warmup_steps`` for the first ``warmup_steps`` steps, then
    half a cosine from 1 down to 0 over the remaining steps:
    ``0.5 * (1 + cos(pi * (step - warmup_steps) / (total_steps - warmup_steps)))``.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay = max(total_steps - warmup_steps, 1)
    progress = min((step - warmup_steps) / decay, 1.0)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: RunConfig, steps_per_epoch: int
                    ) -> torch.optim.lr_scheduler.LambdaLR:
    """Warm-up for ``cfg.warmup_epochs`` then cosine to 0 at ``cfg.epochs``, stepped per iteration."""
    warm, total = cfg.warmup_epochs * steps_per_epoch, cfg.epochs * steps_per_epoch
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, warm, total))


# ----------------------------------------------------------------------------- augmentation

def resolve_augmentation(cfg: RunConfig) -> str:
    """'auto' -> the objective's recipe (scl for SCL, ce for CE/TL), *_imagenet on ImageNet."""
    name = cfg.augmentation
    if name == "auto":
        name = OBJECTIVES[cfg.objective].augmentation
        if cfg.dataset == "imagenet_s50":
            name = f"{name}_imagenet"
    return name


def epoch_seed(seed: int, epoch: int) -> int:
    return (1_000_003 * int(seed) + int(epoch)) % (2 ** 63)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator of one epoch's shuffling and augmentation, a function of (seed, epoch) only.

    Always a CPU generator, whatever the training device: its draws are the same on every
    machine, and augmentation parameters drawn on the host go to the device in one
    non-blocking copy instead of being read back from it (a CUDA generator's stream would
    also differ from the CPU's, so a seed would not mean the same run on both)."""
    return torch.Generator().manual_seed(epoch_seed(seed, epoch))


# ----------------------------------------------------------------------------- data

class TrainData:
    """The training subset: in memory on the device (indexed there) or streamed (ImageNet).

    The last incomplete batch of an epoch is dropped (contrastive losses compare the images
    of a batch; a tiny last batch would be noisy), so an epoch is ``n // batch_size`` steps.
    A streamed subset is read by one loader for the whole run (its workers persist across
    epochs) that takes the objective's ``random_view_count()`` random resized crops of every
    image, from the whole image, in its workers; it is released after the last epoch.
    """

    def __init__(self, cfg: RunConfig, device: torch.device):
        from .data import load_dataset, train_indices

        ds = load_dataset(cfg.dataset, "train", cfg.data_root)
        self.num_classes, self.mean, self.std = ds.num_classes, tuple(ds.mean), tuple(ds.std)
        self.batch_size, self.device, self.seed = cfg.batch_size, device, cfg.seed
        self.ds = ds
        self.streamed = not hasattr(ds, "images")
        idx = train_indices(len(ds), cfg.train_subset, seed=0)
        self.n = len(idx)
        self.steps = max(self.n // cfg.batch_size, 1)
        if self.streamed:
            self.indices = None if len(idx) == len(ds) else idx.tolist()
            self.num_workers = cfg.num_workers
            self.views = OBJECTIVES[cfg.objective].random_view_count()
            self.epochs = cfg.epochs
            self._loader: Any = None
        else:
            idx_t = torch.as_tensor(idx)
            self.images = ds.images[idx_t].to(device)          # uint8, stays on the device
            self.labels = ds.labels[idx_t].to(device)

    def epoch(self, epoch: int, generator: torch.Generator
              ) -> Iterator[tuple[Union[torch.Tensor, StreamedViews], torch.Tensor]]:
        """uint8 image batches and labels on the device, in an order fixed by (seed, epoch).

        Streamed: the images are :class:`StreamedViews` (the V crops and the clean view of
        each image), whose order and crops are functions of (seed, epoch, image) only."""
        if self.streamed:
            loader = self.train_loader()
            loader.sampler.set_epoch(epoch)
            for step, (crops, clean, y) in enumerate(loader):
                if step >= self.steps:
                    break
                views = StreamedViews(crops.to(self.device, non_blocking=True),
                                      clean.to(self.device, non_blocking=True))
                yield views, y.to(self.device, non_blocking=True)
            if epoch + 1 >= self.epochs:
                self._loader = None                 # the last epoch: let its workers exit
            return
        perm = torch.randperm(self.n, generator=generator).to(self.device, non_blocking=True)
        bs = min(self.batch_size, self.n)
        for step in range(self.steps):
            idx = perm[step * bs:(step + 1) * bs]
            yield self.images[idx], self.labels[idx]

    def train_loader(self) -> torch.utils.data.DataLoader:
        """The streamed subset's training loader, built on first use and kept (its workers
        persist across epochs)."""
        if self._loader is None:
            self._loader = self.ds.train_loader(min(self.batch_size, self.n), self.views, self.seed,
                                                num_workers=self.num_workers, indices=self.indices)
        return self._loader

    def plain_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The whole subset in order, un-augmented, float [0, 1] (for the probe). Streamed
        images: shorter side 256 and centre crop 224, as the test images."""
        if self.streamed:
            loader = self.ds.loader(batch_size, shuffle=False, num_workers=self.num_workers,
                                    drop_last=False, indices=self.indices)
            for x, y in loader:
                yield _to_float(x.to(self.device, non_blocking=True)), y.to(self.device)
            return
        for s in range(0, self.n, batch_size):
            yield _to_float(self.images[s:s + batch_size]), self.labels[s:s + batch_size]


def _to_float(x: torch.Tensor) -> torch.Tensor:
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def _dataset_batches(ds, batch_size: int, device: torch.device
                     ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for s in range(0, len(ds), batch_size):
        yield ds.batch(slice(s, min(s + batch_size, len(ds))), device=device)


# ----------------------------------------------------------------------------- engine

class _Engine:
    """Device placement, autocast, channels-last and the (optionally compiled) feature function."""

    def __init__(self, cfg: RunConfig, model: ExplainedModel, device: torch.device, compile: bool | None = None):
        self.device = device
        self.cuda = device.type == "cuda"
        self.amp = bool(cfg.amp and self.cuda)
        self.channels_last = bool(cfg.channels_last)   # x1.25 training on CPU too (narrow ResNet-18)
        if self.cuda:
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        backbone = model.backbone
        self.backbone = torch.compile(backbone) if (cfg.compile if compile is None else compile) else backbone
        self.model = model

    def autocast(self):
        return autocast(self.device, torch.bfloat16, enabled=self.amp)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features of pixel-space images (runs inside the caller's autocast)."""
        x = self.model.normalize_input(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.backbone(x)

    @torch.no_grad()
    def extract(self, batches: Iterator[tuple[torch.Tensor, torch.Tensor]]
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """float32 features and labels of un-augmented float batches: model in eval mode, no
        autocast (the probe, the test accuracy and the evaluation's ``correct`` flags all
        rest on these fp32 features)."""
        was_training = self.model.training
        self.model.eval()
        feats, labels = [], []
        for x, y in batches:
            with float32(self.device):
                feats.append(self.features(x.float()).float())
            labels.append(y)
        self.model.train(was_training)
        return torch.cat(feats), torch.cat(labels)


# ----------------------------------------------------------------------------- step

@dataclass
class EpochTotals:
    """Running sums of one epoch, kept on the training device and read once at its end."""

    loss: torch.Tensor
    correct: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)
    seen: int = 0

    @classmethod
    def zeros(cls, device: torch.device) -> "EpochTotals":
        return cls(torch.zeros((), device=device, dtype=torch.float64),
                   torch.zeros((), device=device, dtype=torch.long))


def train_step(objective: nn.Module, model: ExplainedModel, engine: "_Engine",
               optimizer: torch.optim.Optimizer, scheduler: Any, batch: TrainBatch,
               totals: EpochTotals) -> None:
    """One optimiser step of any objective, with no host synchronisation.

    Nothing here reads a device value on the host: augmentation parameters come from the
    CPU generator in one copy per view, the losses have no Python branch on device values,
    and the loss, its logged terms and the training accuracy are summed on the device
    (:class:`EpochTotals`). ``tests/test_sync.py`` counts the device-to-host reads of this
    function for every objective; on a GPU, ``torch.cuda.set_sync_debug_mode("error")``
    around it checks the same (README, "GPU").
    """
    with engine.autocast():
        out = objective.step(batch, model, engine)
    optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    optimizer.step()
    scheduler.step()
    totals.loss += out.loss.detach()
    for k, v in out.terms.items():
        totals.terms[k] = totals.terms[k] + v.double() if k in totals.terms else v.double()
    if out.logits is not None:
        totals.correct += (out.logits.argmax(dim=1) == batch.labels).sum()
    totals.seen += batch.labels.shape[0]


# ----------------------------------------------------------------------------- probe

def train_probe(features: torch.Tensor, labels: torch.Tensor, num_classes: int, cfg: RunConfig
                ) -> tuple[nn.Linear, dict[str, float]]:
    """Linear probe on L2-normalised frozen features: full-batch SGD for ``probe_epochs``.

    The probe is initialised (PyTorch's default Linear init) from a generator seeded by the
    run's seed, without touching the global random state. Returns the probe and its final
    training loss / accuracy (%) measured after the last update.
    """
    x = F.normalize(features.float(), dim=1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        probe = nn.Linear(x.shape[1], num_classes)
    probe = probe.to(x.device)
    opt = torch.optim.SGD(probe.parameters(), lr=cfg.probe_lr, momentum=cfg.probe_momentum,
                          weight_decay=cfg.probe_weight_decay)
    for _ in range(cfg.probe_epochs):
        loss = F.cross_entropy(probe(x), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        logits = probe(x)
        final = {"loss": float(F.cross_entropy(logits, labels)),
                 "train_acc": 100.0 * float((logits.argmax(1) == labels).float().mean())}
    return probe, final


# ----------------------------------------------------------------------------- evaluation

def pca_2d(features: torch.Tensor) -> torch.Tensor:
    """2-D PCA of the L2-normalised features (torch SVD); each axis' sign fixed so that its
    largest loading is positive (deterministic output)."""
    x = F.normalize(features.double(), dim=1)
    x = x - x.mean(dim=0, keepdim=True)
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    axes = vh[:2]
    sign = torch.sign(axes.gather(1, axes.abs().argmax(dim=1, keepdim=True)))
    axes = axes * torch.where(sign == 0, torch.ones_like(sign), sign)
    coords = x @ axes.T
    if coords.shape[1] < 2:                               # 1-D features: pad a zero axis
        coords = torch.cat([coords, torch.zeros_like(coords)], dim=1)
    return coords.float()


@torch.no_grad()
def evaluate_test(engine: _Engine, cfg: RunConfig, device: torch.device
                  ) -> tuple[float, int, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """One fp32 forward pass over the full test split: accuracy (%), the predictions of every
    test image (``predictions.npz``: the attribution stage takes its predicted classes, hence
    ``correct``, from here) and the embeddings of its fixed subset."""
    from .data import eval_indices, load_dataset

    test = load_dataset(cfg.dataset, "test", cfg.data_root)
    feats, labels = engine.extract(_dataset_batches(test, cfg.batch_size_eval, device))
    logits = engine.model.logits_from_features(feats)        # float32 features -> float32 logits
    preds = logits.argmax(dim=1)
    acc = 100.0 * float((preds == labels).float().mean())
    predictions = {"indices": np.arange(len(test), dtype=np.int64),
                   "labels": labels.cpu().numpy().astype(np.int64),
                   "preds": preds.cpu().numpy().astype(np.int64),
                   "logits": logits.cpu().numpy().astype(np.float32)}
    idx = torch.as_tensor(eval_indices(len(test), EMBED_SAMPLES, seed=0), device=feats.device)
    emb = {"features": feats[idx].cpu().numpy().astype(np.float32),
           "labels": labels[idx].cpu().numpy().astype(np.int64),
           "preds": preds[idx].cpu().numpy().astype(np.int64),
           "indices": idx.cpu().numpy().astype(np.int64),
           "coords2d": pca_2d(feats[idx]).cpu().numpy()}
    return acc, len(test), emb, predictions


# ----------------------------------------------------------------------------- run folder

def _training_differences(saved: dict[str, Any], cfg: RunConfig) -> list[str]:
    """Keys that change the trained weights and differ between ``saved`` and ``cfg``."""
    now = cfg.to_dict()
    return [k for k in stage_keys(cfg, "train") if saved.get(k) != now.get(k)]


def _mismatch_error(run_dir: Path, what: str, keys: list[str], saved: dict, cfg: RunConfig) -> ConfigError:
    diffs = ", ".join(f"{k}: {saved.get(k)!r} -> {getattr(cfg, k)!r}" for k in keys)
    return ConfigError(
        f"{run_dir} holds a {what} trained with different settings ({diffs}). Delete the folder "
        f"to retrain it, or give a new run_dir.")


def _refresh_configs(run_dir: Path, cfg: RunConfig) -> None:
    """Settings that do not change the weights (evaluation, device, ...) may change between
    calls: keep config.json and the config inside model.pt up to date with them."""
    config_path = run_dir / runs.CONFIG
    if not config_path.is_file() or runs.load_json(config_path) != cfg.to_dict():
        runs.save_json(config_path, cfg.to_dict())
        state = torch.load(run_dir / runs.MODEL, map_location="cpu", weights_only=False)
        state["config"] = cfg.to_dict()
        runs.save_torch(run_dir / runs.MODEL, state)


def _truncate_log(run_dir: Path, last_epoch: int) -> None:
    """Drop epoch records after the checkpoint (they will be trained again)."""
    log = run_dir / runs.TRAIN_LOG
    keep = [r for r in runs.read_jsonl(log)
            if "event" in r or ("stage" not in r and r.get("epoch", 0) <= last_epoch)]
    runs.save_text(log, "".join(json.dumps(r, default=str) + "\n" for r in keep))


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
    the end); ``model.pt`` (:func:`models.model_state`); ``train_summary.json`` (test accuracy
    in % on the full test split, wall time, ...); ``predictions.npz`` (fp32 logits, predicted
    classes and labels of every test image, from the pass that gives the accuracy);
    ``embeddings.npz`` (features, labels, preds, indices and a 2-D PCA of a fixed subset of
    1000 test images).

    A finished run is not retrained (its summary is returned); an interrupted one resumes from
    its checkpoint. Both require the same training settings (a :class:`ConfigError` otherwise).
    """
    from .validation import check_run
    check_run(cfg, stages=("train",), data=False)       # the loader says itself if data is missing
    run_dir = Path(run_dir)
    summary_path = run_dir / runs.TRAIN_SUMMARY
    if summary_path.is_file() and (run_dir / runs.MODEL).is_file():
        saved = (runs.load_json(run_dir / runs.CONFIG) if (run_dir / runs.CONFIG).is_file() else
                 torch.load(run_dir / runs.MODEL, map_location="cpu", weights_only=False)["config"])
        diff = _training_differences(saved, cfg)
        if diff:
            raise _mismatch_error(run_dir, "finished run", diff, saved, cfg)
        _refresh_configs(run_dir, cfg)
        return runs.load_json(summary_path)

    device = runs.resolve_device(cfg.device)
    data = TrainData(cfg, device)
    runs.seed_everything(cfg.seed)
    model = build_model(cfg, data.num_classes, data.mean, data.std).to(device)
    objective = OBJECTIVES[cfg.objective](cfg, model).to(device)
    eager = OBJECTIVES[cfg.objective].uncompiled_reason
    engine = _Engine(cfg, model, device, compile=cfg.compile and not eager)
    augment = _get_augmentation(resolve_augmentation(cfg), cfg.dataset)
    clean_view = _get_augmentation("none", cfg.dataset)     # un-augmented (ImageNet: centre crop)
    optimizer = OPTIMIZERS[cfg.optimizer](objective.trainable(model), cfg)
    scheduler = build_scheduler(optimizer, cfg, data.steps)

    start_epoch, train_seconds, resumed_from = 0, 0.0, None
    ckpt_path = run_dir / runs.CHECKPOINT
    if ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)   # states move on load
        diff = _training_differences(ckpt["config"], cfg)
        if diff:
            raise _mismatch_error(run_dir, "checkpoint", diff, ckpt["config"], cfg)
        model.load_state_dict(ckpt["model"])
        objective.load_state_dict(ckpt["objective"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        _set_rng_state(ckpt["rng"])
        start_epoch, train_seconds = int(ckpt["epoch"]), float(ckpt["train_seconds"])
        resumed_from = start_epoch
        _truncate_log(run_dir, start_epoch)
        runs.append_jsonl(run_dir / runs.TRAIN_LOG, {"event": "resumed", "from_epoch": start_epoch})
    elif (run_dir / runs.TRAIN_LOG).is_file():
        runs.save_text(run_dir / runs.TRAIN_LOG, "")       # killed before its first checkpoint
    runs.save_json(run_dir / runs.CONFIG, cfg.to_dict())
    if cfg.compile and eager:
        print(f"{cfg.run_id}: training without torch.compile: {eager}")
        runs.append_jsonl(run_dir / runs.TRAIN_LOG, {"event": "not compiled", "reason": eager})

    def save_checkpoint(epoch: int) -> None:
        runs.save_torch(ckpt_path, {
            "config": cfg.to_dict(), "epoch": epoch, "train_seconds": train_seconds,
            "model": model.state_dict(), "objective": objective.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "rng": _rng_state()})

    # ---- training epochs
    model.train()
    epochs_bar = tqdm(range(start_epoch, cfg.epochs), desc=f"{cfg.run_id} train", unit="epoch",
                      initial=start_epoch, total=cfg.epochs, disable=not progress)
    for epoch in epochs_bar:
        t0 = time.perf_counter()
        gen = epoch_generator(cfg.seed, epoch)
        totals = EpochTotals.zeros(device)
        lr = optimizer.param_groups[0]["lr"]
        for xb, yb in tqdm(data.epoch(epoch, gen), total=data.steps, leave=False, unit="batch",
                           desc=f"epoch {epoch + 1}", disable=not progress):
            batch = TrainBatch(xb, yb, epoch, gen, augment, clean_view)
            lr = optimizer.param_groups[0]["lr"]
            train_step(objective, model, engine, optimizer, scheduler, batch, totals)
        steps = max(data.steps, 1)
        seconds = time.perf_counter() - t0
        train_seconds += seconds
        record = {"epoch": epoch + 1, "loss": float(totals.loss) / steps, "lr": lr,
                  "seconds": round(seconds, 3)}                      # the epoch's one host read
        record.update({k: float(v) / steps for k, v in totals.terms.items()})
        if not objective.needs_probe:
            record["train_acc"] = 100.0 * int(totals.correct) / max(totals.seen, 1)
        if not math.isfinite(record["loss"]):
            raise FloatingPointError(f"run {cfg.run_id}: training loss is {record['loss']} at epoch "
                                     f"{epoch + 1}; lower lr (now {cfg.lr}) or check the data")
        runs.append_jsonl(run_dir / runs.TRAIN_LOG, record)
        epochs_bar.set_postfix(loss=f"{record['loss']:.4f}")
        if (epoch + 1) % cfg.checkpoint_every == 0 or epoch + 1 == cfg.epochs:
            save_checkpoint(epoch + 1)

    # ---- linear probe of the contrastive models
    probe_acc = None
    if objective.needs_probe:
        t0 = time.perf_counter()
        feats, labels = engine.extract(data.plain_batches(cfg.batch_size_eval))
        probe, final = train_probe(feats, labels, data.num_classes, cfg)
        model.head.load_state_dict(probe.state_dict())
        probe_acc = final["train_acc"]
        seconds = time.perf_counter() - t0
        train_seconds += seconds
        runs.append_jsonl(run_dir / runs.TRAIN_LOG, {
            "stage": "probe", "epochs": cfg.probe_epochs, **final, "seconds": round(seconds, 3)})

    # ---- evaluation, final files
    model.eval()
    t0 = time.perf_counter()
    acc, n_test, emb, predictions = evaluate_test(engine, cfg, device)
    runs.save_npz(run_dir / runs.EMBEDDINGS, **emb)
    runs.save_npz(run_dir / runs.PREDICTIONS, **predictions)
    if engine.channels_last:
        model.to(memory_format=torch.contiguous_format)
    runs.save_torch(run_dir / runs.MODEL, model_state(model, cfg, data.num_classes,
                                                      getattr(objective, "projection", None)))
    summary = {"run_id": cfg.run_id, "dataset": cfg.dataset, "objective": cfg.objective,
               "seed": cfg.seed, "arch": cfg.arch, "widths": cfg.widths,
               "test_accuracy": acc, "n_test": n_test, "n_train": data.n, "epochs": cfg.epochs,
               "probe_train_accuracy": probe_acc, "wall_time_s": round(train_seconds, 3),
               "eval_time_s": round(time.perf_counter() - t0, 3), "device": str(device),
               "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),   # --devices: this run's GPU
               "resumed_from": resumed_from}
    runs.save_json(summary_path, summary)
    return summary


def _get_augmentation(name: str, dataset: str | None = None) -> Callable[..., torch.Tensor]:
    from .augment import get_augmentation
    return get_augmentation(name, dataset)
