"""Episode, agent and action labels: what a valid label is, how labels and cells are
shown in messages, and the checks on label sequences given as arguments.

A label must survive a trip through a CSV file unchanged (see :func:`_label_problem`).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

import numpy as np

from bayes_diml._cells import _INT, _MISSING, _NA_TEXT, _NUMBER, _TEXT, _classify, _classify_text
from bayes_diml.errors import DataError

_INT64_MAX = int(np.iinfo(np.int64).max)


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

