"""Figures without pyplot: no backend switch, no global figure list.

Analyses draw on :class:`matplotlib.figure.Figure` objects made here, so an analysis run in a
notebook leaves the notebook's backend (``%matplotlib inline``, widgets, ...) alone and its
figures appear only where they are shown (``result.figures[...]`` or the result's HTML).
"""

from __future__ import annotations


def subplots(nrows: int = 1, ncols: int = 1, *, figsize=None, squeeze: bool = True, **kwargs):
    """Like ``pyplot.subplots``: ``(Figure, Axes or array of Axes)``, but outside pyplot.

    Example:
        >>> fig, ax = subplots(figsize=(2, 1))
        >>> type(fig).__name__, fig.get_size_inches().tolist()
        ('Figure', [2.0, 1.0])
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, squeeze=squeeze, **kwargs)
