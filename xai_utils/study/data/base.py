"""The in-memory dataset (:class:`ImageDataset`) and the fixed index subsets every model shares."""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch

from ...errors import DatasetNotFoundError

PathLike = Union[str, Path]
Index = Union[torch.Tensor, np.ndarray, Sequence[int], slice, int]


@dataclass
class ImageDataset:
    """A whole split in memory: uint8 images, int64 labels, optional boolean object masks."""

    name: str
    split: str
    images: torch.Tensor                 # uint8 [N, C, H, W]
    labels: torch.Tensor                 # int64 [N]
    masks: Optional[torch.Tensor]        # bool [N, 1, H, W] or None
    mean: tuple[float, ...]              # per channel, for pixels in [0, 1]
    std: tuple[float, ...]
    num_classes: int
    class_names: list[str]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batch(self, idx: Index, device: Union[str, torch.device, None] = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``idx`` as float [B, C, H, W] in [0, 1] and their labels, on ``device``.

        The uint8 images travel to the device first and are converted there (4x less to copy).
        """
        i = _as_index(idx)
        x = self.images[i].to(device, non_blocking=True).float().div_(255.0)
        return x, self.labels[i].to(device, non_blocking=True)

    def mask_batch(self, idx: Index, device: Union[str, torch.device, None] = None) -> torch.Tensor:
        """Object masks ``idx`` as bool [B, 1, H, W] on ``device`` (error if the split has none)."""
        if self.masks is None:
            raise ValueError(f"dataset {self.name!r} split {self.split!r} has no masks "
                             f"(masks exist for 'shapes' and for 'imagenet_s50' val)")
        return self.masks[_as_index(idx)].to(device, non_blocking=True)

    def copy(self) -> "ImageDataset":
        """A copy whose tensors share no memory with this one."""
        return dataclasses.replace(
            self, images=self.images.clone(), labels=self.labels.clone(),
            masks=None if self.masks is None else self.masks.clone(),
            mean=tuple(self.mean), std=tuple(self.std), class_names=list(self.class_names))


def _as_index(idx: Index) -> Union[torch.Tensor, slice, int]:
    if isinstance(idx, (slice, int)):
        return idx
    if isinstance(idx, torch.Tensor):
        return idx.to("cpu", torch.long)
    return torch.as_tensor(np.asarray(idx, dtype=np.int64))


def not_found(name: str, looked: Sequence[PathLike], how: Sequence[str]) -> DatasetNotFoundError:
    lines = [f"dataset {name!r} not found. Looked in:"]
    lines += [f"  - {p}" for p in looked]
    lines += ["How to get it:"] + [f"  - {h}" for h in how]
    return DatasetNotFoundError("\n".join(lines))


# --------------------------------------------------------------------------------------
# fixed index subsets (identical for every model of a study)
# --------------------------------------------------------------------------------------


def eval_indices(n_total: int, n: Optional[int], seed: int = 0) -> np.ndarray:
    """A fixed random subset of ``n`` of ``range(n_total)``, sorted (all of it when ``n`` is
    None or ``n >= n_total``), int64. Depends only on (n_total, n, seed): same for all models."""
    if n_total < 0 or (n is not None and n < 0):
        raise ValueError(f"eval_indices: n_total and n must be >= 0, got {n_total}, {n}")
    if n is None or n >= n_total:
        return np.arange(n_total, dtype=np.int64)
    perm = np.random.default_rng(seed).permutation(n_total)
    return np.sort(perm[:n]).astype(np.int64)


def train_indices(n_total: int, subset: Optional[int], seed: int = 0) -> np.ndarray:
    """The first ``subset`` entries of a fixed permutation of ``range(n_total)`` (int64), or
    all indices in order when ``subset`` is None / >= n_total. Growing ``subset`` only adds
    images (the smaller subset is a prefix of the larger one)."""
    if n_total < 0 or (subset is not None and subset < 0):
        raise ValueError(f"train_indices: n_total and subset must be >= 0, got {n_total}, {subset}")
    if subset is None or subset >= n_total:
        return np.arange(n_total, dtype=np.int64)
    return train_permutation(n_total, seed)[:subset]


def train_permutation(n_total: int, seed: int = 0) -> np.ndarray:
    """The fixed permutation whose first k entries are ``train_indices(n_total, k)``; the
    entries after them are training images a run with that subset never saw (int64)."""
    return np.random.default_rng(seed).permutation(n_total).astype(np.int64)


def file_digest(path: PathLike, algorithm: str = "sha256") -> str:
    """The hex digest of a file's bytes (``hashlib`` ``algorithm``), computed once per process
    for a file unchanged since (the same size and modification time): a file checked when a
    study is planned and again when it is read is read once between them."""
    st = os.stat(path)
    return _digest(str(path), st.st_size, st.st_mtime_ns, algorithm)


@functools.lru_cache(maxsize=256)
def _digest(path: str, size: int, mtime_ns: int, algorithm: str) -> str:
    h = hashlib.new(algorithm, usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
