"""The arrays of a ``Trajectories``: their checks (dtypes, shapes, action codes,
payoffs), who played when, and the conversions ``Trajectories.from_arrays`` makes.

Index-based messages name the first offending entry as ``index (e, t, i)``.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np

from bayes_diml._long_table import MAX_NUM_ACTIONS
from bayes_diml.errors import DataError


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


def _actions_and_mask(actions: Any, mask: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    """``from_arrays``' actions and mask as arrays: integers and bools of one 3-d shape."""
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
    return actions, mask


def _played_num_actions(actions: np.ndarray, mask: np.ndarray) -> int:
    """1 + the largest played code; ``MAX_NUM_ACTIONS`` when a code is out of range
    (negative or too large), so that :func:`_check_codes` names it."""
    played = actions[~mask]
    low = int(played.min()) if played.size else 0
    high = int(played.max()) if played.size else 0
    if low < 0 or high >= MAX_NUM_ACTIONS:
        return MAX_NUM_ACTIONS
    return high + 1


def _real_payoff(payoff: Any, mask: np.ndarray, name: str) -> np.ndarray:
    """``from_arrays``' payoff as float64 of the mask's shape, NaN where masked."""
    payoff = np.asarray(payoff)
    if (payoff.shape != mask.shape or not (
            np.issubdtype(payoff.dtype, np.integer)
            or np.issubdtype(payoff.dtype, np.floating))):
        raise DataError(f"{name}: payoff must be a real array of shape "
                        f"{mask.shape}, got {_describe_array(payoff)}")
    payoff = payoff.astype(np.float64)
    _check_payoff(payoff, mask, f"{name}: payoff")
    payoff[mask] = np.nan
    return payoff


def _round_label(first_round: Any, name: str) -> int:
    """``from_arrays``' ``first_round`` as a Python int (any integer type but bool)."""
    if isinstance(first_round, bool):
        raise DataError(f"{name}: first_round={first_round!r}; expected an int")
    try:
        return operator.index(first_round)
    except TypeError:
        raise DataError(f"{name}: first_round={first_round!r}; expected an int") from None


def _describe_array(value: Any) -> str:
    """``dtype`` and shape of an array, or the type of anything else, for messages."""
    if isinstance(value, np.ndarray):
        return f"dtype {value.dtype} and shape {value.shape}"
    return type(value).__name__
