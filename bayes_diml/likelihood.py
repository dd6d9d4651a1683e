"""The exact, jitted, parallel-in-time log-likelihood of observed play (DESIGN §2).

For one episode with observed actions ``a_t`` (teacher forcing):

    U_t[i, k]  = M(k, a_{t,-i})_i                   all rounds at once (vmap)
    Q_{t+1}    = decay_t * Q_t + drive_t            (decay, drive) from the learner
    log p(a)   = sum_t sum_i [agent i played at t] log pi_t(a_{t,i} | i)

Because ``U_t`` depends only on the observed actions, the whole path of ``Q``
is a first-order linear recurrence, computed by ``jax.lax.associative_scan`` in
``O(log T)`` depth. Episodes are independent: ``vmap`` over episodes. Round 0
is scored (uniform when ``Q_0 = 0``). Source: An & Du (2026), §3, eq. for the
trajectory likelihood; the parallel form is ours.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ._types import Array, Params
from .learners import step_coefficients
from .model import Model
from .sharding import shard_episodes, use_sharding

__all__ = [
    "log_likelihood",
    "log_likelihood_per_episode",
    "episode_log_likelihood",
    "episode_log_likelihoods",
    "teacher_forced_log_policies",
    "linear_recurrence",
    "as_arrays",
]


def linear_recurrence(decay: Array, drive: Array, initial: Array, method: str = "associative") -> Array:
    """States ``x_0 .. x_{T-1}`` of ``x_{t+1} = decay_t x_t + drive_t``, ``x_0 = initial``.

    Args:
        decay, drive: ``(T, ...)``; initial: ``(...)``.
        method: ``"associative"`` (``lax.associative_scan``, O(log T) depth) or
            ``"sequential"`` (``lax.scan``, for comparison).

    Returns:
        ``(T, ...)`` with ``x_0`` first.
    """
    if method == "associative":

        def combine(first, second):
            a1, b1 = first
            a2, b2 = second
            return a2 * a1, a2 * b1 + b2

        cum_decay, cum_drive = jax.lax.associative_scan(combine, (decay[:-1], drive[:-1]))
        rest = cum_decay * initial + cum_drive
    elif method == "sequential":

        def step(x, coefficients):
            a, b = coefficients
            x = a * x + b
            return x, x

        _, rest = jax.lax.scan(step, initial, (decay[:-1], drive[:-1]))
    else:
        raise ValueError(f"method must be 'associative' or 'sequential', got {method!r}")
    return jnp.concatenate([initial[None], rest], axis=0)


def _episode_log_policies(model: Model, params: Params, actions: Array, present: Array, method: str) -> Array:
    """Teacher-forced ``log pi_t`` of one episode, ``(num_rounds, num_agents, num_actions)``."""
    mechanism, learner = model.mechanism, model.learner
    mech_params, learner_params = params["mechanism"], params["learner"]
    num_rounds = actions.shape[0]
    prepared = mechanism.prepare(mech_params)
    payoffs = jax.vmap(mechanism.prepared_counterfactual_payoffs, (None, 0, 0))(prepared, actions, present)
    rounds = jnp.arange(num_rounds)
    decay, drive = jax.vmap(functools.partial(step_coefficients, learner, learner_params))(
        payoffs, actions, present, rounds
    )
    initial = learner.init(learner_params, model.num_agents, model.num_actions).astype(payoffs.dtype)
    Q = linear_recurrence(decay, drive, initial, method)
    return jax.vmap(learner.log_policy, (None, 0, 0))(learner_params, Q, rounds)


def episode_log_likelihood(
    model: Model, params: Params, actions: Array, mask: Array, method: str = "associative"
) -> Array:
    """Log-likelihood of one episode.

    Args:
        model: the model.
        params: ``{"mechanism": {...}, "learner": {...}}``.
        actions: ``(num_rounds, num_agents)`` int.
        mask: ``(num_rounds, num_agents)`` bool, True where the agent did not play.
        method: see ``linear_recurrence``.

    Returns:
        Scalar: ``sum_t sum_i [not mask] log pi_t(a_{t,i} | i)``.
    """
    present = ~mask
    log_pi = _episode_log_policies(model, params, actions, present, method)
    played = jnp.take_along_axis(log_pi, actions[..., None], axis=-1)[..., 0]
    return jnp.sum(jnp.where(present, played, 0.0))


def episode_log_likelihoods(
    model: Model, params: Params, actions: Array, mask: Array, method: str = "associative", episode_batch: int | None = None
) -> Array:
    """Per-episode log-likelihoods ``(num_episodes,)`` (traceable; used inside NumPyro).

    With ``episode_batch`` the episodes are processed that many at a time
    (``lax.map``) and each batch is rematerialised in the backward pass
    (``jax.checkpoint``), so memory is bounded by one batch: for very large games.
    """
    one = functools.partial(episode_log_likelihood, model, params, method=method)
    if episode_batch is None:
        return jax.vmap(one)(actions, mask)
    return jax.lax.map(jax.checkpoint(lambda am: one(*am)), (actions, mask), batch_size=episode_batch)


@functools.partial(jax.jit, static_argnames=("model", "method", "episode_batch"))
def _per_episode(model, params, actions, mask, method="associative", episode_batch=None):
    return episode_log_likelihoods(model, params, actions, mask, method, episode_batch)


@functools.partial(jax.jit, static_argnames=("model", "method"))
def _log_policies(model, params, actions, mask, method="associative"):
    return jax.vmap(_episode_log_policies, (None, None, 0, 0, None))(model, params, actions, ~mask, method)


def as_arrays(data) -> tuple[Array, Array]:
    """``(actions, mask)`` as JAX arrays from ``Trajectories`` or a pair of arrays."""
    if hasattr(data, "actions") and hasattr(data, "mask"):
        actions, mask = data.actions, data.mask
    else:
        actions, mask = data
    actions = np.asarray(actions)
    mask = np.zeros(actions.shape, bool) if mask is None else np.asarray(mask, bool)
    return jnp.asarray(actions, jnp.int32), jnp.asarray(mask)


def log_likelihood_per_episode(
    model: Model,
    params: Params,
    data,
    method: str = "associative",
    episode_batch: int | None = None,
    shard: bool | None = None,
) -> Array:
    """Per-episode log-likelihoods, ``(num_episodes,)`` (jitted; vmap over episodes).

    Args:
        data: ``Trajectories`` or ``(actions, mask)`` with shapes
            ``(num_episodes, num_rounds, num_agents)``.
        episode_batch: process episodes this many at a time (bounded memory).
        shard: split the episodes over all devices (``bayes_diml.sharding``);
            ``None`` = when more than one device exists.
    """
    actions, mask = as_arrays(data)
    if not use_sharding(shard):
        return _per_episode(model, params, actions, mask, method, episode_batch)
    num_episodes = actions.shape[0]
    actions, mask = shard_episodes(actions, mask)
    return _per_episode(model, params, actions, mask, method, episode_batch)[:num_episodes]


def log_likelihood(
    model: Model,
    params: Params,
    data,
    method: str = "associative",
    episode_batch: int | None = None,
    shard: bool | None = None,
) -> Array:
    """Total log-likelihood over all episodes (round 0 included, masked entries excluded)."""
    return jnp.sum(log_likelihood_per_episode(model, params, data, method, episode_batch, shard))


def teacher_forced_log_policies(model: Model, params: Params, data, method: str = "associative") -> Array:
    """``log pi_t(k | i)`` given the observed history, ``(E, T, n, A)``."""
    actions, mask = as_arrays(data)
    return _log_policies(model, params, actions, mask, method)
