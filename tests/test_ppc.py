"""Conditional posterior predictive checks (issue 20, point 1; ``bayes_diml.inference.ppc``).

Checked against independent references: the observed tables against a plain loop over
rows; play that repeats its last choice (generated in NumPy, no learner) fitted with
logit-Q is flagged; the CLI writes ``"ppc"`` into ``diagnostics.json`` and prints the
warning; and (slow) on data simulated from a known model misfit is flagged at no more
than the nominal rate. With ``[game] modelled = ["player"]`` against an opponent that
cycles rock -> paper -> scissors (NumPy): only the player's choices are counted (a loop),
the opponent replays its observed play in every replicate, and a logit-Q player simulated
in NumPy is flagged at no more than the nominal rate; an outcome column's
``previous_outcome`` table against a loop.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import warnings

import numpy as np
import pytest

import bayes_diml as bd
from bayes_diml.inference.ppc import ALPHA, observed_tables, ppc_from_params, replicated_tables
from bayes_diml.spec import parse_spec

import reference as ref
from cli_helpers import CONGESTION_SPEC, run_cli

SPEC = CONGESTION_SPEC.format(agents=2)


def model_and_truth(spec: str = SPEC):
    return parse_spec(tomllib.loads(spec))


def truth_as_draw(model, truth, payoff_sigma=None) -> dict:
    """The true parameters as one posterior draw (``draws_params`` layout)."""
    params = {
        "mechanism": {k: np.asarray(v, float)[None] for k, v in truth["mechanism"].items()},
        "learner": {k: np.asarray([float(truth["learner"][k])]) for k in model.learner.param_names},
    }
    if payoff_sigma is not None:
        params["payoff_sigma"] = np.asarray([float(payoff_sigma)])
    return params


def sticky_actions(rng, num_episodes=20, num_rounds=30, num_agents=2, num_actions=3, stay=0.7) -> np.ndarray:
    """Agents that repeat their last choice with probability ``stay``, else choose uniformly."""
    actions = np.zeros((num_episodes, num_rounds, num_agents), np.int64)
    actions[:, 0] = rng.integers(0, num_actions, (num_episodes, num_agents))
    for t in range(1, num_rounds):
        keep = rng.random((num_episodes, num_agents)) < stay
        actions[:, t] = np.where(keep, actions[:, t - 1], rng.integers(0, num_actions, (num_episodes, num_agents)))
    return actions


# ------------------------------------------------------------------ observed tables


def loop_tables(actions, mask, payoff, cuts, num_actions, scored=None):
    """The three tables by a plain loop over episodes, rounds and agents (the reference);
    ``scored``: the agents whose choices are counted (None: all)."""
    E, T, n = actions.shape
    scored = [True] * n if scored is None else scored
    A = num_actions
    own, opp, out = np.zeros((A, A)), np.zeros((A, A)), np.zeros((len(cuts) + 1, A))
    for e in range(E):
        for t in range(1, T):
            for i in range(n):
                if mask[e, t, i] or not scored[i]:
                    continue
                a = actions[e, t, i]
                if not mask[e, t - 1, i]:
                    own[actions[e, t - 1, i], a] += 1
                    if np.isfinite(payoff[e, t - 1, i]):
                        level = sum(payoff[e, t - 1, i] > c for c in cuts)
                        out[level, a] += 1
                votes = np.zeros(A)
                for j in range(n):
                    if j != i and not mask[e, t - 1, j]:
                        votes[actions[e, t - 1, j]] += 1
                if votes.sum() > 0:
                    opp[int(np.argmax(votes)), a] += 1  # first maximum: ties to the lowest action
    return {"own_previous": own, "opponent_previous": opp, "previous_outcome": out}


def test_observed_tables_match_a_loop_over_rows():
    rng = np.random.default_rng(4)
    E, T, n, A = 5, 9, 3, 4
    actions = rng.integers(0, A, (E, T, n))
    mask = rng.random((E, T, n)) < 0.2
    mask[0, :, 0] = False  # keep some full rows
    payoff = rng.choice([-1.0, 0.0, 1.0], size=(E, T, n))
    payoff[rng.random((E, T, n)) < 0.3] = np.nan
    payoff[mask] = np.nan
    data = bd.Trajectories.from_arrays(actions, mask, num_actions=A, payoff=payoff)
    model = bd.Model(bd.Congestion(num_agents=n, num_actions=A), bd.logit_q, {"alpha": 0.3, "beta": 3.0, "eps": 0.05})
    got = observed_tables(model, data)
    want = loop_tables(actions, mask, payoff, [-0.5, 0.5], A)
    assert set(got) == set(want)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_ppc_at_the_true_parameters_reports_every_table():
    model, truth = model_and_truth()
    data = bd.simulate(model, truth, num_episodes=10, num_rounds=20, seed=2, payoff_fraction=0.6, payoff_noise=0.1)
    result = ppc_from_params(model, data, truth_as_draw(model, truth, 0.1), num_replicates=400)
    assert set(result["tables"]) == {"own_previous", "opponent_previous", "previous_outcome"}
    assert result["replicates"] == 400 and result["threshold"] == pytest.approx(ALPHA / 3)
    own = result["tables"]["own_previous"]
    assert own["observed"].shape == (3, 3) and np.all(own["q05"] <= own["q95"])
    np.testing.assert_allclose(np.nansum(own["predictive_share"], axis=1), 1.0, rtol=1e-6)
    assert 0 < own["p"] <= 1 and 0 <= own["stay"]["q05"] <= own["stay"]["q95"] <= 1
    assert result["tables"]["previous_outcome"]["rows"][0].startswith("<=")  # noisy payoffs: terciles
    again = ppc_from_params(model, data, truth_as_draw(model, truth, 0.1), num_replicates=400)
    assert again["tables"]["own_previous"]["p"] == own["p"]  # a fixed seed: reproducible


def test_one_round_episodes_have_nothing_to_check():
    model, truth = model_and_truth()
    data = bd.simulate(model, truth, num_episodes=4, num_rounds=1, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no NumPy warning from empty tables
        result = ppc_from_params(model, data, truth_as_draw(model, truth), num_replicates=50)
    assert result["misfit"] is False
    for table in result["tables"].values():
        assert table["p"] == 1.0 and table["row_total"].sum() == 0


# ------------------------------------------------------------------ misfit


@pytest.fixture(scope="module")
def sticky_fit():
    model, _ = model_and_truth()
    data = bd.Trajectories.from_arrays(sticky_actions(np.random.default_rng(0)), num_actions=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fitted = bd.fit(model, data, method="map", seed=0, steps=200, progress=False)
    return fitted, [w for w in caught if issubclass(w.category, bd.MisfitWarning)]


def test_sticky_play_fitted_with_logit_q_is_a_misfit(sticky_fit):
    fitted, caught = sticky_fit
    checks = fitted.info["ppc"]
    assert checks["misfit"] is True and "own_previous" in checks["failing"]
    own = checks["tables"]["own_previous"]
    assert own["p"] < 0.002 and own["stay"]["observed"] > own["stay"]["q95"]
    assert len(caught) == 1 and "own_previous" in str(caught[0].message)
    assert bd.diagnose(fitted)["ppc"]["misfit"] is True
    assert any("own_previous" in w for w in bd.diagnose(fitted)["warnings"])


def test_ppc_of_a_fit_matches_what_fit_recorded(sticky_fit):
    fitted, _ = sticky_fit
    again = bd.ppc(fitted)
    assert again["misfit"] == fitted.info["ppc"]["misfit"]
    for name, table in again["tables"].items():
        assert table["p"] == fitted.info["ppc"]["tables"][name]["p"], name
    assert fitted.ppc()["tables"]["own_previous"]["statistic"] == again["tables"]["own_previous"]["statistic"]


def test_a_fit_without_ppc_records_none():
    model, truth = model_and_truth()
    data = bd.simulate(model, truth, num_episodes=3, num_rounds=5, seed=0)
    fitted = bd.fit(model, data, method="map", seed=0, steps=5, progress=False, ppc=False)
    assert "ppc" not in fitted.info and "ppc" not in bd.diagnose(fitted)


# ------------------------------------------------------------------ CLI and report


def test_cli_fit_writes_ppc_and_warns_on_misfit(tmp_path, capsys):
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC, encoding="utf-8")
    data = bd.Trajectories.from_arrays(sticky_actions(np.random.default_rng(1)), num_actions=3)
    data.to_csv(tmp_path / "D.csv")
    status, out, err = run_cli(
        capsys, "fit", spec, "--data", tmp_path / "D.csv", "--method", "map", "--steps", 100, "--seed", 1,
        "--out", tmp_path / "RUN", "--no-progress",
    )
    assert status == 0, err
    lines = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(lines) == 1 and "own_previous" in lines[0] and "posterior predictive" in lines[0], err
    diagnostics = json.loads((tmp_path / "RUN" / "diagnostics.json").read_text(encoding="utf-8"))
    assert diagnostics["ppc"]["misfit"] is True
    assert set(diagnostics["ppc"]["tables"]) == {"own_previous", "opponent_previous"}
    assert diagnostics["ppc"]["tables"]["own_previous"]["p"] < diagnostics["ppc"]["threshold"]
    assert any("own_previous" in w for w in diagnostics["warnings"])
    loaded = bd.load_fit(tmp_path / "RUN")
    assert loaded.info["ppc"] == diagnostics["ppc"]  # recorded with the fit, read back
    assert loaded.ppc()["tables"]["own_previous"]["p"] == diagnostics["ppc"]["tables"]["own_previous"]["p"]
    with pytest.raises(ValueError, match="max_draws"):
        bd.ppc(loaded, max_draws=0)
    status, out, err = run_cli(capsys, "report", tmp_path / "RUN")
    assert status == 0, err
    html = (tmp_path / "RUN" / "report.html").read_text(encoding="utf-8")
    assert "Conditional checks" in html and "Misfit" in html and "conditional posterior predictive checks" in html


def test_the_report_says_so_when_a_run_has_no_checks(tmp_path):
    model, truth = model_and_truth()
    data = bd.simulate(model, truth, num_episodes=3, num_rounds=5, seed=0)
    bd.fit(model, data, method="map", seed=0, steps=5, progress=False, ppc=False).save(tmp_path / "RUN")
    from bayes_diml._report_ppc import conditional_checks_html

    assert "no conditional posterior predictive checks" in conditional_checks_html(tmp_path / "RUN")


# ------------------------------------------------------------------ nominal rate (slow)


@pytest.mark.slow
def test_misfit_is_flagged_at_no_more_than_the_nominal_rate():
    """Data simulated from a known logit-Q model, checked (a) at the true parameters on 100
    data sets, (b) with a MAP fit on 4 of them.

    (a) With the true parameters as the "posterior" the observed and replicated tables are
    exchangeable, so each table's Monte Carlo p is (super-)uniform and misfit (any of k = 3
    tables below 0.01 / 3) has probability <= 0.01. Over 100 independent data sets the
    number flagged is then at most Binomial(100, 0.01): P(>= 4) = 0.018, P(>= 5) = 0.003, so
    at most 4 are allowed. Calibration beyond the flag: each table's p < 0.1 on at most
    Binomial(100, 0.1) data sets, P(>= 19) = 0.004, so at most 18 (per table).
    (b) A posterior predictive p is conservative (Gelman, Meng & Stern 1996), so a fitted
    model is flagged at most as often: with 4 fits, Binomial(4, 0.01) >= 2 has probability
    6e-4, so at most 1.
    """
    model, truth = model_and_truth()
    draw = truth_as_draw(model, truth, 0.1)
    flagged, small = 0, {}
    data_sets = []
    for seed in range(100):
        data = bd.simulate(model, truth, num_episodes=10, num_rounds=30, seed=1000 + seed, payoff_fraction=0.5, payoff_noise=0.1)
        data_sets.append(data)
        result = ppc_from_params(model, data, draw, seed=seed)
        flagged += result["misfit"]
        for name, table in result["tables"].items():
            small[name] = small.get(name, 0) + (table["p"] < 0.1)
    assert flagged <= 4, flagged
    assert all(count <= 18 for count in small.values()), small
    fitted_flags = 0
    for data in data_sets[:4]:
        fitted = bd.fit(model, data, method="map", seed=0, steps=300, progress=False)
        fitted_flags += fitted.info["ppc"]["misfit"]
    assert fitted_flags <= 1, fitted_flags


# ------------------------------------------------------------------ exogenous agents and outcome columns

RPS_SPEC = """\
[game]
agents = 2
actions = 3
action_labels = ["rock", "paper", "scissors"]
agent_labels = ["opponent", "player"]
modelled = ["player"]

[mechanism]
family = "tabular"
[mechanism.prior]
scale = 3.0

[learner]
rule = "logit_q"
alpha = 0.3
beta = 2.0
eps = 0.0
"""
RPS_OUTCOMES = '\n[payoff]\nsigma = 0.3\ncolumn = "result"\noutcomes = {win = 2, tie = 1, lose = 0}\n'
RPS_VALUE = {"win": 2.0, "tie": 1.0, "lose": 0.0}
RPS_LABELS = ("win", "tie", "lose")


def rps_result(own: int, other: int) -> str:
    """rock = 0, paper = 1, scissors = 2: paper beats rock, scissors paper, rock scissors."""
    return "tie" if own == other else ("win" if (own - other) % 3 == 1 else "lose")


def rps_truth() -> dict:
    """Tabular ``M(a)_i`` (joint index ``a_0 + 3 a_1``, agent 0 the opponent) and the learner."""
    table = np.zeros((9, 2))
    for index in range(9):
        joint = (index % 3, index // 3)
        for i in range(2):
            table[index, i] = RPS_VALUE[rps_result(joint[i], joint[1 - i])]
    return {"mechanism": {"payoffs": table}, "learner": {"alpha": 0.3, "beta": 2.0, "eps": 0.0}}


def cycling_play(rng, num_episodes=10, num_rounds=30, alpha=0.3, beta=2.0) -> np.ndarray:
    """The opponent cycles rock -> paper -> scissors from a random start (no learning); the
    player is a logit-Q learner against it, simulated here in NumPy (reference.log_policy:
    softmax of beta Q; Q <- (1 - alpha) Q + alpha u(., opponent's action), Q_0 = 0)."""
    actions = np.zeros((num_episodes, num_rounds, 2), np.int64)
    for e in range(num_episodes):
        start, q = rng.integers(3), np.zeros(3)
        for t in range(num_rounds):
            other = (start + t) % 3
            p = np.exp(ref.log_policy(q, beta, 0.0))
            own = rng.choice(3, p=p / p.sum())
            actions[e, t] = other, own
            u = np.array([RPS_VALUE[rps_result(k, other)] for k in range(3)])
            q = (1 - alpha) * q + alpha * u
    return actions


def with_outcomes(data, drop=0.0, seed=0):
    """``data`` with a 'result' column (codes of RPS_LABELS; a share ``drop`` left empty)."""
    from bayes_diml.outcomes import OutcomeColumn

    a = data.actions
    codes = np.array([[[RPS_LABELS.index(rps_result(a[e, t, i], a[e, t, 1 - i])) for i in range(2)]
                       for t in range(a.shape[1])] for e in range(a.shape[0])], np.int32)
    codes[np.random.default_rng(seed).random(codes.shape) < drop] = -1
    return dataclasses.replace(data, outcome=OutcomeColumn("result", RPS_LABELS, codes))


def rps_data(seed, outcomes=True, **sizes):
    data = bd.Trajectories.from_arrays(cycling_play(np.random.default_rng(seed), **sizes), num_actions=3,
                                       action_labels=["rock", "paper", "scissors"], agent_labels=["opponent", "player"])
    return with_outcomes(data) if outcomes else data


def loop_outcome_table(actions, mask, codes, scored, num_labels, num_actions):
    """``previous_outcome`` of an outcome column by a plain loop: scored agents' choices by their previous label."""
    E, T, n = actions.shape
    out = np.zeros((num_labels, num_actions))
    for e in range(E):
        for t in range(1, T):
            for i in range(n):
                if scored[i] and not mask[e, t, i] and not mask[e, t - 1, i] and codes[e, t - 1, i] >= 0:
                    out[codes[e, t - 1, i], actions[e, t, i]] += 1
    return out


def test_only_modelled_agents_are_counted_and_unmodelled_agents_replay_exactly():
    model, _ = model_and_truth(RPS_SPEC)
    assert model.scored_agents.tolist() == [False, True]
    data = rps_data(3, outcomes=False, num_episodes=6, num_rounds=12)
    got = observed_tables(model, data)
    no_payoff = np.full(data.actions.shape, np.nan)
    want = loop_tables(data.actions, data.mask, no_payoff, [], 3, scored=[False, True])
    for name in ("own_previous", "opponent_previous"):
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    assert got["own_previous"].sum() == 6 * 11  # the player's rounds 1..11 only
    replicated = replicated_tables(model, data, truth_as_draw(model, rps_truth()), num_replicates=50)
    # the opponent replays its observed play: every replicate has the observed rows (its previous choices) ...
    rows = replicated["opponent_previous"].sum(axis=2)
    np.testing.assert_array_equal(rows, np.broadcast_to(want["opponent_previous"].sum(axis=1), rows.shape))
    # ... while the player is simulated (its own-previous tables vary over replicates)
    assert np.unique(replicated["own_previous"].reshape(50, -1), axis=0).shape[0] > 1


def test_previous_outcome_of_an_outcome_column_matches_a_loop():
    model, _ = model_and_truth(RPS_SPEC + RPS_OUTCOMES)
    data = with_outcomes(rps_data(5, outcomes=False, num_episodes=6, num_rounds=12), drop=0.25, seed=1)
    got = observed_tables(model, data)
    want = loop_outcome_table(data.actions, data.mask, data.outcome.codes, [False, True], 3, 3)
    np.testing.assert_array_equal(got["previous_outcome"], want)
    result = ppc_from_params(model, data, truth_as_draw(model, rps_truth()), num_replicates=50)
    table = result["tables"]["previous_outcome"]
    assert table["rows"] == list(RPS_LABELS) and table["row_name"] == "previous outcome"
    np.testing.assert_array_equal(table["observed"], want)
    assert result["notes"] == []
    # a label that is not a function of the joint action: no table, a note saying why
    codes = data.outcome.codes.copy()
    e, t = np.argwhere(codes[:, :, 1] == 0)[0]
    codes[e, t, 1] = 2  # one win recorded as a loss
    from bayes_diml.inference._ppc_outcomes import outcome_relation

    bad = dataclasses.replace(data, outcome=dataclasses.replace(data.outcome, codes=codes))
    note = outcome_relation(bad, 3)["note"]
    assert "not a function of the joint action" in note and "'win' and 'lose'" in note
    assert "previous_outcome" not in observed_tables(model, bad)


def test_a_correct_player_against_a_non_learning_opponent_is_not_flagged():
    """The player simulated (NumPy) from logit-Q against a cycling opponent, checked at the
    true parameters on 20 data sets. Replicates replay the opponent's observed play, so given
    it the observed and replicated tables are exchangeable and each data set is flagged with
    probability <= ALPHA = 0.01: the number flagged is at most Binomial(20, 0.01),
    P(>= 2) = 0.017, P(>= 3) = 0.001, so at most 2 are allowed. Per table, p < 0.1 on at
    most Binomial(20, 0.1) data sets: P(>= 7) = 0.002, so at most 6. A model that ignored
    the replay (a learning opponent in the replicates) would change the opponent_previous rows."""
    model, _ = model_and_truth(RPS_SPEC + RPS_OUTCOMES)
    draw = truth_as_draw(model, rps_truth())
    flagged, small = 0, {}
    for seed in range(20):
        result = ppc_from_params(model, rps_data(100 + seed), draw, seed=seed, num_replicates=400)
        assert set(result["tables"]) == {"own_previous", "opponent_previous", "previous_outcome"}
        flagged += result["misfit"]
        for name, table in result["tables"].items():
            small[name] = small.get(name, 0) + (table["p"] < 0.1)
    assert flagged <= 2, flagged
    assert all(count <= 6 for count in small.values()), small
