"""A training step never waits for the accelerator.

The step of every objective runs on the data-free ``meta`` device inside
:class:`xai_utils.ops.devices.HostSyncCounter`, which counts every read of a device value on the
host (``.item()``, ``bool()``, ``nonzero``, boolean-mask indexing, device-to-host and blocking
host-to-device copies). On CUDA each of these would block the Python thread until the GPU
has finished the queued work. The counter itself is checked on operations that do sync.
"""
from __future__ import annotations

import pytest
import torch

from xai_utils.settings import RunConfig
from xai_utils.ops.devices import HostSyncCounter
from xai_utils.ops.augment import get_augmentation
from xai_utils.ops.seeds import epoch_generator
from xai_utils.study.objectives import OBJECTIVES, TrainBatch, explained_model
from xai_utils.study.training import (OPTIMIZERS, Engine, EpochTotals, build_scheduler, resolve_augmentation,
                                      train_step)

META = torch.device("meta")


def _config(objective: str, optimizer: str = "sgd") -> RunConfig:
    return RunConfig(dataset="shapes", objective=objective, seed=0, arch="resnet18",
                     widths=[8, 16, 16, 16], epochs=4, batch_size=8, optimizer=optimizer,
                     excon_warmup_epochs=1, device="cpu")


def _step_counts(objective: str, optimizer: str = "sgd", steps: int = 2) -> list[HostSyncCounter]:
    cfg = _config(objective, optimizer)
    model = explained_model(cfg, 10, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)).to(META)
    obj = OBJECTIVES[objective](cfg, model).to(META)
    engine = Engine(cfg, model, META, compile=False)
    opt = OPTIMIZERS[cfg.optimizer](obj.trainable(model), cfg)
    sched = build_scheduler(opt, cfg, steps_per_epoch=10)
    augment = get_augmentation(resolve_augmentation(cfg))
    clean = get_augmentation("none")
    x = torch.zeros(8, 3, 32, 32, dtype=torch.uint8, device=META)
    y = torch.zeros(8, dtype=torch.long, device=META)
    gen, totals, counters = epoch_generator(0, 2), EpochTotals.zeros(META), []
    for _ in range(steps):                      # epoch 2: ExCon's masked views are in use
        with HostSyncCounter() as c:
            train_step(obj, model, engine, opt, sched, TrainBatch(x, y, 2, gen, augment, clean), totals)
        counters.append(c)
    return counters


@pytest.mark.parametrize("objective", list(OBJECTIVES))
def test_training_step_reads_nothing_back(objective):
    for c in _step_counts(objective):
        assert c.syncs == 0, f"{objective}: host synchronisations {dict(c.counts)} at {c.where}"
        # augmentation parameters: one upload per augmented view (CGC: its transform T twice)
        assert 1 <= c.counts["host_to_device"] <= 3, dict(c.counts)


@pytest.mark.parametrize("optimizer", ["adamw", "radam"])
def test_imagenet_optimizers_read_nothing_back(optimizer):
    for c in _step_counts("ce", optimizer):
        assert c.syncs == 0, f"{optimizer}: {dict(c.counts)} at {c.where}"


def test_counter_sees_each_kind_of_sync():
    x = torch.zeros(4, 3, device=META)
    with HostSyncCounter() as c:
        bool(x.sum() > 0)
        x.sum().item()
        x[x > 0]
        torch.nonzero(x)
        x.cpu()
        torch.zeros(3).to(META)
        torch.zeros(3).to(META, non_blocking=True)
        torch.zeros(3).sum().item()                 # on the host: not a device read
    assert c.counts["scalar_reads"] == 2
    assert c.counts["data_dependent"] == 2
    assert c.counts["device_to_host"] == 1
    assert c.counts["host_to_device"] == 2 and c.counts["blocking_host_to_device"] == 1
    assert c.syncs == 6


def test_epoch_generator_is_on_the_host():
    g = epoch_generator(3, 1)
    assert g.device.type == "cpu"
    assert torch.equal(torch.rand(5, generator=g), torch.rand(5, generator=epoch_generator(3, 1)))
