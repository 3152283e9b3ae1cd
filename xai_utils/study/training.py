"""The training machinery of one run: optimisers, the LR schedule, the training data on the
device, the engine (autocast, channels-last, compile), the step of any objective, the linear
probe of the contrastive models and the fp32 test pass. Nothing here reads or writes a file:
the training stage (:mod:`xai_utils.stages.train`) does, and calls these::

    CE : images -> backbone -> linear head -> cross-entropy
    SCL: 2 augmented views -> backbone -> ProjectionHead -> SupConLoss; then a linear probe
    TL : 1 view -> backbone features (raw, no head) -> TripletLoss;    then a linear probe

The linear probe (PAPER.md) is trained on the frozen backbone's L2-normalised features of
the un-augmented training subset (full batch, SGD) and becomes the head of the explained
model (``ExplainedModel(normalize_features=True)``); the projection head is not part of it
(``model.pt`` keeps it beside, for the pair analysis's ``pair_space: projection``).

Engineering: in-memory datasets stay as uint8 on the training device and batches are
indexed and augmented there (no DataLoader); the streamed ImageNet-S50 train split uses its
own loader. Shuffling and augmentation draw from a CPU generator seeded by (seed, epoch)
(:func:`xai_utils.ops.seeds.epoch_generator`), on every device. A step (:func:`train_step`)
never reads a device value on the host. On CUDA: bf16 autocast, channels-last and optional
``torch.compile``; on CPU: float32, channels-last.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops.devices import autocast, fp32_precision, ieee_float32
from .data import eval_indices, load_dataset, train_indices
from .models import ExplainedModel
from .objectives import OBJECTIVES, RunSettings, StreamedViews, TrainBatch

EMBED_SAMPLES = 1000          # fixed test subset whose features go to embeddings.npz


# ----------------------------------------------------------------------------- optimisers

def _sgd(params, cfg: RunSettings) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def _adamw(params, cfg: RunSettings) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _radam(params, cfg: RunSettings) -> torch.optim.Optimizer:
    return torch.optim.RAdam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


OPTIMIZERS: dict[str, Callable[[Any, RunSettings], torch.optim.Optimizer]] = {
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


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: RunSettings, steps_per_epoch: int
                    ) -> torch.optim.lr_scheduler.LambdaLR:
    """Warm-up for ``cfg.warmup_epochs`` then cosine to 0 at ``cfg.epochs``, stepped per iteration."""
    warm, total = cfg.warmup_epochs * steps_per_epoch, cfg.epochs * steps_per_epoch
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, warm, total))


# ----------------------------------------------------------------------------- augmentation

def resolve_augmentation(cfg: RunSettings) -> str:
    """'auto' -> the objective's recipe (scl for SCL, ce for CE/TL), *_imagenet on ImageNet."""
    name = cfg.augmentation
    if name == "auto":
        name = OBJECTIVES[cfg.objective].augmentation
        if cfg.dataset == "imagenet_s50":
            name = f"{name}_imagenet"
    return name


# ----------------------------------------------------------------------------- data

class TrainData:
    """The training subset: in memory on the device (indexed there) or streamed (ImageNet).

    The last incomplete batch of an epoch is dropped (contrastive losses compare the images
    of a batch; a tiny last batch would be noisy), so an epoch is ``n // batch_size`` steps.
    A streamed subset is read by one loader for the whole run (its workers persist across
    epochs) that takes the objective's ``random_view_count()`` random resized crops of every
    image, from the whole image, in its workers; it is released after the last epoch.
    """

    def __init__(self, cfg: RunSettings, device: torch.device):
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
            self.clean = OBJECTIVES[cfg.objective].uses_clean_view     # decoded only when used
            self.epochs = cfg.epochs
            self._loader: Any = None
        else:
            idx_t = torch.as_tensor(idx)
            self.images = ds.images[idx_t].to(device)          # uint8, stays on the device
            self.labels = ds.labels[idx_t].to(device)

    def epoch(self, epoch: int, generator: torch.Generator
              ) -> Iterator[tuple[Union[torch.Tensor, StreamedViews], torch.Tensor]]:
        """uint8 image batches and labels on the device, in an order fixed by (seed, epoch).

        Streamed: the images are :class:`StreamedViews` (the V crops of each image, and its
        clean view for an objective that uses it), whose order and crops are functions of
        (seed, epoch, image) only."""
        if self.streamed:
            loader = self.train_loader()
            loader.sampler.set_epoch(epoch)
            for step, (crops, clean, y) in enumerate(loader):
                if step >= self.steps:
                    break
                views = StreamedViews(crops.to(self.device, non_blocking=True),
                                      clean.to(self.device, non_blocking=True) if self.clean else None)
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
                                                num_workers=self.num_workers, indices=self.indices,
                                                clean=self.clean)
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

class Engine:
    """Device placement, autocast, float32 precision, channels-last and the (optionally
    compiled) feature function.

    On CUDA a training step runs under bf16 autocast (``amp``) with TF32 float32 kernels
    (:meth:`precision`); everything else (the probe, the test pass, attribution, metrics)
    runs in IEEE float32. ``deterministic``: no TF32, cuDNN not benchmarked (the training
    stage also enables :func:`~xai_utils.ops.devices.deterministic_algorithms`)."""

    def __init__(self, cfg: RunSettings, model: ExplainedModel, device: torch.device, compile: bool | None = None):
        self.device = device
        self.cuda = device.type == "cuda"
        self.amp = bool(cfg.amp and self.cuda)
        deterministic = bool(getattr(cfg, "deterministic", False))
        self.tf32 = self.cuda and not deterministic
        self.channels_last = bool(cfg.channels_last)   # x1.25 training on CPU too (narrow ResNet-18)
        if self.cuda and not deterministic:
            torch.backends.cudnn.benchmark = True
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        backbone = model.backbone
        self.backbone = torch.compile(backbone) if (cfg.compile if compile is None else compile) else backbone
        self.model = model

    def autocast(self):
        return autocast(self.device, torch.bfloat16, enabled=self.amp)

    def precision(self):
        """The float32 precision of a training step: TF32 on CUDA (unless deterministic),
        IEEE elsewhere; the flags are restored after the step."""
        return fp32_precision("tf32" if self.tf32 else "ieee")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features of pixel-space images (runs inside the caller's autocast)."""
        x = self.model.normalize_input(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.backbone(x)

    @torch.no_grad()
    def extract(self, batches: Iterator[tuple[torch.Tensor, torch.Tensor]]
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """float32 features and labels of un-augmented float batches: model in eval mode, IEEE
        float32, no autocast, no TF32 (the probe, the test accuracy and the evaluation's
        ``correct`` flags all rest on these fp32 features)."""
        was_training = self.model.training
        self.model.eval()
        feats, labels = [], []
        for x, y in batches:
            with ieee_float32(self.device):
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


def train_step(objective: nn.Module, model: ExplainedModel, engine: "Engine",
               optimizer: torch.optim.Optimizer, scheduler: Any, batch: TrainBatch,
               totals: EpochTotals) -> None:
    """One optimiser step of any objective, with no host synchronisation.

    Nothing here reads a device value on the host: augmentation parameters come from the
    CPU generator in one copy per view, the losses have no Python branch on device values,
    and the loss, its logged terms and the training accuracy are summed on the device
    (:class:`EpochTotals`). ``tests/test_sync.py`` counts the device-to-host reads of this
    function for every objective; on a GPU, ``torch.cuda.set_sync_debug_mode("error")``
    around it checks the same (docs/full-scale.md). The step runs in the engine's float32
    precision (TF32 on CUDA) and autocast (bf16 on CUDA).
    """
    with engine.precision():
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

def train_probe(features: torch.Tensor, labels: torch.Tensor, num_classes: int, cfg: RunSettings
                ) -> tuple[nn.Linear, dict[str, float]]:
    """Linear probe on L2-normalised frozen features: full-batch SGD for ``probe_epochs``.

    The probe is initialised (PyTorch's default Linear init) from a generator seeded by the
    run's seed, without touching the global random state. Returns the probe and its final
    training loss / accuracy (%) measured after the last update. IEEE float32 (no TF32).
    """
    with ieee_float32(features.device):
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
def evaluate_test(engine: Engine, cfg: RunSettings, device: torch.device
                  ) -> tuple[float, int, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """One fp32 forward pass over the full test split: accuracy (%), the predictions of every
    test image (``predictions.npz``: the attribution stage takes its predicted classes, hence
    ``correct``, from here) and the embeddings of its fixed subset."""
    test = load_dataset(cfg.dataset, "test", cfg.data_root)
    feats, labels = engine.extract(_dataset_batches(test, cfg.batch_size_eval, device))
    with ieee_float32(device):
        logits = engine.model.logits_from_features(feats)    # float32 features -> IEEE float32 logits
    return test_outputs(feats, logits, labels)


def test_outputs(feats: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor
                 ) -> tuple[float, int, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """What the test pass writes, from the features and logits of every test image: the accuracy
    (%), the number of images, ``embeddings.npz`` (the fixed subset) and ``predictions.npz``."""
    preds = logits.argmax(dim=1)
    acc = 100.0 * float((preds == labels).float().mean())
    n = len(labels)
    predictions = {"indices": np.arange(n, dtype=np.int64),
                   "labels": labels.cpu().numpy().astype(np.int64),
                   "preds": preds.cpu().numpy().astype(np.int64),
                   "logits": logits.cpu().numpy().astype(np.float32)}
    idx = torch.as_tensor(eval_indices(n, EMBED_SAMPLES, seed=0), device=feats.device)
    emb = {"features": feats[idx].cpu().numpy().astype(np.float32),
           "labels": labels[idx].cpu().numpy().astype(np.int64),
           "preds": preds[idx].cpu().numpy().astype(np.int64),
           "indices": idx.cpu().numpy().astype(np.int64),
           "coords2d": pca_2d(feats[idx]).cpu().numpy()}
    return acc, n, emb, predictions
