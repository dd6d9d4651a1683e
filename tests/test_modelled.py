"""``[game] modelled``: only the modelled agents' play is scored; the others' actions are data.

References: ``reference.episode_log_likelihood(..., scored=...)``, a plain loop that sums the
modelled agents' played log-probabilities only, while every agent's observed action enters
the payoffs; and the Normal log density of observed payoffs summed by hand.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bayes_diml as bd
from bayes_diml.errors import DataError, SpecError
from bayes_diml.inference.numpyro_model import draws_log_likelihoods, payoff_log_likelihoods
from bayes_diml.likelihood import log_likelihood_per_episode
from bayes_diml.spec import model_to_toml, parse_spec

import reference as ref
from conftest import build_case, make_data

RTOL = 2e-5  # float32 package vs float64 loop, a few dozen terms per episode


def _modelled(case, modelled):
    return dataclasses.replace(case.model, modelled=modelled)


def _reference(case, params, actions, mask, scored):
    learner = {k: np.asarray(v, np.float64) for k, v in params["learner"].items()}
    return np.array([
        ref.episode_log_likelihood(case.family, params["mechanism"], case.learner_name, learner, actions[e], mask[e],
                                   num_actions=case.num_actions, scored=scored, **case.features)[0]
        for e in range(actions.shape[0])
    ])


@pytest.mark.parametrize("case_id,learner_name,kind", [
    ("tabular", "logit_q", "full"),
    ("congestion", "ewa", "absent"),
])
def test_modelled_likelihood_matches_numpy_loop(case_id, learner_name, kind):
    case = build_case(case_id, learner_name)
    model = _modelled(case, [2, 0])
    assert model.modelled == (0, 2) and model.scored_agents.tolist() == [True, False, True]
    actions, mask = make_data(np.random.default_rng(3), case, 4, 6, kind)
    want = _reference(case, case.params, actions, mask, scored=[True, False, True])
    for options in ({}, {"round_chunk": 4}, {"episode_batch": 2}):
        got = log_likelihood_per_episode(model, case.params, (actions, mask), **options)
        np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=RTOL, err_msg=str(options))
    # every agent modelled: the whole likelihood, as before
    everyone = _modelled(case, [0, 1, 2])
    assert everyone.scored_agents is None
    np.testing.assert_allclose(np.asarray(log_likelihood_per_episode(everyone, case.params, (actions, mask))),
                               _reference(case, case.params, actions, mask, scored=None), rtol=RTOL)


def test_unmodelled_policy_parameters_do_not_matter_but_its_actions_do():
    case = build_case("tabular", "logit_q")
    model = _modelled(case, [0, 2])
    actions, mask = make_data(np.random.default_rng(5), case, 3, 8, "full")
    learner = {k: jnp.full((3,), v) for k, v in case.params["learner"].items()}
    params = {"mechanism": case.params["mechanism"], "learner": learner}
    base = np.asarray(log_likelihood_per_episode(model, params, (actions, mask)))
    # agent 1 is unmodelled: its own beta, alpha and initial propensities do not enter
    other = {**learner, "beta": learner["beta"].at[1].set(0.1), "alpha": learner["alpha"].at[1].set(0.9)}
    q0 = jnp.zeros((3, case.num_actions)).at[1].set(jnp.array([3.0, -1.0, 0.5]))
    same = log_likelihood_per_episode(model, {**params, "learner": other, "initial": q0}, (actions, mask))
    np.testing.assert_array_equal(np.asarray(same), base)
    # a modelled agent's beta does enter
    moved = {**learner, "beta": learner["beta"].at[0].set(0.1)}
    assert np.all(np.asarray(log_likelihood_per_episode(model, {**params, "learner": moved}, (actions, mask))) != base)
    # agent 1's actions are data in the others' payoffs: changing them changes the modelled agents' likelihood
    changed = actions.copy()
    changed[:, :-1, 1] = (changed[:, :-1, 1] + 1) % case.num_actions
    got = np.asarray(log_likelihood_per_episode(model, params, (changed, mask)))
    assert np.all(np.abs(got - base) > 1e-4)
    np.testing.assert_allclose(got, _reference(case, params, changed, mask, [True, False, True]), rtol=RTOL)


def test_payoff_likelihood_scores_only_modelled_agents():
    case = build_case("congestion", "logit_q")
    model = _modelled(case, [1])
    actions, mask = make_data(np.random.default_rng(7), case, 3, 5, "absent")
    rng = np.random.default_rng(8)
    payoff = np.where(mask | (rng.random(mask.shape) < 0.3), np.nan, rng.normal(size=mask.shape))
    params = {**case.params, "payoff_sigma": 0.7}
    got = np.asarray(payoff_log_likelihoods(model, params, jnp.asarray(actions), jnp.asarray(mask), jnp.asarray(payoff)))
    mech = {k: np.asarray(v, np.float64) for k, v in case.params["mechanism"].items()}
    want = np.zeros(actions.shape[0])
    for e, t in np.ndindex(actions.shape[:2]):
        present = ~mask[e, t]
        if present[1] and np.isfinite(payoff[e, t, 1]):
            mean = ref.agent_payoff("congestion", mech, actions[e, t], present, 1, num_actions=case.num_actions)
            want[e] += -0.5 * ((payoff[e, t, 1] - mean) / 0.7) ** 2 - math.log(0.7 * math.sqrt(2 * math.pi))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # LOO's per-episode log-likelihoods: the modelled agents' actions (NumPy loop) plus their payoffs
    draws = jax.tree.map(lambda v: jnp.asarray(v)[None], params)
    loo = draws_log_likelihoods(model, draws, jnp.asarray(actions), jnp.asarray(mask), jnp.asarray(payoff))[0]
    actions_only = _reference(case, case.params, actions, mask, scored=[False, True, False])
    np.testing.assert_allclose(np.asarray(loo, np.float64), actions_only + want, rtol=RTOL, atol=1e-4)
    # an unmodelled agent's observed payoffs do not count
    other = payoff.copy()
    other[..., [0, 2]] = np.where(np.isnan(other[..., [0, 2]]), np.nan, 100.0)
    again = payoff_log_likelihoods(model, params, jnp.asarray(actions), jnp.asarray(mask), jnp.asarray(other))
    np.testing.assert_array_equal(np.asarray(again), got)


# ------------------------------------------------------------------ spec

_SPEC = """
[game]
agents = 2
actions = 3
action_labels = ["paper", "rock", "scissors"]
agent_labels = ["opponent", "player"]
modelled = MODELLED

[mechanism]
family = "tabular"

[learner]
rule = "logit_q"
alpha = 0.3
beta = 1.0
eps = 0.0
"""


def _spec(modelled: str, agent_labels=True):
    text = _SPEC.replace("MODELLED", modelled)
    if not agent_labels:
        text = text.replace('agent_labels = ["opponent", "player"]\n', "")
    return parse_spec(tomllib.loads(text), source="rps.toml")[0]


def test_spec_modelled_round_trips():
    model = _spec('["player"]')
    assert model.modelled == ("player",) and model.scored_agents.tolist() == [False, True]
    assert parse_spec(tomllib.loads(model_to_toml(model)))[0] == model
    assert _spec('["opponent", "player"]').scored_agents is None
    assert _spec("[1]", agent_labels=False).scored_agents.tolist() == [False, True]


@pytest.mark.parametrize("modelled,agent_labels,words", [
    ('["playr"]', True, "modelled names 'playr', which is not an agent; agents: ['opponent', 'player']"),
    ("[]", True, "at least one agent's play must be modelled"),
    ('["player", "player"]', True, "lists an agent twice"),
    ('"player"', True, "'modelled' must be a list of agent labels"),
    ('["player"]', False, "name the agents with [game] agent_labels"),
    ("[2]", False, "modelled names 2, which is not an agent; agents: [0, 1]"),
])
def test_spec_modelled_errors(modelled, agent_labels, words):
    with pytest.raises(SpecError) as err:
        _spec(modelled, agent_labels)
    message = str(err.value)
    assert words in message and "\n" not in message and message.startswith("rps.toml")


def _tiny_fit(model, num_episodes=4):
    payoffs = np.random.default_rng(0).normal(size=(9, 2))
    params = {"mechanism": {"payoffs": payoffs}, "learner": {"alpha": 0.3, "beta": 1.0, "eps": 0.0}}
    data = bd.simulate(model, params, num_episodes=num_episodes, num_rounds=6, seed=1)
    return bd.fit(model, data, method="map", seed=0, steps=20, restarts=1, progress=False, ppc=False)


def test_counterfactual_replays_the_unmodelled_agents_observed_play():
    """Each simulated episode's opponent plays, round by round, the opponent's actions of one
    observed episode; the player is simulated. More rounds than observed are refused."""
    fit = _tiny_fit(_spec('["player"]'))
    observed = {tuple(episode) for episode in np.asarray(fit.data.actions)[:, :5, 0].tolist()}
    result = bd.counterfactual(fit, num_episodes=6, num_rounds=5, seed=0, max_draws=3, return_actions=True)
    actions = np.asarray(result.draws["actions"])  # (S, E, T, n)
    assert all(tuple(episode) in observed for episode in actions[:, :, :, 0].reshape(-1, 5).tolist())
    assert len({tuple(e) for e in actions[:, :, :, 1].reshape(-1, 5).tolist()}) > 1
    assert result.intervention["replayed"] == {"agents": ["opponent"], "observed_episodes": 4}
    again = bd.counterfactual(fit, num_episodes=6, num_rounds=5, seed=0, max_draws=3, return_actions=True,
                              learner={"beta": "*2"})
    np.testing.assert_array_equal(np.asarray(again.draws["actions"])[..., 0], actions[..., 0])  # paired
    with pytest.raises(DataError) as err:
        bd.counterfactual(fit, num_episodes=2, num_rounds=7, seed=0)
    message = str(err.value)
    assert "num_rounds = 7 but agents ['opponent'] are not modelled ([game] modelled = ['player'])" in message
    assert "at most 6 rounds" in message and "\n" not in message


def test_compare_refuses_fits_that_score_other_agents():
    fit = _tiny_fit(_spec('["player"]'))
    everyone = _tiny_fit(_spec('["opponent", "player"]'))
    with pytest.raises(DataError, match=r"\[game\] modelled"):
        bd.compare({"player": fit, "both": everyone})
