"""Devices: which device a setting names, autocast regions that work on any device, the
float32 precision of CUDA kernels (IEEE or TF32), deterministic kernels, and a counter of host
synchronisations.

A training step on a GPU is fast only if the host never waits for the device: every
``.item()``, ``bool(tensor)``, ``int(tensor)``, boolean-mask index or ``nonzero`` of a device
tensor blocks the Python thread until the GPU has caught up, and a device-to-host copy does
the same. :class:`HostSyncCounter` counts these operations for tensors on a non-CPU device
(a ``TorchDispatchMode``), so a test can run a step on the data-free ``meta`` device and
assert that nothing is read back. On a real GPU the same check is
``torch.cuda.set_sync_debug_mode("error")`` around the step.
"""
from __future__ import annotations

import contextlib
import os
from collections import Counter
from typing import Any, ContextManager, Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' -> CUDA when available, else CPU; anything else is passed to torch.device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device '{device}' requested but CUDA is not available; use device='cpu' or 'auto'")
    return dev


# devices with an autocast implementation (elsewhere, e.g. on ``meta``, regions are no-ops)
_AUTOCAST_DEVICES = ("cpu", "cuda", "xpu", "mps", "hpu")


def autocast(device: torch.device | str, dtype: torch.dtype = torch.bfloat16,
             enabled: bool = True) -> ContextManager:
    """``torch.autocast`` for ``device``'s type, or a no-op where autocast does not exist."""
    kind = torch.device(device).type
    if kind not in _AUTOCAST_DEVICES:
        return contextlib.nullcontext()
    return torch.autocast(kind, dtype=dtype, enabled=enabled)


def float32(device: torch.device | str) -> ContextManager:
    """A region computed in float32 inside an autocast region (losses divided by small
    temperatures, projections and their L2 normalisation)."""
    return autocast(device, enabled=False)


# ----------------------------------------------------------------------------- float32 precision

PRECISIONS = ("ieee", "tf32")


def _precision_flags() -> list[Any]:
    """The backends whose float32 precision CUDA kernels follow: cuBLAS matrix products and
    cuDNN convolutions (PyTorch's precision API, ``fp32_precision``; cuDNN convolutions
    default to TF32, so IEEE float32 must be asked for)."""
    return [torch.backends.cuda.matmul, torch.backends.cudnn.conv]


@contextlib.contextmanager
def fp32_precision(precision: str) -> Iterator[None]:
    """Float32 matrix products and convolutions on CUDA in ``precision`` inside the block:
    ``"ieee"`` (exact float32) or ``"tf32"`` (TensorFloat-32 on Ampere and later: 10-bit
    mantissa products, faster). The previous flags are restored after; nothing changes on the
    CPU, whose float32 is always IEEE."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    flags = _precision_flags()
    saved = [f.fp32_precision for f in flags]
    for f in flags:
        f.fp32_precision = precision
    try:
        yield
    finally:
        for f, value in zip(flags, saved):
            f.fp32_precision = value


@contextlib.contextmanager
def ieee_float32(device: torch.device | str) -> Iterator[None]:
    """A region in exact float32 whatever surrounds it: autocast off and IEEE float32 matrix
    products and convolutions (no TF32). The probe, the fp32 test pass, the explained model's
    logits, attribution maps and metrics run in one."""
    with float32(device), fp32_precision("ieee"):
        yield


# ----------------------------------------------------------------------------- determinism

CUBLAS_WORKSPACE = ":4096:8"     # what cuBLAS needs for deterministic results (CUDA >= 10.2)


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool = True) -> Iterator[None]:
    """Inside the block, bit-exact kernels on a GPU: cuDNN deterministic and not benchmarked,
    ``torch.use_deterministic_algorithms`` (an operation without a deterministic kernel raises
    an error naming it), the cuBLAS workspace variable set (if it is not set already; it must
    be set before the first cuBLAS call of the process). No TF32: run the step in
    ``fp32_precision("ieee")``. Everything is restored after. ``enabled=False``: no change."""
    if not enabled:
        yield
        return
    saved = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
             torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    had_workspace = "CUBLAS_WORKSPACE_CONFIG" in os.environ
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[0], saved[1]
        torch.use_deterministic_algorithms(saved[2], warn_only=saved[3])
        if not had_workspace:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


# ops whose result the host needs before it can go on (on a CUDA tensor: a synchronisation)
_SCALAR_READS = ("aten._local_scalar_dense",)
_DATA_DEPENDENT_SHAPES = ("aten.nonzero", "aten.masked_select", "aten.unique", "aten._unique",
                          "aten.repeat_interleave.Tensor")
_COPIES = ("aten._to_copy", "aten.copy_")


def _device_of(x: Any) -> torch.device | None:
    return x.device if isinstance(x, torch.Tensor) else None


def _on_accelerator(x: Any) -> bool:
    return isinstance(x, torch.Tensor) and x.device.type != "cpu"


class HostSyncCounter(TorchDispatchMode):
    """Count host synchronisations and host<->device copies of the operations run inside it.

    ``counts`` keys: ``scalar_reads`` (``.item()``/``bool()``/``int()``/``float()`` of a
    device tensor), ``data_dependent`` (``nonzero``, boolean-mask indexing, ``unique``, ...
    on a device tensor: their output size must be read back), ``device_to_host`` and
    ``host_to_device`` (copies; ``blocking_host_to_device`` those without ``non_blocking``,
    after which CUDA synchronises the stream). ``where`` names the operator of every
    synchronisation counted (:attr:`syncs`). On the ``meta`` device the reads are answered with zeros, so a whole step can be
    counted without data.
    """

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter = Counter()
        self.where: list[str] = []

    @property
    def syncs(self) -> int:
        """Operations that would block the host on a GPU."""
        return (self.counts["scalar_reads"] + self.counts["data_dependent"]
                + self.counts["device_to_host"] + self.counts["blocking_host_to_device"])

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = str(func.overloadpacket if hasattr(func, "overloadpacket") else func)
        full = str(func)
        first = args[0] if args else None
        if name in _SCALAR_READS and _on_accelerator(first):
            self.counts["scalar_reads"] += 1
            self.where.append(full)
            if first.device.type == "meta":
                return torch.zeros((), dtype=first.dtype).item()
        elif (name in _DATA_DEPENDENT_SHAPES or full in _DATA_DEPENDENT_SHAPES) and _on_accelerator(first):
            self.counts["data_dependent"] += 1
            self.where.append(full)
        elif name == "aten.index" and _on_accelerator(first) and any(
                isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] or ())):
            self.counts["data_dependent"] += 1
            self.where.append(full + " (boolean mask)")
        elif name in _COPIES:
            src = args[1] if name == "aten.copy_" else first
            if name == "aten.copy_":
                dst = _device_of(first)
            else:
                dst = kwargs.get("device") or _device_of(first)
                dst = torch.device(dst) if dst is not None else None
            src_dev = _device_of(src)
            blocking = not (args[2] if name == "aten.copy_" and len(args) > 2
                            else kwargs.get("non_blocking", False))
            if src_dev is not None and dst is not None and src_dev.type != dst.type:
                if dst.type == "cpu":
                    self.counts["device_to_host"] += 1
                    self.where.append(full + " (to host)")
                    if src_dev.type == "meta":           # no data to copy: zeros stand in
                        if name == "aten.copy_":
                            return first.zero_()
                        return torch.zeros(src.shape, dtype=kwargs.get("dtype") or src.dtype)
                elif src_dev.type == "cpu":
                    self.counts["host_to_device"] += 1
                    if blocking:       # CUDA waits for the stream after a blocking upload
                        self.counts["blocking_host_to_device"] += 1
                        self.where.append(full + " (blocking upload)")
        if isinstance(first, torch.Tensor) and first.device.type == "meta":
            from torch.fx.experimental import _config as fx_config
            with fx_config.patch(meta_nonzero_assume_all_nonzero=True):   # sizes unknown on meta
                return func(*args, **kwargs)
        return func(*args, **kwargs)
