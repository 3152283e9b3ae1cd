"""Errors shared by every layer: each says in one line what is wrong and how to fix it."""
from __future__ import annotations


class ConfigError(ValueError):
    """A profile, override or setting is invalid; the message is one line saying what and how to fix it."""


class DatasetNotFoundError(FileNotFoundError):
    """The files of a dataset are nowhere to be found; the message says where we looked and how
    to get them."""
