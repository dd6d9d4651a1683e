"""``[payoff] outcomes``: a categorical outcome column mapped to realised payoffs.

References: a payoff column built by hand from the outcome labels (numbers case: the same
log-likelihood as supplying that ``payoff`` column), and recovery of the payoff of a win
on rock-paper-scissors play simulated with win = a = 2, tie = 1, lose = 0.
"""

from __future__ import annotations

import tomllib

import jax.numpy as jnp
import numpy as np
import pytest

import bayes_diml as bd
from bayes_diml.errors import DataError, SpecError
from bayes_diml.inference.numpyro_model import (
    check_identifiable_setup,
    draws_log_likelihoods,
    observed_payoffs,
    sample_params,
)
from bayes_diml.loading import check_data, load_data
from bayes_diml.spec import model_to_toml, parse_spec
from bayes_diml.trajectories import Trajectories

from cli_helpers import one_error_line, run_cli

ACTIONS = ["paper", "rock", "scissors"]
BEATS = {(0, 1), (1, 2), (2, 0)}  # paper beats rock, rock beats scissors, scissors beats paper

SPEC = """
[game]
agents = 2
actions = 3
action_labels = ["paper", "rock", "scissors"]
agent_labels = ["opponent", "player"]

[mechanism]
family = "tabular"
[mechanism.prior]
scale = 3.0

[learner]
rule = "logit_q"
alpha = 0.3
beta = 2.0
eps = 0.0

[payoff]
sigma = 0.3
column = "result"
outcomes = OUTCOMES
[payoff.prior]
a = {dist = "lognormal", loc = 0.5, scale = 0.5}
"""


def _spec(outcomes='{win = "a", tie = 1, lose = 0}', drop_prior=False, extra=""):
    text = SPEC.replace("OUTCOMES", outcomes) + extra
    if drop_prior:
        text = text.replace('[payoff.prior]\na = {dist = "lognormal", loc = 0.5, scale = 0.5}\n', "")
    return parse_spec(tomllib.loads(text), source="rps.toml")[0]


def _result(own: int, other: int) -> str:
    return "tie" if own == other else ("win" if (own, other) in BEATS else "lose")


def _truth_table(value: dict) -> np.ndarray:
    """The tabular truth ``M(a)_i = value[outcome of agent i]``; joint index base 3, agent 0 least significant."""
    table = np.zeros((9, 2))
    for index in range(9):
        joint = (index % 3, index // 3)
        for i in range(2):
            table[index, i] = value[_result(joint[i], joint[1 - i])]
    return table


def _with_results(data: Trajectories, model, drop=0.0, seed=0) -> Trajectories:
    """The long table of ``data`` with a 'result' column (some cells empty), read back."""
    frame = data.to_dataframe()
    e, t, i = np.nonzero(~data.mask)
    own, other = data.actions[e, t, i], data.actions[e, t, 1 - i]
    results = np.array([_result(a, b) for a, b in zip(own, other)], object)
    results[np.random.default_rng(seed).random(len(results)) < drop] = ""
    frame["result"] = results
    return Trajectories.from_dataframe(frame, action_labels=ACTIONS, outcomes=("result", model.outcomes.labels))


def _simulate(model, a=2.0, num_episodes=4, num_rounds=12, seed=0):
    params = {"mechanism": {"payoffs": _truth_table({"win": a, "tie": 1.0, "lose": 0.0})},
              "learner": {"alpha": 0.3, "beta": 2.0, "eps": 0.0}}
    return params, bd.simulate(model, params, num_episodes=num_episodes, num_rounds=num_rounds, seed=seed)


# ------------------------------------------------------------------ spec


def test_spec_outcomes_parse_and_round_trip():
    model = _spec()
    rule = model.outcomes
    assert rule.column == "result" and rule.labels == ("win", "tie", "lose")
    assert rule.parameters == ("a",) and rule.numbers == (1.0, 0.0)
    assert parse_spec(tomllib.loads(model_to_toml(model)))[0] == model
    numbers = _spec("{win = 2, tie = 1, lose = 0}", drop_prior=True)
    assert numbers.outcomes.parameters == () and numbers.outcomes.numbers == (2.0, 1.0, 0.0)


@pytest.mark.parametrize("outcomes,drop_prior,extra,words", [
    ('{win = "a", tie = "b", lose = "a"}', False, "", "names only parameters; give at least one outcome a number"),
    ('{win = "a", tie = 1, lose = 0}', True, "", "outcome parameter 'a' has no prior; add [payoff.prior] a = "),
    ('{win = 2, tie = 1, lose = 0}', False, "", "rps.toml [payoff.prior]: 'a' is not a parameter of 'outcomes'"),
    ('{win = true, tie = 1, lose = 0}', False, "", "outcome 'win' must be a finite number or a parameter name"),
    ('{win = "2a", tie = 1, lose = 0}', False, "", "a parameter name is letters, digits and '_'"),
    ("{}", False, "", "'outcomes' must be a table label = number or parameter name"),
    ('{win = "beta", tie = 1, lose = 0}', True, '[payoff.prior]\nbeta = {dist = "normal", loc = 0, scale = 1}\n',
     "outcome parameter 'beta' has the name of another parameter"),
])
def test_spec_outcome_errors(outcomes, drop_prior, extra, words):
    with pytest.raises(SpecError) as err:
        _spec(outcomes, drop_prior, extra)
    message = str(err.value)
    assert words in message and "\n" not in message and message.startswith("rps.toml")


def test_spec_column_needs_outcomes_and_may_not_be_payoff():
    base = SPEC.split("[payoff]")[0]
    for payoff, words in (('[payoff]\ncolumn = "result"\n', "'column' is given without 'outcomes'"),
                          ('[payoff]\ncolumn = "payoff"\noutcomes = {win = 1, lose = 0}\n', "'column' must name")):
        with pytest.raises(SpecError, match=words):
            parse_spec(tomllib.loads(base + payoff), source="rps.toml")


# ------------------------------------------------------------------ mapping


def test_outcome_mapping_equals_a_hand_built_payoff_column():
    model = _spec()
    _, sim = _simulate(model)
    data = _with_results(sim, model, drop=0.2)
    codes = observed_payoffs(data)
    mapped = np.asarray(model.outcomes.payoffs({"a": jnp.asarray(2.5)}, codes))
    value = {"win": 2.5, "tie": 1.0, "lose": 0.0}
    want = np.full(data.mask.shape, np.nan)
    frame = data.to_dataframe()
    for row in frame.itertuples():
        if row.result:
            want[data.episode_labels.index(row.episode), row.round, data.agent_labels.index(row.agent)] = value[row.result]
    np.testing.assert_array_equal(mapped, want)
    assert np.isnan(mapped).any() and (~np.isnan(mapped)).sum() > 50


def test_numbers_give_the_same_likelihood_as_the_payoff_column():
    """Outcomes mapped to numbers: the per-episode log-likelihood (actions + payoff density)
    of every draw equals that of the hand-built ``payoff`` column under a spec without outcomes;
    and an outcome parameter set to the same number gives the same again."""
    numbers = _spec("{win = 2, tie = 1, lose = 0}", drop_prior=True)
    plain = _replace(numbers, outcomes=None)
    params, sim = _simulate(numbers)
    data = _with_results(sim, numbers, drop=0.3)
    payoff = np.asarray(numbers.outcomes.payoffs({}, observed_payoffs(data)), np.float64)
    with_payoff = Trajectories.from_arrays(sim.actions, payoff=payoff, action_labels=ACTIONS,
                                           agent_labels=sim.agent_labels)
    check_data(data, numbers)
    check_data(with_payoff, plain)
    draws = {"mechanism": {"payoffs": jnp.asarray(params["mechanism"]["payoffs"])[None]},
             "learner": {k: jnp.full((1,), v) for k, v in params["learner"].items()},
             "payoff_sigma": jnp.full((1,), 0.3)}
    args = (jnp.asarray(data.actions), jnp.asarray(data.mask))
    got = draws_log_likelihoods(numbers, draws, *args, observed_payoffs(data))
    want = draws_log_likelihoods(plain, draws, *args, observed_payoffs(with_payoff))
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    model = _spec()
    check_data(data, model)
    again = draws_log_likelihoods(model, {**draws, "outcome": {"a": jnp.full((1,), 2.0)}}, *args, observed_payoffs(data))
    np.testing.assert_array_equal(np.asarray(again), np.asarray(want))


def test_outcomes_pin_the_levels_and_the_scale():
    """Observed outcomes lift the payoff gauge (all 18 table entries are free, not 12), and
    with two numbers among the outcomes a prior on beta is allowed; with one it is refused."""
    from numpyro import handlers

    model = _spec()
    _, sim = _simulate(model)
    data = _with_results(sim, model)
    trace = handlers.trace(handlers.seed(sample_params, 0)).get_trace(model, 4, observed_payoffs(data) is not None)
    assert trace["free_payoffs"]["value"].shape == (18,) and "a" in trace
    beta_prior = 'beta = {dist = "lognormal", loc = 0.5, scale = 0.5}'
    two = SPEC.replace("OUTCOMES", '{win = "a", tie = 1, lose = 0}').replace("beta = 2.0", beta_prior)
    check_identifiable_setup(parse_spec(tomllib.loads(two))[0], data)
    one = SPEC.replace("OUTCOMES", '{win = "a", tie = 1, lose = "a"}').replace("beta = 2.0", beta_prior)
    with pytest.raises(SpecError, match="fewer than two different numbers"):
        check_identifiable_setup(parse_spec(tomllib.loads(one))[0], data)


def test_identifiability_sees_the_levels_pinned():
    """The identifiability report's prior draws lift the gauge as the fit did: no table entry
    is 'fixed by the gauge', and no note calls the levels unidentified."""
    model = _spec()
    _, sim = _simulate(model)
    fit = bd.fit(model, _with_results(sim, model), method="map", seed=0, steps=20, restarts=1, progress=False,
                 ppc=False)
    report = fit.identifiability(seed=0)
    assert (report.parameters["prior_sd"] > 0).all()
    assert not any("levels are not identified" in note for note in report.notes)
    assert "a" in fit.posterior and "a" in fit.summary().index


def _replace(model, **changes):
    import dataclasses

    return dataclasses.replace(model, **changes)


# ------------------------------------------------------------------ data files


def _write(tmp_path, rows, header="episode,round,agent,action,result"):
    path = tmp_path / "rps.csv"
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


ROWS = ["1,0,player,rock,win", "1,0,opponent,scissors,lose", "1,1,player,paper,tie", "1,1,opponent,paper,"]


def test_load_data_reads_the_outcome_column(tmp_path):
    model = _spec()
    data = load_data(_write(tmp_path, ROWS), model)
    assert data.outcome.column == "result" and data.outcome.labels == ("win", "tie", "lose")
    np.testing.assert_array_equal(data.outcome.codes[0], [[2, 0], [-1, 1]])  # agents: opponent, player
    assert data.payoff is None
    data.to_csv(tmp_path / "back.csv")
    assert load_data(tmp_path / "back.csv", model) == data
    data.to_parquet(tmp_path / "back.parquet")
    assert load_data(tmp_path / "back.parquet", model) == data


@pytest.mark.parametrize("rows,header,words", [
    (ROWS[:2] + ["1,1,player,paper,draw"], None, "line 4, column 'result': outcome 'draw' is not in [payoff] outcomes; "
                                                 "expected one of 'win', 'tie', 'lose'"),
    ([r + ",1.0" for r in ROWS], "episode,round,agent,action,result,payoff", "columns 'payoff' and 'result' both give"),
    ([r.rsplit(",", 1)[0] for r in ROWS], "episode,round,agent,action", "[payoff] outcomes read column 'result', which"),
])
def test_bad_outcome_data_is_refused_in_one_line(tmp_path, rows, header, words):
    path = _write(tmp_path, rows, header or "episode,round,agent,action,result")
    with pytest.raises(DataError) as err:
        load_data(path, _spec())
    assert words in str(err.value) and "\n" not in str(err.value)


def test_outcome_column_without_a_spec_rule_is_refused(tmp_path):
    data = Trajectories.from_csv(_write(tmp_path, ROWS), outcomes=("result", None))
    assert data.outcome.labels == ("lose", "tie", "win")
    plain = parse_spec(tomllib.loads(SPEC.split("[payoff]")[0]))[0]
    with pytest.raises(DataError, match="has no \\[payoff\\] outcomes"):
        check_data(data, plain)
    with pytest.raises(DataError, match="read the data with load_data"):
        check_data(data, _spec())  # labels in another order than the spec's


def test_cli_bad_outcome_label_exits_2_and_writes_nothing(tmp_path, capsys):
    spec = tmp_path / "rps.toml"
    spec.write_text(SPEC.replace("OUTCOMES", '{win = "a", tie = 1, lose = 0}'))
    data = _write(tmp_path, ROWS[:2] + ["1,1,player,paper,Win", "1,1,opponent,paper,lose"])
    out = tmp_path / "run"
    status, _, err = run_cli(capsys, "fit", spec, "--data", data, "--out", out, "--seed", 0, "--method", "map")
    one_error_line(status, err, f"{data}, line 4, column 'result'", "outcome 'Win' is not in [payoff] outcomes")
    assert not out.exists()


# ------------------------------------------------------------------ recovery


@pytest.mark.slow
def test_recovers_the_payoff_of_a_win():
    """RPS play of two logit-Q learners under win = a = 2, tie = 1, lose = 0, the player's
    outcomes recorded and the opponent exogenous (``[game] modelled = ["player"]``); MAP +
    Laplace (~7 s a data set). Eight data sets of 20 episodes x 50 rounds: a calibrated 90%
    interval misses with probability 0.1, so at least 6 of 8 must hold 2 (a calibrated
    method fails that with probability P(Binomial(8, 0.9) <= 5) = 0.04; seeds fixed: 7 of 8
    do here, medians 1.85-2.16)."""
    model = _replace(_spec(), modelled=("player",))
    covered, estimates = 0, []
    for seed in range(8):
        _, sim = _simulate(model, num_episodes=20, num_rounds=50, seed=seed)
        data = _with_results(sim, model, drop=0.0, seed=seed)
        fit = bd.fit(model, data, method="map", seed=seed, laplace=True, steps=3000, restarts=1,
                     progress=False, ppc=False)
        a = np.asarray(fit.posterior["a"]).ravel()
        low, high = np.quantile(a, [0.05, 0.95])
        covered += low <= 2.0 <= high
        estimates.append((round(float(low), 2), round(float(np.median(a)), 2), round(float(high), 2)))
    assert "a" in fit.summary().index
    assert covered >= 6, estimates


def test_the_schema_documents_example_reads(tmp_path):
    """models/README.md's WXZ layout and spec (text blocks, so test_docs does not check them)."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "models" / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### Outcome columns"):readme.index("## Example")]
    rows, spec = re.findall(r"```text\n(.*?)```", section, re.S)
    (tmp_path / "wxz.toml").write_text(spec)
    (tmp_path / "wxz.csv").write_text(rows)
    model = bd.read_spec(tmp_path / "wxz.toml")[0]
    data = load_data(tmp_path / "wxz.csv", model)
    assert model.modelled == ("player",) and model.outcomes.parameters == ("a",)
    np.testing.assert_array_equal(data.outcome.codes[0], [[2, 0], [1, 1]])
    check_identifiable_setup(model, data)  # beta's prior: tie = 1 and lose = 0 pin the scale
