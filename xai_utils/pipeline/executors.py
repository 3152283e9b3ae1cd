"""Where the runs of a study execute: this machine (one GPU per concurrent run) or SLURM.

The runs of a study are independent, so scaling out means running several at once.

* **Local** (``--executor local``, the default). ``--jobs N`` runs N runs at once, each run's
  stages in order in its own Jupyter kernel (:class:`.notebooks.RunKernel`). A run takes a GPU
  from a pool (:class:`DevicePool`) for all of its stages, and its kernel starts with
  ``CUDA_VISIBLE_DEVICES`` set to that GPU alone. The run then sees one GPU, as
  ``cuda``/``cuda:0``, so a profile's ``device: auto`` works unchanged. The GPUs are those of
  ``--devices cuda:0,cuda:1,...`` (or ``all``), and every GPU of the machine when
  ``--devices`` is not given: one run per GPU, never two runs on one. ``--jobs auto`` (the
  default) runs one run per GPU, or two at a time on a machine without one; more jobs than
  GPUs is an error.
* **Inline** (``--executor inline``): the stage functions the notebooks call, in this process,
  one run after another, without kernels or executed notebooks (rehearsals, debugging, a
  machine without Jupyter).
* **SLURM** (``--executor slurm``, or ``submitit-local`` to rehearse it with local processes):
  each run with unfinished stages becomes one task of a job array, submitted through
  submitit; the figures follow (:mod:`.slurm`).
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import os
import queue
from typing import Any, Iterator, Optional, Sequence

import torch
from tqdm.auto import tqdm

from ..errors import ConfigError
from ..settings.layout import Stage
from .jobs import Job, Plan, run_group, run_groups
from .notebooks import in_notebook_dir
from .slurm import KINDS


EXECUTORS = ("local", "inline", *KINDS)
CPU_JOBS = 2                 # --jobs auto without a GPU: two single-threaded runs beat one on two cores


def available_gpus() -> int:
    """CUDA devices this process can see."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def parse_devices(text: Optional[str]) -> list[str]:
    """``cuda:0,cuda:2`` (or ``0,2``, or ``all``) -> the CUDA indices ``['0', '2']``; None -> [].

    Raises ConfigError (one line) for a name that is not a CUDA device, an index this machine
    does not have, or a device named twice."""
    if text is None:
        return []
    count = available_gpus()
    if text.strip() == "all":
        if count == 0:
            raise ConfigError("--devices all: this machine has no CUDA device")
        return [str(i) for i in range(count)]
    out: list[str] = []
    for name in (t.strip() for t in text.split(",")):
        index = name[5:] if name.startswith("cuda:") else name
        if not index.isdigit():
            raise ConfigError(f"--devices: '{name}' is not a CUDA device; give cuda:0,cuda:1,... or all")
        if int(index) >= count:
            raise ConfigError(f"--devices: {name} does not exist (this machine has {count} CUDA "
                              f"device{'s' if count != 1 else ''})")
        if str(int(index)) in out:
            raise ConfigError(f"--devices: {name} is given twice")
        out.append(str(int(index)))
    return out


class DevicePool:
    """GPUs handed to concurrent runs, one run per GPU at a time.

    :meth:`lease` blocks until a GPU is free and yields the environment of the run's kernels
    (``CUDA_VISIBLE_DEVICES`` = that GPU). An empty pool yields no change.
    """

    def __init__(self, devices: Sequence[str]):
        self.devices = list(devices)
        self._free: "queue.Queue[str]" = queue.Queue()
        for d in self.devices:
            self._free.put(d)

    @contextlib.contextmanager
    def lease(self) -> Iterator[dict[str, str]]:
        if not self.devices:
            yield {}
            return
        device = self._free.get()
        try:
            yield {"CUDA_VISIBLE_DEVICES": device}
        finally:
            self._free.put(device)


def default_jobs(devices: Sequence[str]) -> int:
    """``--jobs auto``: one run per GPU, or :data:`CPU_JOBS` at a time without one."""
    return len(devices) if devices else max(1, min(CPU_JOBS, os.cpu_count() or 1))


def check_local(jobs: int, devices: Sequence[str], runs: Sequence[Any]) -> None:
    """--jobs against the GPUs (one run per GPU), and run settings that would not see their GPU."""
    if devices and jobs > len(devices):
        raise ConfigError(f"--jobs {jobs} is larger than the {len(devices)} GPU(s) the runs get (--devices, or every "
                          f"GPU of this machine): one run per GPU")
    if devices:
        pinned = sorted({r.device for r in runs if r.device.startswith("cuda:") and r.device != "cuda:0"})
        if pinned:
            raise ConfigError(f"with --devices every run sees its GPU as cuda:0; the profile pins "
                              f"device {pinned[0]}: set device to auto or cuda")


@contextlib.contextmanager
def threads_per_kernel(workers: int):
    """With several notebooks at once, give each kernel its share of the CPU cores.

    Kernels inherit this process's environment; torch reads OMP_NUM_THREADS at import. A
    value the user set is left alone. On 2 cores, 2 single-threaded kernels beat 1 kernel
    with 2 threads (small CNNs scale poorly across threads, and kernel start-up is serial).
    """
    keys = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
    if workers <= 1 or any(k in os.environ for k in keys):
        yield
        return
    n = str(max(1, (os.cpu_count() or 1) // workers))
    os.environ.update({k: n for k in keys})
    try:
        yield
    finally:
        for k in keys:
            os.environ.pop(k, None)


def run_plan(p: Plan, force: bool = False, progress: bool = True, workers: int = 1,
             devices: Sequence[str] = (), inline: bool = False, wait: bool = True) -> list[Job]:
    """Execute the jobs; ``workers`` runs at once (each run's stages in order), then the
    figures. A failed stage blocks the later stages of its run only. ``devices``: CUDA
    indices; each concurrent run leases one and its kernels see only that GPU. ``inline``:
    the stage functions in this process, one run at a time (``workers`` and ``devices``
    unused). A run another invocation is working on is waited for (its lock, :mod:`.locks`),
    or skipped when ``wait`` is False."""
    if inline:
        workers, devices = 1, ()
    bar = tqdm(total=len(p.jobs), desc=f"study {p.profile.name}", unit="notebook", disable=not progress)
    pool = DevicePool(devices)

    def one(group: list[Job]) -> None:
        bar.set_postfix_str(group[0].label, refresh=False)
        with pool.lease() as env:
            if env:
                tqdm.write(f"{group[0].run_id}: GPU {env['CUDA_VISIBLE_DEVICES']}")
            run_group(group, p.profile, force, env, log=tqdm.write, on_job=lambda job: bar.update(1), inline=inline,
                      wait=wait)

    by_run = run_groups(p.jobs)
    runs = [g for g in by_run if g[0].stage != Stage.FIGURES]
    rest = [g for g in by_run if g[0].stage == Stage.FIGURES]
    workers = max(1, min(workers, len(runs)))
    with threads_per_kernel(workers), in_notebook_dir():
        if workers == 1:
            for group in runs:
                one(group)
        else:
            with concurrent.futures.ThreadPoolExecutor(workers) as pool_:
                list(pool_.map(one, runs))
        for group in rest:
            run_group(group, p.profile, force, log=tqdm.write, on_job=lambda job: bar.update(1), inline=inline,
                      wait=wait)
    bar.close()
    return p.jobs
