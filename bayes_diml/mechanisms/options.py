"""Spec and prior options shared by the mechanism families: the ``[mechanism]`` keys every
family accepts, key and value checks with one-line ``SpecError`` messages, ``.npz`` truth
files, and i.i.d. prior sites from ``[mechanism.prior]`` tables."""

from __future__ import annotations

import difflib
from pathlib import Path

import numpy as np

__all__ = [
    "SPEC_COMMON_KEYS",
    "check_keys",
    "load_npz",
    "positive_int_list",
    "sample_site",
    "check_choice",
    "positive_number",
]

SPEC_COMMON_KEYS = frozenset({"family", "truth", "prior", "known"})
"""Keys of ``[mechanism]`` that every family accepts (the spec reader parses them)."""


def check_keys(keys, allowed, where: str) -> None:
    """Raise ``SpecError`` naming the first key of ``keys`` outside ``allowed`` (with the
    closest allowed key as a hint)."""
    from ..errors import SpecError

    for key in keys:
        if key not in allowed:
            close = difflib.get_close_matches(key, sorted(allowed), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise SpecError(f"{where}: unknown key '{key}'{hint}; allowed: {sorted(allowed)}")


def load_npz(base_dir: Path, name, key: str, where: str) -> dict[str, np.ndarray]:
    """The arrays of the ``.npz`` file a spec names under ``key`` (relative to ``base_dir``)."""
    import os

    from ..errors import SpecError

    if not isinstance(name, str):
        raise SpecError(f"{where}: '{key}' must be the name of a .npz file, got {name!r}")
    file = (Path(base_dir) / name) if not os.path.isabs(name) else Path(name)
    try:
        with np.load(file, allow_pickle=False) as archive:
            return {k: archive[k] for k in archive.files}
    except FileNotFoundError:
        raise SpecError(f"{where}: '{key}' names {file}, which does not exist") from None
    except (OSError, ValueError) as err:
        raise SpecError(f"{where}: cannot read {file} as a NumPy .npz archive: {err}") from None


def positive_int_list(value, key: str, where: str) -> tuple[int, ...]:
    """A spec value that must be a list of positive integers (layer sizes), as a tuple."""
    from ..errors import SpecError

    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
        raise SpecError(f"{where}: '{key}' must be a list of positive integers, got {value!r}")
    return tuple(value)


def sample_site(name: str, options: dict, default: dict, shape: tuple[int, ...], where: str = "[mechanism.prior]"):
    """``numpyro.sample(name, prior)`` of an array of ``shape`` i.i.d. entries.

    The prior is ``options[name]`` (an inline table, e.g. ``{dist = "normal",
    loc = 0, scale = 1}``) if the spec gives one, else ``default``.
    """
    import numpyro

    from ..priors import Prior

    prior = Prior.parse(options.get(name, default), f"{where} {name}")
    distribution = prior.to_numpyro()
    if shape:
        distribution = distribution.expand(shape).to_event(len(shape))
    return numpyro.sample(name, distribution)


def check_choice(value, key: str, choices: tuple[str, ...], where: str = "[mechanism.prior]") -> str:
    """``value`` if it is one of ``choices``, else ``SpecError`` in one line naming ``key``."""
    from ..errors import SpecError

    if not isinstance(value, str) or value not in choices:
        allowed = " or ".join(f'"{c}"' for c in choices)
        raise SpecError(f"{where}: '{key}' must be {allowed}, got {value!r}")
    return value


def positive_number(options: dict, key: str, default: float, where: str = "[mechanism.prior]") -> float:
    """A positive number option of ``[mechanism.prior]`` (e.g. a prior scale)."""
    from ..errors import SpecError

    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value <= 0:
        raise SpecError(f"{where}: '{key}' must be a positive number, got {value!r}")
    return float(value)
