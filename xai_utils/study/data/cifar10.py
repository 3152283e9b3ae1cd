"""CIFAR-10 (Krizhevsky 2009): torchvision's pickled ``cifar-10-batches-py`` format.

The batches are pickles, and unpickling a file can run code: every file is checked against
CIFAR-10's published MD5 before it is read (:data:`CIFAR10_MD5`, the sums torchvision checks),
and read with an unpickler that builds only dicts, lists, bytes, numbers and NumPy arrays.
The stand-in files written for rehearsals and tests (:func:`~.generated.write_cifar10`) are
not CIFAR-10: their folder holds :data:`STAND_IN` saying so, and only the second check
applies to them.
"""
from __future__ import annotations

import functools
import os
import pickle
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ...errors import DatasetNotFoundError
from .base import ImageDataset, PathLike, file_digest, not_found
from .download import download_possible, roots, try_download


CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_MD5 = {                      # cifar-10-python.tar.gz as published (and as torchvision checks it)
    "data_batch_1": "c99cafc152244af753f735de768cd75f", "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751", "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb", "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888"}
STAND_IN = "STAND_IN.txt"            # in a folder of generated files: they are not CIFAR-10
# what a CIFAR-10 batch is built from: NumPy arrays (numpy.core before NumPy 2, numpy._core after)
_ARRAY_GLOBALS = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                  ("numpy", "ndarray"), ("numpy", "dtype")}


def _cifar_batch_files(folder: Path, split: str) -> list[Path]:
    if split == "test":
        return [folder / "test_batch"] if (folder / "test_batch").is_file() else []
    found = [p for p in folder.glob("data_batch_*") if p.name[len("data_batch_"):].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len("data_batch_"):]))


class _BatchUnpickler(pickle.Unpickler):
    """Builds dicts, lists, bytes, numbers and NumPy arrays, nothing else."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _ARRAY_GLOBALS:
            raise pickle.UnpicklingError(f"{module}.{name}")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    """A batch file, verified (:func:`verify_cifar10_file`) and then unpickled safely."""
    verify_cifar10_file(path)
    with open(path, "rb") as f:
        try:
            return _BatchUnpickler(f, encoding="bytes").load()
        except pickle.UnpicklingError as e:
            raise DatasetNotFoundError(f"{path} holds {e}, which a CIFAR-10 batch never does: not read") from e


def verify_cifar10_file(path: Path) -> None:
    """DatasetNotFoundError (one line) unless ``path`` is the published CIFAR-10 file of its
    name (its MD5); files in a folder marked as stand-ins (:data:`STAND_IN`) pass."""
    if (path.parent / STAND_IN).is_file():
        return
    expected = CIFAR10_MD5.get(path.name)
    got = file_digest(path, "md5")
    if got != expected:
        what = f"CIFAR-10's published {path.name}" if expected else "a file of CIFAR-10's"
        raise DatasetNotFoundError(f"{path} is not {what} (MD5 {got}, expected {expected or 'none: no such file'}): "
                                   f"unpack cifar-10-python.tar.gz again into {path.parent.parent} (stand-in files "
                                   f"of a rehearsal without {STAND_IN}: delete {path.parent} to have them rewritten)")


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
