"""Credible counterfactuals: re-simulate the learners under an intervention (docs/design.md §5).

For each posterior draw ``s`` of a thinned subset (``S`` draws), an intervention
replaces mechanism parameters (or the whole mechanism, ``M -> M'``) and/or learner
parameters, and the learners are simulated afresh by ``simulate_arrays`` (the same
learner step as the likelihood, docs/design.md §2)::

    a^s_{e,t,i} ~ pi_t(. | i; M'^s, learner'^s)            e < E, t < T
    freq^s_t[k]  = mean_{e,i} 1[a^s_{e,t,i} = k]            (S, T, A)
    W^s_t        = mean_e sum_i M'^s(a^s_{e,t})_i            (S, T)  expected welfare

and summarised over draws by the posterior mean and the equal-tailed 90% interval.
With unmodelled agents (``[game] modelled``) each simulated episode draws an observed
episode (uniformly, with replacement, by the draw's key) and the unmodelled agents replay
its actions round by round (``_replay_pool``); more rounds than were observed are refused.

Draw ``s`` is simulated with the key ``fold_in(key(seed), flat draw index)``
whatever the intervention, so two runs with the same ``seed`` over the same draws
share their random numbers: ``result.compare(baseline)`` gives paired, per-draw
differences with far less Monte Carlo noise than two independent runs.

Layout: ``_interventions.py`` parses an intervention and applies it to the draws'
parameters; this module simulates the draws (``_simulate``); ``_counterfactual_result.py``
summarises them into a ``CounterfactualResult``.
"""

from __future__ import annotations

import functools
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from .._random import as_key
from .._types import Array, Params, PRNGKey
from ..errors import DataError, UnidentifiedWarning
from ..mechanisms import Mechanism
from ..model import Model
from ..simulate import simulate_arrays
from ._counterfactual_result import INTERVAL, CounterfactualResult, summarise
from ._interventions import (
    WHERE,
    identification,
    learner_intervention,
    mechanism_intervention,
    unidentified_message,
)
from .numpyro_model import observed_payoffs

__all__ = ["counterfactual", "CounterfactualResult", "INTERVAL", "CHUNK_ELEMENTS", "PER_AGENT_MAX"]

CHUNK_ELEMENTS = 2**24
"""Rough bound on the array elements alive at once while simulating a chunk of draws
(about 64 MiB of float32): draws, and within a draw the joint actions whose welfare
is evaluated, are processed in chunks sized to stay under it."""

PER_AGENT_MAX = 10_000
"""Per-agent frequencies ``(S, T, n, A)`` are kept only when ``n * A`` is at most this."""


# -------------------------------------------------------------- entry point
def counterfactual(
    fit,
    *,
    mechanism=None,
    learner=None,
    num_episodes: int,
    num_rounds: int,
    seed,
    max_draws: int = 200,
    return_actions: bool = False,
) -> CounterfactualResult:
    """Simulate the learners forward under an intervention, once per posterior draw.

    Args:
        fit: a ``Fit``.
        mechanism: ``None`` (each draw keeps its mechanism); a dict of natural-parameter
            overrides applied to every draw, e.g. ``{"tau": [0.3, 0, 0, 0, 0]}`` (each of
            the parameter's exact shape), where a value ``("+", values)`` or
            ``("*", values)`` changes each draw's value instead of replacing it (a toll
            *increase* ``{"tau": ("+", [0.1, 0, 0, 0, 0])}`` moves only the identified
            ``tau - c1``; an absolute toll also carries the prior-only ``c1`` unless ``tau``
            is known, docs/design.md §3);
            or a tuple ``(Mechanism, params)``: a different mechanism (same numbers of
            agents and actions) for every draw.
        learner: ``None`` or a dict of learner-parameter overrides: a number (or a
            per-agent list) sets the parameter for every draw; a string ``"*f"``
            multiplies each draw's value by ``f`` (``{"alpha": "*0.6", "beta": "*1.4",
            "eps": "*1.5"}`` is the paper's shifted learner, docs/design.md §6); ``("+", v)`` and
            ``("*", v)`` (a number or one per agent) change each draw's value. ``"q0"`` (shape
            ``(A,)`` or ``(n, A)``) sets new initial learner states.
        num_episodes, num_rounds: simulated episodes and rounds per draw (static).
        seed: an int or a JAX key.
        max_draws: at most this many posterior draws, spread evenly over chains.
        return_actions: keep the simulated actions ``(S, E, T, n)`` in ``draws``
            (for checks; memory grows with every size).

    Identification (``_interventions.identification``, before simulating): play that
    depends on a prior-driven parameter (an absolute congestion toll while the tolls in
    force are not in ``[mechanism.known]``: each draw keeps its prior-only ``c1``) gives
    an ``UnidentifiedWarning`` naming it and the fix, and ``identified = False`` with the
    names in the result and ``intervention``. Welfare that sums payoff levels only the
    gauge fixes (``Mechanism.levels_gauge``, full-information learners, no observed
    payoffs) is reported as not identified (``intervention["welfare_identified"]``).

    Returns:
        A ``CounterfactualResult``; ``DataError`` / ``SpecError`` (naming the parameter,
        before anything is traced) otherwise.
    """
    E = _positive_int("num_episodes", num_episodes)
    T = _positive_int("num_rounds", num_rounds)
    max_draws = _positive_int("max_draws", max_draws)
    key = as_key(seed)
    model: Model = fit.model
    pool, replayed = _replay_pool(fit, T)
    index = np.asarray(fit.thinned_index(max_draws))
    S = int(index.size)
    params = fit.params_draws(index)

    sim_model, mech_params, mech_description = mechanism_intervention(model, params["mechanism"], S, mechanism)
    learner_params, learner_description = learner_intervention(model, params["learner"], S, learner, index)
    params = {"mechanism": mech_params, "learner": learner_params}
    identified = _warn_if_unidentified(fit, mechanism)
    draws = _simulate(sim_model, params, key, index, E, T, bool(return_actions), pool)
    first_round = int(getattr(fit.data, "first_round", 0) or 0)
    draws["draw"] = index
    draws["round"] = np.arange(first_round, first_round + T)
    intervention = {
        "mechanism": mech_description,
        "learner": learner_description,
        "num_episodes": E,
        "num_rounds": T,
        "first_round": first_round,
        "seed": _seed_description(seed, key),
        "max_draws": max_draws,
        "num_draws": S,
        "interval": INTERVAL,
        **{k: identified[k] for k in ("identified", "unidentified", "welfare_identified")}, **replayed,
    }
    return summarise(draws, intervention, *_labels(fit))


def _warn_if_unidentified(fit, mechanism) -> dict:
    """``identification`` of the change (before anything is simulated), with an
    ``UnidentifiedWarning`` naming the prior-driven parameters when there are any."""
    identified = identification(fit.model, mechanism, observed_payoffs(fit.data) is not None)
    if not identified["identified"]:
        warnings.warn(
            UnidentifiedWarning(unidentified_message(identified["unidentified"], identified["advice"])), stacklevel=3
        )
    return identified


# ------------------------------------------------------------- simulation
def _simulate(
    model: Model, params: Params, key: PRNGKey, index: np.ndarray, E: int, T: int, return_actions: bool, pool=None
) -> dict[str, np.ndarray]:
    """Simulate the draws ``index`` (parameters ``params`` with a leading draw axis ``(S, ...)``)
    in equal batches under ``CHUNK_ELEMENTS``; the arrays of ``_simulate_draws``, on the host.
    ``pool``: observed episodes ``(P, T, n)`` whose unmodelled agents' actions are replayed."""
    S = int(index.size)
    n, A = model.num_agents, model.num_actions
    per_agent = n * A <= PER_AGENT_MAX
    _check_memory(model, S, E, T, per_agent, return_actions)
    draw_batch, row_batch = _batch_sizes(S, E, T, n, A, per_agent)
    num_batches = math.ceil(S / draw_batch)
    draw_batch = math.ceil(S / num_batches)  # equal batches: one compiled body, no remainder
    padded = np.minimum(np.arange(num_batches * draw_batch), S - 1)
    # strongly typed float arrays, so that every intervention of a model reuses one compilation
    dtype = jnp.result_type(float)
    padded_params = jax.tree.map(lambda v: jnp.asarray(np.asarray(v)[padded], dtype), params)
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, jnp.asarray(index[padded], jnp.uint32))
    pool = None if pool is None else jnp.asarray(pool, jnp.int32)
    out = _simulate_draws(model, padded_params, keys, E, T, draw_batch, row_batch, per_agent, return_actions, pool)
    return {name: np.asarray(value)[:S] for name, value in out.items()}


@functools.partial(
    jax.jit,
    static_argnames=("model", "num_episodes", "num_rounds", "draw_batch", "row_batch", "per_agent", "return_actions"),
)
def _simulate_draws(
    model: Model,
    params: Params,
    keys: PRNGKey,
    num_episodes: int,
    num_rounds: int,
    draw_batch: int,
    row_batch: int,
    per_agent: bool,
    return_actions: bool,
    pool=None,
) -> dict[str, Array]:
    """Simulate every draw and summarise it in one compiled function.

    Args:
        params: ``{"mechanism": ..., "learner": ...}`` with a leading draw axis ``(S, ...)``.
        keys: ``(S,)`` keys, one per draw.
        pool: ``(P, T, n)`` observed episodes, or ``None``: each draw replays the unmodelled
            agents' actions of ``num_episodes`` of them, drawn uniformly with replacement by
            ``fold_in(key, 1)`` (the same episodes under every intervention: paired).

    Returns:
        ``frequency (S, T, A)``, ``welfare (S, T)``, and ``agent_frequency (S, T, n, A)``
        / ``actions (S, E, T, n)`` when asked for.
    """
    mechanism = model.mechanism
    n, A = model.num_agents, model.num_actions

    def one_draw(args):
        p, key = args
        replay = None if pool is None else pool[jax.random.randint(jax.random.fold_in(key, 1), (num_episodes,), 0, pool.shape[0])]
        actions = simulate_arrays(model, p, key, num_episodes, num_rounds, replay=replay)  # (E, T, n)
        out = {"welfare": _welfare(mechanism, p["mechanism"], actions, row_batch)}
        if per_agent:
            counts = _counts(actions, num_rounds, A, by_agent=True)  # (T, n, A)
            out["agent_frequency"] = counts / num_episodes
            out["frequency"] = counts.sum(axis=1) / (num_episodes * n)
        else:
            out["frequency"] = _counts(actions, num_rounds, A, by_agent=False) / (num_episodes * n)
        if return_actions:
            out["actions"] = actions
        return out

    return jax.lax.map(one_draw, (params, keys), batch_size=draw_batch)


def _counts(actions: Array, num_rounds: int, num_actions: int, by_agent: bool) -> Array:
    """How many times each action was played per round (per agent), by scatter-add
    (no one-hot array of size ``E T n A``). Returns ``(T, n, A)`` or ``(T, A)``."""
    E, T, n = actions.shape
    t = jnp.broadcast_to(jnp.arange(T)[None, :, None], actions.shape)
    if by_agent:
        i = jnp.broadcast_to(jnp.arange(n)[None, None, :], actions.shape)
        return jnp.zeros((num_rounds, n, num_actions)).at[t, i, actions].add(1.0)
    return jnp.zeros((num_rounds, num_actions)).at[t, actions].add(1.0)


def _welfare(mechanism: Mechanism, mech_params: Params, actions: Array, row_batch: int) -> Array:
    """``mean_e sum_i M(a_{e,t})_i``, shape ``(T,)``; joint actions in chunks of ``row_batch``."""
    E, T, n = actions.shape
    flat = actions.reshape(E * T, n)
    totals = jax.lax.map(lambda a: mechanism.payoffs(mech_params, a).sum(), flat, batch_size=row_batch)
    return totals.reshape(E, T).mean(axis=0)


def _batch_sizes(S: int, E: int, T: int, n: int, A: int, per_agent: bool) -> tuple[int, int]:
    """Draws simulated together, and joint actions per welfare chunk, under ``CHUNK_ELEMENTS``."""
    per_draw = E * T * n + 2 * E * n * A + E * A * A + (T * n * A if per_agent else T * A)
    draw_batch = max(1, min(S, CHUNK_ELEMENTS // per_draw))
    row_batch = max(1, min(E * T, CHUNK_ELEMENTS // (draw_batch * (n * A + A * A))))
    return int(draw_batch), int(row_batch)


def _check_memory(model: Model, S: int, E: int, T: int, per_agent: bool, keep_actions: bool) -> None:
    """Refuse, before anything is traced, a simulation that cannot fit in memory."""
    from ..resources import check_memory, counterfactual_memory

    nbytes, detail = counterfactual_memory(model, S, E, T, per_agent, keep_actions)
    check_memory(nbytes, f"this counterfactual ({S} draws x {E} episodes x {T} rounds)", detail,
                 "use fewer episodes or rounds, or fewer draws (--max-draws)")


# ------------------------------------------------------------------ helpers
def _replay_pool(fit, T: int) -> tuple[np.ndarray | None, dict]:
    """The observed episodes whose unmodelled agents (``[game] modelled``) played each of the
    first ``T`` rounds, ``(P, T, n)``, and a description for ``intervention``; ``(None, {})``
    when every agent is modelled. Refuses ``T`` beyond the rounds observed, in one line."""
    model, data = fit.model, fit.data
    if model.scored_agents is None:
        return None, {}
    exogenous = ~model.scored_agents
    unmodelled = [label for label, out in zip(_labels(fit)[1], exogenous) if out]
    played = ~np.asarray(data.mask)[:, :, exogenous].any(axis=2)  # (E, T_obs): all unmodelled agents played
    observed = np.where(played.all(axis=1), played.shape[1], played.argmin(axis=1))  # rounds played from round 0
    if T > observed.max():
        raise DataError(
            f"{WHERE}: num_rounds = {T} but agents {unmodelled} are not modelled ([game] modelled = "
            f"{list(model.modelled)}) and their play, replayed from the data, was observed for at most "
            f"{int(observed.max())} rounds; ask for at most {int(observed.max())}"
        )
    pool = np.asarray(data.actions)[observed >= T, :T]
    return pool, {"replayed": {"agents": unmodelled, "observed_episodes": int(pool.shape[0])}}


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise DataError(f"{WHERE}: {name} must be a positive integer, got {value!r}")
    return int(value)


def _labels(fit) -> tuple[tuple, tuple]:
    model = fit.model
    data = getattr(fit, "data", None)
    actions = getattr(data, "action_labels", None)
    agents = getattr(data, "agent_labels", None)
    if actions is None:
        actions = model.action_labels if model.action_labels is not None else range(model.num_actions)
    if agents is None:
        agents = model.agent_labels if model.agent_labels is not None else range(model.num_agents)
    return tuple(actions), tuple(agents)


def _seed_description(seed, key):
    if isinstance(seed, (int, np.integer)):
        return int(seed)
    return np.asarray(jax.random.key_data(key)).tolist()
