"""Datasets of the study, all returned in one in-memory format (:class:`ImageDataset`).

``load_dataset(name, split, root=None)`` looks the name up in :data:`DATASETS` (a registry,
name -> :class:`DatasetSpec`: loader, splits, masks, file check):

===============  ===============================  ==========================================
name             splits                           source
===============  ===============================  ==========================================
``shapes``       train (10,000) / test (2,000)    synthetic, generated from a seed, exact
                                                  object masks (offline stand-in for the
                                                  ImageNet-S50 masks; the data of the tests)
``fashion_mnist`` train (60,000) / test (10,000)  IDX files: ``root``, Debian's package
                                                  ``dataset-fashion-mnist``, or torchvision
``cifar10``      train (50,000) / test (10,000)   torchvision's ``cifar-10-batches-py``
``imagenet_s50`` train (streamed) / val (+masks)  a folder the user supplies (see
                                                  :func:`load_imagenet_s50`)
===============  ===============================  ==========================================

``test`` and ``val`` both name the held-out evaluation split of every dataset (so a profile's
``eval_split: val`` works on CIFAR and ``test`` works on ImageNet-S50).

Images are stored as uint8 ``[N, 3, H, W]`` (3 channels everywhere, so one model family fits
all datasets); :meth:`ImageDataset.batch` turns an index set into float pixels in [0, 1] on a
device. Models normalise internally with the dataset's ``mean``/``std``.

Loaded datasets are cached in-process (``functools.lru_cache`` on ``(name, split, root)``):
a second call costs one memory copy, because every call returns *fresh copies* of the cached
tensors — a caller that edits its images in place cannot corrupt what the next caller gets.
Missing data raises one :class:`DatasetNotFoundError` that lists every place looked at and
how to get the data; nothing is written to disk on failure.
"""
from __future__ import annotations

import dataclasses
import functools
import gzip
import math
import os
import pickle
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch

PathLike = Union[str, Path]
Index = Union[torch.Tensor, np.ndarray, Sequence[int], slice, int]

# --------------------------------------------------------------------------------------
# the in-memory dataset
# --------------------------------------------------------------------------------------


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


class DatasetNotFoundError(FileNotFoundError):
    """The files of a dataset are nowhere to be found; the message says where we looked and how
    to get them."""


def _not_found(name: str, looked: Sequence[PathLike], how: Sequence[str]) -> DatasetNotFoundError:
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


# --------------------------------------------------------------------------------------
# shapes: synthetic 32x32 images with exact object masks
# --------------------------------------------------------------------------------------

SHAPE_CLASSES: tuple[str, ...] = (
    "circle", "square", "triangle", "x_cross", "ring",
    "diamond", "h_bar", "v_bar", "plus", "frame",
)
SHAPES_SIZE = 32
SHAPES_SPLITS: dict[str, tuple[int, int]] = {"train": (10_000, 1234), "test": (2_000, 5678)}  # (n, seed)
SHAPES_HALF_EXTENT = (5.0, 11.0)   # object half-size in pixels, uniform
# Per-channel mean/std of the 'train' split pixels in [0, 1]: computed with
# ``load_dataset('shapes', 'train').images.float().div(255)`` -> ``.mean((0, 2, 3))`` and
# ``.std((0, 2, 3))``; tests/test_data.py recomputes them (tolerance 1e-3).
SHAPES_MEAN = (0.2583, 0.2593, 0.2592)
SHAPES_STD = (0.2401, 0.2402, 0.2397)


@dataclass(frozen=True)
class ShapesParams:
    """Everything random about a shapes split, drawn from one seed (float32 CPU tensors).

    Each image is ``where(mask, object_layer, background_layer)``; both layers are rendered
    from these parameters on their own (see :func:`render_shapes_background`,
    :func:`render_shapes_objects`) so a test can check the composition independently.
    """

    seed: int
    size: int
    labels: torch.Tensor       # int64 [N], exactly balanced over the 10 classes
    cx: torch.Tensor           # [N] object centre, pixel coordinates (pixel j covers [j, j+1))
    cy: torch.Tensor
    half: torch.Tensor         # [N] half-extent in pixels
    fg: torch.Tensor           # [N, 3] object colour
    bg: torch.Tensor           # [N, 3] background base colour (every channel >= 0.25 below fg)
    stripe_freq: torch.Tensor  # [N] cycles per pixel of the background stripes
    stripe_theta: torch.Tensor  # [N] stripe orientation
    stripe_phase: torch.Tensor  # [N]
    stripe_amp: torch.Tensor   # [N] stripe amplitude
    shade: torch.Tensor        # [N, 2] linear shading gradient of the object (x, y)


def shapes_params(n: int, seed: int, size: int = SHAPES_SIZE) -> ShapesParams:
    """Draw the parameters of ``n`` shapes images from ``seed`` (CPU generator)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % len(SHAPE_CLASSES)
    labels = labels[torch.randperm(n, generator=g)]
    lo, hi = SHAPES_HALF_EXTENT
    half = lo + (hi - lo) * torch.rand(n, generator=g)
    # centre such that the whole bounding box [c - half, c + half] lies in the image
    cx = half + (size - 2 * half) * torch.rand(n, generator=g)
    cy = half + (size - 2 * half) * torch.rand(n, generator=g)
    # colours independent of the class: a light object (every channel in [0.6, 1]) on a dark
    # background (every channel in [0, 0.35]), so the object is always visible and salient.
    # With fully random colours a randomly initialised network's features carry almost no
    # class information (1-NN accuracy 12-14 % on them, against 23-24 % here), and SCL and
    # the triplet loss collapse to one point before any shape feature forms.
    fg = 0.6 + 0.4 * torch.rand(n, 3, generator=g)
    bg = 0.35 * torch.rand(n, 3, generator=g)
    return ShapesParams(
        seed=seed, size=size, labels=labels.long(), cx=cx, cy=cy, half=half, fg=fg, bg=bg,
        stripe_freq=0.08 + 0.17 * torch.rand(n, generator=g),
        stripe_theta=math.pi * torch.rand(n, generator=g),
        stripe_phase=2 * math.pi * torch.rand(n, generator=g),
        stripe_amp=0.04 + 0.10 * torch.rand(n, generator=g),
        shade=0.15 * (2 * torch.rand(n, 2, generator=g) - 1),
    )


def _unit_coords(cx: torch.Tensor, cy: torch.Tensor, half: torch.Tensor, size: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates relative to the object, in units of its half-extent:
    u [N, 1, W] (columns) and v [N, H, 1] (rows), which broadcast to [N, H, W]."""
    c = torch.arange(size, dtype=torch.float32) + 0.5
    u = (c.view(1, 1, size) - cx.view(-1, 1, 1)) / half.view(-1, 1, 1)
    v = (c.view(1, size, 1) - cy.view(-1, 1, 1)) / half.view(-1, 1, 1)
    return u, v


# Each shape is a predicate on (u, v) = pixel-centre offset / half-extent; v grows downwards.
_SHAPE_TESTS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "circle": lambda u, v: u * u + v * v <= 1.0,
    "square": lambda u, v: torch.maximum(u.abs(), v.abs()) <= 0.8,
    "triangle": lambda u, v: (v >= -0.9) & (v <= 0.8) & (u.abs() <= 0.95 * (v + 0.9) / 1.7),
    "x_cross": lambda u, v: (((u - v).abs() <= 0.35) | ((u + v).abs() <= 0.35))
    & (torch.maximum(u.abs(), v.abs()) <= 0.85),
    "ring": lambda u, v: ((u * u + v * v) <= 1.0) & ((u * u + v * v) >= 0.55 ** 2),
    "diamond": lambda u, v: u.abs() + v.abs() <= 1.0,
    "h_bar": lambda u, v: (u.abs() <= 1.0) & (v.abs() <= 0.3),
    "v_bar": lambda u, v: (u.abs() <= 0.3) & (v.abs() <= 1.0),
    "plus": lambda u, v: ((u.abs() <= 0.25) & (v.abs() <= 1.0)) | ((v.abs() <= 0.25) & (u.abs() <= 1.0)),
    "frame": lambda u, v: (torch.maximum(u.abs(), v.abs()) <= 0.85)
    & (torch.maximum(u.abs(), v.abs()) >= 0.5),
}


def shape_masks(labels: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor, half: torch.Tensor,
                size: int = SHAPES_SIZE) -> torch.Tensor:
    """Boolean masks [N, 1, size, size] of the shapes: a pixel is in when its centre is."""
    out = torch.zeros(labels.shape[0], size, size, dtype=torch.bool)
    for k, name in enumerate(SHAPE_CLASSES):          # 10 vectorised predicates, not a pixel loop
        sel = (labels == k).nonzero().squeeze(1)
        if sel.numel():
            u, v = _unit_coords(cx[sel], cy[sel], half[sel], size)
            out[sel] = _SHAPE_TESTS[name](u, v).expand(-1, size, size)
    return out.unsqueeze(1)


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return x.clamp_(0.0, 1.0).mul_(255.0).round_().to(torch.uint8)


def render_shapes_background(p: ShapesParams) -> torch.Tensor:
    """Background layer, uint8 [N, 3, H, W]: base colour + oriented stripes + pixel noise."""
    n, s = p.labels.shape[0], p.size
    g = torch.Generator().manual_seed(p.seed + 1_000_003)
    c = torch.arange(s, dtype=torch.float32)
    proj = (c.view(1, 1, s) * torch.cos(p.stripe_theta).view(-1, 1, 1)
            + c.view(1, s, 1) * torch.sin(p.stripe_theta).view(-1, 1, 1))
    stripes = p.stripe_amp.view(-1, 1, 1) * torch.sin(
        2 * math.pi * p.stripe_freq.view(-1, 1, 1) * proj + p.stripe_phase.view(-1, 1, 1))
    x = torch.randn(n, 3, s, s, generator=g).mul_(0.05)
    x += stripes.unsqueeze(1)
    x += p.bg.view(n, 3, 1, 1)
    return _to_uint8(x)


def render_shapes_objects(p: ShapesParams) -> tuple[torch.Tensor, torch.Tensor]:
    """Object layer (uint8 [N, 3, H, W], defined everywhere) and the object masks (bool
    [N, 1, H, W]). The layer is the object colour with a linear shading and a little
    luminance noise."""
    n, s = p.labels.shape[0], p.size
    g = torch.Generator().manual_seed(p.seed + 2_000_003)
    u, v = _unit_coords(p.cx, p.cy, p.half, s)
    shading = p.shade[:, 0].view(-1, 1, 1) * u + p.shade[:, 1].view(-1, 1, 1) * v
    lum = torch.randn(n, 1, s, s, generator=g).mul_(0.03)   # luminance noise, same in R, G, B
    lum += shading.unsqueeze(1)
    x = lum + p.fg.view(n, 3, 1, 1)
    return _to_uint8(x), shape_masks(p.labels, p.cx, p.cy, p.half, s)


def make_shapes(n: int, seed: int, size: int = SHAPES_SIZE
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` shapes images (uint8 [N,3,H,W]), labels (int64 [N]) and exact masks (bool
    [N,1,H,W]): the image is the object layer where the mask is set, the background elsewhere."""
    p = shapes_params(n, seed, size)
    background = render_shapes_background(p)
    objects, masks = render_shapes_objects(p)
    return torch.where(masks, objects, background), p.labels, masks


def load_shapes(split: str, root: Optional[PathLike] = None) -> ImageDataset:
    """Synthetic shapes: 10 classes (:data:`SHAPE_CLASSES`), random size, position and colour
    (colour independent of the class; light objects on dark, striped, noisy backgrounds);
    exact object masks.
    No files: ``root`` is ignored."""
    n, seed = SHAPES_SPLITS[split]
    images, labels, masks = make_shapes(n, seed)
    return ImageDataset("shapes", split, images, labels, masks, SHAPES_MEAN, SHAPES_STD,
                        len(SHAPE_CLASSES), list(SHAPE_CLASSES))


# --------------------------------------------------------------------------------------
# where files are looked for, and the optional torchvision download
# --------------------------------------------------------------------------------------

# Default data folder when no ``root`` is given (also where downloads go).
DEFAULT_ROOT = Path(os.environ.get("XAI_UTILS_DATA", Path.home() / ".cache" / "xai_utils"))
# Set XAI_UTILS_NO_DOWNLOAD=1 (or this flag to False) to never touch the network.
ALLOW_DOWNLOAD = os.environ.get("XAI_UTILS_NO_DOWNLOAD", "") in ("", "0")
# (host, port) that torchvision downloads each dataset from: a quick reachability check first
_DOWNLOAD_HOSTS = {"fashion_mnist": ("fashion-mnist.s3-website.eu-central-1.amazonaws.com", 80),
                   "cifar10": ("www.cs.toronto.edu", 443)}


def _online(host: tuple[str, int], timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection(host, timeout=timeout):
            return True
    except OSError:
        return False


def download_with_torchvision(name: str, root: Path) -> None:
    """Download ``name`` into ``root`` with torchvision (its own folder layout under root)."""
    import torchvision

    cls = {"fashion_mnist": torchvision.datasets.FashionMNIST,
           "cifar10": torchvision.datasets.CIFAR10}[name]
    cls(str(root), train=True, download=True)
    cls(str(root), train=False, download=True)


def _try_download(name: str, root: Path, notes: list[str]) -> bool:
    """Download when allowed and online; on failure remove every folder it created (nothing
    is left behind) and note why in ``notes``."""
    if not ALLOW_DOWNLOAD:
        notes.append("download disabled (XAI_UTILS_NO_DOWNLOAD / data.ALLOW_DOWNLOAD)")
        return False
    if not _online(_DOWNLOAD_HOSTS[name]):
        notes.append(f"download skipped: {_DOWNLOAD_HOSTS[name][0]} is not reachable (offline?)")
        return False
    created = root
    while not created.parent.exists():      # the top-most folder this download would create
        created = created.parent
    existed = created.exists()
    try:
        download_with_torchvision(name, root)
        return True
    except Exception as e:  # noqa: BLE001 - any failure becomes one clear DatasetNotFoundError
        if not existed:
            shutil.rmtree(created, ignore_errors=True)
        notes.append(f"download into {root} failed: {type(e).__name__}: {e}")
        return False


def _download_possible(name: str, notes: list[str]) -> bool:
    """A loader could download ``name`` now (allowed and the host reachable); why not in ``notes``."""
    if not ALLOW_DOWNLOAD:
        notes.append("download disabled (XAI_UTILS_NO_DOWNLOAD / data.ALLOW_DOWNLOAD)")
        return False
    if not _online(_DOWNLOAD_HOSTS[name]):
        notes.append(f"download not possible: {_DOWNLOAD_HOSTS[name][0]} is not reachable (offline?)")
        return False
    return True


def _roots(root: Optional[PathLike]) -> list[Path]:
    return [Path(root).expanduser()] if root is not None else [DEFAULT_ROOT]


# --------------------------------------------------------------------------------------
# Fashion-MNIST (IDX files)
# --------------------------------------------------------------------------------------

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


def _locate_fashion_mnist(split: str, root: Optional[PathLike], download: bool) -> Optional[list[Path]]:
    """The two IDX files of ``split``; downloaded when missing if ``download`` (and possible).
    With ``download=False``: None when they are missing but a loader could download them.
    Otherwise missing files raise :class:`DatasetNotFoundError`."""
    stems = _FASHION_FILES[split]
    base = _roots(root)[0]
    candidates = [base / "FashionMNIST" / "raw", base, DEBIAN_FASHION_MNIST_DIR]
    files = next((f for f in (_find_files(c, stems) for c in candidates) if f is not None), None)
    notes: list[str] = []
    if files is None and download and _try_download("fashion_mnist", base, notes):
        files = _find_files(base / "FashionMNIST" / "raw", stems)
    if files is None:
        if not download and _download_possible("fashion_mnist", notes):
            return None
        raise _not_found("fashion_mnist", [f"{c}/{{{','.join(stems)}}}[.gz]" for c in candidates] + notes, [
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
    into ``root`` (default :data:`DEFAULT_ROOT`) when online.

    The 28x28 images are padded with 2 zero pixels on each side to 32x32 and replicated to 3
    channels, so the CIFAR models apply unchanged. Padding rather than resizing keeps the pixel
    grid intact (no interpolation) and the object centred, like LeNet's classic 32x32 input.
    """
    files = _locate_fashion_mnist(split, root, download=True)
    images, labels = read_idx(files[0]), read_idx(files[1])
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.shape != (images.shape[0],):
        raise ValueError(f"unexpected Fashion-MNIST shapes {images.shape}, {labels.shape} in {files}")
    return ImageDataset("fashion_mnist", split, torch.from_numpy(pad_to_32(images)),
                        torch.from_numpy(labels.astype(np.int64)), None,
                        FASHION_MNIST_MEAN, FASHION_MNIST_STD, 10, list(FASHION_MNIST_CLASSES))


# --------------------------------------------------------------------------------------
# CIFAR-10 (torchvision's cifar-10-batches-py pickles)
# --------------------------------------------------------------------------------------

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


def _locate_cifar10(split: str, root: Optional[PathLike], download: bool) -> Optional[Path]:
    """The ``cifar-10-batches-py`` folder holding ``split`` (see :func:`_locate_fashion_mnist`
    for ``download``)."""
    base = _roots(root)[0]
    candidates = [base / CIFAR10_FOLDER, base]
    folder = next((c for c in candidates if _cifar_batch_files(c, split)), None)
    notes: list[str] = []
    if folder is None and download and _try_download("cifar10", base, notes):
        folder = base / CIFAR10_FOLDER if _cifar_batch_files(base / CIFAR10_FOLDER, split) else None
    if folder is None:
        if not download and _download_possible("cifar10", notes):
            return None
        want = "test_batch" if split == "test" else "data_batch_1..5"
        raise _not_found("cifar10", [f"{c}/{want}" for c in candidates] + notes, [
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
    folder = _locate_cifar10(split, root, download=True)
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


# --------------------------------------------------------------------------------------
# ImageNet-S50 (a folder the user supplies)
# --------------------------------------------------------------------------------------

# ImageNet-1k indices of the 50 ImageNet-S50 classes; label k of this module is entry k.
IMAGENET_S50_INDICES = (
    1, 3, 11, 31, 222, 277, 284, 295, 301, 325, 330, 333, 342, 368, 386, 388, 404, 412, 418,
    436, 449, 466, 487, 492, 502, 510, 531, 532, 574, 579, 606, 617, 659, 670, 695, 703, 748,
    829, 846, 851, 861, 879, 883, 898, 900, 914, 919, 951, 959, 992)
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


def decode_mask_png(path: PathLike) -> np.ndarray:
    """ImageNet-S mask PNG -> bool [H, W] foreground: ids other than 0 (other/background)
    and 1000 (ignored, e.g. uncertain boundaries) are the annotated object."""
    from PIL import Image

    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB"), dtype=np.int32)
    ids = rgb[..., 0] + 256 * rgb[..., 1]
    return (ids != IMAGENET_S_BACKGROUND) & (ids != IMAGENET_S_IGNORE)


def _resize_crop(img: Any, crop: int, nearest: bool = False) -> Any:
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
        x = torch.from_numpy(np.asarray(_resize_crop(rgb, self.crop), dtype=np.uint8).copy())
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
            m = torch.from_numpy(np.asarray(_resize_crop(fg, self.crop, nearest=True)) > 127)[None]
        return item + (m,)


@dataclass
class StreamingImageDataset:
    """A split too large for memory: file paths and labels, decoded in DataLoader workers.

    Same metadata as :class:`ImageDataset` (no ``images``/``masks``). :meth:`train_loader`
    yields training batches: per image ``views`` random resized crops to ``crop`` (224) taken
    from the whole decoded image (:mod:`xai_utils.streaming`), as torchvision's ``RandomResizedCrop`` (scale 0.08-1), and
    its clean view; the rest of the recipe (flip, colour) runs batched on the training device.
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
                     pin_memory: Optional[bool] = None) -> torch.utils.data.DataLoader:
        """The training DataLoader of a run, built once and reused for every epoch.

        Batches: (crops uint8 [B, views, 3, crop, crop], clean uint8 [B, 3, 224, 224], labels
        int64 [B]), see :class:`xai_utils.streaming.RandomCropFiles`; the last incomplete batch is dropped. Call
        ``loader.sampler.set_epoch(epoch)`` before iterating an epoch (:class:`xai_utils.streaming.EpochSampler`:
        the order and the crops are functions of (seed, epoch, image) only). Its workers
        persist across epochs; memory is pinned when CUDA is available."""
        from .streaming import EpochSampler, RandomCropFiles
        ds = RandomCropFiles(self.paths, self.labels.tolist(), views, self.crop)
        sampler = EpochSampler(range(len(self)) if indices is None else indices, seed)
        return torch.utils.data.DataLoader(
            ds, batch_size=batch_size, sampler=sampler, num_workers=num_workers, drop_last=True,
            pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
            persistent_workers=num_workers > 0)


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


def _locate_imagenet_s50(split: str, root: Optional[PathLike], download: bool = False
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
    raise _not_found("imagenet_s50", [f"{f}/<wnid>/*.JPEG" for f in folders], [
        "ImageNet is licensed: download ILSVRC2012 from https://image-net.org and arrange "
        "the 50 classes as root/train/<wnid>/*.JPEG and root/val/<wnid>/*.JPEG "
        "(see xai_utils.data.load_imagenet_s50 for the layout and the class list)",
        "masks: ImageNet-S50 validation-segmentation from https://github.com/LUSSeg/ImageNet-S "
        "into root/masks/<wnid>/<stem>.png",
        "then pass root=<that folder> (profile setting data_root)",
    ])


def _imagenet_mask_dir(root: Optional[PathLike]) -> Optional[Path]:
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
    paths, labels = _locate_imagenet_s50(split, root)
    meta = dict(mean=IMAGENET_MEAN, std=IMAGENET_STD, num_classes=50, class_names=list(names))
    if split == "train":
        return StreamingImageDataset("imagenet_s50", split, paths,
                                     torch.tensor(labels, dtype=torch.long), **meta)
    mask_dir = _imagenet_mask_dir(root)
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


# --------------------------------------------------------------------------------------
# registry and entry point
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: how to load a split, which splits exist, whether a split has object
    masks, and how to check that its files are there without loading them."""

    label: str
    load: Callable[[str, Optional[PathLike]], Any]
    splits: tuple[str, ...]
    locate: Optional[Callable[[str, Optional[PathLike], bool], Any]] = None   # None: generated
    masks: Callable[[str, Optional[PathLike]], bool] = lambda split, root: False


DATASETS: dict[str, DatasetSpec] = {
    "shapes": DatasetSpec("Shapes", load_shapes, ("train", "test"), masks=lambda split, root: True),
    "fashion_mnist": DatasetSpec("Fashion-MNIST", load_fashion_mnist, ("train", "test"), _locate_fashion_mnist),
    "cifar10": DatasetSpec("CIFAR-10", load_cifar10, ("train", "test"), _locate_cifar10),
    "imagenet_s50": DatasetSpec("ImageNet-S50", load_imagenet_s50, ("train", "val"), _locate_imagenet_s50,
                                masks=lambda split, root: split == "val" and _imagenet_mask_dir(root) is not None),
}


def dataset_label(name: str) -> str:
    """Display name of a dataset (``CIFAR-10``); an unregistered name is shown as is."""
    return DATASETS[name].label if name in DATASETS else str(name)


def check_available(name: str, split: str, root: Optional[PathLike] = None) -> None:
    """Raise :class:`DatasetNotFoundError` (saying where we looked and how to get the data)
    unless ``split`` of ``name`` can be loaded: its files are there, or a loader may download
    them now. Reads no image; downloads nothing."""
    spec = DATASETS[name]
    if spec.locate is not None:
        spec.locate(resolve_split(name, split), root, False)


def has_masks(name: str, split: str, root: Optional[PathLike] = None) -> bool:
    """Whether ``split`` of ``name`` comes with object masks (the coherence metrics need them)."""
    return bool(DATASETS[name].masks(resolve_split(name, split), root))


# 'test' and 'val' both mean "the held-out split" of a dataset
_SPLIT_ALIASES = {"val": "test", "test": "val"}


def resolve_split(name: str, split: str) -> str:
    """The split name a dataset uses for ``split`` (``test`` and ``val`` are aliases)."""
    valid = DATASETS[name].splits
    if split in valid:
        return split
    alias = _SPLIT_ALIASES.get(split)
    if alias in valid:
        return alias
    raise ValueError(f"unknown split {split!r} for dataset {name!r}; valid: {', '.join(valid)}"
                     f" ('test' and 'val' are aliases of the held-out split)")


def load_dataset(name: str, split: str, root: Optional[PathLike] = None
                 ) -> Union[ImageDataset, StreamingImageDataset]:
    """Load split ``split`` of dataset ``name`` (see the module docstring for names/splits).

    ``root`` is where the dataset's files are (ignored by ``shapes``). Cached per process;
    every call returns fresh tensor copies, safe to modify. ``imagenet_s50`` 'train' returns
    a :class:`StreamingImageDataset` (use its ``.loader(...)``); everything else an
    :class:`ImageDataset`.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}")
    split = resolve_split(name, split)
    root_key = None if root is None else str(Path(root).expanduser().resolve())
    ds = _load_cached(name, split, root_key)
    return ds.copy() if isinstance(ds, ImageDataset) else ds


@functools.lru_cache(maxsize=8)
def _load_cached(name: str, split: str, root: Optional[str]) -> Any:
    return DATASETS[name].load(split, root)
