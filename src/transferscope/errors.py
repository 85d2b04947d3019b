"""User-facing errors: every one names the file or setting at fault and what to do."""

from __future__ import annotations

__all__ = ["ConfigError", "DataError", "did_you_mean", "ModelError", "TransferscopeError",
           "validation_line"]


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


def did_you_mean(name: str, choices) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices`` to a mistyped ``name``, else "".

    >>> did_you_mean("efficentnet_lite0", ["efficientnet_lite0", "resnet18"])
    " (did you mean 'efficientnet_lite0'?)"
    >>> did_you_mean("zzz", ["resnet18"])
    ''
    """
    import difflib

    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


def validation_line(exc, what: str = "setting") -> str:
    """A pydantic ``ValidationError`` as one line naming the setting, the problem and the value
    (no documentation URL, no traceback).

    >>> from pydantic import BaseModel, Field, ValidationError
    >>> class R(BaseModel):
    ...     image_size: int = Field(224, ge=8)
    >>> try:
    ...     R(image_size=4)
    ... except ValidationError as e:
    ...     print(validation_line(e))
    setting 'image_size': Input should be greater than or equal to 8 (got 4)
    """
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ())) or "(top level)"
    got = f" (got {str(err['input'])[:60]})" if "input" in err and err.get("type") != "missing" \
        else ""
    return f"{what} '{loc}': {err['msg']}{got}"
