"""The notebooks of the pipeline: where they are, their tagged parameters, and the Jupyter
kernel that executes them (Papermill)."""
from __future__ import annotations

import ast
import contextlib
import os
from pathlib import Path
from typing import Any, Optional

from ..errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
NOTEBOOKS = {"train": "01_train.ipynb", "attribute": "02_attribute.ipynb",
             "evaluate": "03_evaluate.ipynb", "figures": "04_figures.ipynb"}
KERNEL = "python3"


def notebook_parameters(stage: str) -> dict[str, dict[str, Any]]:
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


@contextlib.contextmanager
def in_repo_root():
    """Run from the repository root: papermill changes directory to ``cwd`` and back per
    notebook, which is not thread-safe unless every notebook starts where it returns."""
    here = os.getcwd()
    os.chdir(REPO_ROOT)
    try:
        yield
    finally:
        os.chdir(here)
