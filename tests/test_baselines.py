"""Baselines on tiny data: each against a known answer or a trivial competitor."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import numpy as np
import pytest

import bayes_diml as bd
from bayes_diml import baselines, metrics
from bayes_diml.errors import ResourceError, SpecError
from bayes_diml.learners import logit_q
from bayes_diml.mechanisms import Anonymous, Congestion, Tabular
from bayes_diml.model import Model

LEARNER = {"alpha": 0.25, "beta": 3.0, "eps": 0.06}


def _all_differences(num_agents: int, num_actions: int) -> np.ndarray:
    """Every (agent, k vs 0, opponent context) query of a small game."""
    rows = []
    for agent in range(num_agents):
        for index in range(num_actions**num_agents):
            joint = [(index // num_actions**j) % num_actions for j in range(num_agents)]
            if joint[agent] != 0:
                continue
            for k in range(1, num_actions):
                rows.append([agent, k, 0, *joint])
    return np.array(rows, np.int32)


def _tabular_truth(seed: int, n: int = 2, A: int = 2, scale: float = 1.0) -> dict:
    return {"payoffs": (scale * np.random.default_rng(seed).normal(size=(A**n, n))).astype(np.float32)}


def test_static_inverse_exact_for_memoryless_logit_responders():
    # alpha = 1: each round is an eps-logit response to the opponents' previous round, which is
    # the static inverse's model; 200 x 200 rounds put ~20 000 observations in each of the two
    # contexts per agent; payoffs of sd 0.3 keep beta * Delta near 1, so no probability comes
    # close to eps / A and the log-frequency error is ~0.02 / beta: 0.05 is 5+ sd.
    learner = {"alpha": 1.0, "beta": 3.0, "eps": 0.06}
    model = Model(Tabular(num_agents=2, num_actions=2), logit_q, learner)
    truth = _tabular_truth(3, scale=0.3)
    data = bd.simulate(model, {"mechanism": truth, "learner": learner}, num_episodes=200, num_rounds=200, seed=0)
    estimate = baselines.static_inverse(model, data)
    codes = _all_differences(2, 2)
    got = metrics.mechanism_differences(estimate.model.mechanism, estimate.params["mechanism"], codes)[0]
    want = metrics.mechanism_differences(model.mechanism, {"payoffs": truth["payoffs"][None]}, codes)[0]
    np.testing.assert_allclose(got, want, atol=0.05)


def test_static_inverse_counts_contexts_and_refusal():
    learner = {"alpha": 1.0, "beta": 3.0, "eps": 0.06}
    model = Model(Congestion(num_agents=3, num_actions=2), logit_q, learner)
    truth = {"c1": np.array([0.03, 0.1]), "c2": np.array([0.07, 0.02]), "tau": np.array([0.0, 0.03])}
    data = bd.simulate(model, {"mechanism": truth, "learner": learner}, num_episodes=100, num_rounds=200, seed=1)
    estimate = baselines.static_inverse(model, data)
    codes = _all_differences(3, 2)
    got = metrics.mechanism_differences(estimate.model.mechanism, estimate.params["mechanism"], codes)[0]
    want = metrics.mechanism_differences(model.mechanism, {k: v[None] for k, v in truth.items()}, codes)[0]
    np.testing.assert_allclose(got, want, atol=0.05)  # same reasoning: >= 6000 observations per context
    big = Model(Tabular(num_agents=8, num_actions=5), logit_q, LEARNER)
    with pytest.raises(SpecError, match="A\\*\\*n \\* n = 5\\*\\*8 \\* 8 = 3,125,000 payoff entries"):
        baselines.tabular_model(big)
    # E7's largest game: 40**300 * 300 has 484 digits and overflows a float; the message
    # gives it in scientific form (Decimal, an independent formatter, rounds to the same 3 digits)
    with pytest.raises(ResourceError, match=f"= about {'{:.2e}'.format(Decimal(40**300 * 300)).replace('+', '')} entries"):
        Tabular(num_agents=300, num_actions=40)  # the memory guard refuses the table itself
    huge = Model(Anonymous(num_agents=300, num_actions=40), logit_q, LEARNER)
    with pytest.raises(SpecError, match=f"= about {'{:.2e}'.format(Decimal(40**300 * 300)).replace('+', '')} payoff entries"):
        baselines.tabular_model(huge)


def test_tabular_map_recovers_two_by_two_differences():
    model = Model(Tabular(num_agents=2, num_actions=2), logit_q, LEARNER)
    truth = _tabular_truth(5)
    data = bd.simulate(model, {"mechanism": truth, "learner": LEARNER}, num_episodes=40, num_rounds=40, seed=2)
    estimate = baselines.tabular_map(model, data, seed=0, steps=400, restarts=1)
    codes = _all_differences(2, 2)
    got = metrics.mechanism_differences(estimate.model.mechanism, estimate.params["mechanism"], codes)[0]
    want = metrics.mechanism_differences(model.mechanism, {"payoffs": truth["payoffs"][None]}, codes)[0]
    # 1600 rounds over 4 differences: each pinned to ~0.1; relative error 0.1 is generous
    assert metrics.relative_difference_error(got, want) < 0.1, (got, want)
    assert estimate.num_draws == 1 and estimate.info["wall_seconds"] > 0


def test_maximum_likelihood_recovers_two_by_two_differences():
    model = Model(Tabular(num_agents=2, num_actions=2), logit_q, LEARNER)
    truth = _tabular_truth(6)
    data = bd.simulate(model, {"mechanism": truth, "learner": LEARNER}, num_episodes=40, num_rounds=40, seed=7)
    estimate = baselines.maximum_likelihood(model, data, seed=0, steps=400, learning_rate=0.05, l2_payoff=0.0)
    codes = _all_differences(2, 2)
    got = metrics.mechanism_differences(model.mechanism, estimate.params["mechanism"], codes)[0]
    want = metrics.mechanism_differences(model.mechanism, {"payoffs": truth["payoffs"][None]}, codes)[0]
    # as for tabular MAP: 1600 rounds pin 4 differences to ~0.1 each
    assert metrics.relative_difference_error(got, want) < 0.1, (got, want)
    assert estimate.info["seconds_per_epoch"] > 0 and estimate.num_draws == 1


@pytest.mark.slow
def test_wrong_learner_scales_differences_by_inverse_factor():
    # only beta * Delta is identified: under beta x 0.6 the fitted differences are ~ 1/0.6 times
    # the correctly specified ones (up to the weak prior's pull, a few per cent)
    model, truth = bd.read_spec(bd.default_spec_path())
    data = bd.simulate(model, truth, num_episodes=16, num_rounds=40, seed=3)
    right = baselines.structured_map(model, data, seed=0, steps=500, restarts=1)
    wrong = baselines.wrong_learner_map(model, data, seed=0, steps=500, restarts=1)
    codes = metrics.difference_queries(data.actions, data.mask, model.num_actions, 200, seed=0, distinct=True)
    d_right = metrics.mechanism_differences(model.mechanism, right.params["mechanism"], codes)[0]
    d_wrong = metrics.mechanism_differences(model.mechanism, wrong.params["mechanism"], codes)[0]
    slope = float(np.dot(d_right, d_wrong) / np.dot(d_right, d_right))
    assert slope == pytest.approx(1 / 0.6, rel=0.08)
    assert float(wrong.model.learner_params["beta"]) == pytest.approx(1.8)


def test_behaviour_cloning_beats_uniform_on_held_out_play():
    model = Model(Tabular(num_agents=2, num_actions=3), logit_q, LEARNER)
    truth = {"payoffs": np.array([[0, 0], [1, 1], [2, 0], [0, 2], [2, 2], [0, 1], [1, 0], [1, 1], [3, 3]], np.float32)}
    data = bd.simulate(model, {"mechanism": truth, "learner": LEARNER}, num_episodes=50, num_rounds=30, seed=4)
    train = bd.Trajectories.from_arrays(data.actions[:40], num_actions=3)
    test = bd.Trajectories.from_arrays(data.actions[40:], num_actions=3)
    estimate = baselines.behaviour_cloning(model, train, seed=0, hidden=32, steps=200)
    assert not estimate.has_mechanism
    log_pi = estimate.behaviour(test)
    assert log_pi.shape == (10, 30, 2, 3)
    np.testing.assert_allclose(np.exp(log_pi).sum(-1), 1.0, atol=1e-5)
    nll = metrics.nll_per_agent_round(log_pi, test.actions, skip_first=True)
    # the learners converge on the payoff-3 corner, so their play is far from uniform (log 3 = 1.10)
    assert nll < np.log(3) - 0.2, nll


def test_wrong_learner_needs_fixed_beta():
    model = Model(Tabular(num_agents=2, num_actions=2), logit_q, LEARNER)
    from bayes_diml.priors import Prior

    prior = dataclasses.replace(model, learner_params={**LEARNER, "alpha": Prior.parse({"dist": "beta", "a": 2, "b": 5}, "x")})
    beta_prior = Prior.parse({"dist": "lognormal", "loc": 0, "scale": 1}, "x")
    broken = dataclasses.replace(prior, learner_params={**prior.learner_params, "beta": beta_prior})
    with pytest.raises(SpecError, match="beta must be a fixed number"):
        baselines.wrong_learner_map(broken, None)
