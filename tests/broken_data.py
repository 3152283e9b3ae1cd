"""Data that passes validation and fails at run time, for the tests of failing runs: an
ImageNet-S50 folder whose files are not images, and a one-run profile that trains on it."""
from __future__ import annotations

from pathlib import Path

from xai_utils.study.data import imagenet_s50_classes


def corrupt_imagenet(root: Path) -> Path:
    """An ImageNet-S50 folder whose files exist (validation passes) but are not images
    (decoding fails at run time): four per split, in the first class."""
    wnid = imagenet_s50_classes()[0][0]
    for split in ("train", "val"):
        d = root / split / wnid
        d.mkdir(parents=True)
        for i in range(4):
            (d / f"img{i}.JPEG").write_bytes(b"not a jpeg")
    return root


def broken_profile(tmp: Path) -> Path:
    """``tmp/broken.yaml``: CE on :func:`corrupt_imagenet`, one seed, results and figures under ``tmp``."""
    prof = tmp / "broken.yaml"
    prof.write_text(f"""
datasets: [imagenet_s50]
objectives: [ce]
seeds: [0]
results_root: {tmp / 'results'}
figures_root: {tmp / 'figures'}
settings:
  default: {{arch: resnet18, widths: [8, 8, 16, 16], epochs: 1, train_subset: 4, batch_size: 2, eval_samples: 4,
             data_root: {corrupt_imagenet(tmp / 'corrupt')}, num_workers: 0}}
""")
    return prof
