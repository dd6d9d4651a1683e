"""Host-side checks shared by the spec reader and the counterfactual overrides."""

from __future__ import annotations

import numpy as np

from .errors import DataError

__all__ = ["numeric_array"]


def _has_non_number(value) -> bool:
    if isinstance(value, (list, tuple)):
        return any(_has_non_number(v) for v in value)
    if isinstance(value, np.ndarray):
        return value.dtype.kind not in "iuf"
    return isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating))


def numeric_array(value, where: str, error: type[DataError] = DataError) -> np.ndarray:
    """``value`` (a number or nested lists of numbers) as a float64 array.

    Booleans and strings are refused, not coerced; so are NaN and infinities.
    """
    if _has_non_number(value):
        raise error(f"{where}: expected numbers (a number or a list of numbers), got {value!r}")
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise error(f"{where}: expected a rectangular array of numbers, got {value!r}") from None
    if not np.all(np.isfinite(array)):
        raise error(f"{where}: values must be finite numbers (no NaN or inf), got {array.tolist()}")
    return array
