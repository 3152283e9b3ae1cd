"""Image files decoded with PIL: resized and centre-cropped as the ImageNet val images (with
their masks), and torchvision's random resized crop drawn from a given generator."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from .base import PathLike

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_RESIZE = 256        # shorter side, before the centre crop
IMAGENET_EVAL_CROP = 224
# streamed train images: random resized crops to 224 of the whole decoded image, sampled as
# torchvision's RandomResizedCrop(224, scale, ratio) in the loader workers
IMAGENET_TRAIN_CROP = 224
IMAGENET_TRAIN_SCALE = (0.08, 1.0)       # area of the crop box / area of the image
IMAGENET_TRAIN_RATIO = (3 / 4, 4 / 3)    # aspect ratio (w / h) of the crop box
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")
# ImageNet-S masks: class id = R + 256 * G; 0 = other (background), 1000 = ignored.
IMAGENET_S_BACKGROUND, IMAGENET_S_IGNORE = 0, 1000


def decode_mask_png(path: PathLike) -> np.ndarray:
    """ImageNet-S mask PNG -> bool [H, W] foreground: ids other than 0 (other/background)
    and 1000 (ignored, e.g. uncertain boundaries) are the annotated object."""
    from PIL import Image

    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB"), dtype=np.int32)
    ids = rgb[..., 0] + 256 * rgb[..., 1]
    return (ids != IMAGENET_S_BACKGROUND) & (ids != IMAGENET_S_IGNORE)


def resize_crop(img: Any, crop: int, nearest: bool = False) -> Any:
    """Shorter side to 256, then centre crop ``crop`` (PIL in, PIL out)."""
    import torchvision.transforms.functional as TF
    from torchvision.transforms import InterpolationMode

    mode = InterpolationMode.NEAREST if nearest else InterpolationMode.BILINEAR
    return TF.center_crop(TF.resize(img, IMAGENET_RESIZE, interpolation=mode), crop)


class ImageFiles(torch.utils.data.Dataset):
    """Image files (+ optional mask files) decoded with PIL, resized/cropped, as uint8 tensors.

    Item: (image uint8 [3, crop, crop], label int64) or, with ``mask_paths``, also the mask
    bool [1, crop, crop] (all False where the mask path is None)."""

    def __init__(self, paths: Sequence[Path], labels: Sequence[int], crop: int,
                 mask_paths: Optional[Sequence[Optional[Path]]] = None):
        self.paths, self.labels, self.crop, self.mask_paths = list(paths), list(labels), crop, mask_paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from PIL import Image

        with Image.open(self.paths[i]) as im:
            rgb = im.convert("RGB")
        size = rgb.size
        x = torch.from_numpy(np.asarray(resize_crop(rgb, self.crop), dtype=np.uint8).copy())
        item = (x.permute(2, 0, 1).contiguous(), torch.tensor(self.labels[i], dtype=torch.long))
        if self.mask_paths is None:
            return item
        mp = self.mask_paths[i]
        if mp is None:
            m = torch.zeros(1, self.crop, self.crop, dtype=torch.bool)
        else:
            fg = Image.fromarray(decode_mask_png(mp).astype(np.uint8) * 255)
            if fg.size != size:    # masks share the image's size; guard against odd files
                fg = fg.resize(size, Image.NEAREST)
            m = torch.from_numpy(np.asarray(resize_crop(fg, self.crop, nearest=True)) > 127)[None]
        return item + (m,)
