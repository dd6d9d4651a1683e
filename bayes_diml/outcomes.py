"""Outcome columns: a categorical result per row (``win`` / ``tie`` / ``lose``) that the
spec maps to the realised payoff of the row's agent.

Spec (``[payoff]``, models/README.md)::

    [payoff]
    column = "result"                          # the data column (default "outcome")
    outcomes = {win = "a", tie = 1, lose = 0}  # label -> a number, or a parameter's name
    [payoff.prior]
    a = {dist = "lognormal", loc = 0.5, scale = 0.5}

Outcome ``o`` stands for the payoff ``v(o)``: its number, or its parameter (sampled from
its prior in the NumPyro model, reported in the posterior like any other). It enters the
likelihood exactly as an observed ``payoff`` cell does (``inference/numpyro_model.py``)::

    v(o[e, t, i]) ~ Normal(M(a_{e,t})_i, sigma)

so outcomes pin the payoff levels (at least one outcome must be a number) and, with two
different numbers, the payoff scale. The data side, ``OutcomeColumn``, holds each cell's
code (its label's position in ``OutcomeRule.labels``; ``-1`` where not observed).
"""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np

from .errors import DataError, SpecError
from .priors import Prior

__all__ = ["OutcomeRule", "OutcomeColumn", "parse_outcome_rule", "parse_outcome_cells", "check_parameter_names", "DEFAULT_COLUMN"]

DEFAULT_COLUMN = "outcome"
"""The data column of the outcomes when ``[payoff]`` names none."""

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_RESERVED_COLUMNS = ("episode", "round", "agent", "action", "payoff")


@dataclasses.dataclass(frozen=True)
class OutcomeRule:
    """``[payoff] column`` / ``outcomes`` / ``[payoff.prior]`` of a spec (hashable: part of a ``Model``).

    Attributes:
        column: the data column holding the outcome labels.
        values: ``((label, value), ...)`` in the spec's order; a value is a float, or the
            name (str) of a parameter.
        priors: ``((name, Prior), ...)``, one per parameter named in ``values``.
    """

    column: str
    values: tuple
    priors: tuple

    @property
    def labels(self) -> tuple[str, ...]:
        """The outcome labels; code ``k`` is ``labels[k]``."""
        return tuple(label for label, _ in self.values)

    @property
    def parameters(self) -> tuple[str, ...]:
        """The parameters the outcomes name (each sampled from its prior)."""
        return tuple(name for name, _ in self.priors)

    @property
    def numbers(self) -> tuple[float, ...]:
        """The outcomes' fixed payoffs."""
        return tuple(v for _, v in self.values if not isinstance(v, str))

    def sample(self) -> dict:
        """``{name: value}`` of the parameters, each a NumPyro site under its prior."""
        import numpyro

        return {name: numpyro.sample(name, prior.to_numpyro()) for name, prior in self.priors}

    def payoffs(self, parameters: dict, codes):
        """The payoff of each cell, ``v(o)``: ``codes`` as floats (NaN = not observed) to
        payoffs (NaN stays NaN); traceable."""
        import jax.numpy as jnp

        codes = jnp.asarray(codes)
        table = jnp.stack([jnp.asarray(parameters[v] if isinstance(v, str) else v, codes.dtype) for _, v in self.values])
        seen = jnp.isfinite(codes)
        return jnp.where(seen, table[jnp.where(seen, codes, 0).astype(jnp.int32)], jnp.nan)

    def to_toml(self) -> dict:
        """The ``[payoff]`` keys of the rule (``column``, ``outcomes``, ``prior``)."""
        table: dict = {"column": self.column, "outcomes": {label: v for label, v in self.values}}
        if self.priors:
            table["prior"] = {name: prior.to_toml() for name, prior in self.priors}
        return table


def parse_outcome_rule(section: dict, where: str) -> OutcomeRule | None:
    """The rule of a ``[payoff]`` table (``None`` without ``outcomes``); ``SpecError`` in one
    line naming the key otherwise."""
    if "outcomes" not in section:
        for key in ("column", "prior"):
            if key in section:
                raise SpecError(f"{where}: '{key}' is given without 'outcomes' (e.g. outcomes = {{win = 1, lose = 0}})")
        return None
    column = section.get("column", DEFAULT_COLUMN)
    if not isinstance(column, str) or not column or column in _RESERVED_COLUMNS:
        raise SpecError(f"{where}: 'column' must name a data column other than {list(_RESERVED_COLUMNS)}, got {column!r}")
    outcomes = section["outcomes"]
    if not isinstance(outcomes, dict) or not outcomes:
        raise SpecError(f"{where}: 'outcomes' must be a table label = number or parameter name, e.g. "
                        f"{{win = \"a\", tie = 1, lose = 0}}, got {outcomes!r}")
    values = tuple((str(label), _outcome_value(value, label, where)) for label, value in outcomes.items())
    names = tuple(dict.fromkeys(v for _, v in values if isinstance(v, str)))
    if all(isinstance(v, str) for _, v in values):
        raise SpecError(f"{where}: 'outcomes' names only parameters; give at least one outcome a number "
                        "(e.g. lose = 0): with parameters only the payoff levels are free")
    prior, prior_where = section.get("prior", {}), where.replace("[payoff]", "[payoff.prior]")
    if not isinstance(prior, dict):
        raise SpecError(f"{prior_where}: must be a table of parameter = prior")
    for name in prior:
        if name not in names:
            raise SpecError(f"{prior_where}: '{name}' is not a parameter of 'outcomes' (parameters: {list(names)})")
    for name in names:
        if name not in prior:
            raise SpecError(f"{where}: outcome parameter '{name}' has no prior; add [payoff.prior] "
                            f"{name} = {{dist = \"lognormal\", loc = 0, scale = 1}}")
    priors = tuple((name, Prior.parse(prior[name], f"{prior_where} {name}")) for name in names)
    return OutcomeRule(column, values, priors)


def check_parameter_names(rule: OutcomeRule, model) -> None:
    """Refuse an outcome parameter named like another unknown of the model (one NumPyro site each)."""
    taken = {*model.learner.param_names, *model.mechanism.param_shapes(), "payoff_sigma"}
    for name in rule.parameters:
        if name in taken or name.startswith("q0") or any(name.startswith(f"{p}_") for p in model.per_agent):
            raise SpecError(f"[payoff] outcome parameter '{name}' has the name of another parameter of the model; rename it")


def _outcome_value(value, label, where: str):
    """A number (float) or a parameter's name (str)."""
    if isinstance(value, str):
        if not _NAME.fullmatch(value):
            raise SpecError(f"{where}: outcome '{label}' = {value!r}: a parameter name is letters, digits and '_'")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SpecError(f"{where}: outcome '{label}' must be a finite number or a parameter name, got {value!r}")
    return float(value)


@dataclasses.dataclass(frozen=True, eq=False)
class OutcomeColumn:
    """The outcome column of observed play (``Trajectories.outcome``).

    Attributes:
        column: the column's name in the data files.
        labels: the outcome labels; code ``k`` is ``labels[k]``.
        codes: int32 ``(num_episodes, num_rounds, num_agents)``, ``-1`` where not observed
            (always where masked).
    """

    column: str
    labels: tuple
    codes: np.ndarray

    def check(self, mask: np.ndarray, name: str) -> None:
        """Refuse codes of the wrong shape or range, or an outcome where nobody played."""
        codes = self.codes
        if not isinstance(codes, np.ndarray) or codes.dtype != np.int32 or codes.shape != mask.shape:
            raise DataError(f"{name}: outcome codes must be an int32 array of shape {mask.shape}")
        bad = (codes < -1) | (codes >= len(self.labels)) | (mask & (codes != -1))
        if bad.any():
            index = tuple(int(x) for x in np.argwhere(bad)[0])
            raise DataError(f"{name}: outcome, index {index}: code {int(codes[index])} is not in -1..{len(self.labels) - 1} "
                            "(-1 where not observed and where masked)")

    def equals(self, other) -> bool:
        return (isinstance(other, OutcomeColumn) and self.column == other.column and self.labels == other.labels
                and np.array_equal(self.codes, other.codes))

    def floats(self) -> np.ndarray:
        """The codes as float64, NaN where not observed (``observed_payoffs``)."""
        return np.where(self.codes >= 0, self.codes, np.nan)

    def cells(self, e, t, i) -> list:
        """The labels of the entries ``(e, t, i)``; ``""`` where not observed."""
        return [self.labels[k] if k >= 0 else "" for k in self.codes[e, t, i].tolist()]


def parse_outcome_cells(table, column: str, labels) -> tuple[np.ndarray, tuple]:
    """Codes of a long table's outcome column (``-1`` for an empty cell) and the labels.

    ``labels``: the spec's outcome labels (a label outside them is refused at its first
    row, naming row and column), or ``None``: the sorted distinct labels of the column.
    """
    from ._cells import _INT, _MISSING, _classify
    from ._labels import _show

    col = table.column(column)
    texts: list = []
    for k, cell in enumerate(col.cells):
        kind, value = _classify(cell)
        if kind == _MISSING:
            texts.append(None)
        elif isinstance(cell, str) or kind == _INT:  # text as written; a typed integer as its digits
            texts.append(cell if isinstance(cell, str) else str(value))
        else:
            raise table.error(int(col.first_row[k]), column, f"{_show(cell)} is not an outcome label")
    if labels is None:
        labels = tuple(sorted({t for t in texts if t is not None}))
    code_of = {label: k for k, label in enumerate(labels)}
    codes = np.empty(len(texts), np.int64)
    for k, text in enumerate(texts):
        if text is not None and text not in code_of:
            expected = ", ".join(_show(label) for label in labels)
            raise table.error(int(col.first_row[k]), column,
                              f"outcome {_show(text)} is not in [payoff] outcomes; expected one of {expected}, or an empty cell")
        codes[k] = -1 if text is None else code_of[text]
    return codes[col.index], tuple(labels)
