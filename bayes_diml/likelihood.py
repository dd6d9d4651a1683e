"""The exact, jitted, parallel-in-time log-likelihood of observed play (docs/design.md §2).

For one episode with observed actions ``a_t`` (teacher forcing):

    U_t[i, k]  = M(k, a_{t,-i})_i                   all rounds at once (vmap)
    Q_{t+1}    = decay_t * Q_t + drive_t            (decay, drive) from the learner
    log p(a)   = sum_t sum_i [agent i played at t] [i modelled] log pi_t(a_{t,i} | i)

``pi_t`` is ``learners.log_policy``: the rule's policy, plus with ``stickiness`` the
bias ``kappa_i 1[k = a_{t-1,i}]`` of the observed previous action (``learners.stickiness``),
which is data under teacher forcing and leaves the recurrence for ``Q`` as it is.

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
from .learners import STICKINESS, choice_indicator, log_policy, previous_choices, step_coefficients
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
    "split_episode_params",
    "accumulator_dtype",
]


def linear_recurrence(decay: Array, drive: Array, initial: Array, method: str = "auto") -> Array:
    """States ``x_0 .. x_{T-1}`` of ``x_{t+1} = decay_t x_t + drive_t``, ``x_0 = initial``.

    Args:
        decay, drive: ``(T, ...)``; initial: ``(...)``.
        method: ``"associative"`` (``lax.associative_scan``, O(log T) depth),
            ``"sequential"`` (``lax.scan``) or ``"auto"``: sequential on CPU, where
            there is no parallel hardware to fill and ``lax.scan`` does less work
            (E2 likelihood + gradient 1.4 ms vs 2.0 ms, compiled 3x faster, on a
            2-core AMD EPYC), associative on GPU/TPU.

    Returns:
        ``(T, ...)`` with ``x_0`` first.
    """
    if method == "auto":
        method = "sequential" if jax.default_backend() == "cpu" else "associative"
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
        raise ValueError(f"method must be 'associative', 'sequential' or 'auto', got {method!r}")
    return jnp.concatenate([initial[None], rest], axis=0)


def _episode_log_policies(model: Model, params: Params, actions: Array, present: Array, method: str, payoffs: Array) -> Array:
    """Teacher-forced ``log pi_t`` of one episode, ``(num_rounds, num_agents, num_actions)``,
    from its counterfactual payoffs (``_payoffs_before_last_round``)."""
    initial = _initial_state(model, params)
    log_pi, _ = _rounds_log_policies(model, params, None, actions, present, jnp.arange(actions.shape[0]), initial, method, payoffs)
    return log_pi


def _initial_state(model: Model, params: Params) -> Array:
    """``Q_0``: a learned ``params["initial"]`` (``Model.initial``: this episode's
    ``(num_agents, num_actions)``) or the learner's own start."""
    if "initial" in params:
        return jnp.broadcast_to(params["initial"], (model.num_agents, model.num_actions))
    return model.learner.init(params["learner"], model.num_agents, model.num_actions)


def _payoffs_before_last_round(model: Model, prepared, actions: Array, present: Array) -> Array:
    """Counterfactual payoffs of every episode and round, ``(E, T, n, A)``, in one call
    to ``rounds_counterfactual_payoffs`` over all ``(episode, round)`` pairs.

    The last round's payoffs would only drive ``Q_T``, which nothing scores, so
    they are not computed (zeros stand in): one round in ``T`` less of the
    likelihood's dominant cost.
    """
    E, T, n = actions.shape
    flat = model.mechanism.rounds_counterfactual_payoffs(
        prepared, actions[:, :-1].reshape(E * (T - 1), n), present[:, :-1].reshape(E * (T - 1), n)
    )
    flat = flat.reshape(E, T - 1, n, model.num_actions)
    return jnp.concatenate([flat, jnp.zeros((E, 1, n, model.num_actions), flat.dtype)], axis=1)


def _rounds_log_policies(model, params, prepared, actions, present, rounds, initial, method, payoffs=None, before=None):
    """``log pi_t`` over consecutive rounds starting from state ``initial``, and the state after them.

    ``actions``, ``present``: ``(R, num_agents)``; ``rounds``: ``(R,)`` round indices;
    ``payoffs``: the rounds' counterfactual payoffs if already computed, else
    they are computed here from ``prepared``; ``before``: with stickiness, the
    ``choice_indicator`` of the round before the first (``None``: an episode's start).
    Returns ``((R, num_agents, num_actions), Q_{last + 1})``.
    """
    learner, learner_params = model.learner, params["learner"]
    if payoffs is None:
        payoffs = model.mechanism.rounds_counterfactual_payoffs(prepared, actions, present)
    decay, drive = jax.vmap(functools.partial(step_coefficients, learner, learner_params))(
        payoffs, actions, present, rounds
    )
    Q = linear_recurrence(decay, drive, initial.astype(payoffs.dtype), method)
    following = decay[-1] * Q[-1] + drive[-1]
    previous = None
    if STICKINESS in learner_params:  # the observed previous actions: data, not state
        before = jnp.zeros(Q.shape[1:], Q.dtype) if before is None else before.astype(Q.dtype)
        previous = previous_choices(actions, present, before)
    policy = functools.partial(log_policy, learner, learner_params)
    return jax.vmap(policy)(Q, rounds, previous), following


def accumulator_dtype(dtype) -> np.dtype:
    """The dtype in which sums of log-probabilities are accumulated: float64 whenever JAX
    allows it (``--x64`` / ``jax.enable_x64``), even for float32 terms, else ``dtype``.

    Measured at E7 n = 300 (``benchmarks/likelihood_precision.py``; 7,500 terms per
    episode, 120,000 in all): float32 accumulation is within about one float32 ulp of
    the float64 evaluation (2e-3 nats per episode of ~2.8e4, 5e-3 nats on the total),
    far below the few nats that decide a LOO comparison, and no better summation can
    beat a float32 result's own rounding. Where x64 is on, float64 accumulation leaves
    4e-12 nats, even when the terms themselves are float32 (float32 parameters).
    """
    return jax.dtypes.canonicalize_dtype(jnp.promote_types(dtype, jnp.float64))


def _played(log_pi: Array, actions: Array, present: Array, scored=None) -> Array:
    """``sum_t sum_i [present] [scored_i] log pi_t(a_ti | i)``, accumulated per round, then
    over rounds, in ``accumulator_dtype``. ``scored``: ``Model.scored_agents`` (``[game]
    modelled``, ``(num_agents,)`` bool; ``None`` = every agent): an unmodelled agent's
    actions are data, in the others' payoffs, and never scored."""
    played = jnp.take_along_axis(log_pi, actions[..., None], axis=-1)[..., 0]
    terms = jnp.where(present if scored is None else present & scored, played, 0.0)
    dtype = accumulator_dtype(terms.dtype)
    return jnp.sum(jnp.sum(terms, axis=-1, dtype=dtype), axis=-1, dtype=dtype)


def _chunked_episode_log_likelihood(
    model: Model, params: Params, actions: Array, present: Array, method: str, round_chunk: int
) -> Array:
    """One episode's log-likelihood with gradient checkpointing over rounds.

    The horizon is cut into ``ceil(T / round_chunk)`` chunks (the last padded
    with absent rounds, which leave ``Q`` unchanged and are not scored, so one
    shape compiles for any ``T``); ``lax.scan`` carries ``Q`` from chunk to
    chunk and each chunk's body is ``jax.checkpoint``-ed: the backward pass
    keeps the ``T / round_chunk`` carried states and recomputes one chunk at a
    time, ``O(T / round_chunk + round_chunk)`` states instead of ``O(T)``
    (Griewank & Walther 2000, "Algorithm 799: revolve", the two-level scheme).
    Within a chunk the recurrence runs as in the unchunked path.
    """
    num_rounds = actions.shape[0]
    num_chunks = -(-num_rounds // round_chunk)
    pad = num_chunks * round_chunk - num_rounds
    actions = jnp.pad(actions, ((0, pad), (0, 0)))
    present = jnp.pad(present, ((0, pad), (0, 0)), constant_values=False)
    rounds = jnp.arange(num_chunks * round_chunk)
    blocks = jax.tree.map(
        lambda x: x.reshape(num_chunks, round_chunk, *x.shape[1:]), (actions, present, rounds)
    )
    prepared, initial = model.mechanism.prepare(params["mechanism"]), _initial_state(model, params)
    dtype = jax.eval_shape(model.mechanism.prepared_counterfactual_payoffs, prepared, actions[0], present[0]).dtype

    sticky = STICKINESS in params["learner"]  # then the previous round's choices cross chunk boundaries

    @jax.checkpoint
    def chunk(carry, block, prepared, params):
        (Q, before), (a, p, r) = carry, block
        log_pi, following = _rounds_log_policies(model, params, prepared, a, p, r, Q, method, before=before)
        last = choice_indicator(a[-1], p[-1], model.num_actions, dtype) if sticky else None
        return (following, last), _played(log_pi, a, p, model.scored_agents)

    start = (initial.astype(dtype), jnp.zeros(initial.shape, dtype) if sticky else None)
    _, sums = jax.lax.scan(lambda carry, block: chunk(carry, block, prepared, params), start, blocks)
    return jnp.sum(sums, dtype=accumulator_dtype(sums.dtype))


def episode_log_likelihood(
    model: Model,
    params: Params,
    actions: Array,
    mask: Array,
    method: str = "auto",
    round_chunk: int | None = None,
) -> Array:
    """Log-likelihood of one episode.

    Args:
        model: the model.
        params: ``{"mechanism": {...}, "learner": {...}}``, optionally with
            ``"initial"``: this episode's ``Q_0`` ``(num_agents, num_actions)``,
            used instead of ``learner.init``.
        actions: ``(num_rounds, num_agents)`` int.
        mask: ``(num_rounds, num_agents)`` bool, True where the agent did not play.
        method: see ``linear_recurrence``.
        round_chunk: ``None`` (all rounds at once), or checkpoint the recursion
            over chunks of this many rounds: same value and gradient, and the
            gradient's memory grows as ``T / round_chunk + round_chunk``
            instead of ``T`` (long horizons; ``~sqrt(T)`` is a good choice).

    Returns:
        Scalar: ``sum_t sum_i [not mask] log pi_t(a_{t,i} | i)``.
    """
    present = ~mask
    if round_chunk is not None:
        return _chunked_episode_log_likelihood(model, params, actions, present, method, _check_round_chunk(round_chunk))
    payoffs = _payoffs_before_last_round(model, model.mechanism.prepare(params["mechanism"]), actions[None], present[None])[0]
    return _played(_episode_log_policies(model, params, actions, present, method, payoffs), actions, present, model.scored_agents)


def _check_round_chunk(round_chunk) -> int:
    if isinstance(round_chunk, bool) or not isinstance(round_chunk, (int, np.integer)) or round_chunk < 1:
        from .errors import DataError

        raise DataError(f"round_chunk must be a positive integer or None, got {round_chunk!r}")
    return int(round_chunk)


def episode_log_likelihoods(
    model: Model,
    params: Params,
    actions: Array,
    mask: Array,
    method: str = "auto",
    episode_batch: int | None = None,
    round_chunk: int | None = None,
) -> Array:
    """Per-episode log-likelihoods ``(num_episodes,)`` (traceable; used inside NumPyro).

    With ``episode_batch`` the episodes are processed that many at a time
    (``lax.map``) and each batch is rematerialised in the backward pass
    (``jax.checkpoint``), so memory is bounded by one batch: for very large games.
    With ``round_chunk`` the rounds of each episode are checkpointed in chunks
    (long horizons; see ``episode_log_likelihood``).
    """
    if episode_batch is None and round_chunk is None:
        present = ~mask
        played = functools.partial(_played, scored=model.scored_agents)
        return jax.vmap(played)(_all_log_policies(model, params, actions, present, method), actions, present)
    shared, per_episode = split_episode_params(params)
    one = lambda p, a, m: episode_log_likelihood(model, {**shared, **p}, a, m, method=method, round_chunk=round_chunk)  # noqa: E731
    if episode_batch is None:
        return jax.vmap(one)(per_episode, actions, mask)
    return jax.lax.map(jax.checkpoint(lambda pam: one(*pam)), (per_episode, actions, mask), batch_size=episode_batch)


def _all_log_policies(model, params, actions, present, method):
    """Teacher-forced ``log pi`` of all episodes, ``(E, T, n, A)``: the payoffs of every
    (episode, round) in one call, then the recursion vmapped over episodes."""
    shared, per_episode = split_episode_params(params)
    payoffs = _payoffs_before_last_round(model, model.mechanism.prepare(shared["mechanism"]), actions, present)
    one = lambda p, a, pr, u: _episode_log_policies(model, {**shared, **p}, a, pr, method, u)  # noqa: E731
    return jax.vmap(one)(per_episode, actions, present, payoffs)


def split_episode_params(params: Params) -> tuple[Params, Params]:
    """``(shared, per_episode)``: a per-episode initial state ``params["initial"]`` of shape
    ``(num_episodes, num_agents, num_actions)`` goes to ``per_episode`` (mapped over
    episodes); everything else is shared by all episodes."""
    initial = params.get("initial")
    if initial is not None and jnp.ndim(initial) == 3:
        return {k: v for k, v in params.items() if k != "initial"}, {"initial": initial}
    return params, {}


@functools.partial(jax.jit, static_argnames=("model", "method", "episode_batch", "round_chunk"))
def _per_episode(model, params, actions, mask, method="auto", episode_batch=None, round_chunk=None):
    return episode_log_likelihoods(model, params, actions, mask, method, episode_batch, round_chunk)


@functools.partial(jax.jit, static_argnames=("model", "method"))
def _log_policies(model, params, actions, mask, method="auto"):
    return _all_log_policies(model, params, actions, ~mask, method)


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
    method: str = "auto",
    episode_batch: int | None = None,
    round_chunk: int | None = None,
    shard: bool | None = None,
) -> Array:
    """Per-episode log-likelihoods, ``(num_episodes,)`` (jitted; vmap over episodes).

    Args:
        data: ``Trajectories`` or ``(actions, mask)`` with shapes
            ``(num_episodes, num_rounds, num_agents)``.
        episode_batch: process episodes this many at a time (bounded memory).
        round_chunk: checkpoint the rounds in chunks of this many (bounded
            gradient memory for long horizons; see ``episode_log_likelihood``).
        shard: split the episodes over all devices (``bayes_diml.sharding``);
            ``None`` = when more than one device exists. A per-episode
            ``params["initial"]`` is padded along with the episodes.
    """
    actions, mask = as_arrays(data)
    round_chunk = None if round_chunk is None else _check_round_chunk(round_chunk)
    if not use_sharding(shard):
        return _per_episode(model, params, actions, mask, method, episode_batch, round_chunk)
    num_episodes = actions.shape[0]
    actions, mask = shard_episodes(actions, mask)
    shared, per_episode = split_episode_params(params)
    if per_episode:  # dummy episodes get Q_0 = 0; they are fully masked and add nothing
        extra = actions.shape[0] - num_episodes
        params = {**shared, "initial": jnp.pad(per_episode["initial"], ((0, extra), (0, 0), (0, 0)))}
    return _per_episode(model, params, actions, mask, method, episode_batch, round_chunk)[:num_episodes]


def log_likelihood(
    model: Model,
    params: Params,
    data,
    method: str = "auto",
    episode_batch: int | None = None,
    round_chunk: int | None = None,
    shard: bool | None = None,
) -> Array:
    """Total log-likelihood over all episodes (round 0 included, masked entries excluded),
    accumulated in float64 where x64 is on (``accumulator_dtype``)."""
    per_episode = log_likelihood_per_episode(model, params, data, method, episode_batch, round_chunk, shard)
    return jnp.sum(per_episode, dtype=accumulator_dtype(per_episode.dtype))


def teacher_forced_log_policies(model: Model, params: Params, data, method: str = "auto") -> Array:
    """``log pi_t(k | i)`` given the observed history, ``(E, T, n, A)``."""
    actions, mask = as_arrays(data)
    return _log_policies(model, params, actions, mask, method)
