"""Simulate learners under a mechanism: a ``lax.scan`` over rounds, vmap over episodes.

Each round: ``a_t ~ pi_t`` (independently over agents), ``U_t = M(., a_{t,-i})``,
then the same ``step_coefficients`` as the likelihood updates ``Q``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ._random import as_key
from ._types import Array, Params, PRNGKey
from .learners import apply_step, step_coefficients
from .model import Model

__all__ = ["simulate", "simulate_arrays"]


@functools.partial(jax.jit, static_argnames=("model", "num_episodes", "num_rounds", "return_log_policies"))
def simulate_arrays(
    model: Model,
    params: Params,
    key: PRNGKey,
    num_episodes: int,
    num_rounds: int,
    return_log_policies: bool = False,
):
    """Simulated actions ``(num_episodes, num_rounds, num_agents)`` (and, if asked,
    the policies used, ``(num_episodes, num_rounds, num_agents, num_actions)``)."""
    mechanism, learner = model.mechanism, model.learner
    mech_params, learner_params = params["mechanism"], params["learner"]
    n, A = model.num_agents, model.num_actions
    present = jnp.ones((n,), bool)

    prepared = mechanism.prepare(mech_params)

    def episode(episode_key):
        def step(Q, inputs):
            t, round_key = inputs
            log_pi = learner.log_policy(learner_params, Q, t)
            actions = jax.random.categorical(round_key, log_pi, axis=-1).astype(jnp.int32)
            payoffs = mechanism.prepared_counterfactual_payoffs(prepared, actions, present)
            Q = apply_step(step_coefficients(learner, learner_params, payoffs, actions, present, t), Q)
            return Q, (actions, log_pi if return_log_policies else None)

        initial = learner.init(learner_params, n, A).astype(jnp.result_type(float))
        rounds = (jnp.arange(num_rounds), jax.random.split(episode_key, num_rounds))
        _, (actions, log_pi) = jax.lax.scan(step, initial, rounds)
        return actions, log_pi

    actions, log_pi = jax.vmap(episode)(jax.random.split(key, num_episodes))
    return (actions, log_pi) if return_log_policies else actions


def simulate(model: Model, params: Params, *, num_episodes: int, num_rounds: int, seed):
    """Simulate play and return it as ``Trajectories`` (no masked entries).

    Args:
        model: the model (labels from its spec are used when present).
        params: ``{"mechanism": {...}, "learner": {...}}`` (e.g. the spec's truth).
        num_episodes, num_rounds: sizes (static: one compilation per shape).
        seed: an int or a JAX key.
    """
    from .trajectories import Trajectories

    for name, value in (("num_episodes", num_episodes), ("num_rounds", num_rounds)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    model.mechanism.check_params(params["mechanism"], "mechanism parameters")
    model.learner.check_params(params["learner"], "learner parameters")
    actions = simulate_arrays(model, params, as_key(seed), int(num_episodes), int(num_rounds))
    return Trajectories.from_arrays(
        np.asarray(actions),
        num_actions=model.num_actions,
        agent_labels=model.agent_labels,
        action_labels=model.action_labels,
    )
