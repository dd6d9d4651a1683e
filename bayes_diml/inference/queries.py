"""Payoff-difference queries: the quantities the data identify (docs/design.md §3, §5).

For a query row ``(agent i, action k, baseline k', joint action a)``:

    Delta_i(k, k' | a_-i) = M(k, a_-i)_i - M(k', a_-i)_i

computed for every posterior draw (vectorised over draws and queries) and
summarised by mean, sd and the equal-tailed ``CREDIBLE_LEVEL`` (90%) interval ``[q05, q95]``.
The differences, their support and the default queries are computed in
``bayes_diml.differences`` (re-exported here); this module parses labelled query rows
and summarises a fit's draws.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..differences import (
    QUERY_COLUMNS,
    draw_differences,
    in_support,
    sample_queries,
    support_contexts,
    true_differences,
)
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
            from .._table_files import _first_non_utf8

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


def difference_draws(fit, codes: np.ndarray) -> np.ndarray:
    """Posterior draws of each query's difference, ``(num_draws_total, Q)``."""
    return draw_differences(fit.model.mechanism, fit.params_draws()["mechanism"], codes)


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
