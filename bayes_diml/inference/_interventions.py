"""Interventions of a counterfactual (``counterfactual.py``): parsing them, and applying
them to posterior draws.

An intervention changes the mechanism (parameter overrides, or a whole new mechanism)
and/or the learner (parameter overrides, new initial states). Each override is first
*parsed*: checked against the model, naming the parameter, before anything is traced,
into ``(name, op, value)`` with ``op`` one of ``"="`` (replace), ``"+"`` / ``"*"`` (change
each draw's value). It is then *applied* to the parameters of the ``S`` posterior draws
(arrays with a leading draw axis), and described in JSON-able form for the result.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from typing import Any

import numpy as np

from .._checks import numeric_array
from .._types import Params
from ..errors import DataError, SpecError
from ..mechanisms import Mechanism
from ..model import Model

__all__ = ["WHERE", "mechanism_intervention", "learner_intervention", "identification", "unidentified_message"]

WHERE = "counterfactual"
"""How error messages of a counterfactual begin."""

_FACTOR = re.compile(r"^\s*\*\s*(\S+)\s*$")


# ------------------------------------------------------------------ mechanism
def mechanism_intervention(model: Model, draws: Params, S: int, mechanism) -> tuple[Model, Params, Any]:
    """The model to simulate, its mechanism parameters ``(S, ...)``, and a description."""
    if mechanism is None:
        return model, draws, None
    if isinstance(mechanism, dict):
        overrides = [_parse_mechanism_override(model, name, value) for name, value in mechanism.items()]
        description = {name: array.tolist() if op == "=" else {"op": op, "value": array.tolist()}
                       for name, op, array in overrides}
        return model, _apply_mechanism_overrides(draws, overrides, S), {"set": description}
    if isinstance(mechanism, tuple) and len(mechanism) == 2:
        family, arrays = _parse_new_mechanism(model, *mechanism)
        out = {k: np.broadcast_to(v, (S, *v.shape)) for k, v in arrays.items()}
        description = {"family": family.family, "params": {k: v.tolist() for k, v in arrays.items()}}
        return _with_mechanism(model, family), out, description
    raise DataError(
        f"{WHERE}: mechanism must be None, a dict of parameter overrides, or a tuple "
        f"(Mechanism, params); got {type(mechanism).__name__}"
    )


def _parse_mechanism_override(model: Model, name: str, value) -> tuple[str, str, np.ndarray]:
    """``(name, op, array)`` of one mechanism override: ``value`` replaces the parameter, or
    ``("+", values)`` / ``("*", values)`` changes each draw's value."""
    shapes = model.mechanism.param_shapes()
    where = f"{WHERE} mechanism override '{name}'"
    _check_known("mechanism", name, f"{model.mechanism.family} family", sorted(shapes))
    op = "="
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
        op, value = value
        if op not in ("+", "*"):
            raise DataError(f"{where}: a relative change is ('+', values) or ('*', values), got op {op!r}")
    array = _finite_array(value, where)
    if array.shape != tuple(shapes[name]):
        raise DataError(f"{where}: expected shape {tuple(shapes[name])}, got shape {array.shape}")
    return name, op, array


def _apply_mechanism_overrides(draws: Params, overrides, S: int) -> Params:
    out = dict(draws)
    for name, op, array in overrides:
        if op == "+":
            out[name] = np.asarray(draws[name], np.float64) + array
        elif op == "*":
            out[name] = np.asarray(draws[name], np.float64) * array
        else:
            out[name] = np.broadcast_to(array, (S, *array.shape))
    return out


def _parse_new_mechanism(model: Model, family, values) -> tuple[Mechanism, dict[str, np.ndarray]]:
    """``mechanism=(Mechanism, params)``: the new mechanism and its parameters, checked."""
    if not isinstance(family, Mechanism):
        raise DataError(
            f"{WHERE}: mechanism=(family, params) needs a Mechanism instance first, "
            f"got {type(family).__name__}"
        )
    if (family.num_agents, family.num_actions) != (model.num_agents, model.num_actions):
        raise DataError(
            f"{WHERE}: the new {family.family} mechanism has {family.num_agents} agents and "
            f"{family.num_actions} actions; the fitted model has {model.num_agents} and {model.num_actions}"
        )
    if not isinstance(values, dict):
        raise DataError(
            f"{WHERE}: mechanism=(family, params) needs a dict of parameters, got {type(values).__name__}"
        )
    arrays = {}
    for name, value in values.items():
        arrays[name] = _finite_array(value, f"{WHERE} mechanism parameter '{name}'")
    family.check_params(arrays, f"{WHERE} mechanism ({family.family})")
    return family, arrays


def _with_mechanism(model: Model, mechanism: Mechanism) -> Model:
    """``model`` with another mechanism. Models compare by value, so repeated
    counterfactuals under one new mechanism compile once."""
    return dataclasses.replace(model, mechanism=mechanism, mechanism_known={})  # known levers of the old family


# ------------------------------------------------------------------ identification
def identification(model: Model, mechanism, observed: bool) -> dict[str, Any]:
    """Whether the quantities a counterfactual reports rest on what the data identify.

    Returns ``{"identified", "unidentified", "welfare_identified", "advice"}``:

    * ``unidentified``: the prior-driven mechanism parameters on which play under the
      intervention depends (``Mechanism.unidentified_by``, given ``[mechanism.known]``),
      e.g. ``["c1"]`` when a congestion toll is replaced absolutely while the tolls in
      force are not known. Learner changes (replaced, ``+``, ``*``) are identified: the
      learner parameters are fixed numbers, or identified with observed payoffs (a prior
      on the payoff scale needs them, ``check_identifiable_setup``). A whole new
      mechanism ``(Mechanism, params)`` is given in full: identified.
    * ``welfare_identified``: False when welfare sums payoff levels that only the gauge
      convention fixes (``Mechanism.levels_gauge`` under a shift-invariant learner,
      no observed payoffs, docs/design.md §3), unless the new mechanism is given in full.
    """
    from .numpyro_model import fix_gauge

    whole = isinstance(mechanism, tuple)
    unidentified: list[str] = []
    if isinstance(mechanism, dict):
        overrides = [_parse_mechanism_override(model, name, value) for name, value in mechanism.items()]
        unidentified = list(model.mechanism.unidentified_by(overrides, set(model.mechanism_known)))
    welfare = whole or not (model.mechanism.levels_gauge and fix_gauge(model, observed))
    return {
        "identified": not unidentified,
        "unidentified": unidentified,
        "welfare_identified": bool(welfare),
        "advice": model.mechanism.unidentified_advice if unidentified else "",
    }


def unidentified_message(names: list[str], advice: str) -> str:
    """The one-line warning of an unidentified counterfactual."""
    return (
        f"this counterfactual depends on {', '.join(names)}, which the data do not identify (each draw's value "
        f"comes from the prior), so its bands are prior-driven; {advice or 'change identified quantities instead'}"
    )


# ------------------------------------------------------------------ learner
def learner_intervention(model: Model, draws: Params, S: int, learner, index: np.ndarray) -> tuple[Params, Any]:
    """Learner parameters ``(S, ...)`` after the overrides, and a description."""
    if learner is None:
        return dict(draws), None
    if not isinstance(learner, dict):
        raise DataError(
            f"{WHERE}: learner must be None or a dict of parameter overrides, got {type(learner).__name__}"
        )
    overrides = [_parse_learner_override(model, name, value) for name, value in learner.items()]
    out = _apply_learner_overrides(draws, overrides, S)
    description = {name: _learner_description(op, value) for name, op, value in overrides}
    _check_learner_draws(model, out, index)
    return out, description


def _parse_learner_override(model: Model, name: str, value) -> tuple[str, str, Any]:
    """``(name, "*", factor)`` for a string ``"*f"``, else ``(name, "=", array)`` of an
    allowed shape (``q0``: initial states per action, or per agent and action)."""
    n, A = model.num_agents, model.num_actions
    allowed = (*model.learner.param_names, "q0")
    where = f"{WHERE} learner override '{name}'"
    _check_known("learner", name, f"'{model.learner.name}' learner", list(allowed))
    op = "="
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
        op, value = value
        if op not in ("+", "*") or name == "q0":
            raise DataError(
                f"{where}: a relative change is ('+', value) or ('*', value), got op {op!r}"
                + (" (q0 takes numbers only)" if name == "q0" else "")
            )
    if isinstance(value, str) and op == "=":
        match = _FACTOR.match(value)
        factor = _parse_float(match.group(1)) if match else None
        if name == "q0" or factor is None or not math.isfinite(factor):
            raise DataError(
                f"{where} = {value!r}: a string must be '*factor' with a finite number, e.g. '*0.6'"
                + (" (q0 takes numbers only)" if name == "q0" else "")
            )
        return name, "*", factor
    array = _finite_array(value, where)
    if name == "q0":
        allowed_shapes, meaning = [(A,), (n, A)], "initial state per action, or per agent and action"
    else:
        allowed_shapes, meaning = [(), (n,)], "a number, or one per agent"
    if array.shape not in allowed_shapes:
        raise DataError(
            f"{where}: expected shape {' or '.join(str(s) for s in allowed_shapes)} ({meaning}), "
            f"got shape {array.shape}"
        )
    return name, op, array


def _learner_description(op: str, value):
    if op == "=":
        return value.tolist()
    if op == "*" and np.ndim(value) == 0:
        return f"*{float(value)!r}"  # the form the CLI and earlier records use
    return {"op": op, "value": np.asarray(value).tolist()}


def _apply_learner_overrides(draws: Params, overrides, S: int) -> Params:
    out = dict(draws)
    for name, op, value in overrides:
        if op == "*":
            out[name] = np.asarray(out[name]) * value
        elif op == "+":
            out[name] = np.asarray(out[name]) + value
        else:
            out[name] = np.broadcast_to(value, (S, *value.shape))
    return out


def _check_learner_draws(model: Model, params: Params, index: np.ndarray) -> None:
    """Every draw's learner parameters inside their domains; names the parameter and
    the first posterior draw that is out of it."""
    host = {k: np.asarray(v) for k, v in params.items() if k in model.learner.param_names}
    try:
        model.learner.check_params(host, "")  # all draws at once (the common, valid case)
        return
    except SpecError:
        pass
    for s in range(len(index)):
        for name in host:  # the parameter that fails with the others set inside their domains
            probe = {k: (host[k][s] if k == name else _inside(k)) for k in host}
            try:
                model.learner.check_params(probe, "")
            except SpecError as err:
                draw = {k: np.asarray(v[s]).tolist() for k, v in host.items()}
                raise SpecError(
                    f"{WHERE} learner: after the overrides, parameter '{name}' of posterior draw "
                    f"{int(index[s])} is out of its domain ({str(err).lstrip(': ')}); that draw's learner: {draw}"
                ) from None


def _inside(name: str) -> float:
    """A value inside the domain of a learner parameter (for isolating a bad one)."""
    return {"c": 1.0}.get(name, 0.5)


# ------------------------------------------------------------------ helpers
def _check_known(part: str, name: str, owner: str, known: list) -> None:
    """Refuse an override of a parameter that ``owner`` (the mechanism family, the
    learner) does not have, naming the close match and the parameters it has."""
    if name not in known:
        raise DataError(
            f"{WHERE} {part} override: unknown parameter '{name}' for the "
            f"{owner}{_hint(name, known)}; parameters: {known}"
        )


def _parse_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _finite_array(value, where: str) -> np.ndarray:
    """``value`` as a float64 array; ``DataError`` when not numbers or not finite."""
    return numeric_array(value, where)


def _hint(name: str, known) -> str:
    close = difflib.get_close_matches(str(name), sorted(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""
