"""Counterfactual simulation under interventions (docs/design.md §5), against independent references.

A tiny congestion game (3 agents x 3 resources) with posterior draws of known values
(the truth plus small noise), so every expectation is computable without fitting.
References: a plain-NumPy Monte Carlo of logit-Q play written from docs/design.md §2, and the
payoffs of ``tests/reference.py`` recomputed from the simulated actions.
"""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from matplotlib.figure import Figure

import bayes_diml as bd
from bayes_diml.inference import counterfactual as cf_module
from bayes_diml.inference.counterfactual import CounterfactualResult, counterfactual
from bayes_diml.inference.results import Fit
from bayes_diml.learners import logit_q
from bayes_diml.mechanisms import Congestion
from bayes_diml.model import Model
from bayes_diml.priors import Prior

import reference

N, A = 3, 3
TRUTH = {"c1": np.array([0.2, 0.3, 0.25]), "c2": np.array([0.1, 0.05, 0.12]), "tau": np.array([0.1, 0.0, 0.15])}
LEARNER = {"alpha": 0.3, "beta": 3.0, "eps": 0.05}
ACTION_LABELS = ("north", "centre", "south")
FIRST_ROUND = 5

NUM_SD = 5.0
"""Monte Carlo comparisons allow this many standard errors (about 40 entries are
compared per test, so a correct simulator fails with probability < 1e-4)."""
FLOAT32_TOL = 1e-5
"""Relative/absolute tolerance for float32 package vs float64 reference arithmetic."""
E, T = 20, 6
"""Episodes and rounds of most tests (one shape: their simulations share a compilation)."""


def make_model(**learner_overrides) -> Model:
    return Model(mechanism=Congestion(N, A), learner=logit_q, learner_params={**LEARNER, **learner_overrides})


def make_fit(
    model: Model,
    num_draws: int = 4,
    noise: float = 0.01,
    seed: int = 0,
    learner_draws=None,
    chains: int = 1,
    truth=None,
) -> Fit:
    """A Fit whose mechanism draws are the truth plus N(0, noise) noise."""
    rng = np.random.default_rng(seed)
    truth = TRUTH if truth is None else truth
    posterior = {k: v + noise * rng.normal(size=(chains, num_draws, A)) for k, v in truth.items()}
    posterior.update({k: np.asarray(v, float).reshape(chains, num_draws) for k, v in (learner_draws or {}).items()})
    data = bd.Trajectories.from_arrays(
        np.zeros((2, 3, N), int), num_actions=A, action_labels=ACTION_LABELS, first_round=FIRST_ROUND
    )
    return Fit(model=model, data=data, method="nuts", posterior=posterior, sample_stats=None, info={})


MODEL = make_model()


@pytest.fixture(scope="module")
def fit() -> Fit:
    return make_fit(MODEL)


# ---------------------------------------------------------------- NumPy reference
def numpy_simulate(mech: dict, learner: dict, num_episodes: int, num_rounds: int, rng):
    """Logit-Q play in the congestion game, vectorised over episodes (docs/design.md §2, §4).

    Returns per-episode action frequencies over agents ``(E, T, A)`` and welfare
    (sum of realised payoffs) ``(E, T)``.
    """
    c1, c2, tau = (np.asarray(mech[k], np.float64) for k in ("c1", "c2", "tau"))
    alpha, beta, eps = learner["alpha"], learner["beta"], learner["eps"]
    E = num_episodes
    Q = np.zeros((E, N, A))
    freq = np.zeros((E, num_rounds, A))
    welfare = np.zeros((E, num_rounds))
    for t in range(num_rounds):
        z = beta * Q
        p = np.exp(z - z.max(axis=-1, keepdims=True))
        p = (1 - eps) * p / p.sum(axis=-1, keepdims=True) + eps / A
        u = rng.random((E, N, 1))
        actions = np.minimum((u > np.cumsum(p, axis=-1)).sum(axis=-1), A - 1)  # (E, N)
        onehot = np.eye(A)[actions]  # (E, N, A)
        counts = onehot.sum(axis=1)  # (E, A)
        freq[:, t] = counts / N
        load = np.take_along_axis(counts, actions, axis=1)  # own resource's load, (E, N)
        welfare[:, t] = (-(c1[actions] * load + c2[actions] * load**2) + tau[actions] * load).sum(axis=1)
        cf_load = counts[:, None, :] - onehot + 1.0  # load on k had agent i joined it
        U = -(c1 * cf_load + c2 * cf_load**2) + tau * cf_load
        Q = (1 - alpha) * Q + alpha * U
    return freq, welfare


# ------------------------------------------------------------------------- tests
def test_tiny_beta_gives_uniform_play(fit):
    E = 1000
    result = counterfactual(fit, learner={"beta": 1e-6}, num_episodes=E, num_rounds=T, seed=1)
    freq = result.draws["frequency"]
    assert freq.shape == (4, T, A)
    np.testing.assert_allclose(freq.sum(axis=-1), 1.0, atol=FLOAT32_TOL)
    # near-uniform play: every agent's action is an independent uniform draw
    se_entry = np.sqrt((1 / A) * (1 - 1 / A) / (E * N))
    assert np.abs(freq - 1 / A).max() < NUM_SD * se_entry
    se_pooled = se_entry / np.sqrt(freq.shape[0] * T)
    assert np.abs(freq.mean(axis=(0, 1)) - 1 / A).max() < NUM_SD * se_pooled
    table = result.frequencies
    assert (table["q05"] <= table["mean"] + 1e-12).all() and (table["mean"] <= table["q95"] + 1e-12).all()


def test_matches_numpy_monte_carlo():
    """One draw at the truth: mean frequencies and welfare agree with an independent
    NumPy Monte Carlo within NUM_SD standard errors of the difference of two means."""
    E, T = 3000, 8
    truth = {**TRUTH, "tau": np.array([0.8, 0.0, 0.4])}  # clear preferences: play moves visibly
    one = make_fit(make_model(), num_draws=1, noise=0.0, truth=truth)
    result = counterfactual(one, num_episodes=E, num_rounds=T, seed=3)
    freq_ref, welfare_ref = numpy_simulate(truth, LEARNER, E, T, np.random.default_rng(11))
    # standard errors from the episode-level spread (agents in an episode are dependent)
    se_freq = np.sqrt(2 * freq_ref.var(axis=0, ddof=1) / E)
    se_welfare = np.sqrt(2 * welfare_ref.var(axis=0, ddof=1) / E)
    got_freq, got_welfare = result.draws["frequency"][0], result.draws["welfare"][0]
    assert np.all(np.abs(got_freq - freq_ref.mean(axis=0)) <= NUM_SD * se_freq + 1e-9)
    assert np.all(np.abs(got_welfare - welfare_ref.mean(axis=0)) <= NUM_SD * se_welfare)
    # play does move away from uniform, so the comparison has power
    assert np.abs(freq_ref.mean(axis=0)[-1] - 1 / A).max() > 10 * se_freq[-1].max()


def test_welfare_and_frequencies_recomputed_from_actions(fit):
    result = counterfactual(fit, num_episodes=E, num_rounds=T, seed=4, return_actions=True)
    actions = result.draws["actions"]
    S = actions.shape[0]
    assert actions.shape == (S, E, T, N) and actions.min() >= 0 and actions.max() < A
    params = fit.params_draws(fit.thinned_index(200))["mechanism"]
    for s in range(S):
        mech = {k: np.asarray(v[s], np.float64) for k, v in params.items()}
        realised = np.array(
            [
                [reference.payoffs("congestion", mech, actions[s, e, t], num_actions=A).sum() for t in range(T)]
                for e in range(E)
            ]
        )
        welfare = realised.mean(axis=0)
        np.testing.assert_allclose(result.draws["welfare"][s], welfare, rtol=FLOAT32_TOL, atol=FLOAT32_TOL)
        onehot = np.eye(A)[actions[s]]  # (E, T, n, A)
        np.testing.assert_allclose(result.draws["frequency"][s], onehot.mean(axis=(0, 2)), atol=1e-6)
        np.testing.assert_allclose(result.draws["agent_frequency"][s], onehot.mean(axis=0), atol=1e-6)
    np.testing.assert_array_equal(result.draws["draw"], fit.thinned_index(200))


def test_toll_increase_drives_play_to_the_resource(fit):
    baseline = fit.counterfactual(num_episodes=E, num_rounds=T, seed=5)
    tolled = fit.counterfactual(mechanism={"tau": ("+", [2.0, 0.0, 0.0])}, num_episodes=E, num_rounds=T, seed=5)
    absolute = fit.counterfactual(mechanism={"tau": [3.0, 0.0, 0.0]}, num_episodes=E, num_rounds=T, seed=5)
    for result in (tolled, absolute):
        diff = result.compare(baseline)
        row = diff[(diff["quantity"] == "frequency") & (diff["action"] == "north")].iloc[0]
        assert row["q05"] > 0.3 and row["p_positive"] == 1.0
        assert result.draws["frequency"][:, -1, 0].min() > 0.8
        assert diff.attrs["common_random_numbers"]
        welfare = diff[diff["quantity"] == "welfare"].iloc[0]
        assert welfare["q05"] > 0  # tolls are paid to the agents in this family
    same = baseline.compare(baseline)
    np.testing.assert_array_equal(same[["mean", "q05", "q95"]].to_numpy(), 0.0)
    assert tolled.intervention["mechanism"] == {"set": {"tau": {"op": "+", "value": [2.0, 0.0, 0.0]}}}


def test_relative_mechanism_changes(fit):
    params = fit.params_draws(fit.thinned_index(200))["mechanism"]
    plus = counterfactual(fit, mechanism={"c2": ("*", [2.0, 1.0, 0.5])}, num_episodes=E, num_rounds=T, seed=6)
    as_absolute = make_fit(MODEL)
    as_absolute.posterior["c2"] = np.asarray(params["c2"])[None] * np.array([2.0, 1.0, 0.5])
    ref = counterfactual(as_absolute, num_episodes=E, num_rounds=T, seed=6)
    np.testing.assert_array_equal(plus.draws["frequency"], ref.draws["frequency"])


def test_learner_overrides_equal_refits_with_those_values():
    """'*f' multiplies each draw's value; a number sets it: both equal a Fit whose draws
    already carry the changed values (same seed -> same keys -> identical play)."""
    prior = Prior.parse({"dist": "beta", "a": 2.0, "b": 5.0}, "test")
    alphas = np.array([0.2, 0.4, 0.6, 0.8])
    model = make_model(alpha=prior)
    varying = make_fit(model, learner_draws={"alpha": alphas})
    halved = make_fit(model, learner_draws={"alpha": alphas * 0.5})
    got = counterfactual(varying, learner={"alpha": "*0.5"}, num_episodes=E, num_rounds=T, seed=7)
    want = counterfactual(halved, num_episodes=E, num_rounds=T, seed=7)
    np.testing.assert_array_equal(got.draws["frequency"], want.draws["frequency"])
    np.testing.assert_array_equal(got.draws["welfare"], want.draws["welfare"])
    assert got.intervention["learner"] == {"alpha": "*0.5"}

    got = counterfactual(varying, learner={"alpha": 0.25}, num_episodes=E, num_rounds=T, seed=7)
    constant = make_fit(model, learner_draws={"alpha": np.full(4, 0.25)})
    want = counterfactual(constant, num_episodes=E, num_rounds=T, seed=7)
    np.testing.assert_array_equal(got.draws["frequency"], want.draws["frequency"])
    got = counterfactual(make_fit(MODEL), learner={"beta": 1.5}, num_episodes=E, num_rounds=T, seed=7)
    assert got.intervention["learner"] == {"beta": 1.5}

    # the paper's shifted learner is accepted and changes play
    shifted = counterfactual(
        varying, learner={"alpha": "*0.6", "beta": "*1.4", "eps": "*1.5"}, num_episodes=E, num_rounds=T, seed=7
    )
    plain = counterfactual(varying, num_episodes=E, num_rounds=T, seed=7)
    assert not np.array_equal(shifted.draws["frequency"], plain.draws["frequency"])


def test_new_mechanism_equals_overriding_every_parameter(fit):
    new = {k: v * 1.5 for k, v in TRUTH.items()}
    via_tuple = counterfactual(fit, mechanism=(Congestion(N, A), new), num_episodes=E, num_rounds=T, seed=8)
    via_dict = counterfactual(fit, mechanism=new, num_episodes=E, num_rounds=T, seed=8)
    np.testing.assert_array_equal(via_tuple.draws["frequency"], via_dict.draws["frequency"])
    np.testing.assert_allclose(via_tuple.draws["welfare"], via_dict.draws["welfare"], rtol=FLOAT32_TOL)
    assert via_tuple.intervention["mechanism"]["family"] == "congestion"


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        ({"mechanism": {"toll": [1.0, 0.0, 0.0]}}, bd.DataError, ["'toll'", "tau"]),
        ({"mechanism": {"tau": [1.0, 0.0]}}, bd.DataError, ["'tau'", "(3,)", "(2,)"]),
        ({"mechanism": {"tau": [[1.0, 0.0, 0.0]]}}, bd.DataError, ["'tau'", "(3,)", "(1, 3)"]),
        ({"mechanism": {"c2": [np.nan, 0.0, 0.0]}}, bd.DataError, ["'c2'", "finite"]),
        ({"mechanism": {"c1": [np.inf, 0.0, 0.0]}}, bd.DataError, ["'c1'", "finite"]),
        ({"mechanism": {"tau": ("-", [1.0, 0.0, 0.0])}}, bd.DataError, ["'tau'", "'-'"]),
        ({"mechanism": {"tau": "big"}}, bd.DataError, ["'tau'"]),
        ({"mechanism": "tolls"}, bd.DataError, ["mechanism must be"]),
        ({"mechanism": (Congestion(N, A + 1), TRUTH)}, bd.DataError, ["4 actions"]),
        ({"mechanism": (Congestion(N, A), {"c1": TRUTH["c1"]})}, bd.SpecError, ["missing", "c2"]),
        ({"learner": {"gamma": 1.0}}, bd.DataError, ["'gamma'"]),
        ({"learner": {"alpha": "x0.6"}}, bd.DataError, ["'alpha'", "*factor"]),
        ({"learner": {"alpha": "*nan"}}, bd.DataError, ["'alpha'"]),
        ({"learner": {"alpha": [0.1, 0.2]}}, bd.DataError, ["'alpha'", "(2,)"]),
        ({"learner": {"eps": "*100"}}, bd.SpecError, ["'eps'", "[0, 1)"]),
        ({"learner": {"beta": -1.0}}, bd.SpecError, ["'beta'", "> 0"]),
        ({"learner": {"alpha": True}}, bd.DataError, ["'alpha'"]),
        ({"learner": {"q0": np.zeros((2, 2))}}, bd.DataError, ["'q0'"]),
        ({"num_episodes": 0}, bd.DataError, ["num_episodes"]),
        ({"max_draws": 0}, bd.DataError, ["max_draws"]),
    ],
)
def test_bad_interventions_are_refused(fit, kwargs, error, words):
    settings = {"num_episodes": 2, "num_rounds": 2, "seed": 0, **kwargs}
    with pytest.raises(error) as info:
        counterfactual(fit, **settings)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_initial_state_override_biases_early_play(fit):
    q0 = np.array([0.0, 0.0, 3.0])  # every agent starts convinced that 'south' pays
    result = counterfactual(fit, learner={"q0": q0}, num_episodes=E, num_rounds=T, seed=9)
    assert result.draws["frequency"][:, 0, 2].min() > 0.9


def test_frames_plot_keys_chunking_and_thinning(monkeypatch):
    fit2 = make_fit(MODEL, num_draws=10, chains=2)
    result = fit2.counterfactual(num_episodes=E, num_rounds=T, seed=10, max_draws=6)
    assert isinstance(result, CounterfactualResult)
    np.testing.assert_array_equal(result.draws["draw"], fit2.thinned_index(6))
    S = result.draws["draw"].size
    # frames
    rounds = list(range(FIRST_ROUND, FIRST_ROUND + T))
    assert list(result.frequencies.columns) == ["round", "action", "mean", "q05", "q95"]
    assert list(result.frequencies["round"].unique()) == rounds
    assert list(result.frequencies["action"][:A]) == list(ACTION_LABELS)
    assert list(result.welfare.columns) == ["round", "mean", "q05", "q95"] and list(result.welfare["round"]) == rounds
    frame = result.to_frame()
    assert list(frame.columns) == ["quantity", "round", "action", "mean", "q05", "q95"]
    assert (frame["quantity"] == "frequency").sum() == T * A and (frame["quantity"] == "welfare").sum() == T
    assert frame.loc[frame["quantity"] == "welfare", "action"].isna().all()
    assert len(result.agent_frequencies()) == T * N * A
    json.dumps(result.intervention)
    # figures (no pyplot state)
    assert isinstance(result.plot(), Figure)
    fig = Figure()
    assert result.plot(ax=fig.subplots()) is fig
    # a JAX key gives the same play as the int it came from
    keyed = counterfactual(fit2, num_episodes=E, num_rounds=T, seed=jax.random.key(10), max_draws=6)
    np.testing.assert_array_equal(keyed.draws["frequency"], result.draws["frequency"])
    # chunking (draws in several batches, welfare rows in chunks) changes nothing
    # (and per-agent frequencies are dropped above PER_AGENT_MAX)
    monkeypatch.setattr(cf_module, "CHUNK_ELEMENTS", E * T * N * 4)
    monkeypatch.setattr(cf_module, "PER_AGENT_MAX", N * A - 1)
    assert cf_module._batch_sizes(S, E, T, N, A, False)[0] < S
    chunked = counterfactual(fit2, num_episodes=E, num_rounds=T, seed=10, max_draws=6)
    assert "agent_frequency" not in chunked.draws
    with pytest.raises(bd.DataError, match="per-agent"):
        chunked.agent_frequencies()
    np.testing.assert_array_equal(chunked.draws["frequency"], result.draws["frequency"])
    np.testing.assert_allclose(chunked.draws["welfare"], result.draws["welfare"], rtol=FLOAT32_TOL)
    # comparing results over different draws is refused
    other = counterfactual(make_fit(MODEL), num_episodes=E, num_rounds=T, seed=10)
    with pytest.raises(bd.DataError, match="different posterior draws"):
        result.compare(other)

