"""The API reference (``docs/api.md``): every public function and class of every module, layer
by layer, with its signature and the first line of its docstring, read from the code itself.
It imports every module, so it sits above every layer (pyproject.toml's import contract).

    python -m xai_utils.reference > docs/api.md      # `make api-docs`; a test checks it is current
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Iterator

import xai_utils

# the layers of pyproject.toml's import contract, top first, as the reference lists them
LAYERS = (("Pipeline, reproduction and the library entry points", ("pipeline", "reproduction", "api", "reference")),
          ("Analysis of saved results", ("analysis",)),
          ("Stages: what reads and writes a run folder", ("stages",)),
          ("Settings", ("settings",)),
          ("The study: data, models, objectives, training", ("study",)),
          ("Operations on tensors", ("ops",)),
          ("Registry and errors", ("registry", "errors")))
ADDRESS = re.compile(r" at 0x[0-9a-f]+")        # object addresses in default values change per process
REPOSITORY = str(Path(xai_utils.__file__).resolve().parent.parent)   # default paths differ per checkout


def modules(top: str) -> list[str]:
    """``xai_utils.<top>`` and, for a package, every module under it (sorted; no ``__main__``)."""
    name = f"{xai_utils.__name__}.{top}"
    module = importlib.import_module(name)
    found = [name]
    if hasattr(module, "__path__"):
        found += [m.name for m in pkgutil.walk_packages(module.__path__, prefix=name + ".")
                  if not m.name.endswith("__main__")]
    return sorted(found)


def public(module: ModuleType) -> Iterator[tuple[str, object]]:
    """The functions and classes a module defines (not imports) whose names do not start with _."""
    for name, obj in sorted(vars(module).items()):
        if not name.startswith("_") and (inspect.isfunction(obj) or inspect.isclass(obj)) \
                and getattr(obj, "__module__", None) == module.__name__:
            yield name, obj


def first_line(obj: object) -> str:
    """The first line of an object's docstring, or a note that it has none."""
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0] if doc.strip() else "(no docstring)"


def signature(name: str, obj: object) -> str:
    """``name(arguments)``, with the checkout's folder written ``<repository>`` and without the
    object addresses of default values (the same text on every machine)."""
    try:
        return ADDRESS.sub("", f"{name}{inspect.signature(obj)}").replace(REPOSITORY, "<repository>")
    except (TypeError, ValueError):
        return name


def reference() -> str:
    """The Markdown of docs/api.md."""
    out = ["# API reference", "", "[← Documentation](README.md) · [README](../README.md)", "",
           "Every public function and class of the package, layer by layer (each imports only from the",
           "layers below it: [Architecture](architecture.md)), with its signature and the first line of",
           "its docstring; the docstring itself says more (`help(...)`). Made by",
           "`python -m xai_utils.reference` (`make api-docs`); a test checks it is current.", ""]
    for title, tops in LAYERS:
        out += [f"## {title}", ""]
        for name in (m for top in tops for m in modules(top)):
            module = importlib.import_module(name)
            entries = list(public(module))
            if not entries:
                continue
            out += [f"### `{name}`", "", first_line(module), ""]
            out += [f"- `{signature(n, obj)}`: {first_line(obj)}" for n, obj in entries]
            out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    sys.stdout.write(reference())
