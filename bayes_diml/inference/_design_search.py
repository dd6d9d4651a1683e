"""The compiled objective and the search of ``design.py`` (design under uncertainty).

``evaluate`` scores a batch of candidate lever values under every posterior draw in one
compiled program: a ``vmap`` over candidates inside a ``lax.map`` over draws (batched to
``counterfactual.CHUNK_ELEMENTS``), each cell one ``simulate_arrays`` call (the simulator
of the counterfactuals and of the likelihood's learner step, docs/design.md §2, §5).
Every candidate is simulated with its draw's key, so the candidates of a draw share
their random numbers (common random numbers: differences between candidates are
paired, and the search compares them with far less Monte Carlo noise).

``search`` maximises a risk functional of those scores over a box by a batch of
quasi-random points (a randomly shifted Halton sequence, Halton 1960; Cranley &
Patterson 1976) and rounds of local refinement in a box shrinking around the best
point so far (which every later batch keeps, so the best score never drops).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._types import Array, Params, PRNGKey
from ..model import Model
from ..simulate import simulate_arrays
from .counterfactual import CHUNK_ELEMENTS

__all__ = ["Score", "cell_elements", "evaluate", "risk_values", "search", "SHRINK"]

SHRINK = 0.5
"""Each refinement halves the half-widths of the box around the best point."""

_PRIMES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97)


class Score(NamedTuple):
    """What is scored in each simulated play (static: one compilation per objective).

    ``kind``: ``"welfare"``, ``"net_welfare"`` or ``"share"``; ``action``: the action of a
    share; ``target``: ``None``, or the share the objective ``-(share - target)**2`` aims at.
    """

    kind: str
    action: int = 0
    target: float | None = None


# ------------------------------------------------------------------ objective
def play_score(model: Model, mech_params: Params, actions: Array, score: Score) -> Array:
    """The objective of one simulated play ``actions (E, T, n)`` (a scalar).

    welfare:     mean_{e,t} sum_i M(a_{e,t})_i
    net_welfare: mean_{e,t} sum_i [M(a_{e,t})_i - transfer_i(a_{e,t})]   (``Mechanism.lever_transfers``)
    share:       mean of 1[a_{e,t,i} = k] over e, i and the last ceil(T / 4) rounds;
                 with a target X, -(share - X)**2
    """
    mechanism = model.mechanism
    if score.kind == "share":
        last = max(1, math.ceil(actions.shape[1] / 4))
        share = jnp.mean(actions[:, -last:, :] == score.action)
        return share if score.target is None else -((share - score.target) ** 2)
    flat = actions.reshape(-1, actions.shape[-1])
    if score.kind == "net_welfare":
        total = jax.vmap(lambda a: (mechanism.payoffs(mech_params, a) - mechanism.lever_transfers(mech_params, a)).sum())
    else:
        total = jax.vmap(lambda a: mechanism.payoffs(mech_params, a).sum())
    return total(flat).mean()


def cell_elements(model: Model, num_episodes: int, num_rounds: int) -> int:
    """Array elements alive while one candidate is simulated and scored under one draw: the
    actions and the payoffs of every round, and the learner states."""
    n, A = model.num_agents, model.num_actions
    return num_episodes * (num_rounds * n * (A + 2) + 2 * n * A + A * A)


def evaluate(
    model: Model,
    params: Params,
    lever: str,
    values: np.ndarray,
    keys: PRNGKey,
    score: Score,
    num_episodes: int,
    num_rounds: int,
    pool: np.ndarray | None = None,
) -> np.ndarray:
    """Scores ``(C, S)`` of the candidates ``values (C, *shape)`` under the draws ``params``
    (leading axis ``S``, each draw simulated with ``keys[s]`` whatever the candidate).

    ``pool``: observed episodes ``(P, T, n)`` whose unmodelled agents (``[game] modelled``) replay
    their actions, drawn as the counterfactuals draw them (``counterfactual._simulate_draws``)."""
    S = int(keys.shape[0])
    C = int(values.shape[0])
    draw_batch = max(1, min(S, CHUNK_ELEMENTS // max(1, C * cell_elements(model, num_episodes, num_rounds))))
    num_batches = math.ceil(S / draw_batch)
    draw_batch = math.ceil(S / num_batches)  # equal batches: one compiled body, no remainder
    padded = np.minimum(np.arange(num_batches * draw_batch), S - 1)
    dtype = jnp.result_type(float)
    padded_params = jax.tree.map(lambda v: jnp.asarray(np.asarray(v)[padded], dtype), params)
    pool = None if pool is None else jnp.asarray(pool, jnp.int32)
    out = _scores(model, padded_params, jnp.asarray(values, dtype), keys[padded], pool, lever, score, num_episodes, num_rounds, draw_batch)
    return np.asarray(out, np.float64)[:S].T


@functools.partial(jax.jit, static_argnames=("model", "lever", "score", "num_episodes", "num_rounds", "draw_batch"))
def _scores(
    model: Model,
    params: Params,
    values: Array,
    keys: PRNGKey,
    pool,
    lever: str,
    score: Score,
    num_episodes: int,
    num_rounds: int,
    draw_batch: int,
) -> Array:
    """``(S, C)`` scores: ``lax.map`` over draws (``draw_batch`` at a time), ``vmap`` over candidates
    with the draw's key shared by all of them (common random numbers)."""

    def one_draw(args):
        p, key = args
        replay = None if pool is None else pool[jax.random.randint(jax.random.fold_in(key, 1), (num_episodes,), 0, pool.shape[0])]

        def one_candidate(value):
            mech = {**p["mechanism"], lever: value}
            actions = simulate_arrays(model, {"mechanism": mech, "learner": p["learner"]}, key, num_episodes, num_rounds, replay=replay)
            return play_score(model, mech, actions, score)

        return jax.vmap(one_candidate)(values)

    draws = {"mechanism": params["mechanism"], "learner": params["learner"]}
    return jax.lax.map(one_draw, (draws, keys), batch_size=draw_batch)


# ------------------------------------------------------------------ risk
def risk_values(scores: np.ndarray, cvar: float | None) -> np.ndarray:
    """Per candidate (rows of ``scores (C, S)``): the mean over draws, or with ``cvar = q`` the
    mean of the ``ceil(q S)`` smallest scores (the lower-tail CVaR, Rockafellar & Uryasev 2000)."""
    if cvar is None:
        return scores.mean(axis=1)
    worst = max(1, math.ceil(cvar * scores.shape[1]))
    return np.sort(scores, axis=1)[:, :worst].mean(axis=1)


# ------------------------------------------------------------------ search
def halton(num: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """``num`` points of the ``dim``-dimensional Halton sequence in ``[0, 1)^dim`` (radical inverses
    in the first ``dim`` primes, Halton 1960), shifted by one uniform vector modulo 1
    (Cranley & Patterson 1976) so that different seeds give different points."""
    if dim > len(_PRIMES):
        return rng.random((num, dim))
    out = np.zeros((num, dim))
    for j, base in enumerate(_PRIMES[:dim]):
        index = np.arange(1, num + 1)
        fraction = 1.0 / base
        while np.any(index > 0):
            out[:, j] += fraction * (index % base)
            index //= base
            fraction /= base
    return (out + rng.random(dim)) % 1.0


def search(
    score_batch,
    lower: np.ndarray,
    upper: np.ndarray,
    starts: list[np.ndarray],
    num_candidates: int,
    refinements: int,
    rng: np.random.Generator,
    on_batch=lambda: None,
) -> tuple[np.ndarray, float, int]:
    """Maximise ``score_batch(values (C, D)) -> (C,)`` over the box ``[lower, upper]``.

    Batch 0: ``starts`` (clipped into the box) and quasi-random points filling ``num_candidates``;
    then ``refinements`` batches of the best point so far and quasi-random points in the box of
    half-widths ``(upper - lower) / 2 * SHRINK**r`` around it (cut at the bounds).

    Returns:
        The best point ``(D,)``, its score, and the number of candidates scored.
    """
    width = upper - lower
    first = [np.clip(s, lower, upper) for s in starts][:num_candidates]
    fill = lower + width * halton(num_candidates - len(first), lower.size, rng)
    batch = np.concatenate([np.reshape(first, (-1, lower.size)), fill])
    scores = score_batch(batch)
    on_batch()
    best, best_score = batch[int(np.argmax(scores))], float(np.max(scores))
    for r in range(1, refinements + 1):
        half = width / 2 * SHRINK**r
        lo, hi = np.maximum(lower, best - half), np.minimum(upper, best + half)
        batch = np.concatenate([best[None], lo + (hi - lo) * halton(num_candidates - 1, lower.size, rng)])
        scores = score_batch(batch)
        on_batch()
        if float(np.max(scores)) > best_score:
            best, best_score = batch[int(np.argmax(scores))], float(np.max(scores))
    return best, best_score, num_candidates * (refinements + 1)
