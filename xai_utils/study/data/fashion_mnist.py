"""Fashion-MNIST (Xiao et al. 2017): IDX files from a folder, Debian's package or torchvision."""
from __future__ import annotations

import gzip
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from .base import ImageDataset, PathLike, not_found
from .download import download_possible, roots, try_download


FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
# Debian's ``dataset-fashion-mnist`` package (same bytes as the upstream release).
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
_FASHION_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                  "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
# mean/std of the padded 32x32 'train' images in [0, 1] (zeros of the padding included),
# computed with load_dataset('fashion_mnist', 'train').images.float().div(255).mean()/.std();
# tests/test_data.py recomputes them.
FASHION_MNIST_MEAN = (0.2190,) * 3
FASHION_MNIST_STD = (0.3318,) * 3


def read_idx(path: PathLike) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) of unsigned bytes into a numpy array."""
    path = Path(path)
    with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes (magic {raw[:4]!r})")
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    if len(raw) - offset != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims} but holds {len(raw) - offset} bytes (truncated?)")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)


def _find_files(folder: Path, stems: Sequence[str]) -> Optional[list[Path]]:
    found = []
    for stem in stems:
        hit = next((folder / f for f in (stem, stem + ".gz") if (folder / f).is_file()), None)
        if hit is None:
            return None
        found.append(hit)
    return found


def pad_to_32(images: np.ndarray) -> np.ndarray:
    """[N, 28, 28] uint8 -> [N, 3, 32, 32]: 2 zero pixels on every side, grey copied to RGB."""
    out = np.zeros((images.shape[0], 3, 32, 32), dtype=np.uint8)
    out[:, :, 2:30, 2:30] = images[:, None]
    return out


def locate_fashion_mnist(split: str, root: Optional[PathLike], download: bool) -> Optional[list[Path]]:
    """The two IDX files of ``split``; downloaded when missing if ``download`` (and possible).
    With ``download=False``: None when they are missing but a loader could download them.
    Otherwise missing files raise :class:`~xai_utils.errors.DatasetNotFoundError`."""
    stems = _FASHION_FILES[split]
    base = roots(root)[0]
    candidates = [base / "FashionMNIST" / "raw", base, DEBIAN_FASHION_MNIST_DIR]
    files = next((f for f in (_find_files(c, stems) for c in candidates) if f is not None), None)
    notes: list[str] = []
    if files is None and download and try_download("fashion_mnist", base, notes):
        files = _find_files(base / "FashionMNIST" / "raw", stems)
    if files is None:
        if not download and download_possible("fashion_mnist", notes):
            return None
        raise not_found("fashion_mnist", [f"{c}/{{{','.join(stems)}}}[.gz]" for c in candidates] + notes, [
            "apt-get install dataset-fashion-mnist   (Debian/Ubuntu; files in "
            f"{DEBIAN_FASHION_MNIST_DIR}; `make data` does it)",
            "python -c \"import torchvision; torchvision.datasets.FashionMNIST('<root>', "
            "download=True)\"  then pass root='<root>'",
            "or put the four *-ubyte.gz files of github.com/zalandoresearch/fashion-mnist in root",
        ])
    return files


def load_fashion_mnist(split: str, root: Optional[PathLike] = None) -> ImageDataset:
    """Fashion-MNIST (Xiao et al. 2017), 60,000 train / 10,000 test, 10 classes.

    Looked for in ``root/FashionMNIST/raw`` (torchvision's layout) and ``root`` (the four
    ``*-ubyte[.gz]`` files directly), then in Debian's :data:`DEBIAN_FASHION_MNIST_DIR`
    (``apt-get install dataset-fashion-mnist``), and only then downloaded with torchvision
    into ``root`` (default :data:`~xai_utils.study.data.download.DEFAULT_ROOT`) when online.

    The 28x28 images are padded with 2 zero pixels on each side to 32x32 and replicated to 3
    channels, so the CIFAR models apply unchanged. Padding rather than resizing keeps the pixel
    grid intact (no interpolation) and the object centred, like LeNet's classic 32x32 input.
    """
    files = locate_fashion_mnist(split, root, download=True)
    images, labels = read_idx(files[0]), read_idx(files[1])
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.shape != (images.shape[0],):
        raise ValueError(f"unexpected Fashion-MNIST shapes {images.shape}, {labels.shape} in {files}")
    return ImageDataset("fashion_mnist", split, torch.from_numpy(pad_to_32(images)),
                        torch.from_numpy(labels.astype(np.int64)), None,
                        FASHION_MNIST_MEAN, FASHION_MNIST_STD, 10, list(FASHION_MNIST_CLASSES))


def count_fashion_mnist(split: str, root: Optional[PathLike]) -> Optional[int]:
    """The first dimension in the IDX header of the split's label file (8 bytes read), so
    the official files (60,000 / 10,000) and any other IDX files are counted alike; None
    when the files are absent or the header is not an IDX one (the loader then says why)."""
    files = locate_fashion_mnist(split, root, False)
    if files is None:
        return None
    path = Path(files[1])
    with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
        head = f.read(8)
    if len(head) < 8 or head[:3] != b"\x00\x00\x08" or head[3] < 1:
        return None
    return int.from_bytes(head[4:8], "big")
