"""Read observed play from a file and check it against a model."""

from __future__ import annotations

from pathlib import Path

from .errors import DataError
from .model import Model

__all__ = ["load_data", "check_data"]

_READERS = {".csv": "from_csv", ".parquet": "from_parquet", ".pq": "from_parquet"}


def load_data(path, model: Model | None = None):
    """Read a long-format CSV or Parquet file (``episode,round,agent,action[,payoff]``, or
    with the outcome column of the spec's ``[payoff] outcomes`` in place of ``payoff``).

    With a model, string action labels are coded in the spec's ``action_labels``
    order, an agent label outside the spec's ``agent_labels`` is refused at its first
    line, and the data are checked against the model (agent and action counts,
    agents absent mid-episode for joint families).

    Raises:
        DataError: naming the file, line and column of the first problem.
    """
    from .trajectories import Trajectories

    path = Path(path)
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"{path}: unknown data format '{path.suffix}'; expected .csv or .parquet")
    if not path.exists():
        raise DataError(f"{path}: data file not found")
    if not path.is_file():
        raise DataError(f"{path}: not a file (a folder?); expected a .csv or .parquet data file")
    kwargs = {}
    if model is not None:
        kwargs = {"num_actions": model.num_actions, "action_labels": model.action_labels,
                  "agent_labels": model.agent_labels}
        if model.outcomes is not None:  # the spec's outcome column, its labels checked row by row
            kwargs["outcomes"] = (model.outcomes.column, model.outcomes.labels)
    data = getattr(Trajectories, reader)(path, **kwargs)
    if model is not None:
        check_data(data, model, source=str(path))
    return data


def check_data(data, model: Model, source: str = "data") -> None:
    """Raise ``DataError`` if ``data`` contradicts ``model`` (see ``Trajectories.check_against``).

    Agent labels are compared first when the spec names them, so that an unknown label
    is named (with the closest of the spec's labels) rather than only counted.
    """
    if model.agent_labels is not None:
        _check_agent_labels(tuple(data.agent_labels), tuple(model.agent_labels), source)
    _check_outcomes(data, model, source)
    data.check_against(
        num_agents=model.num_agents,
        num_actions=model.num_actions,
        allows_absence=model.mechanism.allows_absence,
        family=model.mechanism.family,
        source=source,
    )


def _check_outcomes(data, model: Model, source: str) -> None:
    """An outcome column and ``[payoff] outcomes`` come together, with the same column and labels."""
    rule, outcome = model.outcomes, getattr(data, "outcome", None)
    if rule is None and outcome is not None:
        raise DataError(f"{source}: the data have an outcome column '{outcome.column}' but the spec has no "
                        "[payoff] outcomes mapping its labels to payoffs")
    if rule is None:
        return
    if outcome is None:
        raise DataError(f"{source}: the spec's [payoff] outcomes read column '{rule.column}', which the data do not have"
                        + ("; they have a 'payoff' column: drop [payoff] outcomes" if data.payoff is not None else ""))
    if outcome.column != rule.column or outcome.labels != rule.labels:
        raise DataError(f"{source}: outcome column '{outcome.column}' with labels {list(outcome.labels)} differs from "
                        f"the spec's [payoff] column = '{rule.column}', outcomes {list(rule.labels)}; read the data with "
                        "load_data(path, model), or outcomes=(column, model.outcomes.labels)")


def _check_agent_labels(found: tuple, expected: tuple, source: str) -> None:
    """The data's agent labels must be the spec's: name the first unknown or absent one."""
    from ._labels import _closest_label, _show, _show_labels

    if found == expected:
        return
    unknown = [label for label in found if label not in set(expected)]
    if unknown:
        raise DataError(
            f"{source}: agent label {_show(unknown[0])} is not in the spec's agent_labels "
            f"{_show_labels(expected)}{_closest_label(unknown[0], expected)}"
        )
    absent = [label for label in expected if label not in set(found)]
    why = f": agent {_show(absent[0])} never plays in the data" if absent else ""
    raise DataError(
        f"{source}: agent labels {_show_labels(found)} differ from the spec's agent_labels "
        f"{_show_labels(expected)}{why}"
    )
