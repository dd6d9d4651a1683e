"""Long-format CSV and Parquet files: reading them into tables of raw cells, and
writing long-table columns to them atomically (docs/design.md §9).

The checks that only a file allows live here: its first line (a comment, a blank line,
another separator), its encoding (the byte and line that are not UTF-8), records that
span lines (a quoted cell holding a line break) and quotes that are never closed, so
that messages name the line of the file. The cells themselves are parsed by
:mod:`bayes_diml._table_parsing`.
"""

from __future__ import annotations

import codecs
import csv
import math
import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bayes_diml._labels import _show
from bayes_diml._long_table import _HEADER_TEXT, PAYOFF_COLUMN, _check_columns
from bayes_diml.errors import DataError

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


def _parser_error(err: pd.errors.ParserError, path: str | os.PathLike, source: str) -> DataError:
    """The message for a CSV file that pandas cannot split into records."""
    # pandas numbers records, not lines: find the lines in the file itself.
    data = Path(path).read_bytes()
    record_lines, unclosed = _record_lines(data) if b'"' in data else (None, None)
    if unclosed is not None:
        return DataError(f"{source}, line {unclosed}: a quoted field starts here and "
                         "is never closed; expected a closing '\"'")
    match = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(err))
    if match:
        expected, line, seen = match.groups()
        record = int(line) - 1  # pandas' 'line' is the 1-based record
        if record_lines is not None and record < len(record_lines):
            line = int(record_lines[record])
        return DataError(f"{source}, line {line}: {seen} fields but the header has "
                         f"{expected}; expected {_HEADER_TEXT}")
    return DataError(f"{source}: not a readable CSV file ({err})")


def _read_csv(path: str | os.PathLike, source: str) -> tuple[pd.DataFrame, np.ndarray | None]:
    """Reads a long-format CSV file as text cells.

    Returns:
        The table, its columns named as written in the header, with the blank lines at
        its end dropped; and the line where each row starts when a quoted cell holds a
        line break (so that row ``r`` is not on line ``r + 2``), else None.

    Raises:
        DataError: The first line is a comment, blank or not comma-separated; the file
            is empty, not UTF-8, or not a readable CSV file.
    """
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
        raise _parser_error(err, path, source) from None
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
    return df, row_lines


def _read_parquet(path: str | os.PathLike, source: str, extra: tuple = ()) -> pd.DataFrame:
    """Reads a long-format Parquet file as typed cells (a null is None, except in floats);
    ``extra``: an outcome column's name, also allowed.

    Raises:
        DataError: Not a readable Parquet file, or bad column names.
        FileNotFoundError: No such file.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise DataError(f"{source}: not a readable Parquet file ({err})") from None
    _check_columns(table.column_names, source, "column names", extra)
    return pd.DataFrame({name: _arrow_to_series(table.column(name))
                         for name in table.column_names})


def _arrow_to_series(column: Any) -> pd.Series:
    """A Parquet column as pandas cells; a null is None (an empty cell), except in floats."""
    import pyarrow as pa

    if column.null_count and not pa.types.is_floating(column.type):
        # pandas would turn integers with nulls into floats, and string nulls into NaN
        return pd.Series(column.to_pylist(), dtype=object)
    return column.to_pandas()


def _long_frame(columns: dict[str, list]) -> pd.DataFrame:
    """Long-table columns as a DataFrame: payoff float64, labels int64 or strings."""
    frame = {}
    for name, values in columns.items():
        if name == PAYOFF_COLUMN:
            frame[name] = np.asarray(values, np.float64)
        elif values and isinstance(values[0], str):
            frame[name] = values
        else:
            frame[name] = np.asarray(values, np.int64)
    return pd.DataFrame(frame)


def _write_csv(columns: dict[str, list], path: str | os.PathLike) -> None:
    """Writes long-table columns as UTF-8 CSV, atomically; payoffs with ``repr``
    precision, empty where NaN."""
    if PAYOFF_COLUMN in columns:
        columns[PAYOFF_COLUMN] = ["" if math.isnan(x) else repr(x)
                                  for x in columns[PAYOFF_COLUMN]]

    def write(handle) -> None:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(list(columns))
        writer.writerows(zip(*columns.values()))

    from ._io import atomic_write

    atomic_write(path, write)


def _write_parquet(columns: dict[str, list], path: str | os.PathLike) -> None:
    """Writes long-table columns as Parquet, atomically; payoff float64 (null where
    NaN), labels int64 or strings."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrays = {}
    for name, values in columns.items():
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
