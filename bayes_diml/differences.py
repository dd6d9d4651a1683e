"""Payoff differences: the one home of the quantities the data identify (docs/design.md §1, §3, §5).

For a query code row ``(agent i, action k, baseline k', joint action a...)``:

    Delta_i(k, k' | a_-i) = M(k, a_-i)_i - M(k', a_-i)_i

This module computes them for parameter draws (``differences``, traceable;
``draw_differences``, compiled, NumPy out) and for one true parameter set
(``true_differences``); says which opponent contexts the data hold
(``support_contexts``, ``in_support``); and draws queries, as codes over observed
rounds (``random_queries``, the benchmark's metrics) or as labelled rows
(``sample_queries``, the library's default questions). ``inference.queries``
(``Fit.payoff_differences``), ``metrics``, ``calibration`` and the identifiability
report all use these functions.

Two evaluation paths, kept because they round differently in float32 for the neural
family (by about 1e-7): ``prepared=True`` goes through ``mechanism.prepare`` (the
neural family's payoff table, ``A**n`` network evaluations per draw instead of ``n A``
per query; the benchmark's metrics), ``prepared=False`` calls
``counterfactual_payoffs`` per query (the posterior queries, calibration and the
identifiability report). Every other family gives the same numbers either way.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ._types import Params
from .errors import DataError

__all__ = [
    "QUERY_COLUMNS",
    "differences",
    "draw_differences",
    "true_differences",
    "observed_rounds",
    "opponent_context",
    "support_contexts",
    "in_support",
    "random_queries",
    "sample_queries",
]

QUERY_COLUMNS = ("agent", "action", "baseline", "joint")
"""Columns of a labelled query row (``inference.queries.parse_queries`` codes them)."""

PREPARED_BATCH = 16
"""Draws evaluated at once on the ``prepared`` path (each holds a prepared table)."""

DIRECT_BATCH = 64
"""Draws evaluated at once on the direct path."""


# ------------------------------------------------------------------ differences
def differences(mechanism, params_draws: Params, codes, prepared: bool = False) -> jax.Array:
    """``(S, Q)`` differences of each query code row under each parameter draw.

    Traceable (usable inside jitted code). ``params_draws``: the mechanism's
    parameters with a leading draw axis ``(S, ...)``; ``codes``: int ``(Q, 3 + n)``.
    ``prepared`` picks the evaluation path (see the module docstring).
    """

    def one_draw(p):
        if prepared:
            ready = mechanism.prepare(p)

            def counterfactuals(joint):
                return mechanism.prepared_counterfactual_payoffs(ready, joint)
        else:

            def counterfactuals(joint):
                return mechanism.counterfactual_payoffs(p, joint)

        def one_query(c):
            cf = counterfactuals(c[3:])
            return cf[c[0], c[1]] - cf[c[0], c[2]]

        return jax.vmap(one_query)(codes)

    return jax.lax.map(one_draw, params_draws, batch_size=PREPARED_BATCH if prepared else DIRECT_BATCH)


_differences_jit = jax.jit(differences, static_argnums=(0, 3))


def draw_differences(mechanism, params_draws: Params, codes: np.ndarray, prepared: bool = False) -> np.ndarray:
    """``differences`` compiled, as a NumPy ``(S, Q)`` array."""
    return np.asarray(_differences_jit(mechanism, params_draws, jnp.asarray(codes), prepared))


def true_differences(mechanism, truth_params: dict, codes: np.ndarray, prepared: bool = False) -> np.ndarray:
    """Differences under one known parameter set (no draw axis), ``(Q,)``."""
    params = jax.tree.map(lambda v: jnp.asarray(v)[None], truth_params)
    return draw_differences(mechanism, params, codes, prepared)[0]


# ---------------------------------------------------------------------- support
def observed_rounds(data) -> tuple[np.ndarray, np.ndarray]:
    """Joint actions and presence ``(R, n)`` of every round in which somebody played."""
    actions = data.actions.reshape(-1, data.num_agents)
    present = ~data.mask.reshape(-1, data.num_agents)
    keep = present.any(axis=1)
    return actions[keep], present[keep]


def opponent_context(joint, agent: int, counts_context: bool, num_actions: int) -> tuple:
    """The opponent context of ``agent`` in a joint action: the others' actions
    ``a_-i`` (joint families) or their action counts (``counts_context`` families)."""
    others = np.delete(np.asarray(joint), agent)
    return tuple(np.bincount(others, minlength=num_actions).tolist()) if counts_context else tuple(others.tolist())


def support_contexts(data, counts_context: bool, num_actions: int) -> list[set]:
    """Per agent, the set of opponent contexts that occur in the data.

    Joint families: the others' actions ``a_-i`` (rounds in which all others
    played). Count-based families: the others' action counts, which do not depend
    on who the agent is, so one set serves all agents.
    """
    actions, present = observed_rounds(data)
    n = data.num_agents
    if counts_context:
        onehot = np.eye(num_actions, dtype=np.int64)[actions] * present[..., None]
        counts = onehot.sum(axis=1)  # (R, A)
        contexts = {tuple(c) for c in (counts[:, None, :] - onehot)[present].tolist()}
        return [contexts] * n
    sets = []
    for i in range(n):
        others = np.delete(np.arange(n), i)
        full = present[:, others].all(axis=1)
        sets.append({tuple(r) for r in actions[full][:, others].tolist()})
    return sets


def in_support(codes: np.ndarray, contexts: list[set], counts_context: bool, num_actions: int) -> np.ndarray:
    """Whether each query's opponent context occurs in the data, ``(Q,)`` bool."""
    out = np.zeros(len(codes), bool)
    for q, row in enumerate(codes):
        agent = int(row[0])
        out[q] = opponent_context(row[3:], agent, counts_context, num_actions) in contexts[agent]
    return out


# ---------------------------------------------------------------------- queries
def random_queries(actions: np.ndarray, mask: np.ndarray | None, num_actions: int, num: int, seed: int,
                   distinct: bool = False, skip_last: bool = True) -> np.ndarray:
    """Random payoff-difference query codes from observed contexts, int ``(num, 3 + n)``.

    Each row: a random episode, round and agent (``(e, t, i)`` with every agent
    present in that round; rounds ``0..T-2`` when ``skip_last``, the paper's
    convention), then own actions ``k, k'`` uniform at random, independently
    (``distinct=False``, the paper's convention, pairs with ``k = k'`` give Δ = 0)
    or as a distinct pair. Columns: agent, k, k', then the observed joint action.
    """
    actions = np.asarray(actions)
    E, T, n = actions.shape
    mask = np.zeros(actions.shape, bool) if mask is None else np.asarray(mask, bool)
    full = ~mask.any(axis=2)  # (E, T)
    if skip_last and T > 1:
        full[:, T - 1] = False
    e_idx, t_idx = np.nonzero(full)
    if e_idx.size == 0:
        raise DataError("difference_queries: no round in which every agent played")
    rng = np.random.default_rng(seed)
    pick = rng.integers(e_idx.size, size=num)
    agent = rng.integers(n, size=num)
    if distinct:
        if num_actions < 2:
            raise DataError("difference_queries: distinct pairs need at least 2 actions")
        first = rng.integers(num_actions, size=num)
        second = (first + rng.integers(1, num_actions, size=num)) % num_actions
    else:
        first = rng.integers(num_actions, size=num)
        second = rng.integers(num_actions, size=num)
    joint = actions[e_idx[pick], t_idx[pick]]
    return np.concatenate([agent[:, None], first[:, None], second[:, None], joint], axis=1).astype(np.int32)


def sample_queries(data, num: int, *, seed) -> pd.DataFrame:
    """Random in-support queries, no two alike: a random observed round in which every
    agent played, a random agent, and two distinct own actions (``action`` vs
    ``baseline``). Labels as in the data.

    Two rows are alike when they ask about the same agent, the same opponent context
    (the others' actions in ``joint``) and the same pair of own actions in either order
    (``a`` vs ``b`` is ``-(b`` vs ``a)``). Fewer than ``num`` rows come back when the
    data hold fewer distinct queries. ``seed`` (required) seeds NumPy's generator: an
    int, or a sequence of ints such as a JAX key's ``key_data``.
    """
    rng = np.random.default_rng(seed)
    actions, present = observed_rounds(data)
    full = present.all(axis=1)
    if not full.any():
        raise DataError("no round in which every agent played: cannot form joint-action queries")
    actions = actions[full]
    n, A = data.num_agents, data.num_actions
    pairs = A * (A - 1) // 2
    joints = np.unique(actions, axis=0)
    available = n * -(-len(joints) // A) * pairs  # a lower bound: a context occurs with at most A own actions
    if available <= num:
        contexts = [np.unique(np.delete(joints, i, axis=1), axis=0) for i in range(n)]
        available = sum(len(c) for c in contexts) * pairs
    seen: set = set()
    rows = []

    def add(agent: int, joint, action: int, baseline: int) -> None:
        key = (agent, tuple(np.delete(joint, agent).tolist()), min(action, baseline), max(action, baseline))
        if key in seen:
            return
        seen.add(key)
        rows.append(
            {
                "agent": data.agent_labels[agent],
                "action": data.action_labels[action],
                "baseline": data.action_labels[baseline],
                "joint": " ".join(str(data.action_labels[k]) for k in joint),
            }
        )

    if available <= num:  # every distinct query, in a random order
        for agent in range(n):
            for context in contexts[agent]:
                joint = np.insert(context, agent, 0)
                for action in range(A):
                    for baseline in range(action + 1, A):
                        add(agent, joint, *((action, baseline) if rng.random() < 0.5 else (baseline, action)))
        order = rng.permutation(len(rows))
        return pd.DataFrame([rows[k] for k in order], columns=list(QUERY_COLUMNS))
    while len(rows) < num:  # available > num: rejection of repeats ends
        joint = actions[rng.integers(len(actions))]
        agent = int(rng.integers(n))
        action, baseline = rng.choice(A, size=2, replace=False)
        add(agent, joint, int(action), int(baseline))
    return pd.DataFrame(rows, columns=list(QUERY_COLUMNS))
