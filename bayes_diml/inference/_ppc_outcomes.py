"""The rows of the ``previous_outcome`` table of ``ppc`` (``inference/ppc.py``): the bin of each
agent-round's outcome, observed and replicated.

* A ``payoff`` column (numbers): bins cut at midpoints between at most ``OUTCOME_LEVELS``
  distinct values (exact levels such as win / tie / lose, replicated as ``M(a_t)_i``), else at
  the observed terciles (replicated as ``M(a_t)_i + sigma * N(0, 1)``) (``payoff_cuts``).
* An outcome column (``Trajectories.outcome``: codes, ``-1`` unobserved; rows are its labels,
  those of ``[payoff] outcomes``): a replicated round's label is read off the **observed
  relation** between the joint action and the label (``outcome_relation``), not off the fitted
  mechanism. The outcome rule is the experimenter's (a win is a win whatever the fitted
  payoffs), and exact where the label is a function of the agent and the joint action (every
  tabular game scored by its result, e.g. rock-paper-scissors); mapping the replicated payoff
  ``M(a)_i`` to the nearest outcome value instead would relabel rounds whenever the fitted
  mechanism is wrong -- the very case the check is for (issue 20: a posterior with the
  payoffs reversed would call losses wins) -- and the model gives no distribution of labels
  (``v(o) ~ Normal(M(a)_i, sigma)`` is a density of payoffs). Key of an agent-round:
  ``(i, c_0, ..., c_{n-1})`` with ``c_j = a_j + 1`` where agent ``j`` played, 0 where not.
  When the data give one key two labels the relation is not a function of the joint action
  and the table is skipped with a note (``ppc(...)["notes"]``); a replicated joint action the
  data never show with an outcome has no label and leaves its row out of that replicate.
"""

from __future__ import annotations

import numpy as np

__all__ = ["OUTCOME_LEVELS", "payoff_cuts", "outcome_relation", "relation_keys"]

OUTCOME_LEVELS = 5
"""Recorded payoffs with at most this many distinct values are binned by value, else in terciles."""
_MAX_KEY = 2**31 - 1
"""Largest key (int32: JAX's default integers)."""


def payoff_cuts(data) -> tuple[np.ndarray, list[str], float] | None:
    """Cut points and row labels of the payoff bins, and whether replicated payoffs get the
    model's noise (1.0: terciles of a continuous payoff; 0.0: a few exact levels, e.g.
    win / tie / lose, compared with ``M(a_t)_i`` itself), or ``None`` without recorded payoffs."""
    payoff = getattr(data, "payoff", None)
    if payoff is None:
        return None
    values = np.asarray(payoff, float)[~data.mask]
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    distinct = np.unique(np.round(values, 9))
    if distinct.size <= OUTCOME_LEVELS:
        return (distinct[:-1] + distinct[1:]) / 2, [f"{v:g}" for v in distinct], 0.0
    cuts = np.unique(np.quantile(values, [1 / 3, 2 / 3]))
    labels = [f"<= {cuts[0]:.3g}"] + [f"({lo:.3g}, {hi:.3g}]" for lo, hi in zip(cuts[:-1], cuts[1:])] + [f"> {cuts[-1]:.3g}"]
    return cuts, labels, 1.0


def relation_keys(actions, present, num_actions: int, xp=np):
    """The key of every agent-round ``(E, T, n)`` (module docstring), ``xp`` NumPy or ``jax.numpy``."""
    n = actions.shape[-1]
    base = num_actions + 1
    codes = (actions + 1) * present  # (E, T, n)
    joint = (codes * xp.asarray(base ** np.arange(n), codes.dtype)).sum(axis=-1, keepdims=True)
    return joint + xp.asarray(np.arange(n) * base**n, codes.dtype)


def outcome_relation(data, num_actions: int) -> dict:
    """The observed relation (agent, joint action) -> outcome label of an outcome column.

    Returns ``{"codes", "known", "labels", "keys", "values"}`` (observed codes ``(E, T, n)``,
    where they are observed, the row labels, the sorted keys and each key's label code), or
    ``{"note": ...}`` when the table cannot be built (module docstring).
    """
    outcome = data.outcome
    E, T, n = data.actions.shape
    codes = np.asarray(outcome.codes)
    known = (codes >= 0) & ~np.asarray(data.mask)
    if not known.any():
        return {"note": "previous_outcome skipped: no outcome is observed"}
    if n * (num_actions + 1) ** n > _MAX_KEY:
        return {"note": f"previous_outcome skipped: {n} agents x {num_actions} actions are too many joint actions "
                        "to tabulate the outcome of"}
    present = ~np.asarray(data.mask)
    keys = relation_keys(np.where(present, data.actions, 0).astype(np.int64), present.astype(np.int64), num_actions)
    unique, inverse = np.unique(keys[known], return_inverse=True)
    low = np.full(unique.size, len(outcome.labels))
    high = np.full(unique.size, -1)
    np.minimum.at(low, inverse, codes[known])
    np.maximum.at(high, inverse, codes[known])
    if np.any(low != high):
        k = int(np.argmax(low != high))
        e, t, i = (int(x) for x in np.argwhere(known & (keys == unique[k]))[0])
        others = [str(data.action_labels[a]) if present[e, t, j] else "-" for j, a in enumerate(data.actions[e, t])]
        return {"note": (
            f"previous_outcome skipped: the outcome column is not a function of the joint action (agent "
            f"{data.agent_labels[i]} at joint action ({', '.join(others)}) is recorded both "
            f"'{outcome.labels[low[k]]}' and '{outcome.labels[high[k]]}'), so replicated play has no outcome to check")}
    return {"codes": np.where(known, codes, 0).astype(np.int32), "known": known, "labels": [str(x) for x in outcome.labels],
            "keys": unique.astype(np.int32), "values": low.astype(np.int32)}
