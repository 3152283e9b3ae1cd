"""ImageNet-S50: the 50 ImageNet-1k classes of the ImageNet-S50 segmentation benchmark, from a
folder the user supplies (ImageNet is licensed); val in memory with masks, train streamed."""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Optional, Sequence, Union

import torch

from .base import ImageDataset, PathLike, not_found
from .download import DEFAULT_ROOT
from .imagefiles import IMAGE_EXTENSIONS, IMAGENET_EVAL_CROP, IMAGENET_MEAN, IMAGENET_STD, ImageFiles
from .streaming import StreamingImageDataset

# ImageNet-1k indices of the 50 ImageNet-S50 classes; label k of this module is entry k.
IMAGENET_S50_INDICES = (
    1, 3, 11, 31, 222, 277, 284, 295, 301, 325, 330, 333, 342, 368, 386, 388, 404, 412, 418,
    436, 449, 466, 487, 492, 502, 510, 531, 532, 574, 579, 606, 617, 659, 670, 695, 703, 748,
    829, 846, 851, 861, 879, 883, 898, 900, 914, 919, 951, 959, 992)
_IMAGENET_FOLDERS = {"train": ("train",), "val": ("val", "validation")}
_IMAGENET_MASK_FOLDERS = ("masks", "validation-segmentation")


@functools.lru_cache(maxsize=1)
def imagenet_s50_classes() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(WordNet ids, short names) of the 50 classes, in label order, from timm's offline
    ImageNet-1k metadata."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    wnids = tuple(info.index_to_label_name(i) for i in IMAGENET_S50_INDICES)
    names = tuple(info.index_to_description(i).split(",")[0].strip() for i in IMAGENET_S50_INDICES)
    return wnids, names


def _list_class_files(folder: Path, wnids: Sequence[str]) -> tuple[list[Path], list[int]]:
    paths, labels = [], []
    for k, wnid in enumerate(wnids):
        d = folder / wnid
        if d.is_dir():
            files = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
            paths += files
            labels += [k] * len(files)
    return paths, labels


def _imagenet_base(root: Optional[PathLike]) -> Path:
    return Path(root).expanduser() if root is not None else DEFAULT_ROOT / "imagenet_s50"


def locate_imagenet_s50(split: str, root: Optional[PathLike], download: bool = False
                         ) -> tuple[list[Path], list[int]]:
    """Image files and labels of ``split`` (never downloaded: ImageNet is licensed)."""
    base = _imagenet_base(root)
    wnids, _ = imagenet_s50_classes()
    folders = [base / f for f in _IMAGENET_FOLDERS[split]]
    for folder in folders:
        if folder.is_dir():
            paths, labels = _list_class_files(folder, wnids)
            if paths:
                return paths, labels
    raise not_found("imagenet_s50", [f"{f}/<wnid>/*.JPEG" for f in folders], [
        "ImageNet is licensed: download ILSVRC2012 from https://image-net.org and arrange "
        "the 50 classes as root/train/<wnid>/*.JPEG and root/val/<wnid>/*.JPEG "
        "(see xai_utils.study.data.imagenet.load_imagenet_s50 for the layout and the class list)",
        "masks: ImageNet-S50 validation-segmentation from https://github.com/LUSSeg/ImageNet-S "
        "into root/masks/<wnid>/<stem>.png",
        "then pass root=<that folder> (profile setting data_root)",
    ])


def imagenet_mask_dir(root: Optional[PathLike]) -> Optional[Path]:
    base = _imagenet_base(root)
    return next((base / m for m in _IMAGENET_MASK_FOLDERS if (base / m).is_dir()), None)


def load_imagenet_s50(split: str, root: Optional[PathLike] = None
                      ) -> Union[ImageDataset, StreamingImageDataset]:
    """ImageNet-S50: the 50 ImageNet-1k classes of :data:`IMAGENET_S50_INDICES` (labels 0..49
    in that order), from a folder you supply (ImageNet is licensed)::

        root/train/<wnid>/*.JPEG        ImageNet-1k train images of the 50 classes
        root/val/<wnid>/*.JPEG          ImageNet-1k val images of the 50 classes, sorted into
                                        class folders (``validation/`` is accepted too)
        root/masks/<wnid>/<stem>.png    ImageNet-S50 validation-segmentation masks (optional;
                                        ``validation-segmentation/`` is accepted too)

    Folders of other classes are ignored, so a full ImageNet-1k tree works as well.
    ``val`` is returned in memory: shorter side resized to 256 (bilinear), centre crop 224,
    masks transformed the same way with nearest neighbour. Mask PNGs use the ImageNet-S
    encoding (id = R + 256 G; 0 other/background, 1000 ignored); foreground = any other id, so
    ignored pixels count as background. A val image without a mask file gets an all-False
    mask; ``masks`` is None when no mask folder exists. ``train`` is a
    :class:`StreamingImageDataset` (too large for memory).
    """
    wnids, names = imagenet_s50_classes()
    paths, labels = locate_imagenet_s50(split, root)
    meta = dict(mean=IMAGENET_MEAN, std=IMAGENET_STD, num_classes=50, class_names=list(names))
    if split == "train":
        return StreamingImageDataset("imagenet_s50", split, paths,
                                     torch.tensor(labels, dtype=torch.long), **meta)
    mask_dir = imagenet_mask_dir(root)
    mask_paths = None
    if mask_dir is not None:
        mask_paths = []
        for p, k in zip(paths, labels):
            mp = mask_dir / wnids[k] / (p.stem + ".png")
            mask_paths.append(mp if mp.is_file() else None)
    images, labels_t, masks = _decode_all(ImageFiles(paths, labels, IMAGENET_EVAL_CROP, mask_paths))
    return ImageDataset("imagenet_s50", split, images, labels_t, masks, **meta)


def _decode_all(ds: ImageFiles, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor,
                                                                Optional[torch.Tensor]]:
    """Decode every item of ``ds`` into preallocated tensors (workers when there are many)."""
    from tqdm.auto import tqdm

    n, c = len(ds), ds.crop
    workers = min(8, os.cpu_count() or 1) if n > 256 else 0
    images = torch.empty(n, 3, c, c, dtype=torch.uint8)
    labels = torch.empty(n, dtype=torch.long)
    masks = None if ds.mask_paths is None else torch.empty(n, 1, c, c, dtype=torch.bool)
    dl = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers)
    i = 0
    for b in tqdm(dl, desc="decoding images", disable=n <= 256):
        k = b[0].shape[0]
        images[i:i + k], labels[i:i + k] = b[0], b[1]
        if masks is not None:
            masks[i:i + k] = b[2]
        i += k
    return images, labels, masks


def count_imagenet_s50(split: str, root: Optional[PathLike]) -> int:
    """The image files of the 50 classes the loader would read (names only, nothing decoded);
    raises :class:`DatasetNotFoundError` when there are none."""
    return len(locate_imagenet_s50(split, root)[0])
