"""Observed play: the validated, masked ``Trajectories`` container and its files.

A ``Trajectories`` holds what the agents did, episode by episode and round by round,
as plain NumPy arrays on the host (it is not a JAX pytree; the likelihood takes its
arrays). The mask has one meaning everywhere (docs/design.md §2): ``mask[e, t, i]`` is True
when agent ``i`` did not play round ``t`` of episode ``e``.

On disk the data are a long table, one row per (episode, round, agent) that played::

    episode,round,agent,action[,payoff]
    1,0,alice,low,2.5
    1,0,bob,high,
    1,1,alice,high,0.75

CSV, Parquet and DataFrames go through one parsing core. Bad input is refused with a
:class:`~bayes_diml.errors.DataError` naming the source, the line (CSV, 1-based with
the header on line 1) or row (DataFrame and Parquet, 0-based positions as in
``DataFrame.iloc``), the column, what is wrong and what was expected. Nothing is
silently dropped, clipped or coerced. Files are written to a temporary name in the
same folder and renamed into place (docs/design.md §9).

Labels. Episode and agent labels are all integers or all non-numeric strings per
column (a text such as 'NA' or 'null' is a string label; only an empty cell, or a
typed null, is missing; in a column of integers such a text is a missing value), and
are kept sorted (integers numerically, strings lexicographically), so that episode
index ``e`` is the rank of its label. Integer actions are their own codes
``0..num_actions-1``; string actions are mapped to codes through ``action_labels``
(their sorted order unless given). Rounds carry one global numbering: round index
``t`` has the label ``first_round + t``.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import difflib
import math
import operator
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bayes_diml.errors import DataError

__all__ = ["Trajectories"]

REQUIRED_COLUMNS = ("episode", "round", "agent", "action")
"""Columns every long-format table must have, in the order they are written."""

PAYOFF_COLUMN = "payoff"
"""The one optional column: the realised payoff of the row's agent (may be empty)."""

MAX_NUM_ACTIONS = 1 << 16
"""Largest supported ``num_actions``; guards against a stray huge code allocating."""

def absence_families() -> tuple[str, ...]:
    """Mechanism families whose payoffs are defined when an agent sits a round out
    (``allows_absence``), in registry order."""
    from bayes_diml.mechanisms import FAMILIES

    return tuple(name for name, cls in FAMILIES.items() if cls.allows_absence)

_INT64_MAX = int(np.iinfo(np.int64).max)
_ROUND_LIMIT = 1 << 62  # |round| bound, so round differences never overflow int64
_HEADER_TEXT = "episode,round,agent,action[,payoff]"
_INDEX_NAME_RE = re.compile(r"Unnamed: [0-9]+|__index_level_[0-9]+__")  # saved indexes

# Kinds of a cell, as read by ``_classify``.
_MISSING = 0  # empty cell, None, NaN
_NA_TEXT = 1  # text such as 'nan', 'NA', 'null'
_INT = 2  # an integer (text of digits, or an integer value)
_NUMBER = 3  # any other number: '1.5', '2.0', '1e3', 'inf', or a float value
_TEXT = 4  # any other text: a string label
_BAD = 5  # a value of an unsupported type (bool, timestamp, ...)

_INT_RE = re.compile(r"[+-]?[0-9]+")
_NUMBER_RE = re.compile(
    r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf|infinity)",
    re.IGNORECASE,
)
_NA_TEXTS = frozenset(
    {"nan", "+nan", "-nan", "na", "n/a", "null", "none", "<na>", "#n/a", "#na",
     "#n/a n/a", "1.#ind", "-1.#ind", "1.#qnan", "-1.#qnan"}
)


# --------------------------------------------------------------------------- cells


def _classify_text(text: str) -> tuple[int, Any]:
    """Reads one text cell: ``(kind, value)``; integers of any size stay exact."""
    if text == "":
        return _MISSING, None
    if _INT_RE.fullmatch(text):
        try:
            return _INT, int(text)
        except ValueError:  # more digits than Python converts: out of any range
            return _INT, (-1 if text.startswith("-") else 1) * (1 << 80)
    if _NUMBER_RE.fullmatch(text):
        return _NUMBER, float(text)
    if text.casefold() in _NA_TEXTS:
        return _NA_TEXT, None
    return _TEXT, text


def _classify(value: Any) -> tuple[int, Any]:
    """Reads one cell (text from a CSV, or a typed value from a DataFrame/Parquet)."""
    if isinstance(value, str):
        return _classify_text(value)
    if value is None or value is pd.NA:
        return _MISSING, None
    if isinstance(value, (bool, np.bool_)):
        return _BAD, value
    if isinstance(value, (int, np.integer)):
        return _INT, int(value)
    if isinstance(value, (float, np.floating)):
        return (_MISSING, None) if math.isnan(value) else (_NUMBER, float(value))
    return _BAD, value


def _show(value: Any) -> str:
    """A cell or label as it appears in messages (strings quoted, long ones cut)."""
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _label_problem(label: Any) -> str | None:
    """What is wrong with an episode, agent or action label, or None if it is fine.

    A label must survive a trip through a CSV file unchanged: an integer in the
    64-bit range, or a non-empty string without line breaks that does not read as a
    number. Texts such as 'NA' or 'null' are fine: label columns are read as text,
    and only an empty cell is missing.
    """
    if isinstance(label, bool) or not isinstance(label, (int, str)):
        return f"must be an int or a str, got {type(label).__name__}"
    if isinstance(label, int):
        if not -_INT64_MAX - 1 <= label <= _INT64_MAX:
            return "is outside the 64-bit integer range"
        return None
    if "\n" in label or "\r" in label:
        return "contains a line break"
    if label != label.strip():
        return "has leading or trailing spaces; labels must not start or end with whitespace"
    hidden = next((ch for ch in label if not ch.isprintable()), None)
    if hidden is not None:
        name = " (a byte-order mark)" if hidden == "\ufeff" else ""
        return (f"contains the invisible character U+{ord(hidden):04X}{name}; labels must not contain "
                "invisible or control characters")
    kind, _ = _classify_text(label)
    if kind == _MISSING:
        return "is empty"
    if kind in (_INT, _NUMBER):
        return ("reads as a number; string labels must not look like numbers, or they "
                "would be read back as such")
    return None


def _label_kind(cell: Any) -> tuple[int, Any]:
    """Reads one cell of a label column (episode, agent, action).

    Like :func:`_classify`, except that texts such as 'NA' or 'null' are string
    labels: only an empty cell (or a typed null) is missing.
    """
    kind, value = _classify(cell)
    if kind == _NA_TEXT:
        return _TEXT, cell
    return kind, value


def _missing_in_integers(table: _Table, col: _Column, first_text: int, column: str,
                         expected: str) -> None:
    """In a column of integers, a text such as 'NA' is refused as a missing value."""
    cell = col.cells[first_text]
    if _classify(cell)[0] == _NA_TEXT:
        raise _cell_error(table, int(col.first_row[first_text]), column, _NA_TEXT, cell,
                          expected)


def _show_labels(labels: Sequence, limit: int = 10) -> str:
    """A list of labels for messages, cut after ``limit`` entries."""
    shown = [_show(label) for label in list(labels)[:limit]]
    if len(labels) > limit:
        return f"[{', '.join(shown)}, ...] ({len(labels)} labels)"
    return f"[{', '.join(shown)}]"


def _closest_label(label: Any, known: Sequence) -> str:
    """`` (did you mean 'x'?)`` for the known label closest to ``label``, or ''."""
    text = str(label)
    same = [k for k in known if str(k).casefold() == text.casefold()]
    if not same:
        by_text = {str(k): k for k in known}
        close = difflib.get_close_matches(text, list(by_text), n=1, cutoff=0.6)
        same = [by_text[c] for c in close]
    return f" (did you mean {_show(same[0])}?)" if same else ""


# --------------------------------------------------------------------------- table


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


def _check_columns(names: list, source: str, header: str) -> None:
    """Refuses missing, misspelled, repeated, unnamed or unknown columns."""
    allowed = (*REQUIRED_COLUMNS, PAYOFF_COLUMN)
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


_SEPARATORS = (("\t", "tab"), (";", "semicolon"), ("|", "pipe"))
"""Separators other than the comma that a header line may betray, and their names."""


def _check_first_line(path: str | os.PathLike, source: str) -> None:
    """Refuses a CSV file whose line 1 is a comment, blank, or not comma-separated."""
    with open(path, "rb") as file:
        first = file.readline()
    if not first:  # an empty file: the reader says so
        return
    text = first.removeprefix(codecs.BOM_UTF8).decode("utf-8", "replace").rstrip("\r\n")
    if text.lstrip().startswith("#"):
        raise DataError(
            f"{source}, line 1: the file starts with a comment line ({_show(text)}); "
            "comment lines are not supported: delete them, so that line 1 is the header "
            f"{_HEADER_TEXT}")
    if not text.strip():
        raise DataError(f"{source}, line 1: the line is blank; expected the header "
                        f"{_HEADER_TEXT}")
    if "," not in text:
        for char, name in _SEPARATORS:
            if char in text:
                raise DataError(
                    f"{source}, line 1 (the header): the file looks {name}-separated (the "
                    f"header {_show(text)} has {name}s and no commas); expected "
                    f"comma-separated columns {_HEADER_TEXT}")


def _first_non_utf8(path: str | os.PathLike) -> tuple[int, int, str] | None:
    """Where a file first fails to be UTF-8: ``(byte offset, line, reason)``, or None.

    The offset is 0-based in the whole file (a byte-order mark counts); the line is
    1-based, counting line feeds before the byte. The file is read in chunks.
    """
    offset = 0  # file offset of data[0]
    line = 1
    pending = b""  # an incomplete character at the end of the previous chunk
    with open(path, "rb") as file:
        while True:
            chunk = file.read(1 << 20)
            data = pending + chunk
            try:
                _, used = codecs.utf_8_decode(data, "strict", not chunk)
            except UnicodeDecodeError as err:
                return offset + err.start, line + data.count(b"\n", 0, err.start), err.reason
            if not chunk:
                return None
            line += data.count(b"\n", 0, used)
            offset += used
            pending = data[used:]


_CSV_FIELD = rb'(?:"[^"]*+(?:""[^"]*+)*+"[^,\r\n]*+|[^",\r\n][^,\r\n]*+)?'
_CSV_RECORD = re.compile(_CSV_FIELD + rb"(?:," + _CSV_FIELD + rb")*+")
"""One CSV record up to its line break, as pandas' C tokenizer splits them: a quote
opens a quoted field only at the start of a field ('""' inside is a quote, and line
breaks are kept); elsewhere it is an ordinary character. The match stops early at a
quote that is never closed."""


def _record_lines(data: bytes) -> tuple[np.ndarray, int | None]:
    """The line where each CSV record starts, and where an unclosed quote opens.

    ``data`` is the file's bytes. Returns the 1-based line of each record's start (the
    header is record 0), and the line of the opening quote of a quoted field that is
    never closed (the records stop there), or None. Lines end at '\\n', '\\r\\n' or a
    lone '\\r', as records do. Only called when records and lines may differ (a quoted
    cell holding a line break) or to place an error: it steps record by record.
    """
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    starts: list[int] = []
    unclosed = None
    pos, size = 0, len(data)
    while pos < size:
        starts.append(pos)
        end = _CSV_RECORD.match(data, pos).end()
        if end < size and data[end] == ord('"'):
            unclosed = end
            break
        pos = end + (2 if data.startswith(b"\r\n", end) else 1)
    raw = np.frombuffer(data, dtype=np.uint8)
    breaks = np.flatnonzero((raw == 10) | ((raw == 13) & (np.r_[raw[1:], 0] != 10)))
    lines = np.searchsorted(breaks, np.asarray(starts, dtype=np.int64)) + 1
    where = None if unclosed is None else int(np.searchsorted(breaks, unclosed)) + 1
    return lines.astype(np.int64), where


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
            _missing_in_integers(table, col, first_text, column, expected)
            raise table.error(row, column, (
                f"mixed label types: {table.where(col.first_row[first_int])} has the "
                f"integer label {_show(col.cells[first_int])} but "
                f"{table.where(col.first_row[first_text])} has the string label "
                f"{_show(col.cells[first_text])}; a column's labels must be all "
                "integers or all strings"))
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
    column = "action"
    col = table.column(column)
    given = action_labels
    limit = len(given) if given is not None else num_actions
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
            _missing_in_integers(table, col, first_text, column, expected)
            raise table.error(row, column, (
                f"mixed action types: {table.where(col.first_row[first_int])} has the "
                f"integer code {_show(col.cells[first_int])} but "
                f"{table.where(col.first_row[first_text])} has the string label "
                f"{_show(col.cells[first_text])}; use codes throughout or labels "
                "throughout"))
        values.append(value)

    if first_text is None:  # integer codes
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

    # string labels
    if given is not None and isinstance(given[0], int):
        raise table.error(int(col.first_row[first_text]), column, (
            f"string action label {_show(col.cells[first_text])} but action_labels are "
            f"integer codes 0..{len(given) - 1}"))
    if given is None:
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
        given = tuple(sorted(distinct))
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
                 agent_labels: Any = None) -> Trajectories:
    """The parsing core shared by CSV, Parquet and DataFrame input."""
    num_actions, action_labels = _resolve_action_args(num_actions, action_labels,
                                                      table.source)
    if agent_labels is not None:
        agent_labels = _as_labels(agent_labels, f"{table.source}: agent_labels")
    episode_labels, ep = _parse_labels(table, "episode")
    rounds = _parse_rounds(table)
    agent_labels, ag = _parse_labels(table, "agent", agent_labels)
    codes, num_actions, action_labels = _parse_actions(table, num_actions, action_labels)
    values = _parse_payoff(table) if PAYOFF_COLUMN in table.frame.columns else None
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
    return Trajectories(actions=actions, mask=mask, num_actions=num_actions,
                        episode_labels=episode_labels, agent_labels=agent_labels,
                        action_labels=action_labels, first_round=first_round,
                        payoff=payoff)


def _parse_frame(df: Any, source: str, row_word: str, row_offset: int, header: str,
                 num_actions: Any, action_labels: Any,
                 agent_labels: Any = None, row_lines: np.ndarray | None = None) -> Trajectories:
    """Checks a DataFrame's columns and hands its cells to the parsing core."""
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"{source}: expected a pandas DataFrame, got {type(df).__name__}")
    names = list(df.columns)
    _check_columns(names, source, header)
    if len(df) == 0:
        raise DataError(
            f"{source}, {row_word} {row_offset}: no data rows; expected one row per "
            f"(episode, round, agent) that played, with columns {_HEADER_TEXT}")
    table = _Table(source, df, row_word, row_offset, row_lines)
    return _parse_table(table, num_actions, action_labels, agent_labels)


# --------------------------------------------------------------------------- arrays


def _as_labels(labels: Any, name: str) -> tuple:
    """A label sequence as a tuple of Python ints/strs (NumPy scalars unwrapped)."""
    if isinstance(labels, (str, bytes)) or not isinstance(labels, (Sequence, np.ndarray)):
        raise DataError(f"{name} must be a sequence of labels, got "
                        f"{type(labels).__name__}")
    return tuple(x.item() if isinstance(x, (np.integer, np.str_)) else x for x in labels)


def _check_labels(labels: Any, expected_len: int, name: str) -> None:
    """Episode or agent labels: a tuple of the right length, one type, sorted, unique."""
    if not isinstance(labels, tuple):
        raise DataError(f"{name} must be a tuple, got {type(labels).__name__}")
    if len(labels) != expected_len:
        raise DataError(f"{name} has {len(labels)} entries; expected {expected_len}")
    for k, label in enumerate(labels):
        problem = _label_problem(label)
        if problem:
            raise DataError(f"{name}[{k}] = {_show(label)} {problem}")
    if len({type(x) for x in labels}) > 1:
        raise DataError(f"{name} mixes integer and string labels; use one type")
    for k in range(1, len(labels)):
        if not labels[k - 1] < labels[k]:
            raise DataError(
                f"{name}[{k - 1}] = {_show(labels[k - 1])} and {name}[{k}] = "
                f"{_show(labels[k])} are repeated or out of order; labels must be "
                "unique and sorted (integers numerically, strings lexicographically), "
                "so that index k is the k-th smallest label")


def _check_action_labels(labels: Any, num_actions: int, name: str) -> None:
    """Action labels: the codes ``0..num_actions-1``, or distinct strings in code order."""
    if not isinstance(labels, tuple):
        raise DataError(f"{name} must be a tuple, got {type(labels).__name__}")
    if len(labels) != num_actions or num_actions == 0:
        raise DataError(f"{name} has {len(labels)} entries; expected num_actions="
                        f"{num_actions} (at least 1)")
    if all(isinstance(x, int) and not isinstance(x, bool) for x in labels):
        if labels != tuple(range(num_actions)):
            raise DataError(f"{name}: integer action labels are their own codes and "
                            f"must be 0..{num_actions - 1} in order, got {labels!r:.80}")
        return
    for k, label in enumerate(labels):
        problem = "is not a str" if not isinstance(label, str) else _label_problem(label)
        if problem:
            raise DataError(f"{name}[{k}] = {_show(label)} {problem}; action labels "
                            "are all integer codes or all strings")
    if len(set(labels)) != len(labels):
        repeated = next(x for x in labels if labels.count(x) > 1)
        raise DataError(f"{name}: label {_show(repeated)} appears more than once")


def _check_codes(actions: np.ndarray, mask: np.ndarray, num_actions: int,
                 name: str) -> None:
    """Every played entry of ``actions`` is a code in ``0..num_actions-1``."""
    bad = ~mask & ((actions < 0) | (actions >= num_actions))
    if bad.any():
        index = tuple(int(x) for x in np.argwhere(bad)[0])
        raise DataError(f"{name}, index {index}: action {actions[index]} is out of "
                        f"range; expected an integer code in 0..{num_actions - 1}")


def _check_payoff(payoff: np.ndarray, mask: np.ndarray, name: str) -> None:
    """Played payoffs are finite or NaN (not observed); never infinite."""
    bad = ~mask & np.isinf(payoff)
    if bad.any():
        index = tuple(int(x) for x in np.argwhere(bad)[0])
        raise DataError(f"{name}, index {index}: payoff {payoff[index]} is not finite; "
                        "expected a finite number, or NaN where not observed")


def _played_rounds(mask: np.ndarray) -> np.ndarray:
    """Whether anybody played: bool, shape (num_episodes, num_rounds)."""
    return ~mask.all(axis=2)


def _episode_lengths(mask: np.ndarray) -> np.ndarray:
    """1 + index of the last round anybody played: int64, shape (num_episodes,)."""
    played = _played_rounds(mask)
    last = played.shape[1] - 1 - np.argmax(played[:, ::-1], axis=1)
    return np.where(played.any(axis=1), last + 1, 0).astype(np.int64)


def _read_only(array: np.ndarray) -> np.ndarray:
    view = array.view()
    view.flags.writeable = False
    return view


# --------------------------------------------------------------------------- class


@dataclasses.dataclass(frozen=True, eq=False, repr=False, kw_only=True)
class Trajectories:
    """Observed repeated play, validated and masked (host-side NumPy, not a pytree).

    Attributes:
        actions: Action codes, int32, shape (num_episodes, num_rounds, num_agents),
            in ``0..num_actions-1``; masked entries hold 0.
        mask: Bool, shape (num_episodes, num_rounds, num_agents); True where the
            agent did not play that round.
        num_actions: The number of actions ``A``.
        episode_labels: Sorted, distinct episode labels (all ints or all strs),
            length num_episodes.
        agent_labels: Sorted, distinct agent labels, length num_agents; agent index
            ``i`` is ``agent_labels[i]``.
        action_labels: Length num_actions: ``(0, ..., A-1)`` for integer codes, or the
            strings that code ``k`` stands for.
        first_round: The label of round index 0; round index ``t`` is round
            ``first_round + t``.
        payoff: Realised payoffs, float64, shape (num_episodes, num_rounds,
            num_agents), NaN where not observed (always NaN where masked); or None.

    Invariants (checked on construction; a :class:`DataError` otherwise): every agent
    plays at least once; every episode has somebody playing at every round from round
    index 0 to its last round (trailing rounds may be empty: episodes of unequal
    length); the last round index is played in some episode. The arrays are stored as
    read-only views.
    """

    actions: np.ndarray
    mask: np.ndarray
    num_actions: int
    episode_labels: tuple
    agent_labels: tuple
    action_labels: tuple
    first_round: int
    payoff: np.ndarray | None = None

    def __post_init__(self) -> None:
        name = "Trajectories"
        actions, mask = self.actions, self.mask
        if not isinstance(actions, np.ndarray) or actions.dtype != np.int32 or actions.ndim != 3:
            raise DataError(f"{name}: actions must be an int32 array of shape (num_episodes, "
                            f"num_rounds, num_agents), got {_describe_array(actions)}")
        if (not isinstance(mask, np.ndarray) or mask.dtype != np.bool_
                or mask.shape != actions.shape):
            raise DataError(f"{name}: mask must be a bool array of shape {actions.shape}, "
                            f"got {_describe_array(mask)}")
        if min(actions.shape) == 0:
            raise DataError(f"{name}: actions has shape {actions.shape}; expected at least "
                            "one episode, one round and one agent")
        num_actions = self.num_actions
        if (isinstance(num_actions, bool) or not isinstance(num_actions, int)
                or not 1 <= num_actions <= MAX_NUM_ACTIONS):
            raise DataError(f"{name}: num_actions={num_actions!r}; expected an int in "
                            f"1..{MAX_NUM_ACTIONS}")
        num_episodes, _, num_agents = actions.shape
        _check_labels(self.episode_labels, num_episodes, f"{name}: episode_labels")
        _check_labels(self.agent_labels, num_agents, f"{name}: agent_labels")
        _check_action_labels(self.action_labels, num_actions, f"{name}: action_labels")
        if (isinstance(self.first_round, bool) or not isinstance(self.first_round, int)
                or abs(self.first_round) > _ROUND_LIMIT):
            raise DataError(f"{name}: first_round={self.first_round!r}; expected an int "
                            "of magnitude at most 2**62")
        _check_codes(actions, mask, num_actions, f"{name}: actions")
        if (mask & (actions != 0)).any():
            index = tuple(int(x) for x in np.argwhere(mask & (actions != 0))[0])
            raise DataError(f"{name}: actions, index {index}: masked entries must hold 0")
        if self.payoff is not None:
            payoff = self.payoff
            if (not isinstance(payoff, np.ndarray) or payoff.dtype != np.float64
                    or payoff.shape != actions.shape):
                raise DataError(f"{name}: payoff must be None or a float64 array of shape "
                                f"{actions.shape}, got {_describe_array(payoff)}")
            _check_payoff(payoff, mask, f"{name}: payoff")
            if not np.isnan(payoff[mask]).all():
                index = tuple(int(x) for x in np.argwhere(mask & ~np.isnan(payoff))[0])
                raise DataError(f"{name}: payoff, index {index}: masked entries must be NaN")
        self._check_structure()
        for field in ("actions", "mask", "payoff"):
            value = getattr(self, field)
            if value is not None:
                object.__setattr__(self, field, _read_only(value))

    def _check_structure(self) -> None:
        """Every agent plays somewhere; no episode has an empty round before its end."""
        name = "Trajectories"
        never = np.flatnonzero(self.mask.all(axis=(0, 1)))
        if never.size:
            label = self.agent_labels[never[0]]
            raise DataError(
                f"{name}: mask, agent {_show(label)} (index {never[0]}) never plays in any "
                "episode or round; drop that agent, or give the rounds it played")
        played = _played_rounds(self.mask)
        lengths = _episode_lengths(self.mask)
        for e in range(played.shape[0]):
            label = self.episode_labels[e]
            if lengths[e] == 0:
                raise DataError(f"{name}: mask, episode {_show(label)} (index {e}) has "
                                "nobody playing in any round; drop the episode")
            gaps = np.flatnonzero(~played[e, : lengths[e]])
            if gaps.size:
                t = int(gaps[0])
                after = t + int(np.argmax(played[e, t:]))
                before = None if t == 0 else self.first_round + t - 1
                message = _gap_message(label, self.first_round + t, before,
                                       self.first_round + after)
                raise DataError(f"{name}: mask, episode index {e}, round index {t}: "
                                f"{message}")
        if lengths.max() != self.num_rounds:
            raise DataError(
                f"{name}: mask, round index {int(lengths.max())} (round "
                f"{self.first_round + int(lengths.max())}) and later have nobody playing "
                "in any episode; cut the arrays to the rounds that were played")

    # ----------------------------------------------------------------- properties

    @property
    def num_episodes(self) -> int:
        """The number of episodes ``E``."""
        return int(self.actions.shape[0])

    @property
    def num_rounds(self) -> int:
        """The number of rounds ``T`` (the longest episode)."""
        return int(self.actions.shape[1])

    @property
    def num_agents(self) -> int:
        """The number of agents ``n``."""
        return int(self.actions.shape[2])

    @property
    def episode_lengths(self) -> np.ndarray:
        """1 + index of the last round any agent played: int64, shape (num_episodes,)."""
        return _episode_lengths(self.mask)

    @property
    def masked_fraction(self) -> float:
        """The fraction of (episode, round, agent) entries where the agent did not play."""
        return float(self.mask.mean())

    def summary(self) -> dict:
        """A JSON-ready description of the data.

        Returns:
            A dict with keys ``num_episodes``, ``num_rounds``, ``num_agents``,
            ``num_actions``, ``masked_fraction``, ``agent_labels`` (list),
            ``action_labels`` (list), ``first_round`` and ``has_payoff``.
        """
        return {
            "num_episodes": self.num_episodes,
            "num_rounds": self.num_rounds,
            "num_agents": self.num_agents,
            "num_actions": self.num_actions,
            "masked_fraction": self.masked_fraction,
            "agent_labels": list(self.agent_labels),
            "action_labels": list(self.action_labels),
            "first_round": self.first_round,
            "has_payoff": self.payoff is not None,
        }

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Trajectories):
            return NotImplemented
        labels_equal = all(
            a == b and all(type(x) is type(y) for x, y in zip(a, b))
            for a, b in ((self.episode_labels, other.episode_labels),
                         (self.agent_labels, other.agent_labels),
                         (self.action_labels, other.action_labels)))
        if self.payoff is None or other.payoff is None:
            payoff_equal = self.payoff is None and other.payoff is None
        else:
            payoff_equal = np.array_equal(self.payoff, other.payoff, equal_nan=True)
        return (labels_equal and payoff_equal
                and self.num_actions == other.num_actions
                and self.first_round == other.first_round
                and np.array_equal(self.actions, other.actions)
                and np.array_equal(self.mask, other.mask))

    __hash__ = None  # type: ignore[assignment]  # holds arrays: not hashable

    def __repr__(self) -> str:
        return (f"Trajectories(num_episodes={self.num_episodes}, num_rounds="
                f"{self.num_rounds}, num_agents={self.num_agents}, num_actions="
                f"{self.num_actions}, first_round={self.first_round}, masked_fraction="
                f"{self.masked_fraction:.3g}, has_payoff={self.payoff is not None})")

    # ----------------------------------------------------------------- spec check

    def check_against(self, *, num_agents: int, num_actions: int, allows_absence: bool,
                      family: str, source: str = "data") -> None:
        """Refuses data that a model specification cannot explain.

        Args:
            num_agents: The spec's number of agents.
            num_actions: The spec's number of actions.
            allows_absence: Whether the mechanism family defines payoffs when an agent
                sits a round out (False for joint families such as tabular, neural).
            family: The family's name, for the message.
            source: The data's file name or description, for the message.

        Raises:
            DataError: The counts differ, or ``allows_absence`` is False and some agent
                did not play a round in which another agent played (trailing rounds
                in which nobody played are always legal).
        """
        if num_agents != self.num_agents:
            raise DataError(f"{source}: the data have {self.num_agents} agents "
                            f"{_show_labels(self.agent_labels)} but the spec (family "
                            f"{family!r}) says num_agents={num_agents}")
        if num_actions != self.num_actions:
            raise DataError(
                f"{source}: the data have {self.num_actions} actions but the spec (family "
                f"{family!r}) says num_actions={num_actions}; if some actions were never "
                f"played, read the data with num_actions={num_actions} or action_labels")
        if allows_absence:
            return
        absent = self.mask & _played_rounds(self.mask)[:, :, None]
        if absent.any():
            e, t, i = (int(x) for x in np.argwhere(absent)[0])
            raise DataError(
                f"{source}: agent {_show(self.agent_labels[i])} did not play in episode "
                f"{_show(self.episode_labels[e])}, round {self.first_round + t}, while "
                f"other agents did; family {family!r} needs every agent in every round "
                f"(its joint payoffs are undefined without one); families that allow "
                f"absent agents: {', '.join(absence_families())}")

    # ----------------------------------------------------------------- readers

    @classmethod
    def from_arrays(cls, actions: Any, mask: Any = None, *, num_actions: int | None = None,
                    payoff: Any = None, episode_labels: Sequence | None = None,
                    agent_labels: Sequence | None = None,
                    action_labels: Sequence | None = None,
                    first_round: int = 0) -> Trajectories:
        """Builds trajectories from arrays.

        Args:
            actions: Integer action codes, shape (num_episodes, num_rounds, num_agents);
                any integer dtype; values at masked entries are ignored (stored as 0).
            mask: Bool, same shape, True where the agent did not play; None: all
                played.
            num_actions: The number of actions; None: ``len(action_labels)`` if given,
                else 1 + the largest played code.
            payoff: Real numbers, same shape, NaN where not observed; None: no payoffs.
                Values at masked entries are ignored (stored as NaN).
            episode_labels: Sorted distinct labels; None: ``0..num_episodes-1``.
            agent_labels: Sorted distinct labels; None: ``0..num_agents-1``.
            action_labels: ``0..num_actions-1``, or strings in code order; None: the
                integer codes.
            first_round: The label of round index 0.

        Returns:
            The validated trajectories.

        Raises:
            DataError: Wrong dtype or shape, codes out of range, infinite payoffs,
                bad labels, an agent that never plays, or a round inside an episode
                in which nobody plays.
        """
        name = "from_arrays"
        actions = np.asarray(actions)
        if actions.ndim != 3 or not np.issubdtype(actions.dtype, np.integer):
            raise DataError(f"{name}: actions must be an integer array of shape "
                            "(num_episodes, num_rounds, num_agents), got "
                            f"{_describe_array(actions)}")
        if mask is None:
            mask = np.zeros(actions.shape, bool)
        mask = np.asarray(mask)
        if mask.dtype != np.bool_ or mask.shape != actions.shape:
            raise DataError(f"{name}: mask must be a bool array of shape {actions.shape}, "
                            f"got {_describe_array(mask)}")
        num_actions, labels = _resolve_action_args(num_actions, action_labels, name)
        if num_actions is None:
            if labels is not None:
                num_actions = len(labels)
            else:
                played = actions[~mask]
                low = int(played.min()) if played.size else 0
                high = int(played.max()) if played.size else 0
                if low < 0:  # reported by _check_codes below
                    num_actions = MAX_NUM_ACTIONS
                elif high >= MAX_NUM_ACTIONS:
                    num_actions = MAX_NUM_ACTIONS
                else:
                    num_actions = high + 1
        _check_codes(actions, mask, num_actions, f"{name}: actions")
        codes = np.where(mask, 0, actions).astype(np.int32)
        if payoff is not None:
            payoff = np.asarray(payoff)
            if (payoff.shape != actions.shape or not (
                    np.issubdtype(payoff.dtype, np.integer)
                    or np.issubdtype(payoff.dtype, np.floating))):
                raise DataError(f"{name}: payoff must be a real array of shape "
                                f"{actions.shape}, got {_describe_array(payoff)}")
            payoff = payoff.astype(np.float64)
            _check_payoff(payoff, mask, f"{name}: payoff")
            payoff[mask] = np.nan
        num_episodes, _, num_agents = actions.shape
        if isinstance(first_round, bool):
            raise DataError(f"{name}: first_round={first_round!r}; expected an int")
        try:
            first_round = operator.index(first_round)
        except TypeError:
            raise DataError(f"{name}: first_round={first_round!r}; expected an int") from None
        return cls(
            actions=codes, mask=mask.copy(), num_actions=num_actions,
            episode_labels=(tuple(range(num_episodes)) if episode_labels is None
                            else _as_labels(episode_labels, f"{name}: episode_labels")),
            agent_labels=(tuple(range(num_agents)) if agent_labels is None
                          else _as_labels(agent_labels, f"{name}: agent_labels")),
            action_labels=tuple(range(num_actions)) if labels is None else labels,
            first_round=first_round, payoff=payoff)

    @classmethod
    def from_dataframe(cls, df: pd.DataFrame, num_actions: int | None = None,
                       action_labels: Sequence | None = None,
                       source: str = "<DataFrame>",
                       agent_labels: Sequence | None = None) -> Trajectories:
        """Reads a long table ``episode, round, agent, action[, payoff]``.

        Rows are named in messages by their 0-based position (as in ``df.iloc``).

        Args:
            df: One row per (episode, round, agent) that played, in any order.
            num_actions: The number of actions; None: inferred (1 + the largest
                integer code, or the number of distinct string labels).
            action_labels: The actions' names in code order; string actions must be
                among them, integer codes must be below their number.
            source: How the data are named in messages.
            agent_labels: The expected agent labels (e.g. a spec's); a label outside
                them is refused at its first row, with the closest expected label.
                The result's ``agent_labels`` are still those that occur in the data.

        Returns:
            The validated trajectories; ``first_round`` is the smallest round.

        Raises:
            DataError: Any malformed cell, column, or structure (see the module doc).
        """
        return _parse_frame(df, source, "row", 0, "column names", num_actions,
                            action_labels, agent_labels)

    @classmethod
    def from_csv(cls, path: str | os.PathLike, num_actions: int | None = None,
                 action_labels: Sequence | None = None,
                 agent_labels: Sequence | None = None) -> Trajectories:
        """Reads a long-format CSV file (UTF-8, optional BOM, header on line 1).

        Every cell is read as text: a label such as 'NA' or 'null' is a label, and
        only an empty cell is missing. The separator is a comma; a file whose header
        has tabs, semicolons or pipes and no comma is refused as such, and so is a
        file whose line 1 is a '#' comment or blank.

        Args:
            path: The file.
            num_actions: As in :meth:`from_dataframe`.
            action_labels: As in :meth:`from_dataframe`.
            agent_labels: As in :meth:`from_dataframe`.

        Returns:
            The validated trajectories.

        Raises:
            DataError: Not UTF-8 (naming the byte offset and line), empty, a row with
                more fields than the header, or any malformed cell, column or
                structure; the message names the line (1-based, header on line 1)
                and column. Blank lines at the end of the file are ignored; a blank
                line elsewhere is an error.
        """
        source = str(path)
        _check_first_line(path, source)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", pd.errors.ParserWarning)
                df = pd.read_csv(path, header=None, dtype=str, keep_default_na=False,
                                 na_filter=False, skip_blank_lines=False, index_col=False,
                                 encoding="utf-8-sig")
        except pd.errors.EmptyDataError:
            raise DataError(f"{source}, line 1: the file is empty; expected the header "
                            f"{_HEADER_TEXT}") from None
        except UnicodeDecodeError as err:
            offset, line, reason = _first_non_utf8(path) or (err.start, None, err.reason)
            where = "" if line is None else f", line {line}"
            raise DataError(f"{source}{where}: byte {offset} is not UTF-8 text ({reason}); "
                            "expected a UTF-8 CSV file") from None
        except pd.errors.ParserWarning as err:
            raise DataError(f"{source}: not a readable CSV file ({err})") from None
        except pd.errors.ParserError as err:
            # pandas numbers records, not lines: find the lines in the file itself.
            data = Path(path).read_bytes()
            record_lines, unclosed = _record_lines(data) if b'"' in data else (None, None)
            if unclosed is not None:
                raise DataError(f"{source}, line {unclosed}: a quoted field starts here and "
                                "is never closed; expected a closing '\"'") from None
            match = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(err))
            if match:
                expected, line, seen = match.groups()
                record = int(line) - 1  # pandas' 'line' is the 1-based record
                if record_lines is not None and record < len(record_lines):
                    line = int(record_lines[record])
                raise DataError(f"{source}, line {line}: {seen} fields but the header has "
                                f"{expected}; expected {_HEADER_TEXT}") from None
            raise DataError(f"{source}: not a readable CSV file ({err})") from None
        # The header is read as the first row, so that its names stay as written
        # (pandas would rename an empty name 'Unnamed: 4' and a repeated one 'x.1').
        names = df.iloc[0].tolist() if len(df) else []
        # Row r sits on line r + 2 unless a quoted cell holds a line break; only then
        # (quotes present, and more lines than records) are the records' lines found.
        row_lines = None
        data = Path(path).read_bytes()
        if b'"' in data:
            breaks = data.count(b"\n") + data.count(b"\r") - data.count(b"\r\n")
            if breaks + (not data.endswith((b"\n", b"\r"))) != len(df):
                row_lines = _record_lines(data)[0][1:]
        del data
        df = df.iloc[1:].reset_index(drop=True).set_axis(names, axis=1)
        if len(df) and len(df.columns):
            blank = (df == "").all(axis=1).to_numpy()
            trailing = len(blank) - (np.flatnonzero(~blank)[-1] + 1 if (~blank).any() else 0)
            df = df.iloc[: len(df) - trailing]
        return _parse_frame(df, source, "line", 2, "line 1 (the header)", num_actions,
                            action_labels, agent_labels, row_lines)

    @classmethod
    def from_parquet(cls, path: str | os.PathLike, num_actions: int | None = None,
                     action_labels: Sequence | None = None,
                     agent_labels: Sequence | None = None) -> Trajectories:
        """Reads a long-format Parquet file (same columns as the CSV).

        Rows are named in messages by their 0-based position in the file.

        Args:
            path: The file.
            num_actions: As in :meth:`from_dataframe`.
            action_labels: As in :meth:`from_dataframe`.
            agent_labels: As in :meth:`from_dataframe`.

        Returns:
            The validated trajectories.

        Raises:
            DataError: Not a Parquet file, or any malformed cell, column or structure
                (a null is a missing value; a string such as 'NA' is a label).
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        source = str(path)
        try:
            table = pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as err:
            if isinstance(err, FileNotFoundError):
                raise
            raise DataError(f"{source}: not a readable Parquet file ({err})") from None
        _check_columns(table.column_names, source, "column names")
        df = pd.DataFrame({name: _arrow_to_series(table.column(name))
                           for name in table.column_names})
        return _parse_frame(df, source, "row", 0, "column names", num_actions,
                            action_labels, agent_labels)

    # ----------------------------------------------------------------- writers

    def _long_columns(self) -> dict[str, list]:
        """The played entries as long-table columns, sorted by episode, round, agent."""
        e, t, i = np.nonzero(~self.mask)  # C order: episode, then round, then agent
        action_codes = self.actions[e, t, i]
        columns = {
            "episode": [self.episode_labels[k] for k in e.tolist()],
            "round": (t.astype(np.int64) + self.first_round).tolist(),
            "agent": [self.agent_labels[k] for k in i.tolist()],
            "action": [self.action_labels[k] for k in action_codes.tolist()],
        }
        if self.payoff is not None:
            columns[PAYOFF_COLUMN] = self.payoff[e, t, i].tolist()
        return columns

    def to_dataframe(self) -> pd.DataFrame:
        """The long table: one row per (episode, round, agent) that played.

        Returns:
            Columns ``episode, round, agent, action`` (labels; integer columns are
            int64) and ``payoff`` (float64, NaN where not observed) if payoffs are
            present; rows sorted by episode, round and agent.
        """
        columns = self._long_columns()
        frame = {}
        for name, values in columns.items():
            if name == PAYOFF_COLUMN:
                frame[name] = np.asarray(values, np.float64)
            elif values and isinstance(values[0], str):
                frame[name] = values
            else:
                frame[name] = np.asarray(values, np.int64)
        return pd.DataFrame(frame)

    def to_csv(self, path: str | os.PathLike) -> None:
        """Writes the long table as UTF-8 CSV, atomically (temporary file, then rename).

        Payoffs are written with ``repr`` precision (they read back exactly), empty
        where not observed. :meth:`from_csv` reads the file back to an equal object;
        pass ``action_labels=self.action_labels`` when some action was never played
        or string labels are not in sorted order (the file cannot say either).

        Args:
            path: The file to write (replaced if it exists).
        """
        columns = self._long_columns()
        if PAYOFF_COLUMN in columns:
            columns[PAYOFF_COLUMN] = ["" if math.isnan(x) else repr(x)
                                      for x in columns[PAYOFF_COLUMN]]

        def write(handle) -> None:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(list(columns))
            writer.writerows(zip(*columns.values()))

        from ._io import atomic_write

        atomic_write(path, write)

    def to_parquet(self, path: str | os.PathLike) -> None:
        """Writes the long table as Parquet, atomically (temporary file, then rename).

        Label columns are int64 or string; payoff is float64, null where not
        observed. Reads back with :meth:`from_parquet` as :meth:`to_csv` does.

        Args:
            path: The file to write (replaced if it exists).
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        arrays = {}
        for name, values in self._long_columns().items():
            if name == PAYOFF_COLUMN:
                data = np.asarray(values, np.float64)
                arrays[name] = pa.array(data, pa.float64(), mask=np.isnan(data))
            elif values and isinstance(values[0], str):
                arrays[name] = pa.array(values, pa.string())
            else:
                arrays[name] = pa.array(values, pa.int64())
        table = pa.table(arrays)
        from ._io import atomic_write

        atomic_write(path, lambda handle: pq.write_table(table, handle), binary=True)


def _arrow_to_series(column: Any) -> pd.Series:
    """A Parquet column as pandas cells; a null is None (an empty cell), except in floats."""
    import pyarrow as pa

    if column.null_count and not pa.types.is_floating(column.type):
        # pandas would turn integers with nulls into floats, and string nulls into NaN
        return pd.Series(column.to_pylist(), dtype=object)
    return column.to_pandas()


def _describe_array(value: Any) -> str:
    """``dtype`` and shape of an array, or the type of anything else, for messages."""
    if isinstance(value, np.ndarray):
        return f"dtype {value.dtype} and shape {value.shape}"
    return type(value).__name__
