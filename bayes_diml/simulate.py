"""Simulate learners under a mechanism: a ``lax.scan`` over rounds, vmap over episodes.

Each round: ``a_t ~ pi_t`` (independently over agents; ``learners.log_policy``, the
likelihood's policy, with the stickiness bias of the previous round's actions, which the
scan carries beside ``Q``), ``U_t = M(., a_{t,-i})``, then the same
``step_coefficients`` as the likelihood updates ``Q``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ._random import as_key
from ._types import Params, PRNGKey
from .learners import apply_step, choice_indicator, log_policy, step_coefficients
from .likelihood import split_episode_params
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
    replay=None,
):
    """Simulated actions ``(num_episodes, num_rounds, num_agents)`` (and, if asked,
    the policies used, ``(num_episodes, num_rounds, num_agents, num_actions)``).

    ``replay``: ``(num_episodes, num_rounds, num_agents)`` actions that the agents outside
    ``model.scored_agents`` (``[game] modelled``) play instead of drawing, round by round
    (their observed play, ``inference/counterfactual.py``); ``None``: every agent draws.

    ``params["initial"]``, when present, is the learners' ``Q_0``: one
    ``(num_agents, num_actions)`` array for all episodes, or one per episode
    ``(num_episodes, num_agents, num_actions)``; otherwise ``learner.init``.
    """
    mechanism, learner = model.mechanism, model.learner
    mech_params, learner_params = params["mechanism"], params["learner"]
    n, A = model.num_agents, model.num_actions
    present = jnp.ones((n,), bool)

    prepared = mechanism.prepare(mech_params)
    shared, per_episode = split_episode_params(params)
    if per_episode and per_episode["initial"].shape[0] != num_episodes:
        raise ValueError(
            f"a per-episode initial state holds {per_episode['initial'].shape[0]} episodes, not {num_episodes}: "
            "simulate as many episodes as it has, or give one (num_agents, num_actions) state"
        )

    exogenous = None if replay is None or model.scored_agents is None else ~model.scored_agents

    def episode(episode_key, episode_params, episode_replay):
        params = {**shared, **episode_params}
        def step(carry, inputs):
            (Q, previous), (t, round_key, replayed) = carry, inputs
            log_pi = log_policy(learner, learner_params, Q, t, previous)
            actions = jax.random.categorical(round_key, log_pi, axis=-1).astype(jnp.int32)
            if exogenous is not None:  # unmodelled agents replay observed actions
                actions = jnp.where(exogenous, replayed.astype(jnp.int32), actions)
            payoffs = mechanism.prepared_counterfactual_payoffs(prepared, actions, present)
            Q = apply_step(step_coefficients(learner, learner_params, payoffs, actions, present, t), Q)
            previous = choice_indicator(actions, present, A, previous.dtype)
            return (Q, previous), (actions, log_pi if return_log_policies else None)

        if "initial" in params:  # a given Q_0 (shared, or this episode's)
            initial = jnp.broadcast_to(params["initial"], (n, A)).astype(jnp.result_type(float))
        else:
            initial = learner.init(learner_params, n, A).astype(jnp.result_type(float))
        rounds = (jnp.arange(num_rounds), jax.random.split(episode_key, num_rounds), episode_replay)
        no_previous = jnp.zeros((n, A), initial.dtype)  # round 0: no stickiness term
        _, (actions, log_pi) = jax.lax.scan(step, (initial, no_previous), rounds)
        return actions, log_pi

    replay = None if exogenous is None else replay
    actions, log_pi = jax.vmap(episode)(jax.random.split(key, num_episodes), per_episode, replay)
    return (actions, log_pi) if return_log_policies else actions


def simulate(
    model: Model,
    params: Params,
    *,
    num_episodes: int,
    num_rounds: int,
    seed,
    payoff_fraction: float = 0.0,
    payoff_noise: float = 0.0,
):
    """Simulate play and return it as ``Trajectories`` (no masked entries).

    Args:
        model: the model (labels from its spec are used when present).
        params: ``{"mechanism": {...}, "learner": {...}}`` (e.g. the spec's truth),
            optionally ``"initial"``: ``Q_0`` of shape ``(num_agents, num_actions)``
            or ``(num_episodes, num_agents, num_actions)`` (random initial beliefs).
            Learner parameters may be per-agent ``(num_agents,)`` arrays; a
            ``stickiness`` among them adds the choice-stickiness term (``learners.stickiness``).
        num_episodes, num_rounds: sizes (static: one compilation per shape).
        seed: an int or a JAX key.
        payoff_fraction: share of rows (chosen at random) whose realised payoff
            ``M(a_t)_i + payoff_noise * Normal(0, 1)`` is recorded in the
            ``payoff`` column (the rest NaN); 0 gives no payoff column.
        payoff_noise: sd of the noise on recorded payoffs.
    """
    from .trajectories import Trajectories

    for name, value in (("num_episodes", num_episodes), ("num_rounds", num_rounds)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not 0.0 <= payoff_fraction <= 1.0 or not payoff_noise >= 0.0:
        raise ValueError(f"payoff_fraction must be in [0, 1] and payoff_noise >= 0, got {payoff_fraction}, {payoff_noise}")
    from .resources import check_memory, simulation_memory

    nbytes, detail = simulation_memory(model, int(num_episodes), int(num_rounds))
    check_memory(nbytes, f"simulating {num_episodes} episodes x {num_rounds} rounds", detail,
                 "simulate fewer episodes or rounds")
    model.mechanism.check_params(params["mechanism"], "mechanism parameters")
    model.learner.check_params(params["learner"], "learner parameters")
    if "initial" in params:
        shape = np.shape(params["initial"])
        n, A = model.num_agents, model.num_actions
        if shape not in ((n, A), (num_episodes, n, A)):
            raise ValueError(
                f"params['initial'] must have shape {(n, A)} or {(num_episodes, n, A)}, got {shape}"
            )
    key = as_key(seed)
    k_play, k_rows, k_noise = jax.random.split(key, 3)
    actions = simulate_arrays(model, params, k_play, int(num_episodes), int(num_rounds))
    payoff = None
    if payoff_fraction > 0:
        mech_params = jax.tree.map(jnp.asarray, params["mechanism"])
        realised = jax.vmap(jax.vmap(lambda a: model.mechanism.payoffs(mech_params, a)))(actions)
        noise = payoff_noise * jax.random.normal(k_noise, realised.shape)
        keep = jax.random.uniform(k_rows, realised.shape) < payoff_fraction
        payoff = np.where(np.asarray(keep), np.asarray(realised + noise, np.float64), np.nan)
    return Trajectories.from_arrays(
        np.asarray(actions),
        num_actions=model.num_actions,
        agent_labels=model.agent_labels,
        action_labels=model.action_labels,
        payoff=payoff,
    )
