"""Generated files in a dataset's real on-disk format, for rehearsals and tests where the real
data are absent: the real loaders then read them exactly as they would read the real files.

* :func:`write_cifar10` — torchvision's ``cifar-10-batches-py``: five pickled training batches,
  ``test_batch`` and ``batches.meta``, ``b'data'`` uint8 [N, 3072] and ``b'labels'``.
* :func:`write_imagenet_s50` — the layout :func:`~xai_utils.study.data.imagenet.load_imagenet_s50`
  reads: ``train/<wnid>/*.JPEG``, ``val/<wnid>/*.JPEG`` and ``masks/<wnid>/<stem>.png`` in the
  ImageNet-S encoding (class id = R + 256 G; 0 background), for the 50 classes.

The pictures are the synthetic shapes (:mod:`.shapes`): an object on a striped background,
with its exact mask, so a model can learn something and the figures show something. The
ImageNet images are upscaled to a few sizes and aspect ratios, as real photographs vary.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .base import PathLike
from .cifar10 import CIFAR10_CLASSES, CIFAR10_FOLDER
from .imagenet import imagenet_s50_classes
from .shapes import make_shapes

CIFAR10_TRAIN_BATCHES = 5


def _shapes(n: int, seed: int, size: int = 32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(uint8 images [n, 3, size, size], labels [n] in 0..9, bool masks [n, size, size])."""
    images, labels, masks = make_shapes(n, seed, size)
    return images.numpy(), labels.numpy(), masks[:, 0].numpy()


def write_cifar10(root: PathLike, n_train: int = 100, n_test: int = 40, seed: int = 0) -> Path:
    """``root/cifar-10-batches-py`` with ``n_train`` training images (in five batches) and
    ``n_test`` test images; returns ``root`` (the profile setting ``data_root``)."""
    folder = Path(root) / CIFAR10_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    images, labels, _ = _shapes(n_train + n_test, seed)
    flat = images.reshape(len(images), -1)
    parts = np.array_split(np.arange(n_train), CIFAR10_TRAIN_BATCHES)
    for k, idx in enumerate(parts, start=1):
        _pickle(folder / f"data_batch_{k}", {b"data": flat[idx], b"labels": labels[idx].tolist()})
    test = np.arange(n_train, n_train + n_test)
    _pickle(folder / "test_batch", {b"data": flat[test], b"labels": labels[test].tolist()})
    _pickle(folder / "batches.meta", {b"label_names": [c.encode() for c in CIFAR10_CLASSES]})
    return Path(root)


def _pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f)


# sizes (width, height) of the generated photographs: landscape, portrait, square
IMAGENET_SIZES = ((300, 240), (240, 320), (256, 256))


def write_imagenet_s50(root: PathLike, train_per_class: int = 2, val_per_class: int = 1, seed: int = 0) -> Path:
    """ImageNet-S50's folders under ``root``: ``train_per_class`` and ``val_per_class`` JPEGs of
    each of the 50 classes, and a PNG mask for every val image; returns ``root``."""
    from PIL import Image

    root = Path(root)
    wnids, _ = imagenet_s50_classes()
    per_class = train_per_class + val_per_class
    images, _, masks = _shapes(len(wnids) * per_class, seed)
    for k, wnid in enumerate(wnids):
        for j in range(per_class):
            i = k * per_class + j
            w, h = IMAGENET_SIZES[i % len(IMAGENET_SIZES)]
            split = "train" if j < train_per_class else "val"
            stem = f"gen_{wnid}_{j:04d}"
            rgb = F.interpolate(torch.from_numpy(images[i][None]).float(), size=(h, w), mode="bilinear",
                                align_corners=False)[0].round().clamp(0, 255).byte().permute(1, 2, 0).numpy()
            (root / split / wnid).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rgb).save(root / split / wnid / f"{stem}.JPEG", quality=90)
            if split == "val":
                mask = F.interpolate(torch.from_numpy(masks[i][None, None]).float(), size=(h, w),
                                     mode="nearest")[0, 0].numpy() > 0.5
                encoded = np.zeros((h, w, 3), dtype=np.uint8)
                class_id = 1 + k                                 # any id but 0 (other) and 1000 (ignored)
                encoded[mask, 0], encoded[mask, 1] = class_id % 256, class_id // 256
                (root / "masks" / wnid).mkdir(parents=True, exist_ok=True)
                Image.fromarray(encoded).save(root / "masks" / wnid / f"{stem}.png")
    return root
