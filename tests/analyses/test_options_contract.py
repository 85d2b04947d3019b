"""Options have one home: each analysis's pydantic options model. A default written anywhere
else (``run``'s keyword defaults) must be the same value, so ``module.run(ctx)`` and
``run_analysis(name, ctx)`` and a study file compute the same thing (the barriers' lambda
path once differed in three places)."""

from __future__ import annotations

import inspect

import pytest

from transferscope.analyses import get_analysis, list_analyses


@pytest.mark.parametrize("name", list_analyses(runnable=True))
def test_run_defaults_equal_the_options_model(name):
    """... and ``run`` writes no default of its own: registration gives it the model's."""
    import ast
    import textwrap

    spec = get_analysis(name)
    fn = ast.parse(textwrap.dedent(inspect.getsource(spec.run))).body[0]
    written = [a.arg for a, d in zip(fn.args.kwonlyargs, fn.args.kw_defaults) if d is not None]
    written += [a.arg for a in fn.args.args[len(fn.args.args) - len(fn.args.defaults):]]
    assert not written, f"{name}.run writes defaults for {written}: put them in its options"
    model = spec.options()
    params = inspect.signature(spec.run).parameters
    for key, p in params.items():
        if key == "ctx" or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        assert key in spec.options.model_fields, f"{name}.run takes {key!r}, not an option"
        if p.default is not inspect.Parameter.empty:
            want = getattr(model, key)
            got = p.default
            if isinstance(want, list) and isinstance(got, tuple):
                got = list(got)
            assert got == want, f"{name}: run default {key}={got!r}, options model {want!r}"


@pytest.mark.parametrize("name", list_analyses(runnable=True))
def test_every_option_reaches_run(name):
    spec = get_analysis(name)
    params = inspect.signature(spec.run).parameters
    takes_any = any(p.kind == p.VAR_KEYWORD for p in params.values())
    missing = [k for k in spec.options.model_fields if k not in params]
    assert takes_any or not missing, f"{name}: options {missing} never reach run"


def test_the_barrier_path_has_one_home():
    """barrier_paths (pure), run and the options model walk the same lambdas by default."""
    import inspect as _inspect

    from transferscope.analyses import barriers

    assert list(barriers.LAMBDAS) == barriers.BarriersOptions().lambdas
    assert _inspect.signature(barriers.run).parameters["lambdas"].default == list(barriers.LAMBDAS)
    assert "LAMBDAS if lambdas is None" in _inspect.getsource(barriers.barrier_paths)
