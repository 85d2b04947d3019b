"""Transferability scores: how well a pretrained model's target features (or its source-head
predictions) should fine-tune, from one forward pass over the target's training split.

Pure functions on arrays (numpy or torch; computed in float64 torch): ``features (N, D)``,
``labels (N,)`` integers in ``[0, C)``, ``source_probs (N, Cs)`` rows summing to 1. Higher is
better for every score. Each equals its reference implementation on the same inputs (relative
difference <= 1e-6; tests/ranking/test_scores.py records the references' outputs and commits):

========================  ==========================================================
:func:`logme`             You et al., ICML 2021 / JMLR 2022 (thuml/LogME ``LogME.py``,
                          the fixed-point ``_fit``), all classes at once from one SVD
:func:`leep`              Nguyen et al., ICML 2020 (thuml/LogME ``LEEP.py``)
:func:`nce`               Tran et al., ICCV 2019 (thuml/LogME ``NCE.py``)
:func:`hscore`            Bao et al., ICIP 2019 (thuml/Transfer-Learning-Library
                          ``tllib/ranking/hscore.py`` ``h_score``)
:func:`hscore_regularised`  Ibrahim et al., NeurIPS 2021 (same file,
                          ``regularized_h_score``), Ledoit-Wolf shrinkage
:func:`gbc`               Pandy et al., CVPR 2022 (google-research
                          ``stable_transfer/transferability/gbc.py``)
:func:`knn_accuracy`      leave-one-out k-NN accuracy: a baseline that needs no theory
========================  ==========================================================

The Ledoit-Wolf shrinkage is written out here (:func:`ledoit_wolf`, the formula of
``sklearn.covariance.ledoit_wolf``) rather than imported: scikit-learn is not a dependency of
transferscope, and 20 lines of torch do not justify one.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat([0, 1], 50)
    >>> good = rng.normal(size=(100, 8)) + 3 * y[:, None]   # classes far apart
    >>> bad = rng.normal(size=(100, 8))                     # labels unrelated
    >>> logme(good, y) > logme(bad, y), gbc(good, y) > gbc(bad, y)
    (True, True)
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["FEATURE_SCORES", "HEAD_SCORES", "gbc", "hscore", "hscore_regularised",
           "knn_accuracy", "ledoit_wolf", "leep", "logme", "nce"]


def _f64(x) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    return t.detach().to("cpu", torch.float64)


def _labels(labels, n: int) -> torch.Tensor:
    y = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels)
    y = y.detach().cpu().reshape(-1)
    if y.is_floating_point():
        y = y.round()
    y = y.long()
    if y.numel() != n:
        raise ValueError(f"{y.numel()} labels for {n} samples")
    if y.numel() and int(y.min()) < 0:
        raise ValueError("labels must be integers in [0, C)")
    return y


def _features(features, labels) -> tuple[torch.Tensor, torch.Tensor]:
    f = _f64(features)
    if f.dim() != 2:
        raise ValueError(f"features must be (N, D), got shape {tuple(f.shape)}")
    if not torch.isfinite(f).all():
        bad = int((~torch.isfinite(f)).any(1).sum())
        raise ValueError(f"features of {bad} of {f.shape[0]} samples are NaN or infinite")
    return f, _labels(labels, f.shape[0])


def logme(features, labels) -> float:
    """LogME: the mean over classes of the log maximum evidence of a Bayesian linear model
    from ``features`` to each class's one-hot indicator (You et al., 2021).

    The reference's fixed-point iteration (at most 11 steps, stop at a relative change of
    ``alpha/beta`` <= 1e-3, per class), run for all classes at once after one decomposition:
    the reference's SVD of ``f`` as the eigendecomposition of the smaller Gram matrix
    (``f^T f`` when N > D, keeping singular values > 1e-10, as the reference does; ``f f^T``
    otherwise). Only ``u`` and the singular values enter the score. Classes
    are ``0 .. max(labels)`` (an absent class counts, as in the reference).
    """
    f, y = _features(features, labels)
    n, d = f.shape
    if n > d:  # reference truncated_svd: the (D, D) Gram matrix's eigenvectors (eigh: 3x
        #        faster than its SVD, same subspaces), singular values > 1e-10 kept
        s2, v = torch.linalg.eigh(f.T @ f)
        s = s2.clamp_min(0).sqrt()
        keep = s > 1e-10
        s, v = s[keep], v[:, keep]
        u = (f @ v) / s
    else:  # reference: the thin SVD of f, every singular value kept; here the (N, N) Gram
        #      matrix's eigenvectors (the same u and s; several times faster)
        s2, u = torch.linalg.eigh(f @ f.T)
        s = s2.clamp_min(0).sqrt()
    sigma = (s ** 2)[:, None]                                   # (k, 1)
    onehot = torch.nn.functional.one_hot(y, int(y.max()) + 1).double()  # (N, C)
    x2 = (u.T @ onehot) ** 2                                    # (k, C)
    res_x2 = (onehot ** 2).sum(0) - x2.sum(0)                   # (C,)
    c = onehot.shape[1]
    alpha, beta = torch.ones(c, dtype=torch.float64), torch.ones(c, dtype=torch.float64)
    m2 = res2 = torch.zeros(c, dtype=torch.float64)
    active = torch.ones(c, dtype=torch.bool)
    for _ in range(11):
        t = alpha / beta
        gamma = (sigma / (sigma + t)).sum(0)
        new_m2 = (sigma * x2 / (t + sigma) ** 2).sum(0)
        new_res2 = (x2 / (1 + sigma / t) ** 2).sum(0) + res_x2
        new_alpha = gamma / (new_m2 + 1e-5)
        new_beta = (n - gamma) / (new_res2 + 1e-5)
        alpha = torch.where(active, new_alpha, alpha)
        beta = torch.where(active, new_beta, beta)
        m2 = torch.where(active, new_m2, m2)
        res2 = torch.where(active, new_res2, res2)
        active = active & ~((new_alpha / new_beta - t).abs() / t <= 1e-3)
        if not active.any():
            break
    evidence = (d / 2.0 * alpha.log() + n / 2.0 * beta.log()
                - 0.5 * (alpha + beta * sigma).log().sum(0)
                - beta / 2.0 * res2 - alpha / 2.0 * m2 - n / 2.0 * math.log(2 * math.pi)) / n
    return float(evidence.mean())


def leep(source_probs, labels) -> float:
    """LEEP: the mean log-likelihood of the target labels under the empirical predictor
    ``p(y | x) = sum_z p(z | x) p(y | z)`` built from the source head's probabilities
    (Nguyen et al., 2020). At most 0; a source class that no sample predicts with any
    probability contributes nothing (the reference divides 0 by 0 there)."""
    p = _f64(source_probs)
    if p.dim() != 2:
        raise ValueError(f"source_probs must be (N, Cs), got shape {tuple(p.shape)}")
    if not torch.isfinite(p).all():
        raise ValueError("source probabilities contain NaN or infinite values")
    y = _labels(labels, p.shape[0])
    onehot = torch.nn.functional.one_hot(y, int(y.max()) + 1).double()
    joint = onehot.T @ (p / p.shape[0])                         # (Ct, Cs)
    mass = joint.sum(0, keepdim=True)
    cond = torch.where(mass > 0, joint / mass.clamp_min(1e-300), torch.zeros_like(joint))
    empirical = p @ cond.T                                      # (N, Ct)
    return float(empirical.gather(1, y[:, None]).log().mean())


def nce(source_labels_pred, labels) -> float:
    """NCE: minus the conditional entropy H(Y | Z) of the target label given the source
    head's predicted class (Tran et al., 2019). 0 when the source prediction determines the
    target label; ``-log C`` for C balanced classes that it says nothing about."""
    z = source_labels_pred
    z = (z if isinstance(z, torch.Tensor) else torch.as_tensor(np.asarray(z))).reshape(-1)
    z = _labels(z, z.numel())
    y = _labels(labels, z.numel())
    n = z.numel()
    ct, cs = int(y.max()) + 1, int(z.max()) + 1
    joint = torch.bincount(y * cs + z, minlength=ct * cs).double().reshape(ct, cs) / n
    p_z = joint.sum(0)
    keep = p_z > 0
    cond = (joint[:, keep] / p_z[keep]).T + 1e-20               # (Cs', Ct)
    h = (-cond * cond.log()).sum(1)
    return float(-(h * p_z[keep]).sum())


def _class_means(f: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class means ``(C, D)`` and counts ``(C,)`` over classes 0 .. max(y)."""
    c = int(y.max()) + 1
    counts = torch.bincount(y, minlength=c).double()
    sums = torch.zeros(c, f.shape[1], dtype=f.dtype).index_add_(0, y, f)
    return sums / counts.clamp_min(1)[:, None], counts


def _between_rows(f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``G (C, D)`` with ``G^T G = np.cov(g)``, ``g`` each sample replaced by its class mean
    (the between-class covariance, ddof 1): rows ``sqrt(n_c / (N - 1)) (mean_c - mean)``."""
    means, counts = _class_means(f, y)
    centred = means - (counts @ means) / counts.sum()
    return centred * (counts / (f.shape[0] - 1)).sqrt()[:, None]


def _trace_inverse(x: torch.Tensor, g: torch.Tensor, scale: float, ridge: float = 0.0) -> float:
    """``tr(M^+ G^T G)`` for ``M = scale * x^T x + ridge * I`` without forming or inverting a
    (D, D) matrix when N < D: the eigenpairs of ``x^T x`` come from the smaller of the two
    Gram matrices (``x^T x`` or ``x x^T``), those above ``max(N, D) * eps`` of the largest
    (numpy's rank tolerance) span x; M is ``ridge * I`` on the rest (its pseudo-inverse
    drops that part when ``ridge`` is 0)."""
    n, d = x.shape
    lam, vecs = torch.linalg.eigh(x.T @ x if d <= n else x @ x.T)
    # x's span: eigenvalues above the rank tolerance (the rest, e.g. the one centring zeroes
    # when N <= D, is rounding noise and its x^T u / s no unit vector)
    keep = lam > max(n, d) * torch.finfo(torch.float64).eps * lam.max().clamp_min(0)
    lam, vecs = lam[keep], vecs[:, keep]
    if d <= n:
        proj = g @ vecs                                         # (C, k): G v_i
    else:
        proj = (g @ x.T) @ vecs / lam.sqrt()                    # G v_i, v_i = x^T u_i / s_i
    p2 = (proj ** 2).sum(0)
    total = float((p2 / (scale * lam + ridge)).sum())
    if ridge > 0:  # the complement of x's span, where M = ridge * I
        total += max(float((g ** 2).sum() - p2.sum()), 0.0) / ridge
    return total


def hscore(features, labels) -> float:
    """H-score: ``tr(cov(f)^+ cov(E[f | y]))`` (Bao et al., 2019); both covariances ddof 1.

    When N <= D the features' covariance is singular and the score saturates at C - 1 for
    any features that tell the classes apart (every model then looks perfect): use
    :func:`hscore_regularised`. The reference inverts the (D, D) covariance with a cut at
    1e-15 of its largest singular value, which then also inverts rounding noise; here the
    cut is ``max(N, D) * eps`` (the same result on any well-conditioned covariance)."""
    f, y = _features(features, labels)
    x = f - f.mean(0)
    return _trace_inverse(x, _between_rows(f, y), 1.0 / (f.shape[0] - 1))


def _shrinkage(x: torch.Tensor) -> tuple[float, float]:
    """Ledoit-Wolf shrinkage ``a`` and target scale ``mu = tr(S)/D`` of centred ``x (N, D)``
    (``S = x^T x / N``), as ``sklearn.covariance.ledoit_wolf_shrinkage`` computes them."""
    n, d = x.shape
    x2 = x ** 2
    trace_per_dim = x2.sum(0) / n
    mu = float(trace_per_dim.sum()) / d
    if d == 1:
        return 0.0, mu
    beta_ = float((x2.sum(1) ** 2).sum())                 # sum(X2^T X2)
    gram = x @ x.T if n < d else x.T @ x                  # same Frobenius norm
    delta_ = float((gram ** 2).sum()) / n ** 2
    beta = 1.0 / (d * n) * (beta_ / n - delta_)
    delta = (delta_ - 2.0 * mu * float(trace_per_dim.sum()) + d * mu ** 2) / d
    beta = min(beta, delta)
    return (0.0 if beta == 0 else beta / delta), mu


def ledoit_wolf(features) -> tuple[torch.Tensor, float]:
    """Ledoit-Wolf shrunk covariance ``(D, D)`` of ``features (N, D)`` (centred here) and its
    shrinkage in [0, 1]: ``(1 - a) S + a tr(S)/D I`` with ``S`` the ddof-0 covariance and
    ``a`` the Ledoit-Wolf (2004) estimate, as ``sklearn.covariance.ledoit_wolf`` computes it.

    >>> cov, a = ledoit_wolf(np.random.default_rng(0).normal(size=(20, 3)))
    >>> 0.0 <= a <= 1.0, cov.shape
    (True, torch.Size([3, 3]))
    """
    x = _f64(features)
    x = x - x.mean(0)
    a, mu = _shrinkage(x)
    shrunk = (1.0 - a) * (x.T @ x / x.shape[0])
    shrunk.diagonal().add_(a * mu)
    return shrunk, a


def hscore_regularised(features, labels) -> float:
    """Shrinkage H-score: ``tr(cov_a(f)^-1 (1 - a) cov(E[f | y]))`` with ``cov_a`` the
    Ledoit-Wolf estimate of shrinkage ``a`` (Ibrahim et al., 2021): stable when D is close to
    or above N, where the plain H-score's inverse covariance is noise. Computed on the
    data's span (no (D, D) inverse when N < D)."""
    f, y = _features(features, labels)
    x = f - f.mean(0)
    a, mu = _shrinkage(x)
    g = _between_rows(x, y) * math.sqrt(1 - a)
    return _trace_inverse(x, g, (1 - a) / x.shape[0], a * mu)


def gbc(features, labels, gaussian_type: str = "diagonal") -> float:
    """GBC: minus the summed Bhattacharyya coefficients ``exp(-D_B)`` between every ordered
    pair of distinct classes, each class a Gaussian with diagonal (or spherical) covariance
    (Pandy et al., 2022). At most 0; nearer 0 means classes overlap less. Variances are
    ddof 0 and at least 1e-4; only classes present in ``labels`` count."""
    if gaussian_type not in ("diagonal", "spherical"):
        raise ValueError(f"gaussian_type must be 'diagonal' or 'spherical', got {gaussian_type!r}")
    f, y = _features(features, labels)
    present = torch.unique(y)
    means = torch.stack([f[y == c].mean(0) for c in present])
    var = torch.stack([f[y == c].var(0, unbiased=False) for c in present]).clamp_min(1e-4)
    if gaussian_type == "spherical":
        var = var.mean(1, keepdim=True)
    total = 0.0
    for i in range(len(present)):  # one row of pairs at a time: memory C * D
        avg = (var[i] + var) / 2                                        # (C, D or 1)
        first = ((means[i] - means) ** 2 / avg).sum(1) / 8
        second = avg.log().sum(1) - 0.5 * var[i].log().sum() - 0.5 * var.log().sum(1)
        coef = torch.exp(-(first + 0.5 * second))
        total += float(coef.sum() - coef[i])
    return -total


def knn_accuracy(features, labels, k: int = 5) -> float:
    """Leave-one-out k-NN accuracy in [0, 1] with cosine similarity (features L2-normalised;
    each sample's neighbours exclude itself); votes weighted by similarity, so ties are
    rare. A baseline: transferable features put a sample among its own class."""
    f, y = _features(features, labels)
    n = f.shape[0]
    k = max(1, min(k, n - 1))
    f = torch.nn.functional.normalize(f, dim=1)
    c = int(y.max()) + 1
    correct = 0
    for rows in torch.arange(n).split(1024):
        sim = f[rows] @ f.T
        sim[torch.arange(len(rows)), rows] = -math.inf
        top, idx = sim.topk(k, dim=1)
        votes = torch.zeros(len(rows), c, dtype=torch.float64)
        votes.scatter_add_(1, y[idx], top + 2.0)  # +2: every vote positive (cosine >= -1)
        correct += int((votes.argmax(1) == y[rows]).sum())
    return correct / n


#: scores computed from penultimate features: name -> function(features, labels)
FEATURE_SCORES = {"logme": logme, "hscore": hscore, "hscore_reg": hscore_regularised,
                  "gbc": gbc, "knn": knn_accuracy}
#: scores computed from the source head: name -> function(source_probs, labels)
HEAD_SCORES = {"leep": leep, "nce": lambda probs, y: nce(_f64(probs).argmax(1), y)}
