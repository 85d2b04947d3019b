"""Record the reference implementations' outputs on the cases of tests/ranking/test_scores.py (the
numbers test_scores.py holds). Not a test; run by hand with the reference files on disk:

    PYTHONPATH=src python tests/ranking/record_reference.py LOGME_DIR TLLIB_HSCORE_PY GBC_PY

LOGME_DIR: a checkout of github.com/thuml/LogME (LogME.py, LEEP.py, NCE.py);
TLLIB_HSCORE_PY: thuml/Transfer-Learning-Library tllib/ranking/hscore.py;
GBC_PY: google-research/google-research stable_transfer/transferability/gbc.py.
The reference code is imported from those paths, never copied here. Two stand-ins let it run
without its heavy dependencies: numba's ``njit`` as the identity (LogME.py), and the dozen
TensorFlow ops gbc.py calls as their numpy equivalents (float64; ``reduce_variance`` is
population variance in both).
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import numpy as np


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _stubs() -> None:
    numba = types.ModuleType("numba")
    numba.njit = lambda f=None, **_: f if f is not None else (lambda g: g)
    sys.modules.setdefault("numba", numba)
    tf = types.ModuleType("tensorflow")
    tf.reduce_sum = lambda x, axis=None: np.sum(np.asarray(x), axis=axis)
    tf.reduce_mean = lambda x, axis=None: np.mean(np.asarray(x), axis=axis)
    tf.exp = np.exp
    tf.equal = np.equal
    tf.where = lambda cond: np.argwhere(cond)
    tf.gather_nd = lambda params, idx: np.asarray(params)[tuple(np.asarray(idx).T)]
    tf.maximum = np.maximum
    tf.unique = lambda x: (np.asarray(list(dict.fromkeys(np.asarray(x).tolist()))), None)
    tf.math = types.SimpleNamespace(log=np.log,
                                    reduce_variance=lambda x, axis=None: np.var(x, axis=axis))
    sys.modules["tensorflow"] = tf
    pkg = types.ModuleType("stable_transfer")
    sub = types.ModuleType("stable_transfer.transferability")
    exp = types.ModuleType("stable_transfer.transferability.transfer_experiment")
    exp.load_or_compute = lambda f: f
    sub.transfer_experiment = exp
    pkg.transferability = sub
    sys.modules.update({"stable_transfer": pkg, "stable_transfer.transferability": sub,
                        "stable_transfer.transferability.transfer_experiment": exp})


def main(logme_dir: str, hscore_py: str, gbc_py: str) -> None:
    fixtures = _load("ranking_test_scores", Path(__file__).with_name("test_scores.py"))
    CASES, case = fixtures.CASES, fixtures.case

    _stubs()
    logme_mod = _load("ref_logme", Path(logme_dir) / "LogME.py")
    leep_mod = _load("ref_leep", Path(logme_dir) / "LEEP.py")
    nce_mod = _load("ref_nce", Path(logme_dir) / "NCE.py")
    tl = _load("ref_hscore", Path(hscore_py))
    g = _load("ref_gbc", Path(gbc_py))
    out = {}
    for name in CASES:
        c = case(name)
        f, y = c["features"], c["labels"]
        out[name] = {
            "logme": float(logme_mod.LogME(regression=False).fit(f, y)),
            "leep": float(leep_mod.LEEP(c["probs"], y)),
            "nce": float(nce_mod.NCE(c["source_pred"], y)),
            "hscore_reg": float(tl.regularized_h_score(f, y)),
            "gbc": float(g.get_gbc_score(f, y, "diagonal")),
            "gbc_spherical": float(g.get_gbc_score(f, y, "spherical")),
        }
        if f.shape[0] > f.shape[1]:  # below, cov(f) is singular: pinv at 1e-15 is noise
            out[name]["hscore"] = float(tl.h_score(f, y))
    print("REFERENCE = {")
    for name, scores in out.items():
        print(f"    {name!r}: {{" + ", ".join(f"{k!r}: {v!r}" for k, v in scores.items()) + "},")
    print("}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
