"""Feature similarity by linear CKA (paper 003, section 3.2 "Feature similarity", Tables 1, 7).

Centered kernel alignment (Kornblith et al., 2019) compares two representations of the same
``n`` inputs, ``X (n, p)`` and ``Y (n, q)``. With linear kernels and column-centred features
it can be written without any ``n x n`` Gram matrix:

    CKA(X, Y) = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F * ||Yc^T Yc||_F)

It is 1 for representations that differ by an orthogonal transform and isotropic scaling,
and invariant to both. The paper reports it per module for the pairs P-T & P, P-T & P-T,
P-T & RI-T and RI-T & RI-T.

Because only ``X^T X``, ``Y^T Y``, ``Y^T X``, the column sums and ``n`` are needed, the
statistic is accumulated batch by batch (:class:`LinearCKA`) and activations are never held
all at once (:func:`streaming_cka`). Spatial maps ``(n, C, H, W)`` are either flattened per
sample to ``C*H*W`` features (``pool="flatten"``, Kornblith's definition; memory grows as the
square of that count, see ``max_features``) or averaged over space to ``C`` features
(``pool="avg"``, a cheaper, coarser comparison). The HSIC inside CKA is either the plug-in
("biased", Kornblith et al.'s) or the unbiased one of Song et al. ("debiased", from Gram
matrices). Which the report uses, paper 003's setting and why magnitudes differ:
docs/cka-estimators.md.
"""

from __future__ import annotations

import itertools
from typing import Iterable, Literal, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from pydantic import Field

from transferscope.analyses._base import AnalysisResult
from transferscope.analyses._registry import AnalysisOptions, register_analysis
from transferscope.analyses._cka_intervals import (_gram_cka, cka_intervals,  # noqa: F401
                                                   cka_finding_stats, collect_grams, finding,
                                                   gram_cka, plot_heatmap)
from transferscope.analyses._transfer import batches, transfer_inputs
from transferscope.analyses.context import AuditContext
from transferscope.engine.inference import capture
from transferscope.engine.modes import eval_mode
from transferscope.models.base import resolve_layers
from transferscope.errors import ConfigError

__all__ = ["cka_all_pairs", "cka_matrix", "cka_tables", "CkaOptions", "linear_cka", "LinearCKA",
           "POOLS", "run", "streaming_cka"]

POOLS = ("flatten", "avg")


def _centred_cka(xtx: torch.Tensor, yty: torch.Tensor, ytx: torch.Tensor) -> float:
    den = torch.linalg.matrix_norm(xtx) * torch.linalg.matrix_norm(yty)
    if not den > 0:
        return float("nan")
    return float(ytx.square().sum() / den)


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of two full representations, ``(n, ...) , (n, ...) -> float`` (float64).

    Dimensions after the first are flattened. NaN when a representation is constant.

    Example:
        >>> x = torch.randn(20, 5, generator=torch.Generator().manual_seed(0))
        >>> round(linear_cka(x, 3 * x), 6)
        1.0
    """
    x = torch.as_tensor(x).detach().flatten(1).double().cpu()
    y = torch.as_tensor(y).detach().flatten(1).double().cpu()
    if x.shape[0] != y.shape[0]:
        raise ConfigError(f"CKA needs the same inputs for both representations, got {x.shape[0]}"
                          f" and {y.shape[0]} rows")
    x, y = x - x.mean(0), y - y.mean(0)
    return _centred_cka(x.T @ x, y.T @ y, y.T @ x)


class LinearCKA:
    """Streaming linear CKA: :meth:`update` with row batches, :meth:`compute` at the end.

    Keeps ``X^T X`` (p x p), ``Y^T Y`` (q x q), ``Y^T X`` (q x p), the column sums and ``n`` in
    float64 and centres at the end (``Xc^T Xc = X^T X - s_x s_x^T / n``), which is exact for
    any split into batches, a last batch of one row included. To avoid cancellation when the
    features have a large mean, every row is first shifted by the first row seen (centring
    removes any constant shift, so the result is unchanged).

    Example:
        >>> acc = LinearCKA()
        >>> x = torch.randn(9, 4, generator=torch.Generator().manual_seed(1))
        >>> acc.update(x[:8], x[:8] @ torch.eye(4)); acc.update(x[8:], x[8:])
        >>> round(acc.compute(), 6)
        1.0
    """

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        """Forget every row (as after construction)."""
        self.n = 0
        self._shift_x = self._shift_y = None
        self.xtx = self.yty = self.ytx = self.sx = self.sy = None

    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Add rows: ``x (b, p)``, ``y (b, q)`` (further dimensions are flattened)."""
        x = torch.as_tensor(x).detach().flatten(1).to("cpu", torch.float64)
        y = torch.as_tensor(y).detach().flatten(1).to("cpu", torch.float64)
        if x.shape[0] != y.shape[0]:
            raise ConfigError(f"CKA update got {x.shape[0]} rows for X but {y.shape[0]} for Y")
        if x.shape[0] == 0:
            return
        if self._shift_x is None:
            self._shift_x, self._shift_y = x[0].clone(), y[0].clone()
            p, q = x.shape[1], y.shape[1]
            self.xtx, self.yty = x.new_zeros(p, p), x.new_zeros(q, q)
            self.ytx, self.sx, self.sy = x.new_zeros(q, p), x.new_zeros(p), x.new_zeros(q)
        elif x.shape[1] != self.sx.shape[0] or y.shape[1] != self.sy.shape[0]:
            raise ConfigError(f"CKA update got {x.shape[1]}/{y.shape[1]} features, earlier "
                              f"batches had {self.sx.shape[0]}/{self.sy.shape[0]}")
        x, y = x - self._shift_x, y - self._shift_y
        self.xtx += x.T @ x
        self.yty += y.T @ y
        self.ytx += y.T @ x
        self.sx += x.sum(0)
        self.sy += y.sum(0)
        self.n += x.shape[0]

    def centred(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(Xc^T Xc, Yc^T Yc, Yc^T Xc)`` of all rows seen so far (at least one)."""
        n = self.n
        return (self.xtx - torch.outer(self.sx, self.sx) / n,
                self.yty - torch.outer(self.sy, self.sy) / n,
                self.ytx - torch.outer(self.sy, self.sx) / n)

    def compute(self) -> float:
        """CKA of all rows seen so far (NaN before any update or for constant features)."""
        if self.n == 0:
            return float("nan")
        return _centred_cka(*self.centred())

    def compute_blocks(self, sizes_x: Sequence[int], sizes_y: Sequence[int]) -> list[list[float]]:
        """CKA of every column block of X (widths ``sizes_x``) against every block of Y:
        ``out[i][j]`` for X's block i and Y's block j (NaN for constant features). With one
        block each this is :meth:`compute`."""
        if self.n == 0:
            return [[float("nan")] * len(sizes_y) for _ in sizes_x]
        xx, yy, yx = self.centred()
        bx, by = ([slice(e[i], e[i + 1]) for i in range(len(e) - 1)]
                  for e in (np.cumsum([0, *sizes_x]), np.cumsum([0, *sizes_y])))
        nx = [torch.linalg.matrix_norm(xx[b, b]) for b in bx]
        ny = [torch.linalg.matrix_norm(yy[b, b]) for b in by]
        return [[float(yx[bj, bi].square().sum() / (nx[i] * ny[j]))
                 if nx[i] * ny[j] > 0 else float("nan") for j, bj in enumerate(by)]
                for i, bi in enumerate(bx)]


def cka_matrix(acts_a: Mapping[str, torch.Tensor], acts_b: Mapping[str, torch.Tensor]
               ) -> pd.DataFrame:
    """CKA of every layer of model A against every layer of model B (same inputs).

    ``acts_*`` map a layer name to its ``(n, ...)`` activations. Rows are A's layers, columns
    B's; for two models of one architecture the diagonal is the per-module CKA of Table 1.
    """
    return pd.DataFrame([[linear_cka(xa, xb) for xb in acts_b.values()]
                         for xa in acts_a.values()],
                        index=list(acts_a), columns=list(acts_b))


def streaming_cka(models: Mapping[str, nn.Module], loader: Iterable,
                  pairs: Sequence[tuple[str, str]], layers: Sequence[str], *,
                  pool: str = "flatten", device: str | torch.device | None = None,
                  max_features: int = 4096, store: dict | None = None) -> pd.DataFrame:
    """Per-layer CKA of model pairs, accumulated over the batches of ``loader``.

    Every model runs once per batch (in eval mode, without gradients); each layer's output is
    recorded with :func:`~transferscope.engine.inference.capture`, turned into per-sample
    features (``pool``) and fed to one :class:`LinearCKA` per
    (pair, layer), then dropped. ``loader`` yields images or ``(images, labels)``.

    ``store`` (a dict), when given, collects each (model, layer)'s per-sample features as a
    list of float64 CPU batches, for :func:`cka_intervals`.

    Returns:
        One row per pair (``"A & B"``), one column per layer.

    Raises:
        ConfigError: unknown pool/model/layer, or a layer with more than ``max_features``
            features (the p x p accumulators would need ``8 p^2`` bytes each): use
            ``pool="avg"`` or raise ``max_features``.
    """
    if pool not in POOLS:
        raise ConfigError(f"pool must be one of {POOLS}, got {pool!r}")
    for a, b in pairs:
        for m in (a, b):
            if m not in models:
                raise ConfigError(f"pair ({a!r}, {b!r}) names unknown model {m!r}; "
                                  f"known: {', '.join(models)}")
    used = list(dict.fromkeys(m for pair in pairs for m in pair))
    mods = {m: resolve_layers(models[m], layers) for m in used}
    accs = {(pair, layer): LinearCKA() for pair in pairs for layer in layers}
    with eval_mode(*(models[m] for m in used)), torch.no_grad():
        for batch in loader:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            feats = {}
            for m in used:
                with capture(models[m], mods[m], "avg" if pool == "avg" else "none") as st:
                    models[m](x.to(device) if device is not None else x)
                feats[m] = {}
                for name, outs in st.items():
                    if len(outs) != 1:
                        raise ConfigError(
                            f"module {name!r} of {m!r} ran {len(outs)} times in one forward "
                            "pass; pick a module that is called once (a block output)")
                    f = outs[0].flatten(1)
                    if f.shape[1] > max_features:
                        raise ConfigError(
                            f"layer {name!r} of {m!r} has {f.shape[1]} features per sample "
                            f"with pool={pool!r}, more than max_features={max_features}; "
                            "use pool='avg' or raise max_features (memory ~ 8*p^2 bytes)")
                    feats[m][name] = f
                    if store is not None:
                        store.setdefault((m, name), []).append(
                            f.detach().to("cpu", torch.float64))
            for (pair, layer), acc in accs.items():
                acc.update(feats[pair[0]][layer], feats[pair[1]][layer])
    return pd.DataFrame([[accs[(pair, layer)].compute() for layer in layers] for pair in pairs],
                        index=[f"{a} & {b}" for a, b in pairs], columns=list(layers))


def cka_all_pairs(model_a: nn.Module, model_b: nn.Module, loader: Iterable,
                  layers_a: Sequence[str], layers_b: Sequence[str] | None = None, *,
                  pool: str = "avg", device=None, max_features: int = 8192) -> pd.DataFrame:
    """Linear CKA of every layer of ``model_a`` against every layer of ``model_b``.

    One forward pass of each model per batch captures all layers; the features of all
    layers are concatenated, ``X (b, P)`` and ``Y (b, Q)``, and three float64 GEMMs per batch
    accumulate every block at once (``X^T X``, ``Y^T Y``, ``Y^T X``; Gram-free, exact for any
    batching, rows shifted by the first row as in :class:`LinearCKA`). The pair ``(i, j)``
    then reads its blocks. Memory: ``8 (P + Q)^2`` bytes, hence ``max_features`` on ``P + Q``.

    Returns:
        ``len(layers_a) x len(layers_b)`` DataFrame (rows: A's layers, columns: B's).
    """
    if pool not in POOLS:
        raise ConfigError(f"pool must be one of {POOLS}, got {pool!r}")
    layers_b = list(layers_a if layers_b is None else layers_b)
    mods = [resolve_layers(model_a, layers_a), resolve_layers(model_b, layers_b)]
    models = [model_a, model_b]
    acc, sizes = LinearCKA(), None
    with eval_mode(*models), torch.no_grad():
        for batch in loader:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            x = x.to(device) if device is not None else x
            feats = []
            for model, mod in zip(models, mods):
                with capture(model, mod, "avg" if pool == "avg" else "none") as st:
                    model(x)
                if any(len(v) != 1 for v in st.values()):
                    raise ConfigError("a layer ran more than once in one forward pass; "
                                      "pick modules that are called once (block outputs)")
                feats.append([v[0].flatten(1) for v in st.values()])
            if sizes is None:
                sizes = [[f.shape[1] for f in fs] for fs in feats]
                if sum(map(sum, sizes)) > max_features:
                    raise ConfigError(
                        f"{sum(map(sum, sizes))} features over all layers, more than "
                        f"max_features={max_features} (memory ~ 8*(P+Q)^2 bytes); use "
                        "pool='avg', fewer layers or raise max_features")
            acc.update(torch.cat(feats[0], 1), torch.cat(feats[1], 1))
    if acc.n == 0:
        raise ConfigError("the loader yielded no batches")
    vals = acc.compute_blocks(sizes[0], sizes[1])
    return pd.DataFrame(vals, index=list(layers_a), columns=layers_b)


def cka_tables(models: Mapping[str, nn.Module], loader: Iterable,
               pairs: Sequence[tuple[str, str]] | None = None,
               layers: Sequence[str] | None = None, *, pool: str = "flatten", device=None,
               max_features: int = 4096, n_boot: int = 200, seed: int = 0,
               estimator: str = "biased", via_gram: bool = False,
               max_images: int = 256) -> AnalysisResult:
    """Table 1 / 7: per-module CKA for model pairs, with a heat-map.

    Args:
        models: name -> model, e.g. ``{"P": ..., "P-T #1": ..., "P-T #2": ..., "RI-T #1": ...}``.
        loader: the evaluation images (labels, if any, are ignored).
        pairs: model-name pairs (default: every pair, in the order given).
        layers: layer-group names or module paths (default: every non-classifier layer group
            of the first model).
        pool, device, max_features: see :func:`streaming_cka`.
        n_boot, seed: bootstrap over images for the 95 % intervals (:func:`cka_intervals`
            per layer, :func:`cka_finding_stats` for the mean and the P-T vs RI-T comparison;
            from Gram matrices: ``pool="avg"`` or the Gram path; ``n_boot=0`` skips them).
        estimator: ``"biased"`` (plug-in HSIC) or ``"debiased"`` (Song et al.; Gram path).
        via_gram: compute everything from ``n x n`` Gram matrices of the first ``max_images``
            images (any feature width, e.g. flattened maps; used for ``"debiased"``).
    """
    names = list(models)
    pairs = [tuple(p) for p in (pairs or itertools.combinations(names, 2))]
    if not pairs:
        raise ConfigError("CKA needs at least two models (or one explicit pair)")
    if layers is None:
        first = models[names[0]]
        if not hasattr(first, "layer_groups"):
            raise ConfigError("give layers= (module paths) for models without layer groups")
        layers = [g.name for g in first.layer_groups(include_classifier=False)]
    layers = list(layers)
    grams, n = None, 0
    if via_gram or estimator != "biased":
        used = list(dict.fromkeys(m for pair in pairs for m in pair))
        grams, n = collect_grams(models, loader, used, layers, pool=pool, device=device,
                                 max_images=max_images)
        wide = pd.DataFrame([[gram_cka(grams[(a, la)], grams[(b, la)], None, estimator)
                              for la in layers] for a, b in pairs],
                            index=[f"{a} & {b}" for a, b in pairs], columns=layers)
    else:
        # per-sample features are kept for the bootstrap only when pooled (small): flattened
        # C*H*W features of every image would not fit in memory on real data
        store: dict | None = {} if n_boot > 0 and pool == "avg" else None
        wide = streaming_cka(models, loader, pairs, layers, pool=pool, device=device,
                             max_features=max_features, store=store)
        if store:
            feats = {k: torch.cat(v).numpy() for k, v in store.items()}
            n = len(next(iter(feats.values())))
            grams = {k: f @ f.T for k, f in feats.items()} if n <= 2000 else None
            store.clear()
    long = wide.reset_index(names="pair").melt(id_vars="pair", var_name="layer",
                                               value_name="CKA")
    summary = {"pool": pool, "estimator": estimator, "layers": layers,
               "cka": {pair: {k: float(v) for k, v in row.items()}
                       for pair, row in wide.iterrows()},
               "mean_cka": {pair: float(np.nanmean(row.to_numpy(float)))
                            if np.isfinite(row.to_numpy(float)).any() else float("nan")
                            for pair, row in wide.iterrows()}}
    if grams and n_boot > 0:
        summary.update(cka_intervals(None, pairs, layers, n_boot=n_boot, seed=seed,
                                     grams=grams, estimator=estimator))
        summary.update(cka_finding_stats(grams, pairs, layers, n, estimator=estimator,
                                         n_boot=n_boot, seed=seed))
    result = AnalysisResult("cka", summary, {"cka": long})
    result.figures["cka_heatmap"] = plot_heatmap(wide)
    result.notes.append(
        f"Linear CKA, {estimator} HSIC, " + (f"from Gram matrices of {n} images" if via_gram or
                                            estimator != "biased" else
                                            "accumulated over mini-batches in float64")
        + f"; features per image: {'flattened C*H*W' if pool == 'flatten' else 'spatial mean'}"
        " (docs/cka-estimators.md: why the magnitudes differ from paper 003's Table 1).")
    return result


class CkaOptions(AnalysisOptions):
    pool: Literal["avg", "flatten"] = Field("avg", description="per-sample features: spatial "
                                            "mean per channel, or flattened C*H*W")
    max_features: int = Field(4096, ge=1, description="flattened features kept per layer")
    estimator: Literal["biased", "debiased"] = Field(
        "biased", description="HSIC estimator: plug-in (Kornblith et al. 2019) or unbiased "
        "(Song et al. 2012; from Gram matrices)")
    setting: Literal["report", "paper003"] = Field(
        "report", description="'paper003': paper 003's Table 1 setting as far as its text "
        "says - each module's output flattened per image (C*H*W), Kornblith et al.'s linear "
        "CKA with the plug-in HSIC, from Gram matrices of 'images' images")
    images: int = Field(256, ge=4, description="images in the Gram matrices (setting "
                        "'paper003' or estimator 'debiased')")


def run(ctx: AuditContext, *, pool: str, max_features: int, estimator: str, setting: str,
        images: int) -> AnalysisResult:
    """CKA of P with P-T #1 and of the P-T / RI-T pairs of ``ctx`` (Table 1)."""
    inp = transfer_inputs(ctx)
    models = {"P": ctx.source, **inp.models}
    pairs = [p for p in [("P-T #1", "P")] + inp.pairs if p[0] in models]
    paper = setting == "paper003"
    if paper:
        pool, estimator = "flatten", "biased"
    res = cka_tables(models, batches(ctx), pairs, pool=pool, max_features=max_features,
                     estimator=estimator, via_gram=paper, max_images=images)
    res.summary["setting"] = setting
    res.notes.append(
        "Setting 'paper003': every module output flattened per image and Kornblith et al.'s "
        "plug-in linear CKA, as paper 003's text describes it (it names no pooling and no "
        "estimator beyond the citation)." if paper else
        "Setting 'report' (the default): activations averaged over space per channel "
        f"(pool={pool!r}), {estimator} HSIC. Use setting='paper003' for paper 003's setting.")
    return res


register_analysis("cka", title="Feature similarity: linear CKA per module",
                  paper="paper 003, Table 1, 7", section="what_transferred", order=3,
                  options=CkaOptions, run=run, finding=finding)
