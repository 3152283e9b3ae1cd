"""A split streamed from image files (ImageNet-S50 train): random resized crops of the whole image.

torchvision's ``RandomResizedCrop(224, scale=(0.08, 1))`` samples its box in the *whole*
decoded image, at full resolution. These crops are therefore taken per image in the
DataLoader workers (:class:`RandomCropFiles`), not on the device. Flip and colour then run
batched on the device (:mod:`xai_utils.ops.augment`). The crops of an image in an epoch depend
only on (seed, epoch, image) (:func:`item_seed`, :class:`EpochSampler`), so one persistent
loader serves a whole run with any number of workers, and a resumed run sees the same crops.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch

from ...ops.seeds import epoch_seed
from .imagefiles import (IMAGENET_EVAL_CROP, IMAGENET_TRAIN_CROP, IMAGENET_TRAIN_RATIO, IMAGENET_TRAIN_SCALE,
                         ImageFiles, resize_crop)


def _pil_to_uint8(img: Any) -> torch.Tensor:
    """RGB PIL image -> uint8 [3, H, W]."""
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy())


def sample_crop_box(width: int, height: int, generator: torch.Generator,
                    scale: Sequence[float] = IMAGENET_TRAIN_SCALE,
                    ratio: Sequence[float] = IMAGENET_TRAIN_RATIO) -> tuple[int, int, int, int]:
    """A random resized crop box ``(top, left, h, w)`` of a ``width`` x ``height`` image.

    torchvision's ``RandomResizedCrop.get_params`` with ``generator`` in place of the global
    RNG, making the same draws in the same order (so one seed gives the same box): up to 10
    tries of (area fraction ~ U(scale), log aspect ~ U(log ratio)), the first box that fits
    placed uniformly in the image; else the centre crop with its aspect clamped into ``ratio``.
    """
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))          # float32, as torchvision
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1], generator=generator).item()
        aspect = torch.exp(torch.empty(1).uniform_(float(log_ratio[0]), float(log_ratio[1]),
                                                   generator=generator)).item()
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, size=(1,), generator=generator).item())
            left = int(torch.randint(0, width - w + 1, size=(1,), generator=generator).item())
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def random_resized_crop(img: Any, generator: torch.Generator, size: int = IMAGENET_TRAIN_CROP,
                        scale: Sequence[float] = IMAGENET_TRAIN_SCALE,
                        ratio: Sequence[float] = IMAGENET_TRAIN_RATIO) -> Any:
    """torchvision's ``RandomResizedCrop(size, scale, ratio)`` of a PIL image (box from
    :func:`sample_crop_box`, bilinear antialiased resize), drawing from ``generator``."""
    import torchvision.transforms.functional as TF
    from torchvision.transforms import InterpolationMode

    top, left, h, w = sample_crop_box(img.width, img.height, generator, scale, ratio)
    return TF.resized_crop(img, top, left, h, w, [size, size], InterpolationMode.BILINEAR,
                           antialias=True)


def item_seed(seed: int, epoch: int, index: int) -> int:
    """Seed of the random crops of image ``index`` (of the split) in ``epoch`` of a run: a hash
    of the three (numpy's SeedSequence), so the crops depend on nothing else (not the worker
    that decodes the image, nor the order)."""
    state = np.random.SeedSequence((int(seed), int(epoch), int(index))).generate_state(1, np.uint64)
    return int(state[0] >> np.uint64(1))                # 63 bits: any torch seed


class EpochSampler(torch.utils.data.Sampler):
    """Order and crop seeds of one epoch of a streamed training split.

    Yields ``(index, item_seed(seed, epoch, index))`` for every entry of ``indices`` (indices of
    the split), shuffled by ``torch.randperm`` from a CPU generator seeded with the run's
    ``epoch_seed(seed, epoch)`` (:mod:`xai_utils.ops.seeds`). The loader keeps its sampler, so :meth:`set_epoch` before
    each epoch lets one persistent loader serve the whole run, and the order and crops of an
    epoch are the same with any number of workers and after a resume."""

    def __init__(self, indices: Sequence[int], seed: int, shuffle: bool = True):
        self.indices = torch.as_tensor([int(i) for i in indices], dtype=torch.long)
        self.seed, self.shuffle, self.epoch = int(seed), shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = self.indices
        if self.shuffle:
            g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
            order = order[torch.randperm(len(order), generator=g)]
        for i in order.tolist():
            yield i, item_seed(self.seed, self.epoch, i)


class RandomCropFiles(torch.utils.data.Dataset):
    """Training items of image files: random resized crops of the whole decoded image (full
    resolution, any aspect ratio), as torchvision's ``RandomResizedCrop``, plus, if asked, its
    clean view.

    Indexed by ``(index, seed)`` as :class:`EpochSampler` yields them. Item: (crops uint8
    [views, 3, size, size], ``views`` independent boxes drawn from a generator seeded with
    ``seed``; clean uint8 [3, 224, 224], shorter side 256 and centre crop 224 as the val
    images, or an empty uint8 [0] when ``clean`` is false (only ExCon and CGC use it: it costs
    a resize of the whole image per item); label int64)."""

    def __init__(self, paths: Sequence[Path], labels: Sequence[int], views: int,
                 size: int = IMAGENET_TRAIN_CROP, scale: Sequence[float] = IMAGENET_TRAIN_SCALE,
                 ratio: Sequence[float] = IMAGENET_TRAIN_RATIO, clean: bool = True):
        if views < 1:
            raise ValueError(f"RandomCropFiles: views must be >= 1, got {views}")
        self.paths, self.labels = list(paths), list(labels)
        self.views, self.size, self.scale, self.ratio = int(views), int(size), tuple(scale), tuple(ratio)
        self.clean = bool(clean)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        from PIL import Image

        index, seed = key
        with Image.open(self.paths[index]) as im:
            rgb = im.convert("RGB")
        g = torch.Generator().manual_seed(int(seed))
        crops = torch.stack([_pil_to_uint8(random_resized_crop(rgb, g, self.size, self.scale, self.ratio))
                             for _ in range(self.views)])
        clean = (_pil_to_uint8(resize_crop(rgb, IMAGENET_EVAL_CROP)) if self.clean
                 else torch.empty(0, dtype=torch.uint8))
        return crops, clean, torch.tensor(self.labels[index], dtype=torch.long)


def loader_worker_pids(loader: torch.utils.data.DataLoader) -> tuple[int, ...]:
    """Process ids of the live workers of a persistent DataLoader (empty before its first epoch,
    without workers, or when its workers do not persist): the same ids in two epochs mean the
    workers were kept."""
    workers = getattr(getattr(loader, "_iterator", None), "_workers", ())
    return tuple(w.pid for w in workers if w.is_alive())


@dataclass
class StreamingImageDataset:
    """A split too large for memory: file paths and labels, decoded in DataLoader workers.

    Same metadata as :class:`~xai_utils.study.data.base.ImageDataset` (no ``images``/``masks``). :meth:`train_loader`
    yields training batches: per image ``views`` random resized crops to ``crop`` (224) taken
    from the whole decoded image (:class:`RandomCropFiles`), as torchvision's ``RandomResizedCrop``
    (scale 0.08-1), and its clean view; the rest of the recipe (flip, colour) runs batched on the training device.
    :meth:`loader` yields the un-augmented images (centre crop 224, as the val images)."""

    name: str
    split: str
    paths: list[Path]
    labels: torch.Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int
    class_names: list[str]
    crop: int = IMAGENET_TRAIN_CROP

    def __len__(self) -> int:
        return len(self.paths)

    def loader(self, batch_size: int, shuffle: bool = True,
               generator: Optional[torch.Generator] = None, num_workers: int = 4,
               drop_last: bool = True, indices: Optional[Sequence[int]] = None,
               pin_memory: Optional[bool] = None) -> torch.utils.data.DataLoader:
        """Un-augmented DataLoader over the split (or over ``indices`` of it, e.g.
        ``train_indices(...)``): (uint8 [B, 3, 224, 224], int64 [B]) batches, shorter side 256
        and centre crop 224 as the val images (the linear probe's pass)."""
        ds: torch.utils.data.Dataset = ImageFiles(self.paths, self.labels.tolist(), IMAGENET_EVAL_CROP)
        if indices is not None:
            ds = torch.utils.data.Subset(ds, [int(i) for i in indices])
        return torch.utils.data.DataLoader(
            ds, batch_size=batch_size, shuffle=shuffle, generator=generator,
            num_workers=num_workers, drop_last=drop_last,
            pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
            persistent_workers=False)

    def train_loader(self, batch_size: int, views: int, seed: int, num_workers: int = 4,
                     indices: Optional[Sequence[int]] = None,
                     pin_memory: Optional[bool] = None, clean: bool = True) -> torch.utils.data.DataLoader:
        """The training DataLoader of a run, built once and reused for every epoch.

        Batches: (crops uint8 [B, views, 3, crop, crop], clean uint8 [B, 3, 224, 224] (or
        [B, 0] when ``clean`` is false), labels int64 [B]), see :class:`RandomCropFiles`; the
        last incomplete batch is dropped. Call
        ``loader.sampler.set_epoch(epoch)`` before iterating an epoch (:class:`EpochSampler`:
        the order and the crops are functions of (seed, epoch, image) only). Its workers
        persist across epochs; memory is pinned when CUDA is available."""
        ds = RandomCropFiles(self.paths, self.labels.tolist(), views, self.crop, clean=clean)
        sampler = EpochSampler(range(len(self)) if indices is None else indices, seed)
        return torch.utils.data.DataLoader(
            ds, batch_size=batch_size, sampler=sampler, num_workers=num_workers, drop_last=True,
            pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
            persistent_workers=num_workers > 0)
