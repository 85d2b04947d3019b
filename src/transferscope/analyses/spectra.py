"""Singular values of convolutional layers (paper 003, Appendix C, Figures 31-33).

A convolution acting on ``n x n`` inputs is a linear map of dimension ``n^2 c_in -> n^2 c_out``;
its singular values, not those of the reshaped kernel, describe the layer. With circular
padding the map is block-circulant, and the 2-D DFT block-diagonalises it (Sedghi, Gupta &
Long, "The singular values of convolutional layers", ICLR 2019): zero-pad the kernel to
``n x n``, take the 2-D FFT over the spatial axes, and at each of the ``n^2`` frequencies take
the singular values of the ``c_out x c_in`` matrix. Their union is the full spectrum
(``n^2 min(c_out, c_in)`` values) and ``sum sigma^2 = n^2 ||K||_F^2``.

Extensions handled exactly (for circular padding):

* kernels larger than the input wrap around (taps at equal offsets mod n are summed);
* padding only shifts the input circularly, which does not change singular values;
* dilation d puts tap a at offset d * a;
* stride s (n divisible by s) is a stride-1 convolution on the polyphase ("space to depth")
  input with ``c_in s^2`` channels on an ``n/s`` grid, so the same FFT method applies;
* groups make the map block-diagonal: the spectrum is the union over groups.

For zero-padded layers (the usual case) the result is the circular approximation used in the
paper. When a stride does not divide the input size, the stride-1 spectrum is reported
instead and flagged: the strided map keeps a subset of its output rows, so its singular
values are bounded above by those.

The appendix compares the spectra of P-T and RI-T (histograms, and the number of singular
values below a threshold, Figure 33) and the sum over layers of ``||W||_F / ||W||_2``; here
``||W||_F`` is the Frobenius norm of the weight tensor and ``||W||_2`` the largest singular
value of the layer's map from the FFT method (for linear layers, of the matrix).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from transferscope.analyses._base import AnalysisResult
from transferscope.analyses._registry import Finding, fmt, register_analysis
from transferscope.analyses._transfer import transfer_inputs
from transferscope.analyses.context import AuditContext
from transferscope.engine._hooks import run_hooked
from transferscope.errors import ConfigError

__all__ = ["circular_kernel", "conv_singular_values", "count_below", "finding", "model_spectra",
           "plot_counts", "plot_hist", "run", "spectra_tables"]


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, (int, np.integer)) else (int(v[0]), int(v[1]))


def circular_kernel(weight: torch.Tensor, n, stride=1, dilation=1) -> torch.Tensor:
    """Fold a ``(..., out, in, kh, kw)`` kernel onto the output grid of a circular convolution.

    Returns ``(..., out, in * s1 * s2, n1 / s1, n2 / s2)`` in float64: channel ``(c, r1, r2)``
    is input channel c at row/column phase (r1, r2) of the stride.
    """
    (n1, n2), (s1, s2), (d1, d2) = _pair(n), _pair(stride), _pair(dilation)
    if n1 % s1 or n2 % s2:
        raise ConfigError(f"input size {n1}x{n2} is not divisible by the stride {s1}x{s2}; the "
                          "FFT method needs a whole number of output positions")
    m1, m2 = n1 // s1, n2 // s2
    *lead, out, cin, kh, kw = weight.shape
    k = torch.zeros(*lead, out, cin, s1, s2, m1, m2, dtype=torch.float64,
                    device=weight.device)
    w = weight.detach().double()
    for a in range(kh):
        q1, r1 = divmod(d1 * a, s1)
        for b in range(kw):
            q2, r2 = divmod(d2 * b, s2)
            k[..., r1, r2, q1 % m1, q2 % m2] += w[..., a, b]
    return k.reshape(*lead, out, cin * s1 * s2, m1, m2)


def conv_singular_values(weight: torch.Tensor, n, *, stride=1, dilation=1,
                         groups: int = 1) -> torch.Tensor:
    """All singular values of the circular convolution with ``weight`` on ``n x n`` inputs.

    Args:
        weight: ``(out, in / groups, k, k)`` as in ``nn.Conv2d`` (non-square kernels work).
        n: input size, an int or ``(h, w)``.

    Returns:
        1-D float64 tensor, sorted descending, ``groups * (n1/s1)(n2/s2) * min(out/groups,
        in/groups * s1 * s2)`` values.

    Example:
        >>> conv_singular_values(torch.full((1, 1, 1, 1), 2.0), 4).tolist()  # 2 x identity
        [2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0]
    """
    if weight.dim() != 4:
        raise ConfigError(f"conv weight must be (out, in, kh, kw), got {tuple(weight.shape)}")
    out, cin_g, kh, kw = weight.shape
    if groups < 1 or out % groups:
        raise ConfigError(f"{out} output channels cannot be split into {groups} groups")
    # groups: block-diagonal map, spectrum = union of the groups' spectra
    k = circular_kernel(weight.reshape(groups, out // groups, cin_g, kh, kw), n, stride,
                        dilation)
    mats = torch.fft.fft2(k).permute(0, 3, 4, 1, 2)  # (groups, m1, m2, out_g, in_g * s^2)
    return torch.linalg.svdvals(mats).flatten().sort(descending=True).values


def _input_sizes(model: nn.Module, input_size, device=None) -> dict[str, tuple[int, int]]:
    sizes: dict[str, tuple[int, int]] = {}

    def hook(name):
        def record(_mod, inp):
            sizes.setdefault(name, tuple(inp[0].shape[-2:]))
        return record

    hooks = [m.register_forward_pre_hook(hook(name)) for name, m in model.named_modules()
             if isinstance(m, nn.Conv2d)]
    h, w = _pair(input_size)
    p = next(model.parameters(), None)
    run_hooked(model, torch.zeros(1, 3, h, w, device=device or (p.device if p is not None
                                                                  else "cpu")), hooks)
    return sizes


def model_spectra(model: nn.Module, input_size, *, include_linear: bool = True,
                  device=None) -> tuple[pd.DataFrame, dict[str, torch.Tensor]]:
    """Spectrum of every ``nn.Conv2d`` (and ``nn.Linear``) of ``model``.

    The spatial size each convolution sees is recorded with a forward pre-hook while a dummy
    ``(1, 3, H, W)`` input runs through the model; convolutions that do not run are skipped.

    Returns:
        ``(table, values)``: one table row per layer (``layer, kind, shape, input_size,
        stride, dilation, groups, num_sv, spectral_norm, frobenius, fro_over_spec, note``)
        and layer name -> singular values (descending).
    """
    sizes = _input_sizes(model, input_size, device)
    rows, values = [], {}
    for name, m in model.named_modules():
        note = ""
        if isinstance(m, nn.Conv2d) and name in sizes:
            n = sizes[name]
            stride = _pair(m.stride)
            if n[0] % stride[0] or n[1] % stride[1]:
                stride, note = (1, 1), "stride ignored (size not divisible): upper bound"
            if m.padding_mode != "circular":
                note = (note + "; " if note else "") + "circular approximation"
            sv = conv_singular_values(m.weight.cpu(), n, stride=stride,
                                      dilation=_pair(m.dilation), groups=m.groups)
            kind, extra = "conv", {"input_size": f"{n[0]}x{n[1]}", "stride": str(_pair(m.stride)),
                                   "dilation": str(_pair(m.dilation)), "groups": m.groups}
        elif include_linear and isinstance(m, nn.Linear):
            sv = torch.linalg.svdvals(m.weight.detach().cpu().double())
            kind, extra = "linear", {"input_size": "", "stride": "", "dilation": "", "groups": 1}
        else:
            continue
        fro = float(m.weight.detach().double().norm())
        spec = float(sv[0]) if len(sv) else float("nan")
        values[name] = sv
        rows.append({"layer": name, "kind": kind, "shape": str(tuple(m.weight.shape)), **extra,
                     "num_sv": int(len(sv)), "spectral_norm": spec, "frobenius": fro,
                     "fro_over_spec": fro / spec if spec > 0 else float("nan"), "note": note})
    return pd.DataFrame(rows), values


def count_below(values: torch.Tensor, thresholds: Sequence[float]) -> np.ndarray:
    """Number of singular values strictly below each threshold (Figure 33)."""
    v = np.sort(np.asarray(values, float))
    return np.searchsorted(v, np.asarray(thresholds, float), side="left")


def spectra_tables(named_models: Mapping[str, nn.Module], input_size, *,
                   thresholds: Sequence[float] | None = None, include_linear: bool = True,
                   device=None) -> AnalysisResult:
    """Whole-network spectra of several models (e.g. P, P-T, RI-T) with Figures 31 and 33.

    Args:
        named_models: name -> model.
        input_size: image size (int or ``(h, w)``) the layer input sizes are derived from.
        thresholds: for the counts below a threshold (default: 50 points up to the median of
            all singular values).
    """
    layers, spectra, summary = [], {}, {}
    for name, model in named_models.items():
        table, vals = model_spectra(model, input_size, include_linear=include_linear,
                                    device=device)
        layers.append(table.assign(model=name))
        spectra[name] = torch.cat(list(vals.values())) if vals else torch.zeros(0)
        n_conv = int((table["kind"] == "conv").sum()) if len(table) else 0
        summary[name] = {"num_conv_layers": n_conv,
                         "sum_fro_over_spec": float(table["fro_over_spec"].sum())
                         if len(table) else float("nan"),
                         "num_singular_values": int(len(spectra[name])),
                         "max_singular_value": float(spectra[name].max())
                         if len(spectra[name]) else float("nan")}
    if thresholds is None:
        allv = torch.cat(list(spectra.values())).numpy()
        top = float(np.median(allv)) if allv.size else 1.0
        thresholds = np.linspace(0, top, 51)[1:]
    counts = pd.DataFrame([{"model": k, "threshold": float(t), "count": int(c)}
                           for k, v in spectra.items()
                           for t, c in zip(thresholds, count_below(v, thresholds))])
    table = pd.concat(layers, ignore_index=True) if layers else pd.DataFrame()
    if len(table):
        table = table[["model"] + [c for c in table.columns if c != "model"]]
    result = AnalysisResult("spectra", summary, {"layers": table, "count_below": counts})
    result.figures["spectrum_hist"] = plot_hist(spectra)
    result.figures["count_below"] = plot_counts(counts)
    few = {k: v["num_conv_layers"] for k, v in summary.items() if v["num_conv_layers"] < 3}
    if few:
        result.notes.append(
            "few convolutional layers in " + ", ".join(f"{k} ({v})" for k, v in few.items())
            + ": a token model (ViT) or an MLP; its spectra are mostly those of its linear "
            "layers (singular values of the weight matrices), not of convolution operators, so "
            "compare them with those of conv nets with care.")
    result.notes.append("Conv spectra by the FFT method for circular padding at each layer's "
                        "input size; fro_over_spec uses the weight tensor's Frobenius norm.")
    return result


def plot_hist(spectra: Mapping[str, torch.Tensor], bins: int = 60):
    """Figure 31: histograms of all singular values of each model (log-scaled counts)."""
    from transferscope.analyses._figures import subplots

    fig, ax = subplots(figsize=(5.5, 3.5))
    top = max((float(v.max()) for v in spectra.values() if len(v)), default=1.0)
    for name, v in spectra.items():
        ax.hist(v.numpy(), bins=np.linspace(0, top, bins), histtype="step", label=name)
    ax.set_yscale("log")
    ax.set_xlabel("singular value")
    ax.set_ylabel("count")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_counts(counts: pd.DataFrame):
    """Figure 33: number of singular values below a threshold against the threshold."""
    from transferscope.analyses._figures import subplots

    fig, ax = subplots(figsize=(5.5, 3.5))
    for name, part in counts.groupby("model", sort=False):
        ax.plot(part["threshold"], part["count"], label=str(name))
    ax.set_xlabel("threshold")
    ax.set_ylabel("singular values below")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def run(ctx: AuditContext) -> AnalysisResult:
    """Spectra of P and of the first P-T and RI-T model of ``ctx`` (Figures 31, 33)."""
    inp = transfer_inputs(ctx)
    named = {"P": ctx.source, **{k: v for k, v in inp.models.items() if k.endswith("#1")}}
    return spectra_tables(named, ctx.image_size)


def finding(result: AnalysisResult) -> Finding | None:
    """Largest singular value of each model's conv layers."""
    s = result.summary
    import html as _html

    parts = tuple(_html.unescape(f"{k} {fmt(v['max_singular_value'])}") for k, v in s.items())
    return Finding("Spectra", "(largest singular value over the conv layers)", clauses=parts,
                   numbers={k: v["max_singular_value"] for k, v in s.items()})


register_analysis("spectra", title="Conv-layer spectra via the 2-D FFT",
                  paper="paper 004, Appendix C", section="what_transferred", order=8, run=run,
                  finding=finding)
