"""The package's one JSON encoder: every JSON file it writes goes through ``jsonable``.

``json.dumps`` writes a float NaN or infinity as a bare ``NaN`` / ``Infinity``, which is
not JSON (RFC 8259): strict readers (``jq``, JavaScript, ``json.loads`` with
``parse_constant`` raising) refuse the file. Here a non-finite number becomes ``null``.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

__all__ = ["jsonable", "dumps"]


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON data: dicts (keys as strings), lists, str, int, float, bool, None.

    NumPy scalars and arrays become numbers and (nested) lists, tuples lists, paths
    strings, and a NaN or infinite float (Python or NumPy) ``None`` (JSON ``null``).
    Anything else is returned as is (``json.dumps`` then refuses what it cannot write).
    """
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def dumps(value: Any, indent: int | None = 2) -> str:
    """``json.dumps(jsonable(value))``, refusing any bare NaN or infinity that remains."""
    import json

    return json.dumps(jsonable(value), indent=indent, allow_nan=False)
