"""Where a run's numbers were made: the machine and software of each stage, kept beside them.

A trained network depends on the machine that trained it: two CPUs of different kinds round
their kernels differently (PyTorch picks AVX2 or AVX-512 kernels at run time), so training
takes another path and every number after it moves a little. Each stage that computes
records a fingerprint in ``fingerprint.json`` of the folder it writes (the run folder, or an
evaluation folder ``protocols/<name>/``), one entry per stage::

    {"train": {"cpu": "AMD EPYC", "cpu_capability": "AVX2", "device": "cpu", "threads": 1,
               "python": "3.11.7", "packages": {"torch": "2.14.1+cu130", ...},
               "lock": {"file": "requirements.lock", "installed": true, "differing": []}},
     "attribute": {...}, "evaluate": {...}}

The fingerprint holds nothing that changes from one run to the next on the same machine (no
host name, time or process id), so the same machine gives the same file, and the figures
folder's ``coverage.json`` (which lists the fingerprints of the runs it covers) stays
byte-identical there.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.metadata as metadata
import json
import platform
import re
from pathlib import Path
from typing import Any, Optional, Union

import torch

from ..errors import ArtefactError
from ..settings import layout as runs
from . import files
from .artefacts import load_json

# the packages whose versions can change a number (the lock pins every other one)
PACKAGES = ("torch", "torchvision", "numpy", "scipy", "pandas", "timm", "captum", "scikit-image")
LOCK_FILE = Path(__file__).resolve().parents[2] / "requirements.lock"
MAX_LISTED = 10                  # differing packages listed by name in a fingerprint
PathLike = Union[str, Path]


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else the platform's word for it)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@functools.lru_cache(maxsize=1)
def _installed() -> dict[str, str]:
    return {_normalised(d.metadata["Name"]): d.version for d in metadata.distributions() if d.metadata["Name"]}


def lock_status(lock_file: PathLike = LOCK_FILE) -> dict[str, Any]:
    """Whether every package pinned by ``lock_file`` (``name==version`` lines) is installed at
    its version: ``{"file", "installed", "differing"}`` (at most :data:`MAX_LISTED` named,
    ``n_differing`` counting all); ``installed`` is None when there is no lock file (a package
    installed outside its repository)."""
    lock_file = Path(lock_file)
    if not lock_file.is_file():
        return {"file": lock_file.name, "installed": None, "differing": [], "n_differing": 0}
    installed = _installed()
    differing = []
    for line in lock_file.read_text().splitlines():
        m = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;#]+)", line)
        if m is None:
            continue
        name, version = _normalised(m.group(1)), m.group(2)
        have = installed.get(name)
        if have != version:
            differing.append(f"{name} {have or 'absent'} (lock {version})")
    return {"file": lock_file.name, "installed": not differing, "differing": differing[:MAX_LISTED],
            "n_differing": len(differing)}


def _version(package: str) -> Optional[str]:
    if package == "torch":
        return torch.__version__                 # with its build (e.g. +cu130)
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine_fingerprint(device: Union[str, torch.device] = "cpu") -> dict[str, Any]:
    """The machine and software a stage computes on: CPU model and the instruction-set level
    of PyTorch's CPU kernels, the device (and the GPU's name, CUDA and cuDNN versions on
    one), PyTorch's thread count, Python and package versions, and whether the lock is
    installed."""
    device = torch.device(device)
    out: dict[str, Any] = {
        "cpu": cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "device": device.type, "threads": torch.get_num_threads(),
        "python": platform.python_version(), "system": f"{platform.system()} {platform.machine()}",
        "packages": {p: _version(p) for p in PACKAGES}, "lock": lock_status()}
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)
        out["cuda"] = torch.version.cuda
        out["cudnn"] = torch.backends.cudnn.version()
    return out


def fingerprint_id(fingerprint: dict[str, Any]) -> str:
    """A short stable name of a fingerprint (8 hex digits of its canonical JSON)."""
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:8]


def describe(fingerprint: dict[str, Any]) -> str:
    """One line: ``AMD EPYC (AVX2), cpu, 1 thread, torch 2.14.1+cu130, lock installed``."""
    where = fingerprint.get("gpu") or fingerprint.get("device", "?")
    threads = fingerprint.get("threads")
    lock = fingerprint.get("lock", {}).get("installed")
    lock_text = {True: "lock installed", False: "lock not installed", None: "no lock file"}[lock]
    return (f"{fingerprint.get('cpu', '?')} ({fingerprint.get('cpu_capability', '?')}), {where}, "
            f"{threads} thread{'s' if threads != 1 else ''}, torch {fingerprint.get('packages', {}).get('torch')}, "
            f"{lock_text}")


def record_fingerprint(folder: PathLike, stage: runs.Stage, device: Union[str, torch.device] = "cpu") -> dict[str, Any]:
    """Write this machine's fingerprint as ``stage``'s entry of ``<folder>/fingerprint.json``
    (the other stages' entries kept); returns it."""
    path = Path(folder) / runs.FINGERPRINT
    fp = machine_fingerprint(device)
    entries = read_fingerprints(folder)
    entries[stage] = fp
    files.save_json(path, entries)
    return fp


def read_fingerprints(folder: PathLike) -> dict[str, dict[str, Any]]:
    """The entries of ``<folder>/fingerprint.json`` by stage ({} when absent or unreadable:
    runs made before fingerprints were recorded have none)."""
    try:
        entries = load_json(Path(folder) / runs.FINGERPRINT)
    except (FileNotFoundError, ArtefactError):
        return {}
    return entries if isinstance(entries, dict) else {}
