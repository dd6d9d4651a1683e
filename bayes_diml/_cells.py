"""How one raw cell of a long table reads: its kind (missing, an integer, another
number, text, ...) and its value.

CSV cells are text; DataFrame and Parquet cells are typed values. Both are read here
the same way, so that every reader refuses the same cells with the same messages.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pandas as pd

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
