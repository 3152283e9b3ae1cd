"""CIFAR-10 (Krizhevsky 2009): torchvision's pickled ``cifar-10-batches-py`` format."""
from __future__ import annotations

import functools
import os
import pickle
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .base import ImageDataset, PathLike, not_found
from .download import download_possible, roots, try_download


CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR10_FOLDER = "cifar-10-batches-py"


def _cifar_batch_files(folder: Path, split: str) -> list[Path]:
    if split == "test":
        return [folder / "test_batch"] if (folder / "test_batch").is_file() else []
    found = [p for p in folder.glob("data_batch_*") if p.name[len("data_batch_"):].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len("data_batch_"):]))


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as f:
        return pickle.load(f, encoding="bytes")


def locate_cifar10(split: str, root: Optional[PathLike], download: bool) -> Optional[Path]:
    """The ``cifar-10-batches-py`` folder holding ``split`` (see :func:`~xai_utils.study.data.fashion_mnist.locate_fashion_mnist`
    for ``download``)."""
    base = roots(root)[0]
    candidates = [base / CIFAR10_FOLDER, base]
    folder = next((c for c in candidates if _cifar_batch_files(c, split)), None)
    notes: list[str] = []
    if folder is None and download and try_download("cifar10", base, notes):
        folder = base / CIFAR10_FOLDER if _cifar_batch_files(base / CIFAR10_FOLDER, split) else None
    if folder is None:
        if not download and download_possible("cifar10", notes):
            return None
        want = "test_batch" if split == "test" else "data_batch_1..5"
        raise not_found("cifar10", [f"{c}/{want}" for c in candidates] + notes, [
            "python -c \"import torchvision; torchvision.datasets.CIFAR10('<root>', download=True)\""
            "  then pass root='<root>' (profile setting data_root)",
            "or unpack https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz into root",
        ])
    return folder


def load_cifar10(split: str, root: Optional[PathLike] = None) -> ImageDataset:
    """CIFAR-10, 50,000 train / 10,000 test, read from torchvision's on-disk format
    (``root/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}``, pickled dicts
    with ``b'data'`` uint8 [N, 3072] and ``b'labels'``); ``root`` may also be that folder
    itself. Downloaded with torchvision into ``root`` when missing and online."""
    folder = locate_cifar10(split, root, download=True)
    batches = [_unpickle(p) for p in _cifar_batch_files(folder, split)]
    data = np.concatenate([np.asarray(b[b"data"], dtype=np.uint8) for b in batches])
    labels = np.concatenate([np.asarray(b[b"labels"], dtype=np.int64) for b in batches])
    names = list(CIFAR10_CLASSES)
    if (folder / "batches.meta").is_file():
        names = [n.decode() if isinstance(n, bytes) else str(n)
                 for n in _unpickle(folder / "batches.meta")[b"label_names"]]
    images = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
    return ImageDataset("cifar10", split, images, torch.from_numpy(labels), None,
                        CIFAR10_MEAN, CIFAR10_STD, len(names), names)


def count_cifar10(split: str, root: Optional[PathLike]) -> Optional[int]:
    """The labels of the pickled batches the loader reads (official: 50,000 / 10,000; the
    rehearsal's stand-ins, :func:`~.generated.write_cifar10`, hold fewer); None when absent."""
    folder = locate_cifar10(split, root, False)
    if folder is None:
        return None
    files = _cifar_batch_files(folder, split)
    return sum(_batch_labels(str(p), os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in files)


@functools.lru_cache(maxsize=16)
def _batch_labels(path: str, size: int, mtime_ns: int) -> int:
    """Labels in one CIFAR batch file; cached per (path, size, mtime), so rewritten files are
    read again and the official 30 MB batches are unpickled once per process."""
    return len(_unpickle(Path(path))[b"labels"])
