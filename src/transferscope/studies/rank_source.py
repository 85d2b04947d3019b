"""``rank:PATH`` as a model name in a study file: the best candidate of the ranking study
written to ``PATH`` (by LogME, or ``rank:PATH#SCORE`` by another score), so one study goes from
*choose* (``kind = "ranking"``) to *audit*::

    [source]
    arch = "rank:ranking-out"             # the candidate ranking-out ranked first
    [[models]]
    name = "fine-tuned"
    arch = "rank:ranking-out"             # fine-tune the same architecture
"""

from __future__ import annotations

import json
from pathlib import Path

from transferscope.errors import ConfigError, did_you_mean

__all__ = ["best_candidate", "PREFIX", "resolve"]

PREFIX = "rank:"


def best_candidate(ref: str) -> tuple[str, str, str]:
    """``rank:PATH[#SCORE]`` -> ``(candidate name, model, init)`` of the best candidate.

    Raises:
        ConfigError: no ranking results in PATH, an unknown score, or no candidate scored.
    """
    body = ref[len(PREFIX):]
    folder, _, score = body.partition("#")
    score = score or "logme"
    path = Path(folder) / "results" / "ranking.json"
    if not path.is_file():
        raise ConfigError(f"{ref!r}: no ranking results at {path}; run a ranking study first "
                          f"(kind = \"ranking\", docs/ranking.md) with --out {folder}")
    summary = json.loads(path.read_text())["summary"]
    best = summary.get("best", {})
    if score not in best:
        raise ConfigError(f"{ref!r}: no candidate scored by {score!r}{did_you_mean(score, best)}"
                          f"; scores: {', '.join(best) or 'none'}")
    name = best[score]
    model = (summary.get("models") or {}).get(name)
    if model is None:
        raise ConfigError(f"{ref!r}: {path} does not record how candidate {name!r} was built; "
                          "rerun the ranking study with this transferscope version")
    return name, model["model"], model["init"]


def resolve(arch: str | None, init: str) -> tuple[str | None, str]:
    """``(arch, init)`` with a ``rank:`` arch replaced by the best candidate's architecture and
    weights (a candidate given as a file or run directory: its architecture, that file)."""
    if not arch or not arch.startswith(PREFIX):
        return arch, init
    _, model, cand_init = best_candidate(arch)
    if Path(model).exists():
        from transferscope.models import load_model

        weights = Path(model) / "model.safetensors" if Path(model).is_dir() else Path(model)
        return load_model(weights).arch, str(weights.resolve())
    return model, cand_init
