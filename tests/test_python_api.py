"""The Python surface a practitioner meets first (issue 27, item 5)."""

from __future__ import annotations

import pandas as pd
import pytest

from transferscope.errors import ModelError


def test_top_level_imports():
    from transferscope import Finding, Report, Study, create_model, load_model

    assert Study.__name__ == "Study" and Report.__name__ == "Report"
    assert callable(create_model) and callable(load_model) and Finding.__name__ == "Finding"
    with pytest.raises(ImportError):
        from transferscope import NoSuchThing  # noqa: F401


def test_load_model_takes_a_run_directory(tmp_path):
    import torch

    from transferscope import create_model, load_model
    from transferscope.models.io import save_model

    model = create_model("baseline_cnn", 3)
    run = tmp_path / "run"
    run.mkdir()
    save_model(model, run / "model.safetensors")
    again = load_model(run)  # the run directory, as the CLI takes it
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="without model.safetensors"):
        load_model(tmp_path / "empty")


def test_result_repr_is_short():
    from transferscope.analyses._base import AnalysisResult

    res = AnalysisResult("x", {f"k{i}": i for i in range(10)},
                         {"t": pd.DataFrame({"a": range(1000)})},
                         images={f"i{i}": b"\xff" * 100_000 for i in range(24)})
    text = repr(res)
    assert len(text) < 300 and "t (1000 rows)" in text and "24 thumbnails" in text
