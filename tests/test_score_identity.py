"""The simulator and the likelihood describe the same process: the score identities.

For data drawn from the model at ``theta_0`` (Cox & Hinkley 1974, §4.8)::

    E[ grad log p(data | theta_0) ] = 0
    Var[ grad log p(data | theta_0) ] = -E[ Hessian log p(data | theta_0) ]   (Fisher)

Both fail when the simulator and the likelihood disagree in any way the data can see
(a policy read from Q one round late, a payoff of the wrong context, a learner step
applied twice), so this checks ``simulate`` against ``log_likelihood`` for every
learner rule, in the congestion family's identified coordinates ``(d = tau - c1, c2)``
(docs/design.md §3) plus every learner parameter. An independent reference in the sense of
the project's rules: the identities are a property of any correct likelihood, not of
our code's output.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from bayes_diml.learners import LEARNERS
from bayes_diml.likelihood import episode_log_likelihoods
from bayes_diml.mechanisms import Congestion
from bayes_diml.model import Model
from bayes_diml.simulate import simulate_arrays

from conftest import learner_values

DATASETS, EPISODES, ROUNDS = 400, 4, 15
TRUTH = {"c1": [0.2, 0.3, 0.1], "c2": [0.10, 0.05, 0.12], "tau": [0.1, 0.0, 0.2]}
# Each mean-score z is N(0, 1) under a correct model: 5 learners x at most 11 coordinates,
# |z| < 4 has a family-wise false-alarm rate below 0.4% (Bonferroni, 55 x 6.3e-5).
MAX_ABS_Z = 4.0
# Var(score) / Fisher per coordinate, both estimated from 400 data sets: the variance's
# relative sd is about sqrt(2 / 400) = 0.07 (more with heavy tails); [0.7, 1.4] is > 4 sd.
VARIANCE_RATIO = (0.7, 1.4)


def _score_moments(learner_name: str, shift_rounds: int = 0):
    learner = LEARNERS[learner_name]
    learner_params = learner_values(learner)
    model = Model(Congestion(num_agents=3, num_actions=3), learner, learner_params={k: float(v) for k, v in learner_params.items()})
    mechanism = {k: jnp.asarray(v, jnp.float32) for k, v in TRUTH.items()}
    truth = {"mechanism": mechanism, "learner": learner_params}
    actions = simulate_arrays(model, truth, jax.random.key(11), DATASETS * EPISODES, ROUNDS)
    actions = jnp.roll(actions, shift_rounds, axis=1).reshape(DATASETS, EPISODES, ROUNDS, 3)
    mask = jnp.zeros(actions.shape[1:], bool)
    theta0, unravel = ravel_pytree({"d": mechanism["tau"] - mechanism["c1"], "c2": mechanism["c2"], "learner": learner_params})

    def log_lik(theta, data):
        parts = unravel(theta)
        params = {"mechanism": {"c1": mechanism["c1"], "c2": parts["c2"], "tau": parts["d"] + mechanism["c1"]},
                  "learner": parts["learner"]}
        return jnp.sum(episode_log_likelihoods(model, params, data, mask, "auto", None, None))

    scores = np.asarray(jax.vmap(jax.grad(log_lik), in_axes=(None, 0))(theta0, actions), np.float64)
    hessians = np.asarray(jax.vmap(jax.hessian(log_lik), in_axes=(None, 0))(theta0, actions), np.float64)
    mean_z = scores.mean(axis=0) / (scores.std(axis=0, ddof=1) / np.sqrt(DATASETS))
    ratio = scores.var(axis=0, ddof=1) / -np.diagonal(hessians.mean(axis=0))
    return mean_z, ratio


@pytest.mark.slow
@pytest.mark.parametrize("learner_name", sorted(LEARNERS))
def test_score_has_mean_zero_and_fisher_variance(learner_name):
    mean_z, ratio = _score_moments(learner_name)
    assert np.all(np.abs(mean_z) < MAX_ABS_Z), (learner_name, np.round(mean_z, 2))
    assert np.all((ratio > VARIANCE_RATIO[0]) & (ratio < VARIANCE_RATIO[1])), (learner_name, np.round(ratio, 2))


@pytest.mark.slow
def test_score_check_sees_data_one_round_out_of_step():
    """Power: the same check on the data rolled by one round (each round's play scored
    against the previous round's policy) fails."""
    mean_z, ratio = _score_moments("logit_q", shift_rounds=1)
    assert np.max(np.abs(mean_z)) > MAX_ABS_Z or np.any((ratio < VARIANCE_RATIO[0]) | (ratio > VARIANCE_RATIO[1]))
