"""Payoff-difference queries: the quantities the data identify (DESIGN §3, §5).

For a query row ``(agent i, action k, baseline k', joint action a)``:

    Delta_i(k, k' | a_-i) = M(k, a_-i)_i - M(k', a_-i)_i

computed for every posterior draw (vectorised over draws and queries) and
summarised by mean, sd and the equal-tailed ``CREDIBLE_LEVEL`` (90%) interval ``[q05, q95]``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ..errors import DataError
from .results import CREDIBLE_LEVEL, interval_columns

__all__ = [
    "payoff_differences",
    "parse_queries",
    "difference_draws",
    "true_differences",
    "support_contexts",
    "in_support",
    "sample_queries",
    "QUERY_COLUMNS",
]

QUERY_COLUMNS = ("agent", "action", "baseline", "joint")


def _label_to_code(labels: tuple, value, what: str, row: int, source: str) -> int:
    """Map a label read from a query (maybe as text) to its index in ``labels``."""
    if value in labels:
        return labels.index(value)
    text = str(value).strip()
    for index, label in enumerate(labels):
        if str(label) == text:
            return index
    raise DataError(f"{source}: row {row}, column '{what}': unknown label {value!r}; known: {list(labels)}")


def parse_queries(queries, data, source: str = "queries") -> tuple[pd.DataFrame, np.ndarray]:
    """Validate query rows and code them.

    Args:
        queries: a DataFrame (or list of dicts, or CSV path) with columns
            ``agent, action, baseline, joint``; ``joint`` is the full joint action as
            space-separated action labels in agent order (the agent's own entry is
            ignored).
        data: the fitted ``Trajectories`` (for the labels).

    Returns:
        ``(frame, codes)`` where ``codes`` is int ``(Q, 3 + n)``: agent, action,
        baseline, then the joint action with the agent's own entry set to ``action``.
    """
    if isinstance(queries, (str, bytes)) or hasattr(queries, "__fspath__"):
        source = str(queries)
        try:
            queries = pd.read_csv(queries, dtype=str, keep_default_na=False, encoding="utf-8-sig")
        except UnicodeDecodeError as err:
            from ..trajectories import _first_non_utf8

            offset, line, reason = _first_non_utf8(queries) or (err.start, None, err.reason)
            where = "" if line is None else f", line {line}"
            raise DataError(
                f"{source}{where}: byte {offset} is not UTF-8 text ({reason}); expected a UTF-8 CSV file"
            ) from None
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
            raise DataError(f"{source}: cannot read queries: {err}") from None
    frame = pd.DataFrame(queries).reset_index(drop=True)
    missing = [c for c in QUERY_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{source}: missing column(s) {missing}; a query has columns {list(QUERY_COLUMNS)}")
    if len(frame) == 0:
        raise DataError(f"{source}: no query rows")
    n = data.num_agents
    codes = np.zeros((len(frame), 3 + n), dtype=np.int32)
    for row, record in enumerate(frame.itertuples(index=False)):
        record = record._asdict()
        agent = _label_to_code(tuple(data.agent_labels), record["agent"], "agent", row, source)
        action = _label_to_code(tuple(data.action_labels), record["action"], "action", row, source)
        baseline = _label_to_code(tuple(data.action_labels), record["baseline"], "baseline", row, source)
        tokens = str(record["joint"]).split()
        if len(tokens) != n:
            raise DataError(
                f"{source}: row {row}, column 'joint': {len(tokens)} action labels, expected {n} "
                "(one per agent, space-separated, in agent order)"
            )
        joint = [_label_to_code(tuple(data.action_labels), t, "joint", row, source) for t in tokens]
        joint[agent] = action
        codes[row] = [agent, action, baseline, *joint]
    return frame, codes


def _differences(mechanism, params, codes):
    """``(S, Q)`` differences for params with a leading draw axis."""

    def one_draw(p):
        def one_query(c):
            cf = mechanism.counterfactual_payoffs(p, c[3:])
            return cf[c[0], c[1]] - cf[c[0], c[2]]

        return jax.vmap(one_query)(codes)

    return jax.lax.map(one_draw, params, batch_size=64)


def difference_draws(fit, codes: np.ndarray) -> np.ndarray:
    """Posterior draws of each query's difference, ``(num_draws_total, Q)``."""
    params = fit.params_draws()["mechanism"]
    return np.asarray(jax.jit(_differences, static_argnums=0)(fit.model.mechanism, params, jnp.asarray(codes)))


def true_differences(mechanism, truth_params: dict, codes: np.ndarray) -> np.ndarray:
    """Differences under known mechanism parameters, ``(Q,)``."""
    params = jax.tree.map(lambda v: jnp.asarray(v)[None], truth_params)
    return np.asarray(jax.jit(_differences, static_argnums=0)(mechanism, params, jnp.asarray(codes)))[0]


def _observed_rounds(data) -> tuple[np.ndarray, np.ndarray]:
    """Joint actions and presence of every round in which somebody played."""
    actions = data.actions.reshape(-1, data.num_agents)
    present = ~data.mask.reshape(-1, data.num_agents)
    keep = present.any(axis=1)
    return actions[keep], present[keep]


def support_contexts(data, counts_context: bool, num_actions: int) -> list[set]:
    """Per agent, the set of opponent contexts that occur in the data.

    Joint families: the others' actions ``a_-i`` (rounds in which all others
    played). Count-based families: the others' action counts, which do not depend
    on who the agent is, so one set serves all agents.
    """
    actions, present = _observed_rounds(data)
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
    n = codes.shape[1] - 3
    out = np.zeros(len(codes), bool)
    for q, row in enumerate(codes):
        agent, joint = int(row[0]), row[3:]
        others = np.delete(joint, agent)
        key = tuple(np.bincount(others, minlength=num_actions).tolist()) if counts_context else tuple(others.tolist())
        out[q] = key in contexts[agent]
    del n
    return out


def payoff_differences(fit, queries, truth: dict | None = None, prob: float = CREDIBLE_LEVEL) -> pd.DataFrame:
    """Posterior summaries of payoff differences (``Fit.payoff_differences``).

    Args:
        fit: a ``Fit``.
        queries: rows ``agent, action, baseline, joint`` (see ``parse_queries``).
        truth: optional true mechanism parameters; adds ``truth`` and ``covered``.
        prob: interval mass (default ``CREDIBLE_LEVEL``, 0.90: columns ``q05``, ``q95``).

    Returns:
        The query rows with ``mean, sd, q05, q95, in_support`` (and ``truth``,
        ``covered``).
    """
    frame, codes = parse_queries(queries, fit.data)
    draws = difference_draws(fit, codes)
    lo, hi = (1 - prob) / 2, 1 - (1 - prob) / 2
    low, high = interval_columns(prob)
    out = frame.copy()
    out["mean"] = draws.mean(axis=0)
    out["sd"] = draws.std(axis=0, ddof=1) if draws.shape[0] > 1 else 0.0
    out[low] = np.quantile(draws, lo, axis=0)
    out[high] = np.quantile(draws, hi, axis=0)
    mechanism = fit.model.mechanism
    contexts = support_contexts(fit.data, mechanism.counts_context, mechanism.num_actions)
    out["in_support"] = in_support(codes, contexts, mechanism.counts_context, mechanism.num_actions)
    if truth is not None:
        true = true_differences(mechanism, truth, codes)
        out["truth"] = true
        out["covered"] = (true >= out[low]) & (true <= out[high])
    return out


def sample_queries(data, num: int, seed: int = 0) -> pd.DataFrame:
    """Random in-support queries, no two alike: a random observed round in which every
    agent played, a random agent, and two distinct own actions (``action`` vs
    ``baseline``). Labels as in the data.

    Two rows are alike when they ask about the same agent, the same opponent context
    (the others' actions in ``joint``) and the same pair of own actions in either order
    (``a`` vs ``b`` is ``-(b`` vs ``a)``). Fewer than ``num`` rows come back when the
    data hold fewer distinct queries.
    """
    rng = np.random.default_rng(seed)
    actions, present = _observed_rounds(data)
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
