"""The long table of raw cells: its columns and limits, how its rows are named in
messages, and the check of its column names.

One row per (episode, round, agent) that played, with the columns
``episode,round,agent,action[,payoff]``, or with an outcome column a spec names in place
of ``payoff`` (``bayes_diml.outcomes``). CSV, Parquet and DataFrames are all held as a
:class:`_Table` before their cells are parsed.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from typing import Any

import numpy as np
import pandas as pd

from bayes_diml._cells import _BAD, _MISSING, _NA_TEXT, _NUMBER, _classify
from bayes_diml._labels import _show
from bayes_diml.errors import DataError

REQUIRED_COLUMNS = ("episode", "round", "agent", "action")
"""Columns every long-format table must have, in the order they are written."""

PAYOFF_COLUMN = "payoff"
"""The one optional column: the realised payoff of the row's agent (may be empty)."""

MAX_NUM_ACTIONS = 1 << 16
"""Largest supported ``num_actions``; guards against a stray huge code allocating."""

_ROUND_LIMIT = 1 << 62  # |round| bound, so round differences never overflow int64
_HEADER_TEXT = "episode,round,agent,action[,payoff]"
_INDEX_NAME_RE = re.compile(r"Unnamed: [0-9]+|__index_level_[0-9]+__")  # saved indexes


@dataclasses.dataclass(frozen=True)
class _Column:
    """A column as its distinct raw cells and, for each row, which one it holds.

    Distinct cells are kept in order of first appearance, so walking them in order
    and stopping at the first bad one finds the first bad row of the table.

    Attributes:
        cells: The distinct raw cells (text or typed values).
        index: For each row, the position of its cell in ``cells``: int64, shape
            (num_rows,).
        first_row: The first row holding each distinct cell: int64, increasing.
    """

    cells: list
    index: np.ndarray
    first_row: np.ndarray


def _factorize(series: pd.Series) -> _Column:
    """Splits a column into its distinct cells (exactly: 1, 1.0 and True differ)."""
    exact = series.dtype != object or pd.api.types.infer_dtype(series, skipna=False) in (
        "string", "integer")
    if not exact:  # mixed Python values: key on the type as well
        seen: dict[Any, int] = {}
        cells: list = []
        index = np.empty(len(series), np.int64)
        for row, cell in enumerate(series.tolist()):
            try:
                key = (type(cell), cell)
                k = seen.setdefault(key, len(cells))
            except TypeError:  # unhashable: its own distinct cell
                k = len(cells)
            if k == len(cells):
                cells.append(cell)
            index[row] = k
    else:
        index, uniques = pd.factorize(series, use_na_sentinel=False)
        index = index.astype(np.int64)
        cells = list(uniques.tolist())
    previous_max = np.maximum.accumulate(np.r_[-1, index[:-1]])
    return _Column(cells, index, np.flatnonzero(index > previous_max))


@dataclasses.dataclass(frozen=True)
class _Table:
    """A long table of raw cells, plus how to name its rows in messages.

    Attributes:
        source: The file name or a description of the data.
        frame: The table, one column per name, cells as read (text or typed values).
        row_word: ``"line"`` (CSV) or ``"row"`` (DataFrame, Parquet).
        row_offset: Added to a 0-based row position to get its number in messages.
        row_lines: For a CSV file whose records do not sit one per line (a quoted
            cell holding a line break), the line where each row starts; None when
            ``row + row_offset`` is the line.
    """

    source: str
    frame: pd.DataFrame
    row_word: str
    row_offset: int
    row_lines: np.ndarray | None = None

    @property
    def num_rows(self) -> int:
        return len(self.frame)

    def column(self, name: str) -> _Column:
        return _factorize(self.frame[name])

    def where(self, *rows: int) -> str:
        if self.row_lines is not None:
            numbers = " and ".join(str(int(self.row_lines[int(r)])) for r in rows)
        else:
            numbers = " and ".join(str(int(r) + self.row_offset) for r in rows)
        return f"{self.row_word}{'s' if len(rows) > 1 else ''} {numbers}"

    def error(self, row: int, column: str, message: str) -> DataError:
        return DataError(f"{self.source}, {self.where(row)}, column '{column}': {message}")


def _check_columns(names: list, source: str, header: str, extra: tuple = ()) -> None:
    """Refuses missing, misspelled, repeated, unnamed or unknown columns; ``extra``: the
    outcome column a spec names (``[payoff] column``), also allowed."""
    allowed = (*REQUIRED_COLUMNS, PAYOFF_COLUMN, *extra)
    shown = ", ".join(_show(n) for n in names) or "none"
    prefix = f"{source}, {header}"
    found = f"found columns {shown}; expected {_HEADER_TEXT}"
    for position, name in enumerate(names):
        if name != "":
            continue
        if position == 0 and len(names) > 1:
            raise DataError(f"{prefix}: column 1 has no name, so it looks like a saved "
                            "DataFrame index; write the file with to_csv(index=False), "
                            f"or delete the first column; {found}")
        hint = " (a trailing comma?)" if position == len(names) - 1 else ""
        raise DataError(f"{prefix}: column {position + 1} has no name{hint}; {found}")
    for name in names:
        match = re.fullmatch(r"(.+)\.([0-9]+)", str(name))
        if names.count(name) > 1 or (match and match.group(1) in names):
            repeated = match.group(1) if match and match.group(1) in names else name
            raise DataError(f"{prefix}: column {_show(repeated)} appears more than once "
                            f"(found columns {shown})")
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    unknown = [n for n in names if n not in allowed]
    if not missing and not unknown:
        return
    parts = []
    if missing:
        parts.append("missing column" + ("s " if len(missing) > 1 else " ")
                     + ", ".join(_show(c) for c in missing))
    if unknown:
        parts.append("unknown column" + ("s " if len(unknown) > 1 else " ")
                     + ", ".join(_show(n) for n in unknown))
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(str(name).strip().lower(), allowed, n=1,
                                          cutoff=0.6)
        if close:
            hints.append(f"did you mean {_show(close[0])} for {_show(name)}?")
        elif _INDEX_NAME_RE.fullmatch(str(name)):
            hints.append(f"{_show(name)} looks like a saved DataFrame index: write the "
                         "file with to_csv(index=False), or delete that column")
    message = f"{prefix}: {'; '.join(parts)}; {found}"
    raise DataError(message + (" (" + " ".join(hints) + ")" if hints else ""))



def _cell_error(table: _Table, row: int, column: str, kind: int, raw: Any,
                expected: str) -> DataError:
    """The message for a cell of the wrong kind in a required column."""
    if kind in (_MISSING, _NA_TEXT):
        empty = raw is None or (isinstance(raw, str) and raw == "")
        what = "empty cell" if empty else f"missing value {_show(raw)}"
    elif kind == _BAD:
        what = f"value {_show(raw)} of type {type(raw).__name__}"
    elif kind == _NUMBER:
        what = f"{_show(raw)} is not an integer"
    else:
        what = f"{_show(raw)} is not a number"
    return table.error(row, column, f"{what}; expected {expected}")



def _mixed_types_error(table: _Table, col: _Column, row: int, column: str,
                       first: tuple[int, int], expected: str,
                       words: tuple[str, str, str]) -> DataError:
    """The error for a label column holding both integers and strings, found at ``row``.

    In a column of integers, a text such as 'NA' is refused as a missing value (raised
    here); otherwise the message names the first integer and the first string.

    Args:
        first: The distinct-cell positions of the first integer and the first string.
        expected: What the column holds, for the missing-value message.
        words: What the column holds (``"label"``, ``"action"``), what an integer in
            it is called (``"label"``, ``"code"``), and the advice that ends the message.
    """
    first_int, first_text = first
    cell = col.cells[first_text]
    if _classify(cell)[0] == _NA_TEXT:
        raise _cell_error(table, int(col.first_row[first_text]), column, _NA_TEXT, cell,
                          expected)
    what, integer, advice = words
    return table.error(row, column, (
        f"mixed {what} types: {table.where(col.first_row[first_int])} has the "
        f"integer {integer} {_show(col.cells[first_int])} but "
        f"{table.where(col.first_row[first_text])} has the string label "
        f"{_show(col.cells[first_text])}; {advice}"))
