"""The notebooks of the pipeline: where they are, their tagged parameters, and the Jupyter
kernel that executes them (Papermill): one kernel for the notebooks of a run (:class:`RunKernel`)."""
from __future__ import annotations

import ast
import contextlib
import json
import os
from pathlib import Path
from typing import Any, Optional

from ..errors import ConfigError, Explained, error_from_record
from ..settings.layout import PROJECT_DIR, Stage

NOTEBOOK_DIR = PROJECT_DIR / "notebooks"
NOTEBOOKS = {Stage.TRAIN: "01_train.ipynb", Stage.ATTRIBUTE: "02_attribute.ipynb",
             Stage.EVALUATE: "03_evaluate.ipynb", Stage.FIGURES: "04_figures.ipynb"}
KERNEL = "python3"


def notebook_parameters(stage: Stage) -> dict[str, dict[str, Any]]:
    """Names, defaults and types of a notebook's tagged parameters cell."""
    import papermill as pm   # reason: Jupyter's stack loads only when a notebook is read or run
    path = NOTEBOOK_DIR / NOTEBOOKS[stage]
    if not path.is_file():
        raise ConfigError(f"notebook {path} is missing: is this a complete checkout?")
    params = pm.inspect_notebook(str(path))
    if not params:
        raise ConfigError(f"notebook {path.name} has no cell tagged 'parameters'")
    return params


def param_type(spec: dict[str, Any]) -> type:
    name = spec.get("inferred_type_name", "None")
    builtin = {"int": int, "float": float, "str": str, "bool": bool, "list": list, "dict": dict}
    if name in builtin:
        return builtin[name]
    try:
        return type(ast.literal_eval(spec["default"]))
    except (ValueError, SyntaxError):
        return object


def type_ok(value: Any, expected: type) -> bool:
    if expected is object:
        return True
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, expected)


def kernel_manager_class(env: Optional[dict[str, str]] = None):
    """nbclient's kernel manager talking to the kernel over IPC sockets instead of TCP on
    localhost: the same messages, and no warning about unencrypted TCP from every kernel
    (nor a SIGINT to the idle kernel at shutdown).
    Each kernel gets its own socket prefix in the temporary folder (several kernels run at
    once with ``--jobs``; the manager removes the socket files when the kernel ends). TCP
    stays where IPC is unavailable (Windows). ``env``: variables set for this kernel only
    (its GPU with ``--devices``), on top of this process's environment."""
    from jupyter_client.manager import AsyncKernelManager
    import tempfile
    import uuid
    from traitlets import default

    class EnvKernelManager(AsyncKernelManager):
        clients: list = []             # every client of this kernel, closed by RunKernel after each notebook

        def client(self, **kw):
            kc = super().client(**kw)
            self.clients = [*self.clients, kc]
            return kc

        async def _async_launch_kernel(self, kernel_cmd, **kw):
            if env:
                kw["env"] = {**(kw.get("env") or os.environ), **env}
            return await super()._async_launch_kernel(kernel_cmd, **kw)

    if os.name != "posix":
        return EnvKernelManager

    class IPCKernelManager(EnvKernelManager):
        @default("transport")
        def _default_transport(self) -> str:
            return "ipc"

        @default("ip")
        def _default_ip(self) -> str:
            return os.path.join(tempfile.gettempdir(), f"xai-kernel-{uuid.uuid4().hex[:12]}")

        async def _async_interrupt_kernel(self) -> None:
            # jupyter_client interrupts a kernel before shutting it down; nbclient shuts down
            # after the last cell (or kills a stuck kernel), so the SIGINT only makes an idle
            # kernel log "KeyboardInterrupt caught in kernel" now and then.
            if not self.shutting_down:
                await super()._async_interrupt_kernel()
    return IPCKernelManager


# What clears a kernel between two notebooks of a run: the namespace (modules stay imported).
RESET_NAMESPACE = "get_ipython().run_line_magic('reset', '-f'); __import__('gc').collect()"
# What a kernel prints after a cell failed: the record of its error (xai_utils.errors.error_record,
# JSON; null for an error that is not one of the explained kinds).
FAILURE_RECORD = ("print(__import__('json').dumps(__import__('xai_utils.errors', fromlist=['error_record'])"
                  ".error_record(getattr(__import__('sys'), 'last_value', None))))")


class RunKernel:
    """One Jupyter kernel for the notebooks of one run, executed one after another.

    A kernel's start and its imports (torch, timm, the package: about 7 s on a CPU) were paid
    by every notebook when each had a kernel of its own: 48 of the quick study's 61 notebooks,
    about 350 s of its 2,490 s of notebook time. The notebooks of a run share one kernel
    instead. Before every notebook but the first, the kernel's namespace is cleared
    (:data:`RESET_NAMESPACE`), so a notebook sees its parameters and what it defines, as in a
    kernel of its own; the stage functions seed every draw themselves, so their results do not
    depend on what ran before in the kernel (tests/test_pipeline.py compares an evaluation
    made after attribution in the shared kernel with one made alone). The kernel starts with
    the first notebook and is shut down on leaving the ``with`` block; a notebook that fails
    ends the run's work (the later stages are blocked), so a dead kernel is never reused.
    ``env``: variables set for this kernel only (its GPU with ``--devices``).
    """

    def __init__(self, env: Optional[dict[str, str]] = None):
        self.env = env
        self.km: Any = None

    def __enter__(self) -> "RunKernel":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def execute(self, notebook: Path, output: Path, parameters: dict[str, Any]) -> None:
        """Execute ``notebook`` with ``parameters`` into ``output`` (Papermill) in this kernel.
        A cell that fails with an explained error (a bad setting, missing data, a damaged file:
        :data:`xai_utils.errors.EXPLAINED`) raises that error here, with its fields, from
        Papermill's; any other failure raises Papermill's error."""
        import papermill as pm   # reason: Jupyter's stack loads only when a notebook runs
        if self.km is None:
            self.km = kernel_manager_class(self.env)(kernel_name=KERNEL)
        elif self.km.has_kernel:
            self._reset()
        try:
            pm.execute_notebook(str(notebook), str(output), parameters=parameters, kernel_name=KERNEL,
                                cwd=str(NOTEBOOK_DIR), progress_bar=False, log_output=False, km=self.km)
        except pm.PapermillExecutionError as e:
            explained = self._explained_failure()
            if explained is not None:
                raise explained from e
            raise
        finally:
            self._close_clients()

    def _run_code(self, code: str) -> tuple[dict, str]:
        """Execute ``code`` in the kernel: its reply and what it printed."""
        printed: list[str] = []

        def keep(msg: dict) -> None:
            if msg["msg_type"] == "stream" and msg["content"].get("name") == "stdout":
                printed.append(msg["content"]["text"])

        async def run() -> dict:
            kc = self.km.client()
            kc.start_channels()
            await kc.wait_for_ready(timeout=60)
            return await kc.execute_interactive(code, store_history=False, timeout=60, output_hook=keep)
        from jupyter_core.utils import run_sync   # reason: Jupyter's stack loads only when a notebook runs
        try:
            return run_sync(run)(), "".join(printed)
        finally:
            self._close_clients()

    def _reset(self) -> None:
        reply, _ = self._run_code(RESET_NAMESPACE)
        if reply["content"]["status"] != "ok":
            raise RuntimeError(f"could not clear the run's kernel between notebooks: {reply['content']}")

    def _explained_failure(self) -> Optional[Explained]:
        """The error the last failed cell raised, rebuilt from its record, if it is an explained
        one; None for any other (or when the kernel no longer answers: it died with the cell)."""
        try:
            reply, printed = self._run_code(FAILURE_RECORD)
        except Exception:  # noqa: BLE001 - a dead or stuck kernel: Papermill's error stands
            return None
        if reply["content"]["status"] != "ok" or not printed.strip():
            return None
        record = json.loads(printed.strip().splitlines()[-1])
        return error_from_record(record) if record else None

    def _close_clients(self) -> None:
        for kc in self.km.clients:
            kc.stop_channels()
        self.km.clients = []

    def close(self) -> None:
        """Shut the kernel down (its notebooks are finished)."""
        if self.km is not None and self.km.has_kernel:
            from jupyter_core.utils import run_sync   # reason: Jupyter's stack loads only when a notebook runs
            run_sync(self.km.shutdown_kernel)()     # graceful, as nbclient does
        self.km = None


@contextlib.contextmanager
def in_notebook_dir():
    """Run from ``notebooks/``, where JupyterLab runs them too (their paths do not depend on it:
    :mod:`xai_utils.settings.layout`): papermill changes directory to ``cwd`` and back per
    notebook, which is not thread-safe unless every notebook starts where it returns."""
    here = os.getcwd()
    os.chdir(NOTEBOOK_DIR)
    try:
        yield
    finally:
        os.chdir(here)
