"""Errors shared by every layer: each says in one line what is wrong and how to fix it.

The errors a user can act on (:data:`EXPLAINED`: a bad setting, missing data, a damaged file)
carry what they say as fields, and cross a process boundary as a plain record
(:func:`error_record`, :func:`error_from_record`): a stage that fails in a notebook's kernel
or on a cluster node reaches the pipeline as the same error with the same fields, never as
text to be parsed.
"""
from __future__ import annotations

import argparse
from typing import Any, ClassVar, NoReturn, Optional


class Explained(Exception):
    """An error whose one-line message is all a user needs (no traceback is shown for it).
    ``kind`` names it in a record; :meth:`fields` and :meth:`from_fields` carry it across."""

    kind: ClassVar[str] = ""

    def fields(self) -> dict[str, Any]:
        return {"message": str(self)}

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> "Explained":
        return cls(fields["message"])


class ConfigError(Explained, ValueError):
    """A profile, override or setting is invalid; the message is one line saying what and how to fix it."""

    kind = "config"


class UnknownNameError(ConfigError, KeyError):
    """A name that no registry entry has (:class:`xai_utils.registry.Registry`); the message
    says what is available and which name was probably meant."""

    def __str__(self) -> str:                  # a KeyError would show its message in quotes
        return str(self.args[0]) if self.args else ""


class DatasetNotFoundError(Explained, FileNotFoundError):
    """The files of a dataset are nowhere to be found; the message says where we looked and how
    to get them."""

    kind = "dataset"


class MissingInputError(ValueError):
    """A table or figure cannot be made because what it shows was not produced (no results, no
    curves, one objective only...): the report skips it and says so; the message names what is
    missing. Any other exception in a table or figure is a bug and fails the report."""


class ArtefactError(Explained, RuntimeError):
    """A file written by an earlier stage is truncated or unreadable.

    Fields: ``path`` (the file), ``reason`` (what reading it raised), ``stage`` (the stage that
    writes it) and ``command`` (what remakes it: ``--stage <stage> --force`` here, the whole
    pipeline command once the pipeline knows the study and the run, :meth:`remade_by`)."""

    kind = "artefact"

    def __init__(self, path: object, reason: str, stage: str, command: Optional[str] = None):
        self.path, self.reason, self.stage = str(path), reason, stage
        self.command = command or f"--stage {stage} --force"
        super().__init__(f"{self.damage}; remake it: {self.command}")

    @property
    def damage(self) -> str:
        """What is wrong, without what to do: ``<path> is truncated or unreadable (<reason>)``."""
        return f"{self.path} is truncated or unreadable ({self.reason})"

    def remade_by(self, command: str) -> "ArtefactError":
        """The same error, saying ``command`` remakes the file."""
        return ArtefactError(self.path, self.reason, self.stage, command)

    def fields(self) -> dict[str, Any]:
        return {"path": self.path, "reason": self.reason, "stage": self.stage, "command": self.command}

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> "ArtefactError":
        return cls(fields["path"], fields["reason"], fields["stage"], fields.get("command"))

    def __reduce__(self) -> tuple:              # pickled (a cluster node's result) with its fields
        return (ArtefactError, (self.path, self.reason, self.stage, self.command))


# The errors a user can act on from their message, by the kind their records name.
EXPLAINED: dict[str, type[Explained]] = {c.kind: c for c in (ConfigError, DatasetNotFoundError, ArtefactError)}


def error_record(error: Optional[BaseException]) -> Optional[dict[str, Any]]:
    """``{"kind": ..., "fields": {...}}`` for an explained error (JSON-ready), else None."""
    if not isinstance(error, Explained) or error.kind not in EXPLAINED:
        return None
    return {"kind": error.kind, "fields": error.fields()}


def error_from_record(record: dict[str, Any]) -> Explained:
    """The error an :func:`error_record` describes."""
    return EXPLAINED[record["kind"]].from_fields(record["fields"])


class CommandLine(argparse.ArgumentParser):
    """The companion's command lines: a bad argument is one line, ``<prog>: <what> (see --help)``,
    exit status 2, as every other refusal; argparse's own answer would print the usage first."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see --help)\n")
