"""User-facing errors: every one names the file or setting at fault and what to do."""

from __future__ import annotations


class TransferscopeError(Exception):
    """An error caused by the user's input, with a message that says how to fix it.

    The CLI prints these as one line (no traceback); anything else is a bug.
    """


class DataError(TransferscopeError):
    """A data folder, image file or class layout is unusable."""


class ModelError(TransferscopeError):
    """A model name, weights file or head size is unusable."""


class ConfigError(TransferscopeError):
    """A setting (CLI option, recipe, study key) is invalid."""
