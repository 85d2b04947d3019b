"""Module criticality (paper 003, section 3.4, Definition 3.2, Figures 5, 6; Appendix B.9,
Figure 30).

One module i (a :class:`~transferscope.models.LayerGroup`) is moved while every other module
keeps its trained value theta^F. Along the path from its initial value theta_i^0 to its
trained value, at position alpha in [0, 1], Gaussian noise u of level sigma is added, and the
loss of the whole network is measured (averaged over noise draws; Definition 3.2 uses the
training loss L_S, so evaluate on training images; the 0-1 error is kept alongside). A
module whose loss stays low far back along the path and under large noise lies in a wide
valley (not critical); a module that needs alpha near 1 and tolerates little noise is
critical.

Definition 3.2 condenses the alpha x sigma loss grid into

    mu_i = min over (alpha, sigma) with E_u[L_S] <= epsilon  of
           alpha^2 ||theta_i^F - theta_i^0||_F^2 / sigma^2

and the network criticality is the sum over modules. The paper's extensions are supported:
the end point may be the best checkpoint (theta^opt) instead of the final one (pass it as
``trained``), the path may be the optimisation path through saved checkpoints instead of the
straight line, and the noise scales with each weight tensor's Frobenius norm.

Choices made here (the paper leaves them open):

* noise ``"relative"`` (default): each tensor t of the module gets i.i.d. noise of std
  ``sigma * ||t^F||_F / sqrt(numel t)``, so that ``E||u_t||_F^2 = sigma^2 ||t^F||_F^2``;
  ``"frobenius"``: std ``sigma * ||t^F||_F`` per element (the literal reading);
  ``"absolute"``: std ``sigma`` (Chatterji et al., 2020). The score divides by the grid value
  sigma^2 in every mode, as written in Definition 3.2.
* path variant: alpha is the fraction of the path's arc length (l2 over the module's
  parameters) and the numerator is ``||theta_i(alpha) - theta_i(0)||_F^2``, which equals
  ``alpha^2 ||theta^F - theta^0||^2`` on the straight line.
* grid points with sigma = 0 are shown but do not enter the score; no feasible point gives
  ``inf``. Noise is seeded per (module, alpha, sigma, draw), so results are reproducible.
"""

from __future__ import annotations

import math
from typing import Iterable, Literal, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from pydantic import Field

from transferscope.analyses._base import AnalysisResult
from transferscope.analyses._registry import AnalysisOptions, Finding, fmt, register_analysis
from transferscope.analyses._transfer import eval_and_bn, merge, transfer_inputs
from transferscope.analyses._weights import seed_of as _seed
from transferscope.analyses._weights import state_of as _state
from transferscope.analyses._weights import bn_loader, combine, evaluate_states
from transferscope.analyses.context import AuditContext
from transferscope.errors import ConfigError, ModelError
from transferscope.findings import ClaimCheck
from transferscope.stats import Verdict, too_few

__all__ = ["criticality_check", "criticality_grid", "criticality_score", "criticality_scores",
           "CriticalityOptions", "depth_trend", "finding", "MIN_IMAGES", "MIN_MODULES",
           "module_params", "NOISE_MODES", "path_point", "plot_grids", "run"]

NOISE_MODES = ("relative", "frobenius", "absolute")
#: fewer evaluated images than this: the finding says too few images to tell
MIN_IMAGES = 256
#: fewer modules cannot reach p < 0.05 in the exact permutation test of the depth trend
MIN_MODULES = 5


def module_params(model: nn.Module, modules=None) -> dict[str, list[str]]:
    """Module name -> its parameter names: all layer groups by default, a list of group names,
    or an explicit ``{name: [parameter names]}`` mapping."""
    if isinstance(modules, Mapping):
        return {k: list(v) for k, v in modules.items()}
    if not hasattr(model, "layer_groups"):
        raise ConfigError("give modules={name: [parameter names]} for models without layer "
                          "groups")
    groups = {g.name: g for g in model.layer_groups()}
    names = list(groups) if modules is None else list(modules)
    out = {}
    for n in names:
        if n not in groups:
            raise ConfigError(f"module {n!r} is not a layer group of the model; known: "
                              f"{', '.join(groups)}")
        out[n] = groups[n].parameter_names(model)
    return out


def path_point(checkpoints: Sequence[Mapping[str, torch.Tensor]], names: Sequence[str],
               alpha: float) -> tuple[dict[str, torch.Tensor], float]:
    """The point at arc-length fraction ``alpha`` of the piecewise-linear path through
    ``checkpoints`` (restricted to ``names``) and its squared distance to the first one.

    With two checkpoints this is ``(1 - alpha) theta^0 + alpha theta^F``; alpha = 0 / 1 give
    exact copies of the first / last checkpoint.
    """
    sub = [{n: c[n] for n in names} for c in checkpoints]
    seg = [math.sqrt(sum(float((b[n].double() - a[n].double()).square().sum()) for n in names))
           for a, b in zip(sub, sub[1:])]
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    if alpha <= 0 or cum[-1] == 0:
        point = combine(sub[:1], [1.0])
    elif alpha >= 1:
        point = combine(sub[-1:], [1.0])
    else:
        s = alpha * cum[-1]
        j = int(min(np.searchsorted(cum, s, side="right") - 1, len(seg) - 1))
        t = (s - cum[j]) / seg[j] if seg[j] > 0 else 0.0
        point = combine([sub[j], sub[j + 1]], [1.0 - t, t])
    dist2 = sum(float((point[n].double() - sub[0][n].double()).square().sum()) for n in names)
    return point, dist2


def criticality_score(grid: pd.DataFrame, epsilon: float, metric: str = "loss") -> float:
    """Definition 3.2 from one module's grid (columns ``sigma, distance_sq`` and ``metric``:
    ``"loss"``, the mean cross-entropy as in the definition, or ``"error"``)."""
    ok = (grid["sigma"] > 0) & (grid[metric] <= epsilon + 1e-12)
    if not ok.any():
        return math.inf
    g = grid[ok]
    return float((g["distance_sq"] / g["sigma"] ** 2).min())


def criticality_grid(model: nn.Module, init, trained, loader: Iterable, *, modules=None,
                     alphas: Sequence[float] = tuple(np.linspace(0, 1, 6)),
                     sigmas: Sequence[float] = (0.0, 0.1, 0.2, 0.4, 0.7, 1.0),
                     samples: int = 3, seed: int = 0, noise: str = "relative",
                     path: Sequence | None = None, bn_reestimate_loader=None,
                     device=None, bn_reestimate: bool | None = None) -> pd.DataFrame:
    """The alpha x sigma error grid of every module.

    Args:
        model: a model of the architecture (evaluated through ``functional_call``).
        init, trained: state dicts (or modules): theta^0 and theta^F (or theta^opt).
        modules: see :func:`module_params` (default: every layer group, head included).
        samples: noise draws averaged per grid point with sigma > 0.
        path: checkpoints from theta^0 to theta^F for the optimisation-path variant (the
            other modules still stay at ``trained``).

    Returns:
        Columns ``module, alpha, sigma, error, error_std, loss, distance_sq``.
    """
    if noise not in NOISE_MODES:
        raise ConfigError(f"noise must be one of {NOISE_MODES}, got {noise!r}")
    if any(not 0 <= a <= 1 for a in alphas) or any(not 0 <= s for s in sigmas):
        raise ConfigError("alphas must lie in [0, 1] and sigmas be >= 0 (Definition 3.2)")
    theta_f = _state(trained)
    ckpts = [_state(c) for c in path] if path is not None else [_state(init), theta_f]
    frames = []
    for mi, (mod, names) in enumerate(module_params(model, modules).items()):
        for n in names:
            for label, c in (("trained", theta_f), *((f"checkpoint {j}", c)
                                                     for j, c in enumerate(ckpts))):
                if n not in c:
                    raise ModelError(f"parameter {n!r} of module {mod!r} is missing from the "
                                     f"{label} state; give states of the same architecture")
                if c[n].shape != theta_f[n].shape:
                    raise ModelError(f"parameter {n!r} of module {mod!r} has shape "
                                     f"{tuple(c[n].shape)} in the {label} state but "
                                     f"{tuple(theta_f[n].shape)} in the trained one")
        scale = {n: {"relative": float(theta_f[n].double().norm()) / math.sqrt(
                     max(theta_f[n].numel(), 1)), "frobenius": float(theta_f[n].double().norm()),
                     "absolute": 1.0}[noise] for n in names}
        fns, meta = [], []
        for ai, alpha in enumerate(alphas):
            point, dist2 = path_point(ckpts, names, float(alpha))
            for si, sigma in enumerate(sigmas):
                for draw in range(samples if sigma > 0 else 1):
                    def build(point=point, sigma=float(sigma), s=_seed(seed, mi, ai, si, draw)):
                        st = dict(theta_f)
                        g = torch.Generator().manual_seed(s)
                        for n in names:
                            t = point[n]
                            if sigma > 0:
                                u = torch.randn(t.shape, generator=g, dtype=torch.float64)
                                t = (t.double() + (sigma * scale[n]) * u.to(t.device)).to(t.dtype)
                            st[n] = t
                        return st
                    fns.append(build)
                    meta.append((float(alpha), float(sigma), dist2))
        res = evaluate_states(model, fns, loader, bn_reestimate_loader=bn_reestimate_loader,
                              device=device, bn_reestimate=bn_reestimate)
        df = pd.DataFrame(meta, columns=["alpha", "sigma", "distance_sq"])
        df[["error", "loss"]] = res[["error", "loss"]].to_numpy()
        agg = df.groupby(["alpha", "sigma"], sort=False).agg(
            error=("error", "mean"), error_std=("error", "std"), loss=("loss", "mean"),
            distance_sq=("distance_sq", "first")).reset_index()
        agg["error_std"] = agg["error_std"].fillna(0.0)
        agg.insert(0, "module", mod)
        frames.append(agg)
    return pd.concat(frames, ignore_index=True)


def criticality_scores(model: nn.Module, init, trained, loader: Iterable, *,
                       epsilon: float | None = None, tolerance: float = 0.05,
                       paths: Mapping[str, Sequence] | None = None, metric: str = "loss",
                       **grid_kwargs) -> AnalysisResult:
    """Criticality grid, per-module scores and network criticality (Figures 5, 6, 30).

    Args:
        epsilon: threshold of Definition 3.2 on ``metric``; default: the value of
            ``trained`` plus ``tolerance``.
        metric: ``"loss"`` (default: the definition's L_S; pass training images as
            ``loader``) or ``"error"`` (0-1 error, coarse on few images).
        paths: optional ``{label: checkpoints}`` evaluated in addition to the direct line
            (label ``"direct"``).
        grid_kwargs: passed to :func:`criticality_grid` (modules, alphas, sigmas, samples,
            seed, noise, bn_reestimate_loader, device).
    """
    base = evaluate_states(model, [_state(trained)], loader, device=grid_kwargs.get("device"),
                           bn_reestimate_loader=grid_kwargs.get("bn_reestimate_loader"),
                           bn_reestimate=grid_kwargs.get("bn_reestimate"))
    if metric not in ("loss", "error"):
        raise ConfigError(f"criticality metric must be 'loss' or 'error', got {metric!r}")
    base_error = float(base["error"].iloc[0])
    base_value = float(base[metric].iloc[0])
    eps = base_value + tolerance if epsilon is None else float(epsilon)
    grids, scores, summary = [], [], {"epsilon": eps, "metric": metric,
                                      "images": int(base["n"].iloc[0]),
                                      "trained_error": base_error,
                                      "trained_loss": float(base["loss"].iloc[0])}
    for label, path in {"direct": None, **(paths or {})}.items():
        grid = criticality_grid(model, init, trained, loader, path=path, **grid_kwargs)
        grids.append(grid.assign(path=label))
        for mod, part in grid.groupby("module", sort=False):
            rewind = part[(part["alpha"] == 0) & (part["sigma"] == 0)]["error"]
            scores.append({"path": label, "module": mod,
                           "criticality": criticality_score(part, eps, metric),
                           "rewind_error": float(rewind.iloc[0]) if len(rewind) else math.nan})
        summary[f"network_criticality/{label}"] = float(sum(
            s["criticality"] for s in scores if s["path"] == label))
    grid_t, score_t = pd.concat(grids, ignore_index=True), pd.DataFrame(scores)
    summary["criticality"] = {f"{r.path}/{r.module}": r.criticality
                              for r in score_t.itertuples()}
    result = AnalysisResult("criticality", summary, {"grid": grid_t, "scores": score_t})
    for label, part in grid_t.groupby("path", sort=False):
        result.figures[f"grid_{label}"] = plot_grids(part)
    result.notes.append(f"Noise mode {grid_kwargs.get('noise', 'relative')!r}; score = min "
                        "alpha^2 ||dtheta||^2 / sigma^2 over grid points with sigma > 0 and "
                        f"mean {metric} <= {eps:.4f} (inf if none); "
                        f"{grid_kwargs.get('samples', 3)} noise draws per point.")
    return result


def plot_grids(grid: pd.DataFrame):
    """Figure 6: one heat-map per module, x = alpha (0 = initial value), y = sigma."""
    from transferscope.analyses._figures import subplots

    mods = list(dict.fromkeys(grid["module"]))
    cols = min(4, len(mods))
    rows = math.ceil(len(mods) / cols)
    fig, axes = subplots(rows, cols, figsize=(3 * cols, 2.6 * rows), squeeze=False)
    for ax, mod in zip(axes.flat, mods):
        part = grid[grid["module"] == mod].pivot(index="sigma", columns="alpha", values="error")
        im = ax.imshow(part.to_numpy(float), origin="lower", aspect="auto", vmin=0, vmax=1,
                       cmap="magma")
        ax.set_xticks(range(part.shape[1]))
        ax.set_xticklabels([f"{a:.2g}" for a in part.columns], fontsize=6)
        ax.set_yticks(range(part.shape[0]))
        ax.set_yticklabels([f"{s:.2g}" for s in part.index], fontsize=6)
        ax.set_title(mod, fontsize=8)
        ax.set_xlabel("alpha", fontsize=7)
        ax.set_ylabel("sigma", fontsize=7)
    for ax in list(axes.flat)[len(mods):]:
        ax.axis("off")
    fig.colorbar(im, ax=axes, fraction=0.03, label="error")
    return fig


class CriticalityOptions(AnalysisOptions):
    shorthand = {"criticality_images": "images", "criticality_modules": "modules",
                 "bn_reestimate": "bn_reestimate", "seed": "seed"}  # transfer_options
    images: int = Field(64, ge=1, description="validation images of the seeded sample")
    modules: int = Field(6, ge=2, description="modules evaluated, spread over the network "
                         "(the last always included)")
    alphas: list[float] = Field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0],
                                min_length=1)
    sigmas: list[float] = Field(default_factory=lambda: [0.0, 0.05, 0.1, 0.2, 0.35],
                                min_length=1, description="relative noise; at 0.5 most blocks "
                                "never meet epsilon")
    draws: int = Field(3, ge=1, description="noise draws averaged per grid point (Definition "
                       "3.2's expectation)")
    metric: Literal["loss", "error"] = Field("loss", description="Definition 3.2 uses the "
                                             "training loss; 'error' is the 0-1 error")
    seed: int = 0
    bn_reestimate: bool | None = Field(None, description="re-estimate BatchNorm statistics at every "
                                       "weight-space point; default (unset): whenever the "
                                       "model has BatchNorm (extrapolated running variances "
                                       "are meaningless)")
    bn_images: int = Field(64, ge=1, description="training images the BatchNorm statistics "
                           "are re-estimated on, disjoint from the evaluated ones")
    min_images: int = Field(MIN_IMAGES, ge=1, description="below this many evaluated images "
                            "the finding says too few images to tell (the sampling error of "
                            "a grid point's mean loss, about 1/sqrt(images) for a per-image "
                            "sd near 1, then exceeds 0.06, above the 0.05 tolerance)")


def run(ctx: AuditContext, *, images: int, modules: int, alphas: Sequence[float],
        sigmas: Sequence[float], draws: int, metric: str, seed: int, bn_reestimate: bool | None,
        bn_images: int, min_images: int) -> AnalysisResult:
    """Module criticality of P-T #1 and RI-T #1 of ``ctx`` (from their initial weights), on
    ``images`` seeded training images (Definition 3.2 uses the training loss; the validation
    split stands in when the context has no training split). BatchNorm statistics are
    re-estimated on other, never evaluated images."""
    inp = transfer_inputs(ctx)
    groups = [g.name for g in inp.first.layer_groups()]
    step = max(1, len(groups) // modules)
    chosen = groups[::step][:modules - 1] + [groups[-1]]
    needs = bn_loader(inp.first, [], [], bn_reestimate) is not None
    loader, bn, info = eval_and_bn(ctx, images, bn_images if needs else 0, seed, split="train")
    crit = {name: criticality_scores(
        inp.first, inp.inits[name], inp.models[name].state_dict(), loader,
        modules=chosen, alphas=tuple(alphas), sigmas=tuple(sigmas), samples=draws, seed=seed,
        metric=metric, bn_reestimate_loader=bn,
        bn_reestimate=bn_reestimate if needs else False)
        for name in ("P-T #1", "RI-T #1") if name in inp.models and name in inp.inits}
    for part in crit.values():
        part.summary.update(bn=info if needs else None, min_images=min_images,
                            modules=list(chosen))
    return merge("criticality", crit)


def depth_trend(scores: Sequence[float]) -> tuple[float, float]:
    """Spearman correlation of criticality with depth (module order) and its exact two-sided
    permutation p over module orders (random orders beyond 8 modules); NaN when the scores
    are all equal. ``inf`` scores rank highest.

    >>> depth_trend([0.1, 0.5, 2.0, 3.0, float("inf")])
    (1.0, 0.016666666666666666)
    """
    import itertools

    from scipy.stats import rankdata

    r = rankdata(np.asarray(scores, float))
    n = len(r)
    if n < 2 or np.all(r == r[0]):
        return float("nan"), float("nan")
    d = np.arange(n, dtype=float) - (n - 1) / 2
    rc = r - r.mean()
    scale = float(np.sqrt((d ** 2).sum() * (rc ** 2).sum()))
    obs = float(d @ rc) / scale
    perms = (np.array(list(itertools.permutations(range(n)))) if n <= 8 else
             np.array([np.random.default_rng(i).permutation(n) for i in range(20000)]))
    null = (rc[perms] @ d) / scale
    return obs, float(np.mean(np.abs(null) >= abs(obs) - 1e-12))


def criticality_check(v: dict) -> tuple[ClaimCheck, str]:
    """Paper 003's "lower modules are less critical than higher ones" on one P-T run: the
    rank correlation of criticality with depth (exact permutation test over module orders);
    cannot tell below the stated minimum of images or modules. Returns the check and the
    caveat (empty when the settings suffice)."""
    crit = {k.split("/", 1)[1]: x for k, x in v.get("criticality", {}).items()
            if k.startswith("direct/")}
    rho, p = depth_trend(list(crit.values()))
    test = "Spearman correlation of module criticality with depth, exact permutation p"
    few = (too_few(int(v["images"]), int(v.get("min_images", MIN_IMAGES)), "images")
           if "images" in v else None) or too_few(len(crit), MIN_MODULES, "modules")
    stat = (f"rank correlation with depth {rho:+.2f} over {len(crit)} modules (p = {p:.2g}), "
            "for this P-T run") if rho == rho else f"all {len(crit)} modules score alike"
    if few:
        return ClaimCheck("003.criticality", Verdict.CANNOT_TELL, f"{few}; {stat}", None,
                          test), few
    if rho == rho and p < 0.05:
        verdict = Verdict.AGREES if rho > 0 else Verdict.CONTRADICTS
        return ClaimCheck("003.criticality", verdict, stat, None, test), ""
    return ClaimCheck("003.criticality", Verdict.CANNOT_TELL, f"no clear trend: {stat}", None,
                      test), ""


def finding(result: AnalysisResult) -> Finding | None:
    """Network criticality (sum over modules) of each model on the direct path; paper 003's
    claim on the P-T run."""
    s = {k: v for k, v in result.summary.items()
         if isinstance(v, dict) and "network_criticality/direct" in v}
    clauses = [f"{k} {fmt(v['network_criticality/direct'])}" for k, v in s.items()]
    checks, caveat = [], ""
    pt = s.get("P-T #1")
    if pt is not None:
        check, caveat = criticality_check(pt)
        checks.append(check)
    elif s:
        first = next(iter(s.values()))
        caveat = too_few(int(first.get("images", 0)), int(first.get("min_images", MIN_IMAGES)),
                         "images") or ""
    return Finding("Module criticality", "(Definition 3.2, summed over the evaluated modules; "
                   "higher = more sensitive to rewinding)", clauses=tuple(clauses),
                   checks=tuple(checks), caveat=caveat,
                   numbers={k: v["network_criticality/direct"] for k, v in s.items()})


register_analysis("criticality", title="Module criticality", paper="paper 003, Definition "
                  "3.2, Fig. 5, 6", section="what_transferred", order=7,
                  options=CriticalityOptions, run=run, finding=finding,
                  applies=lambda ctx: bool(transfer_inputs(ctx).inits))
