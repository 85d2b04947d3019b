"""Verdicts on a paper's claim: agrees, contradicts, or cannot tell at this size - and why."""

from __future__ import annotations

from enum import Enum

from transferscope.stats.resample import Interval

__all__ = ["too_few", "Verdict", "verdict_of"]


class Verdict(str, Enum):
    """What the user's data say about one claim of a paper."""

    AGREES = "agrees"
    CONTRADICTS = "contradicts"
    CANNOT_TELL = "cannot tell"
    NOT_TESTED = "not tested"

    @property
    def words(self) -> str:
        return {"agrees": "agrees with the paper", "contradicts": "contradicts the paper",
                "cannot tell": "cannot tell at this size",
                "not tested": "not tested by this study"}[self.value]


def verdict_of(interval: Interval, expect: str, null: float = 0.0) -> tuple[Verdict, str]:
    """The verdict on a claim that the quantity is above (``expect=">"``) or below (``"<"``)
    ``null``, from its interval: agrees when the whole interval is on the claimed side,
    contradicts when it is wholly on the other side, otherwise cannot tell; with the reason.

    Examples:
        >>> verdict_of(Interval(0.3, 0.1, 0.5, "class", 20), ">")[0].value
        'agrees'
        >>> verdict_of(Interval(0.3, -0.1, 0.5, "class", 20), ">")[0].value
        'cannot tell'
        >>> verdict_of(Interval(-0.3, -0.5, -0.1, "class", 20), ">")[0].value
        'contradicts'
    """
    if expect not in (">", "<"):
        raise ValueError(f"expect must be '>' or '<', got {expect!r}")
    if not interval.finite:
        return Verdict.CANNOT_TELL, (f"too few {interval.unit}s to give an interval "
                                     f"(n = {interval.n})")
    above, below = interval.lo > null, interval.hi < null
    claimed, other = (above, below) if expect == ">" else (below, above)
    side = "above" if expect == ">" else "below"
    if claimed:
        return Verdict.AGREES, f"the 95 % interval lies wholly {side} {null:g}"
    if other:
        return Verdict.CONTRADICTS, f"the 95 % interval lies wholly on the other side of {null:g}"
    return Verdict.CANNOT_TELL, f"the 95 % interval includes {null:g}"


def too_few(n: int, minimum: int, what: str) -> str | None:
    """``"too few {what} to tell (n, at least minimum needed)"`` when ``n < minimum``."""
    if n < minimum:
        return f"too few {what} to tell ({n}; at least {minimum} needed)"
    return None
