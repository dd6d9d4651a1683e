"""Frozen, hashable descriptions of static configuration (models, mechanism families).

``Model`` and ``Mechanism`` are static arguments of jitted code: JAX looks compiled
programs up by their hash and ``==``. Comparing them by value (not identity) lets
two ``read_spec`` of the same file, or two equal models built in Python, share
the compiled programs instead of compiling again.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

__all__ = ["static_key", "dataclass_key"]


def static_key(value: Any) -> Any:
    """A hashable value that is equal for equal configurations: dicts become sorted
    tuples of items, lists and tuples tuples, NumPy arrays ``("ndarray", dtype, shape,
    bytes)``, NumPy scalars Python numbers; anything else (numbers, strings, frozen
    dataclasses, functions, ``Prior``) is returned as is and must be hashable."""
    if isinstance(value, dict):
        return ("dict", tuple(sorted(((str(k), static_key(v)) for k, v in value.items()), key=lambda kv: kv[0])))
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return tuple(static_key(v) for v in value)
    if isinstance(value, np.ndarray):
        array = np.ascontiguousarray(value)
        return ("ndarray", array.dtype.str, array.shape, array.tobytes())
    if isinstance(value, np.generic):
        return value.item()
    return value


def dataclass_key(obj) -> tuple:
    """``(type, static_key of every field)`` of a dataclass instance."""
    return (type(obj), tuple(static_key(getattr(obj, f.name)) for f in dataclasses.fields(obj)))
