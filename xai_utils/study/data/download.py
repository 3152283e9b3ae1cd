"""Where dataset files are looked for, and the optional download with torchvision."""
from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path
from typing import Optional

from .base import PathLike

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


def try_download(name: str, root: Path, notes: list[str]) -> bool:
    """Download when allowed and online; on failure remove every folder it created (nothing
    is left behind) and note why in ``notes``."""
    if not ALLOW_DOWNLOAD:
        notes.append("download disabled (XAI_UTILS_NO_DOWNLOAD, or xai_utils.study.data.download.ALLOW_DOWNLOAD)")
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


def download_possible(name: str, notes: list[str]) -> bool:
    """A loader could download ``name`` now (allowed and the host reachable); why not in ``notes``."""
    if not ALLOW_DOWNLOAD:
        notes.append("download disabled (XAI_UTILS_NO_DOWNLOAD, or xai_utils.study.data.download.ALLOW_DOWNLOAD)")
        return False
    if not _online(_DOWNLOAD_HOSTS[name]):
        notes.append(f"download not possible: {_DOWNLOAD_HOSTS[name][0]} is not reachable (offline?)")
        return False
    return True


def roots(root: Optional[PathLike]) -> list[Path]:
    return [Path(root).expanduser()] if root is not None else [DEFAULT_ROOT]
