"""The names a study uses. Open sets, which users extend, are registries: attribution methods,
pair methods, metrics, pair metrics, objectives and backbones each keep their entries in a
:class:`Registry`, the single source of truth of its names. Closed sets (stages, verdicts)
are :class:`StrEnum` enumerations, written in files as their values.

A registry is a read-only mapping (``name in reg``, ``reg[name]``, iteration in registration
order) that adds what a user registering their own entry needs (``docs/extending.md``):

* :meth:`Registry.register` refuses a name that is taken unless ``override=True``, so that
  an entry is never replaced by accident;
* an unknown name is an :class:`~xai_utils.errors.UnknownNameError` (a ``ConfigError`` and a
  ``KeyError``) saying what is available and, where one is close, which name was meant;
* :meth:`Registry.check` validates a list of names at once (one error naming every unknown
  one), and :meth:`Registry.list` filters names by a shell pattern, as timm's ``list_models``.
"""
from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Iterator, Mapping
from enum import Enum
from typing import Generic, Iterable, TypeVar

from .errors import UnknownNameError

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """Named entries of one kind (``kind``: how errors name it, e.g. "attribution method")."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T, override: bool = False) -> T:
        """Add ``entry`` under ``name``; a name already taken is refused unless ``override``."""
        if name in self._entries and not override:
            raise ValueError(f"{self.kind} '{name}' is already registered; pass override=True to replace it")
        self._entries[name] = entry
        return entry

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(f"unknown {self.kind} '{name}'; available: {', '.join(self._entries)}"
                                   f"{self._meant([name])}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"

    def check(self, names: Iterable[str]) -> list[str]:
        """``names`` as a list when every one is registered; otherwise one error naming every
        unknown one (and what each probably meant)."""
        names = list(names)
        bad = [n for n in names if n not in self._entries]
        if bad:
            raise UnknownNameError(f"unknown {self.kind}(s) {bad}; available: {', '.join(self._entries)}"
                                   f"{self._meant(bad)}")
        return names

    def list(self, pattern: str = "*") -> list[str]:
        """The registered names matching a shell pattern (``"pair_*"``), in registration order."""
        return [n for n in self._entries if fnmatch.fnmatchcase(n, pattern)]

    def _meant(self, names: Iterable[object]) -> str:
        """"; did you mean 'x'?" for the registered names closest to ``names`` (none: "")."""
        close = [m for n in names for m in difflib.get_close_matches(str(n), list(self._entries), n=1)]
        return f"; did you mean {', '.join(repr(m) for m in dict.fromkeys(close))}?" if close else ""


class StrEnum(str, Enum):
    """An enumeration whose members are their values wherever they are written (files, JSON,
    f-strings) and equal to them as strings (``Stage.TRAIN == "train"``), so that code names a
    member while files keep the plain word; Python 3.11's ``enum.StrEnum``, here for 3.10 too."""

    def __str__(self) -> str:
        return str.__str__(self)

    def __format__(self, spec: str) -> str:
        return str.__format__(str.__str__(self), spec)
