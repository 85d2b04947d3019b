"""Model roles, defined once, in the papers' vocabulary (paper 003, section 3):

* ``P``: the pre-trained source model (M^s of papers 000 and 001);
* ``P-T``: trained on the target starting from P's weights ("fine-tuned" on the page);
* ``RI-T``: trained on the target from a random init ("from scratch" on the page);
* ``other``: a target model whose start is not known (e.g. a loaded checkpoint).

Everything that stores or compares a role uses these constants; "fine-tuned" and
"from scratch" are display words only (:data:`DISPLAY`). Older names ("fine-tuned",
"scratch") are still read wherever a role comes in (:func:`role`), so results written by
earlier versions and code calling ``ctx.with_role("fine-tuned")`` keep working.

Example:
    >>> role("fine-tuned"), role("scratch"), role("RI-T")
    ('P-T', 'RI-T', 'RI-T')
    >>> role_of_init("imagenet"), role_of_init("random"), role_of_init("w.safetensors")
    ('P-T', 'RI-T', 'other')
    >>> DISPLAY[RIT]
    'from scratch'
"""

from __future__ import annotations

from typing import Literal

from transferscope.errors import ConfigError, did_you_mean

P, PT, RIT, OTHER = "P", "P-T", "RI-T", "other"
ROLES = (P, PT, RIT, OTHER)
Role = Literal["P", "P-T", "RI-T", "other"]

#: the words a report uses for each role
DISPLAY = {P: "source", PT: "fine-tuned", RIT: "from scratch", OTHER: "other"}
#: the glossary's definition of each role's symbol
GLOSSARY = {P: "the pretrained source model",
            PT: "pretrained, then trained on the target (fine-tuned)",
            RIT: "randomly initialised, then trained on the target (from scratch)"}
#: the word a run folder's name ends with (kept from earlier versions: runs resume)
FOLDER = {PT: "fine-tuned", RIT: "scratch"}
#: inits that start a model from the source's pre-trained weights, and the random one
PRETRAINED_INITS = ("imagenet", "pretrained")
RANDOM_INIT = "random"
#: the init a study trains each role from
INIT = {PT: "imagenet", RIT: RANDOM_INIT}

_ALIASES = {"fine-tuned": PT, "finetuned": PT, "fine_tuned": PT, "pt": PT, "p-t": PT,
            "scratch": RIT, "from scratch": RIT, "rit": RIT, "ri-t": RIT,
            "source": P, "p": P, "other": OTHER}

__all__ = ["DISPLAY", "FOLDER", "GLOSSARY", "INIT", "OTHER", "P", "PRETRAINED_INITS", "PT", "RANDOM_INIT",
           "RIT", "ROLES", "Role", "role", "role_of_init"]


def role(text: str | None) -> str:
    """The role named by ``text`` (a role or an older name; None is ``other``)."""
    if text is None:
        return OTHER
    if text in ROLES:
        return text
    found = _ALIASES.get(str(text).strip().lower())
    if found is None:
        raise ConfigError(f"unknown model role {text!r}{did_you_mean(str(text), ROLES)}; use "
                          f"one of {', '.join(ROLES)}")
    return found


def role_of_init(init: str | None, source_init: str | None = None) -> str:
    """The role of a target model trained from ``init``: P-T from pre-trained weights (or
    from ``source_init``, the source's own weights file), RI-T from a random init."""
    if init is None:
        return OTHER
    if init in PRETRAINED_INITS or (source_init is not None and init == source_init):
        return PT
    return RIT if init == RANDOM_INIT else OTHER
