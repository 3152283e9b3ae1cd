"""Seeds: every random draw of a run is a function of its seed (and the epoch), on every device."""
from __future__ import annotations

import random

import numpy as np
import torch


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch of a run (its shuffling and augmentation; streamed crops too)."""
    return (1_000_003 * int(seed) + int(epoch)) % (2 ** 63)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator of one epoch's shuffling and augmentation, a function of (seed, epoch) only.

    Always a CPU generator, whatever the training device: its draws are the same on every
    machine, and augmentation parameters drawn on the host go to the device in one
    non-blocking copy instead of being read back from it (a CUDA generator's stream would
    also differ from the CPU's, so a seed would not mean the same run on both)."""
    return torch.Generator().manual_seed(epoch_seed(seed, epoch))


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch Generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
