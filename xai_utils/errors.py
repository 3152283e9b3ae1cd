"""Errors shared by every layer: each says in one line what is wrong and how to fix it."""
from __future__ import annotations


class ConfigError(ValueError):
    """A profile, override or setting is invalid; the message is one line saying what and how to fix it."""


class UnknownNameError(ConfigError, KeyError):
    """A name that no registry entry has (:class:`xai_utils.registry.Registry`); the message
    says what is available and which name was probably meant."""

    def __str__(self) -> str:                  # a KeyError would show its message in quotes
        return str(self.args[0]) if self.args else ""


class DatasetNotFoundError(FileNotFoundError):
    """The files of a dataset are nowhere to be found; the message says where we looked and how
    to get them."""


class MissingInputError(ValueError):
    """A table or figure cannot be made because what it shows was not produced (no results, no
    curves, one objective only...): the report skips it and says so; the message names what is
    missing. Any other exception in a table or figure is a bug and fails the report."""


class ArtefactError(RuntimeError):
    """A file written by an earlier stage is truncated or unreadable; the message names the file
    and the stage to re-run (``--stage <stage> --force``)."""

    def __init__(self, path: object, reason: str, stage: str):
        self.path, self.reason, self.stage = path, reason, stage
        super().__init__(f"{self.damage}; remake it: --stage {stage} --force")

    @property
    def damage(self) -> str:
        """What is wrong, without what to do: ``<path> is truncated or unreadable (<reason>)``."""
        return f"{self.path} is truncated or unreadable ({self.reason})"
