"""One figure helper: matplotlib :class:`~matplotlib.figure.Figure` objects made directly, so
no pyplot state is touched and a notebook's backend is never switched.

Example:
    >>> fig, ax = subplots(figsize=(2, 1))
    >>> type(fig).__name__, ax.get_figure() is fig
    ('Figure', True)
"""

from __future__ import annotations

from matplotlib.figure import Figure

__all__ = ["subplots"]


def subplots(nrows: int = 1, ncols: int = 1, *, figsize=None, dpi=None, **kwargs):
    """Like ``matplotlib.pyplot.subplots`` (``sharex``, ``squeeze``, ``gridspec_kw``, ...)
    but returns a pyplot-free ``(Figure, axes)``; PNGs are written with the Agg renderer."""
    fig = Figure(figsize=figsize, dpi=dpi)
    return fig, fig.subplots(nrows, ncols, **kwargs)
