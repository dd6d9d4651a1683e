"""Parsing a long table of raw cells into the arrays of a ``Trajectories``.

The one parsing core for CSV, Parquet and DataFrame input: each column is read through
its distinct cells in order of first appearance, so the first bad cell found is the
first bad row of the table, and the message names it (see :mod:`bayes_diml.trajectories`
for the rules on labels, rounds, actions and payoffs). Then the rows are checked as a
whole: no (episode, round, agent) twice, and no round inside an episode where nobody
played.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

from bayes_diml._cells import _INT, _MISSING, _NA_TEXT, _NUMBER, _TEXT, _classify
from bayes_diml._labels import _as_labels, _check_action_labels, _closest_label, _label_kind, _label_problem, _show, _show_labels
from bayes_diml._long_table import (
    _HEADER_TEXT,
    _ROUND_LIMIT,
    MAX_NUM_ACTIONS,
    PAYOFF_COLUMN,
    _cell_error,
    _check_columns,
    _Column,
    _mixed_types_error,
    _Table,
)
from bayes_diml.errors import DataError


def _parse_labels(table: _Table, column: str,
                  known: tuple | None = None) -> tuple[tuple, np.ndarray]:
    """Reads an episode or agent column.

    With ``known`` labels, a label outside them is refused at its first row.

    Returns:
        The sorted distinct labels, and each row's index into them (int64,
        shape (num_rows,)).
    """
    col = table.column(column)
    expected = f"an {column} label (an integer or a non-numeric string)"
    labels: list = []
    first_int = first_text = None  # distinct-cell positions
    distinct_of: dict[Any, int] = {}
    known_set = None if known is None else set(known)
    for k, cell in enumerate(col.cells):
        row = int(col.first_row[k])
        kind, value = _label_kind(cell)
        if kind not in (_INT, _TEXT):
            raise _cell_error(table, row, column, kind, cell, expected)
        seen = distinct_of.setdefault(value, k)
        if kind == _INT:
            first_int = k if first_int is None else first_int
            if str(col.cells[seen]) != str(cell):
                raise table.error(row, column, (
                    f"{_show(cell)} and {_show(col.cells[seen])} "
                    f"({table.where(col.first_row[seen])}) both read as the integer "
                    f"label {value}; write each label one way"))
        else:
            first_text = k if first_text is None else first_text
        if seen == k:
            problem = _label_problem(value)
            if problem:
                raise table.error(row, column, f"label {_show(cell)} {problem}")
        if first_int is not None and first_text is not None:
            raise _mixed_types_error(table, col, row, column, (first_int, first_text), expected, (
                "label", "label", "a column's labels must be all integers or all strings"))
        if known_set is not None and value not in known_set:
            raise table.error(row, column, (
                f"{column} label {_show(cell)} is not in {column}_labels "
                f"{_show_labels(known)}{_closest_label(value, known)}"))
        labels.append(value)
    ordered = tuple(sorted(distinct_of))
    rank = {label: r for r, label in enumerate(ordered)}
    return ordered, np.asarray([rank[v] for v in labels], np.int64)[col.index]


def _parse_rounds(table: _Table) -> np.ndarray:
    """Reads the round column: integer round labels, int64, shape (num_rows,)."""
    column = "round"
    col = table.column(column)
    rounds = np.empty(len(col.cells), np.int64)
    for k, cell in enumerate(col.cells):
        row = int(col.first_row[k])
        kind, value = _classify(cell)
        if kind != _INT:
            raise _cell_error(table, row, column, kind, cell, "an integer round number")
        if abs(value) > _ROUND_LIMIT:
            raise table.error(row, column, (
                f"round {_show(cell)} is out of range; expected an integer of magnitude "
                f"at most 2**62"))
        rounds[k] = value
    return rounds[col.index]


def _resolve_action_args(num_actions: Any, action_labels: Any,
                         source: str) -> tuple[int | None, tuple | None]:
    """Checks the ``num_actions`` and ``action_labels`` arguments against each other."""
    if num_actions is not None:
        if isinstance(num_actions, bool) or not isinstance(num_actions, (int, np.integer)):
            raise DataError(f"{source}: num_actions={num_actions!r} must be an int")
        num_actions = int(num_actions)
        if not 1 <= num_actions <= MAX_NUM_ACTIONS:
            raise DataError(f"{source}: num_actions={num_actions} is out of range; "
                            f"expected 1..{MAX_NUM_ACTIONS}")
    if action_labels is None:
        return num_actions, None
    labels = _as_labels(action_labels, f"{source}: action_labels")
    _check_action_labels(labels, len(labels), f"{source}: action_labels")
    if num_actions is not None and num_actions != len(labels):
        raise DataError(f"{source}: num_actions={num_actions} but action_labels has "
                        f"{len(labels)} entries; they must agree")
    return num_actions, labels


def _parse_actions(table: _Table, num_actions: int | None,
                   action_labels: tuple | None) -> tuple[np.ndarray, int, tuple]:
    """Reads the action column.

    Returns:
        Codes (int32, shape (num_rows,)), num_actions, and the action labels.
    """
    col = table.column("action")
    limit = len(action_labels) if action_labels is not None else num_actions
    values, first_text = _action_values(table, col, limit)
    if first_text is None:
        return _integer_actions(table, col, values, limit, action_labels)
    return _string_actions(table, col, values, first_text, num_actions, action_labels)


def _action_values(table: _Table, col: _Column, limit: int | None) -> tuple[list, int | None]:
    """Reads each distinct cell of the action column: all integer codes or all strings.

    Returns:
        The value of each distinct cell, and the position of the first string label
        among them (None: all are integer codes).
    """
    column = "action"
    codes_expected = (f"an integer code in 0..{limit - 1}" if limit is not None
                      else "a non-negative integer code")
    expected = f"{codes_expected} or a string action label"
    values = []
    first_int = first_text = None  # distinct-cell positions
    for k, cell in enumerate(col.cells):
        row = int(col.first_row[k])
        kind, value = _label_kind(cell)
        if kind not in (_INT, _TEXT):
            raise _cell_error(table, row, column, kind, cell, expected)
        if kind == _INT:
            first_int = k if first_int is None else first_int
            if value < 0:
                raise table.error(row, column, (
                    f"negative action code {_show(cell)}; expected {codes_expected}"))
        else:
            first_text = k if first_text is None else first_text
        if first_int is not None and first_text is not None:
            raise _mixed_types_error(table, col, row, column, (first_int, first_text), expected, (
                "action", "code", "use codes throughout or labels throughout"))
        values.append(value)
    return values, first_text


def _integer_actions(table: _Table, col: _Column, values: list, limit: int | None,
                     given: tuple | None) -> tuple[np.ndarray, int, tuple]:
    """Integer action codes, each below ``limit`` (None: 1 + the largest code)."""
    column = "action"
    if limit is None:
        k = max(range(len(values)), key=values.__getitem__)
        if values[k] >= MAX_NUM_ACTIONS:
            raise table.error(int(col.first_row[k]), column, (
                f"action code {_show(col.cells[k])} is out of range; expected a code "
                f"in 0..{MAX_NUM_ACTIONS - 1} (at most {MAX_NUM_ACTIONS} actions)"))
        limit = values[k] + 1
    else:
        why = (f"action_labels has {limit} entries" if given is not None
               else f"num_actions={limit}")
        for k, value in enumerate(values):
            if value >= limit:
                raise table.error(int(col.first_row[k]), column, (
                    f"action code {_show(col.cells[k])} is out of range; expected "
                    f"an integer in 0..{limit - 1} ({why})"))
    labels = given if given is not None else tuple(range(limit))
    return np.asarray(values, np.int32)[col.index], limit, labels


def _string_actions(table: _Table, col: _Column, values: list, first_text: int,
                    num_actions: int | None,
                    given: tuple | None) -> tuple[np.ndarray, int, tuple]:
    """String action labels, coded by their place in ``given`` (None: sorted order)."""
    column = "action"
    if given is not None and isinstance(given[0], int):
        raise table.error(int(col.first_row[first_text]), column, (
            f"string action label {_show(col.cells[first_text])} but action_labels are "
            f"integer codes 0..{len(given) - 1}"))
    if given is None:
        given = _sorted_action_labels(table, col, values, num_actions)
    code_of = {label: code for code, label in enumerate(given)}
    codes = np.empty(len(values), np.int32)
    for k, value in enumerate(values):
        code = code_of.get(value)
        if code is None:
            allowed = ", ".join(_show(label) for label in given)
            raise table.error(int(col.first_row[k]), column, (
                f"action label {_show(value)} is not in action_labels; expected one "
                f"of {allowed}"))
        codes[k] = code
    return codes[col.index], len(given), given


def _sorted_action_labels(table: _Table, col: _Column, values: list,
                          num_actions: int | None) -> tuple:
    """The distinct string actions, sorted: each a valid label, as many as ``num_actions``."""
    column = "action"
    distinct: dict[str, int] = {}
    for k, value in enumerate(values):
        if distinct.setdefault(value, k) == k:
            row = int(col.first_row[k])
            problem = _label_problem(value)
            if problem:
                raise table.error(row, column, f"label {_show(value)} {problem}")
            if num_actions is not None and len(distinct) > num_actions:
                raise table.error(row, column, (
                    f"label {_show(value)} is action number {len(distinct)} but "
                    f"num_actions={num_actions}; pass action_labels to name them"))
    if num_actions is not None and len(distinct) < num_actions:
        raise DataError(
            f"{table.source}, column '{column}': the data have {len(distinct)} "
            f"distinct action labels but num_actions={num_actions}; pass "
            "action_labels to name the actions never played")
    return tuple(sorted(distinct))


_FINITE_RE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _parse_payoff(table: _Table) -> np.ndarray:
    """Reads the payoff column: float64, shape (num_rows,), NaN where empty."""
    column = PAYOFF_COLUMN
    series = table.frame[column]
    if series.dtype.kind in "iuf":  # typed numbers (DataFrame, Parquet)
        out = series.to_numpy(np.float64)
        cells = None
    else:
        cells = series.tolist()
        out = np.empty(len(cells), np.float64)
        for row, cell in enumerate(cells):
            if cell.__class__ is str and _FINITE_RE.fullmatch(cell):
                out[row] = float(cell)  # the common case, kept fast
                continue
            kind, value = _classify(cell)
            if kind == _MISSING:
                out[row] = np.nan
            elif kind in (_INT, _NUMBER):  # typed, or text such as 'inf'
                try:
                    out[row] = float(cell) if isinstance(cell, str) else float(value)
                except OverflowError:
                    out[row] = np.inf
            else:
                hint = ("leave the cell empty where the payoff was not observed"
                        if kind == _NA_TEXT else "expected a finite number")
                raise table.error(row, column, f"{_show(cell)} is not a payoff; {hint}")
    infinite = np.flatnonzero(np.isinf(out))
    if infinite.size:
        row = int(infinite[0])
        cell = out[row] if cells is None else cells[row]
        raise table.error(row, column, (
            f"payoff {_show(cell)} is not finite; expected a finite number, or an "
            "empty cell where the payoff was not observed"))
    return out


def _gap_message(episode: Any, missing: int, before: int | None, after: int,
                 before_where: str = "", after_where: str = "") -> str:
    """The one message for a round inside an episode with nobody playing."""
    if before is None:
        return (f"episode {_show(episode)} has no rows at round {missing}, the first "
                f"round of the data{before_where}, and starts at round {after}"
                f"{after_where}: what the learners saw then is unknown")
    return (f"episode {_show(episode)} has no rows at round {missing}, between rounds "
            f"{before}{before_where} and {after}{after_where}: what the learners saw "
            "then is unknown")


def _check_duplicates(table: _Table, ep: np.ndarray, t: np.ndarray, ag: np.ndarray,
                      labels: tuple[tuple, tuple], first_round: int) -> None:
    """Refuses two rows for the same (episode, round, agent), naming both."""
    order = np.lexsort((ag, t, ep))  # stable: equal keys keep their row order
    same = ((ep[order][1:] == ep[order][:-1]) & (t[order][1:] == t[order][:-1])
            & (ag[order][1:] == ag[order][:-1]))
    dup = np.flatnonzero(same)
    if dup.size == 0:
        return
    k = dup[np.argmin(order[dup + 1])]
    first, second = int(order[k]), int(order[k + 1])
    raise DataError(
        f"{table.source}, {table.where(first, second)}, columns 'episode', 'round', "
        f"'agent': duplicate rows for episode {_show(labels[0][ep[first]])}, round "
        f"{first_round + int(t[first])}, agent {_show(labels[1][ag[first]])}; each "
        "(episode, round, agent) may appear once")


def _check_round_gaps(table: _Table, ep: np.ndarray, t: np.ndarray,
                      episode_labels: tuple, first_round: int) -> None:
    """Refuses an episode with no rows at a round before its last one."""
    order = np.lexsort((t, ep))
    ep_s, t_s = ep[order], t[order]
    keep = np.ones(len(order), bool)
    keep[1:] = (ep_s[1:] != ep_s[:-1]) | (t_s[1:] != t_s[:-1])
    ep_u, t_u, row_u = ep_s[keep], t_s[keep], order[keep]
    starts = np.flatnonzero(np.r_[True, ep_u[1:] != ep_u[:-1]])
    position = np.arange(len(ep_u)) - np.repeat(starts, np.diff(np.r_[starts, len(ep_u)]))
    bad = np.flatnonzero(t_u != position)
    if bad.size == 0:
        return
    k = int(bad[0])
    missing = int(position[k])
    after_where = f" ({table.where(int(row_u[k]))})"
    if missing == 0:
        before, before_where = None, f" ({table.where(int(np.argmin(t)))})"
    else:
        before, before_where = first_round + missing - 1, f" ({table.where(int(row_u[k - 1]))})"
    message = _gap_message(episode_labels[ep_u[k]], first_round + missing, before,
                           first_round + int(t_u[k]), before_where, after_where)
    raise DataError(f"{table.source}, column 'round': {message}")


def _parse_table(table: _Table, num_actions: Any, action_labels: Any,
                 agent_labels: Any = None, outcomes: Any = None) -> dict[str, Any]:
    """The parsing core shared by CSV, Parquet and DataFrame input.

    ``outcomes``: ``(column, labels)`` of an outcome column (``outcomes.parse_outcome_cells``), or None.

    Returns:
        The fields of the ``Trajectories``, by name (it checks them on construction).
    """
    num_actions, action_labels = _resolve_action_args(num_actions, action_labels,
                                                      table.source)
    if agent_labels is not None:
        agent_labels = _as_labels(agent_labels, f"{table.source}: agent_labels")
    episode_labels, ep = _parse_labels(table, "episode")
    rounds = _parse_rounds(table)
    agent_labels, ag = _parse_labels(table, "agent", agent_labels)
    codes, num_actions, action_labels = _parse_actions(table, num_actions, action_labels)
    values = _parse_payoff(table) if PAYOFF_COLUMN in table.frame.columns else None
    outcome_codes, outcome_labels = _outcome_codes(table, outcomes, values is not None)
    first_round = int(rounds.min())
    t = rounds - first_round
    _check_duplicates(table, ep, t, ag, (episode_labels, agent_labels), first_round)
    _check_round_gaps(table, ep, t, episode_labels, first_round)

    shape = (len(episode_labels), int(t.max()) + 1, len(agent_labels))
    actions = np.zeros(shape, np.int32)
    mask = np.ones(shape, bool)
    actions[ep, t, ag] = codes
    mask[ep, t, ag] = False
    payoff = None
    if values is not None:
        payoff = np.full(shape, np.nan)
        payoff[ep, t, ag] = values
    outcome = None
    if outcome_codes is not None:
        from bayes_diml.outcomes import OutcomeColumn

        codes = np.full(shape, -1, np.int32)
        codes[ep, t, ag] = outcome_codes
        outcome = OutcomeColumn(outcomes[0], outcome_labels, codes)
    return dict(actions=actions, mask=mask, num_actions=num_actions,
                episode_labels=episode_labels, agent_labels=agent_labels,
                action_labels=action_labels, first_round=first_round, payoff=payoff,
                outcome=outcome)


def _outcome_codes(table: _Table, outcomes: Any, has_payoff: bool) -> tuple:
    """``(codes per row, labels)`` of the outcome column ``outcomes = (column, labels)``
    names; ``(None, None)`` when there is none in the table."""
    if outcomes is None or outcomes[0] not in table.frame.columns:
        return None, None
    if has_payoff:
        raise DataError(f"{table.source}: columns {_show(PAYOFF_COLUMN)} and {_show(outcomes[0])} both give "
                        "the realised payoffs; keep one of them")
    from bayes_diml.outcomes import parse_outcome_cells

    return parse_outcome_cells(table, outcomes[0], outcomes[1])


def _parse_frame(df: Any, source: str, row_word: str, row_offset: int, header: str,
                 num_actions: Any, action_labels: Any,
                 agent_labels: Any = None, row_lines: np.ndarray | None = None,
                 outcomes: Any = None) -> dict[str, Any]:
    """Checks a DataFrame's columns and hands its cells to the parsing core.

    Returns:
        The fields of the ``Trajectories``, by name, as :func:`_parse_table` does.
    """
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"{source}: expected a pandas DataFrame, got {type(df).__name__}")
    names = list(df.columns)
    _check_columns(names, source, header, () if outcomes is None else (outcomes[0],))
    if len(df) == 0:
        raise DataError(
            f"{source}, {row_word} {row_offset}: no data rows; expected one row per "
            f"(episode, round, agent) that played, with columns {_HEADER_TEXT}")
    table = _Table(source, df, row_word, row_offset, row_lines)
    return _parse_table(table, num_actions, action_labels, agent_labels, outcomes)

