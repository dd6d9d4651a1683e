"""Interventions that say whether the data support them (docs/design.md §3, §5).

For congestion only ``d = tau - c1`` and ``c2`` are identified: replacing ``tau`` (or
scaling it) leaves each draw's prior-only ``c1`` in the new payoff, so the counterfactual
warns, naming ``c1``, and records ``identified: false``; ``tau +=``, a learner change and
a new ``c2`` do not. With ``tau`` known (``[mechanism.known]``) every change is identified.
Where welfare sums payoff levels only the gauge fixes, its rows say so instead of numbers.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

import bayes_diml as bd
from bayes_diml.errors import UnidentifiedWarning
from bayes_diml.inference.counterfactual import counterfactual
from bayes_diml.inference.results import Fit
from bayes_diml.learners import logit_q
from bayes_diml.mechanisms import Congestion, Tabular
from bayes_diml.model import Model

from cli_helpers import run_cli

N, A = 3, 3
TAU = [0.05, 0.15, 0.10]
SPEC = """
[game]
agents = 3
actions = 3

[mechanism]
family = "congestion"
{known}
[mechanism.truth]
c1 = [0.20, 0.30, 0.15]
c2 = [0.10, 0.06, 0.12]
tau = [0.05, 0.15, 0.10]

[learner]
rule = "logit_q"
alpha = 0.25
beta = 3.0
eps = 0.06
"""
KNOWN = "\n[mechanism.known]\ntau = [0.05, 0.15, 0.10]\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two MAP run folders on the same simulated data: tau unknown (RUN) and known (KNOWN)."""
    root = tmp_path_factory.mktemp("interventions")
    (root / "free.toml").write_text(SPEC.format(known=""), encoding="utf-8")
    (root / "known.toml").write_text(SPEC.format(known=KNOWN), encoding="utf-8")
    status, _, err = _main("simulate", root / "free.toml", "--episodes", 4, "--rounds", 10, "--seed", 3,
                           "--out", root / "D.csv")
    assert status == 0, err
    for spec, run in (("free.toml", "RUN"), ("known.toml", "KNOWN")):
        status, _, err = _main("fit", root / spec, "--data", root / "D.csv", "--method", "map", "--steps", 100,
                               "--seed", 11, "--out", root / run, "--no-progress")
        assert status == 0, err
    return root


def _main(*args):
    """``bayes_diml.cli.main(ARGS)`` with stdout and stderr captured (module fixtures have no capsys)."""
    import contextlib
    import io

    from bayes_diml.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main([str(a) for a in args])
        except SystemExit as exit_:
            status = exit_.code
    return status, out.getvalue(), err.getvalue()


def _counterfactual(capsys, root, run, name, *sets):
    args = ["counterfactual", root / run]
    for item in sets:
        args += ["--set", item]
    status, out, err = run_cli(capsys, *args, "--episodes", 3, "--rounds", 5, "--seed", 0, "--max-draws", 4,
                               "--out", root / f"{run}_{name}.csv")
    assert status == 0, err
    record = json.loads((root / run / "counterfactuals" / f"{run}_{name}.json").read_text(encoding="utf-8"))
    return err, record


def _warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("warning:")]


# ------------------------------------------------------------------ CLI
def test_absolute_toll_without_known_tau_warns_naming_c1(runs, capsys):
    err, record = _counterfactual(capsys, runs, "RUN", "abs", "mechanism.tau=[0.3,0,0]")
    lines = _warnings(err)
    assert len(lines) == 1, err
    assert "c1" in lines[0] and "[mechanism.known]" in lines[0] and "mechanism.tau+=" in lines[0]
    assert record["identified"] is False and record["unidentified"] == ["c1"]
    assert record["intervention"]["identified"] is False


@pytest.mark.parametrize(
    "name, sets",
    [
        ("plus", ["mechanism.tau+=[0.1,0,0]"]),
        ("beta", ["learner.beta=*1.4"]),
        ("c2", ["mechanism.c2=[0.1,0.1,0.1]"]),
        ("both", ["mechanism.tau=[0.3,0,0]", "mechanism.c1=[0.2,0.3,0.15]"]),
        ("alpha_plus", ["learner.alpha+=0.05"]),
    ],
)
def test_identified_interventions_print_no_warning(runs, capsys, name, sets):
    err, record = _counterfactual(capsys, runs, "RUN", name, *sets)
    assert _warnings(err) == [], err
    assert record["identified"] is True and record["unidentified"] == []


def test_scaled_toll_is_not_identified(runs, capsys):
    err, record = _counterfactual(capsys, runs, "RUN", "scaled", "mechanism.tau*=[2,1,1]")
    assert len(_warnings(err)) == 1 and "c1" in _warnings(err)[0]
    assert record["identified"] is False
    err, record = _counterfactual(capsys, runs, "RUN", "unit", "mechanism.tau*=[1,1,1]")
    assert _warnings(err) == [] and record["identified"] is True


def test_absolute_toll_with_known_tau_is_identified(runs, capsys):
    err, record = _counterfactual(capsys, runs, "KNOWN", "abs", "mechanism.tau=[0.3,0,0]")
    assert _warnings(err) == [], err
    assert record["identified"] is True and record["welfare_identified"] is True


def test_relative_changes_apply_to_each_draw(runs, capsys):
    fit = bd.load_fit(runs / "RUN")
    index = fit.thinned_index(4)
    base = fit.params_draws(index)
    from bayes_diml.inference._interventions import learner_intervention, mechanism_intervention

    _, mech, description = mechanism_intervention(fit.model, base["mechanism"], 4, {"tau": ("+", [0.1, 0, 0])})
    np.testing.assert_allclose(mech["tau"], np.asarray(base["mechanism"]["tau"]) + [0.1, 0, 0], rtol=1e-6)
    assert description == {"set": {"tau": {"op": "+", "value": [0.1, 0.0, 0.0]}}}
    learner, description = learner_intervention(fit.model, base["learner"], 4, {"alpha": ("+", 0.05)}, index)
    np.testing.assert_allclose(learner["alpha"], np.asarray(base["learner"]["alpha"]) + 0.05)
    assert description == {"alpha": {"op": "+", "value": 0.05}}


# ------------------------------------------------------------------ Python API
def _hand_fit(model, posterior) -> Fit:
    data = bd.Trajectories.from_arrays(np.zeros((2, 3, model.num_agents), int), num_actions=model.num_actions)
    return Fit(model=model, data=data, method="nuts", posterior=posterior, sample_stats=None, info={})


def _congestion_fit(known=None) -> Fit:
    rng = np.random.default_rng(0)
    posterior = {k: v + 0.01 * rng.normal(size=(1, 4, A)) for k, v in
                 {"c1": np.array([0.2, 0.3, 0.15]), "c2": np.array([0.1, 0.06, 0.12]), "tau": np.array(TAU)}.items()}
    model = Model(Congestion(N, A), logit_q, {"alpha": 0.25, "beta": 3.0, "eps": 0.06}, mechanism_known=known or {})
    return _hand_fit(model, posterior)


def test_api_warns_with_unidentified_warning():
    with pytest.warns(UnidentifiedWarning, match="c1"):
        result = counterfactual(_congestion_fit(), mechanism={"tau": [0.3, 0, 0]}, num_episodes=2, num_rounds=3, seed=0)
    assert result.identified is False and result.unidentified == ["c1"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnidentifiedWarning)
        result = counterfactual(_congestion_fit(), mechanism={"tau": ("+", [0.1, 0, 0])}, learner={"beta": "*1.4"},
                                num_episodes=2, num_rounds=3, seed=0)
        assert result.identified and result.unidentified == []
        known = _congestion_fit({"tau": TAU})
        assert counterfactual(known, mechanism={"tau": [0.3, 0, 0]}, num_episodes=2, num_rounds=3, seed=0).identified


def test_congestion_unidentified_by_follows_d_equals_tau_minus_c1():
    family = Congestion(N, A)
    ones = np.ones(A)
    assert family.unidentified_by([("tau", "=", ones)], set()) == ["c1"]
    assert family.unidentified_by([("c1", "=", ones)], set()) == ["c1"]
    assert family.unidentified_by([("tau", "*", 2 * ones)], set()) == ["c1"]
    assert family.unidentified_by([("tau", "+", ones)], set()) == []
    assert family.unidentified_by([("tau", "*", 2 * ones), ("c1", "*", 2 * ones)], set()) == []
    assert family.unidentified_by([("tau", "=", ones), ("c1", "=", ones)], set()) == []
    assert family.unidentified_by([("c2", "=", ones)], set()) == []
    assert family.unidentified_by([("tau", "=", ones)], {"tau"}) == []


def test_welfare_under_a_gauge_says_not_identified():
    """Tabular payoff levels under a full-information learner are fixed by the gauge."""
    mechanism = Tabular(2, 2)
    shapes = mechanism.param_shapes()
    rng = np.random.default_rng(1)
    posterior = {k: rng.normal(size=(1, 4, *s)) for k, s in shapes.items()}
    model = Model(mechanism, logit_q, {"alpha": 0.25, "beta": 3.0, "eps": 0.06})
    fit = _hand_fit(model, posterior)
    result = counterfactual(fit, learner={"beta": "*1.4"}, num_episodes=2, num_rounds=3, seed=0)
    assert result.identified and not result.welfare_identified
    frame = result.to_frame()
    welfare = frame[frame["quantity"] == "welfare"]
    assert welfare[["mean", "q05", "q95"]].isna().all().all()
    assert (welfare["note"] == "not identified (payoff levels are fixed by the gauge, not the data)").all()
    assert np.isfinite(frame.loc[frame["quantity"] == "frequency", "mean"]).all()
    compared = result.compare(result).set_index("quantity")
    assert pd.isna(compared.loc["welfare", "mean"])
    # a congestion game has no gauge on levels: its welfare is reported
    congestion = counterfactual(_congestion_fit(), num_episodes=2, num_rounds=3, seed=0)
    assert congestion.welfare_identified and np.isfinite(congestion.welfare["mean"]).all()


def test_report_shows_the_warning(runs, capsys):
    _counterfactual(capsys, runs, "RUN", "for_report", "mechanism.tau=[0.3,0,0]")
    status, _, err = run_cli(capsys, "report", runs / "RUN", "--overwrite")
    assert status == 0, err
    page = (runs / "RUN" / "report.html").read_text(encoding="utf-8")
    assert "not identified: this play depends on c1" in page
