"""Model specifications: TOML files (``models/*.toml``), parsed with ``tomllib``.

Nothing in a spec is evaluated as code: numbers, strings, arrays, and the names
of ``.npz`` files beside the spec. The schema is documented in ``models/README.md``.
"""

from __future__ import annotations

import difflib
import importlib.resources
import math
import tomllib
from pathlib import Path
from typing import Any

import numpy as np

from ._checks import numeric_array
from .errors import ResourceError, SpecError
from .learners import LEARNERS, STICKINESS
from .learners.base import PARAMETER_DOMAINS
from .mechanisms import FAMILIES
from .mechanisms.options import load_npz
from .model import DEFAULT_PAYOFF_SIGMA, Model
from .outcomes import parse_outcome_rule
from .priors import Prior

__all__ = ["read_spec", "parse_spec", "default_spec_path", "FAMILY_OPTIONS"]

FAMILY_OPTIONS: dict[str, set[str]] = {name: set(cls.spec_options) for name, cls in FAMILIES.items()}
"""Keys of ``[mechanism]`` that each family accepts besides ``family``, ``truth`` and ``prior``
(each family's ``spec_options``)."""

_TOP = {"game", "mechanism", "learner", "payoff"}
_GAME = {"agents", "actions", "action_labels", "agent_labels", "modelled"}


def default_spec_path() -> Path:
    """The embedded congestion spec used by the demo (package data)."""
    return Path(str(importlib.resources.files("bayes_diml") / "data" / "congestion_default.toml"))


def read_spec(path) -> tuple[Model, dict | None]:
    """Read a spec file.

    Returns:
        ``(model, truth)`` where ``truth`` is ``{"mechanism": {...}, "learner": {...}}``
        (arrays) or ``None`` when the spec has no ``[mechanism.truth]``.

    Raises:
        SpecError: naming the file and the key that is wrong.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark is dropped
    except FileNotFoundError:
        raise SpecError(f"{path}: spec file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise SpecError(f"{path}: cannot read spec: {err}") from None
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise SpecError(f"{path}: not valid TOML: {err}") from None
    return parse_spec(table, source=str(path), base_dir=path.parent)


def _unknown(keys, allowed, where: str) -> None:
    for key in keys:
        if key not in allowed:
            close = difflib.get_close_matches(key, sorted(allowed), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise SpecError(f"{where}: unknown key '{key}'{hint}; allowed: {sorted(allowed)}")


def _section(table: dict, name: str, source: str, required: bool = True) -> dict:
    if name not in table:
        if required:
            raise SpecError(f"{source}: missing section [{name}]")
        return {}
    value = table[name]
    if not isinstance(value, dict):
        raise SpecError(f"{source}: [{name}] must be a table")
    return value


def _positive_int(section: dict, key: str, where: str) -> int:
    if key not in section:
        raise SpecError(f"{where}: missing key '{key}'")
    value = section[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SpecError(f"{where}: '{key}' must be a positive integer, got {value!r}")
    return value


def _labels(section: dict, key: str, count: int, where: str) -> tuple | None:
    if key not in section:
        return None
    labels = section[key]
    if not isinstance(labels, list) or len(labels) != count:
        raise SpecError(f"{where}: '{key}' must be a list of {count} labels, got {labels!r}")
    kinds = {type(x) for x in labels}
    if not (kinds <= {str} or kinds <= {int}) or any(isinstance(x, bool) for x in labels):
        raise SpecError(f"{where}: '{key}' must be all strings or all integers, got {labels!r}")
    if len(set(labels)) != count:
        raise SpecError(f"{where}: '{key}' has duplicate labels: {labels!r}")
    if kinds <= {int} and key == "action_labels" and labels != list(range(count)):
        raise SpecError(f"{where}: integer action labels must be their own codes 0..{count - 1}, got {labels!r}")
    if key == "agent_labels" and labels != sorted(labels):
        raise SpecError(f"{where}: 'agent_labels' must be sorted (agent i is the i-th smallest label), got {labels!r}")
    from ._labels import _label_problem

    for label in labels:
        problem = _label_problem(label)
        if problem:
            raise SpecError(f"{where}: '{key}' label {label!r} {problem}")
    return tuple(labels)


_load_npz = load_npz  # the .npz files a spec names (features, truth weights)


def _mechanism(section: dict, n: int, A: int, where: str, base_dir: Path):
    if "family" not in section:
        raise SpecError(f"{where}: missing key 'family'; one of {sorted(FAMILIES)}")
    family = section["family"]
    if family not in FAMILIES:
        close = difflib.get_close_matches(str(family), sorted(FAMILIES), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise SpecError(f"{where}: unknown family '{family}'{hint}; known: {sorted(FAMILIES)}")
    try:
        return FAMILIES[family].from_spec(section, n, A, where, base_dir)
    except ResourceError as err:  # e.g. a tabular table beyond the memory: name the spec
        raise ResourceError(f"{where}: {err}") from None


def _learner(section: dict, where: str):
    rule = section.get("rule", "logit_q")
    if rule not in LEARNERS:
        close = difflib.get_close_matches(str(rule), sorted(LEARNERS), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise SpecError(f"{where}: unknown rule '{rule}'{hint}; known: {sorted(LEARNERS)}")
    learner = LEARNERS[rule]
    _unknown(section, set(learner.param_names) | {STICKINESS, "rule", "truth"} | _LEARNER_OPTIONS, where)
    params: dict[str, Any] = {}
    for name in learner.param_names:
        if name not in section:
            raise SpecError(f"{where}: missing learner parameter '{name}' (a number, or a prior table)")
        params[name] = _learner_value(section[name], name, where)
    if STICKINESS in section:  # optional for every rule (learners.stickiness): absent = 0
        params[STICKINESS] = _learner_value(section[STICKINESS], STICKINESS, where)
    return learner, params


def _learner_value(value, name: str, where: str):
    """A learner parameter: a number (fixed), a prior table, or ``"prior"`` (its default
    prior, ``PARAMETER_DOMAINS[name].suggestion``)."""
    if isinstance(value, dict):
        return Prior.parse(value, f"{where} {name}")
    if value == "prior":
        return PARAMETER_DOMAINS[name].suggestion
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    raise SpecError(f"{where}: learner parameter '{name}' must be a number, a prior table or \"prior\", got {value!r}")


_LEARNER_OPTIONS = {"initial", "initial_scale", "per_agent", "per_agent_spread"}
"""Keys of ``[learner]`` besides the rule's parameters (see ``Model``)."""


def _learner_options(section: dict, where: str) -> dict[str, Any]:
    """``initial``, ``initial_scale``, ``per_agent``, ``per_agent_spread`` of ``[learner]``."""
    options: dict[str, Any] = {}
    if "initial" in section:
        value = section["initial"]
        if not isinstance(value, str):
            raise SpecError(f"{where}: 'initial' must be \"zero\", \"shared\" or \"per_episode\", got {value!r}")
        options["initial"] = value
    for key in ("initial_scale", "per_agent_spread"):
        if key in section:
            value = section[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise SpecError(f"{where}: '{key}' must be a number > 0, got {value!r}")
            options[key] = float(value)
    if "per_agent" in section:
        value = section["per_agent"]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise SpecError(f"{where}: 'per_agent' must be a list of learner parameter names, e.g. [\"beta\"], got {value!r}")
        options["per_agent"] = tuple(value)
    return options


def _payoff_options(section: dict, where: str) -> dict[str, Any]:
    """``[payoff] sigma``: the noise sd of an observed payoff column (number or prior);
    ``column``, ``outcomes`` and ``[payoff.prior]``: an outcome column (``outcomes.py``)."""
    _unknown(section, {"sigma", "column", "outcomes", "prior"}, where)
    options: dict[str, Any] = {}
    rule = parse_outcome_rule(section, where)
    if rule is not None:
        options["outcomes"] = rule
    if "sigma" not in section:
        return options
    value = section["sigma"]
    if isinstance(value, dict):
        return {**options, "payoff_sigma": Prior.parse(value, f"{where} sigma")}
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise SpecError(f"{where}: 'sigma' must be a number > 0 or a prior table, got {value!r}")
    return {**options, "payoff_sigma": float(value)}


def _modelled_labels(game: dict, where: str) -> list | None:
    """``[game] modelled``: a list of agent labels (checked against the agents by ``Model``)."""
    value = game.get("modelled")
    if value is not None and not isinstance(value, list):
        raise SpecError(f"{where}: 'modelled' must be a list of agent labels, e.g. modelled = [\"player\"], got {value!r}")
    return value


def parse_spec(table: dict, source: str = "<spec>", base_dir: Path | str = ".") -> tuple[Model, dict | None]:
    """Build ``(model, truth)`` from a parsed TOML table (see ``read_spec``)."""
    base_dir = Path(base_dir)
    _unknown(table, _TOP, source)
    game = _section(table, "game", source)
    _unknown(game, _GAME, f"{source} [game]")
    n = _positive_int(game, "agents", f"{source} [game]")
    A = _positive_int(game, "actions", f"{source} [game]")
    if A < 2:
        raise SpecError(f"{source} [game]: 'actions' must be at least 2, got {A}")
    action_labels = _labels(game, "action_labels", A, f"{source} [game]")
    agent_labels = _labels(game, "agent_labels", n, f"{source} [game]")

    mech_section = _section(table, "mechanism", source)
    where = f"{source} [mechanism]"
    mechanism = _mechanism(mech_section, n, A, where, base_dir)
    prior = mech_section.get("prior", {})
    if not isinstance(prior, dict):
        raise SpecError(f"{where}: [mechanism.prior] must be a table")

    mechanism.check_prior_options(prior, f"{source} [mechanism.prior]")
    known = mech_section.get("known", {})
    if not isinstance(known, dict):
        raise SpecError(f"{source} [mechanism.known]: must be a table of parameter = value")
    known = mechanism.check_known(known, f"{source} [mechanism.known]")

    learner_section = _section(table, "learner", source)
    learner, learner_params = _learner(learner_section, f"{source} [learner]")
    extensions = _learner_options(learner_section, f"{source} [learner]")
    extensions.update(_payoff_options(_section(table, "payoff", source, required=False), f"{source} [payoff]"))
    try:
        model = Model(
            mechanism=mechanism,
            learner=learner,
            learner_params=learner_params,
            mechanism_prior=dict(prior),
            action_labels=action_labels,
            agent_labels=agent_labels,
            modelled=_modelled_labels(game, f"{source} [game]"),
            spec=table,
            mechanism_known=known,
            **extensions,
        )
    except SpecError as err:
        raise SpecError(f"{source} {err}") from None

    if "truth" not in mech_section:
        return model, None
    mech_truth = _mechanism_truth(mechanism, mech_section["truth"], action_labels, source, base_dir)
    return model, {"mechanism": mech_truth, "learner": _learner_truth(model, learner_section, source)}


def _mechanism_truth(mechanism, truth_section, action_labels, source: str, base_dir: Path) -> dict[str, np.ndarray]:
    """``[mechanism.truth]``: a ``weights`` ``.npz`` file and/or values (tables keyed by
    joint actions for tabular payoffs), converted and checked by the family."""
    where = f"{source} [mechanism.truth]"
    if not isinstance(truth_section, dict):
        raise SpecError(f"{where}: must be a table")
    mech_truth: dict[str, np.ndarray] = {}
    if "weights" in truth_section:
        mech_truth.update(_load_npz(base_dir, truth_section["weights"], "weights", where))
    for key, value in truth_section.items():
        if key == "weights":
            continue
        if isinstance(value, dict):  # [mechanism.truth.payoffs]: keyed by joint actions (tabular)
            mech_truth[key] = mechanism.truth_from_table(key, value, action_labels, f"{source} [mechanism.truth.{key}]")
            continue
        mech_truth[key] = numeric_array(value, f"{where} '{key}'", SpecError)
    mech_truth = mechanism.truth_params(mech_truth, where)
    mechanism.check_params(mech_truth, where)
    return mech_truth


def _learner_truth(model: Model, learner_section: dict, source: str) -> dict:
    """``[learner.truth]``: values for the learner parameters that carry a prior, with the
    fixed ones."""
    learner = model.learner
    learner_truth_section = learner_section.get("truth", {})
    if not isinstance(learner_truth_section, dict):
        raise SpecError(f"{source} [learner.truth]: must be a table")
    where = f"{source} [learner.truth]"
    _unknown(learner_truth_section, set(learner.param_names), where)
    for key in learner_truth_section:
        if key in model.fixed_learner_params:
            raise SpecError(
                f"{where}: '{key}' is fixed in [learner]; [learner.truth] gives values only for "
                "parameters that carry a prior"
            )
    # Partial when a learner prior has no [learner.truth] value: the spec still fits;
    # simulating from it (cmd_simulate, Model.learner_values) names what is missing.
    learner_truth = {
        **model.fixed_learner_params,
        **{k: _truth_value(model, k, v, f"{where} '{k}'") for k, v in learner_truth_section.items()},
    }
    if set(learner.param_names) <= set(learner_truth):
        learner.check_params(learner_truth, f"{source} [learner.truth]")
    return learner_truth


def _truth_value(model: Model, name: str, value, where: str):
    """A learner truth: a number, or one value per agent for a ``per_agent`` parameter."""
    array = numeric_array(value, where, SpecError)
    if name in model.per_agent and array.ndim == 1:
        if array.shape != (model.num_agents,):
            raise SpecError(f"{where}: a per-agent truth has one value per agent ({model.num_agents}), got {array.shape[0]}")
        return array.astype(float)
    if array.ndim != 0:
        hint = " (list it in [learner] per_agent to give one value per agent)" if array.ndim == 1 else ""
        raise SpecError(f"{where}: must be a number, got shape {array.shape}{hint}")
    return float(array)


# ------------------------------------------------------------------ writing
def model_to_table(model: Model) -> tuple[dict, dict[str, dict[str, np.ndarray]]]:
    """The spec table of a model, and the ``.npz`` files it refers to (name -> arrays).

    Written for run folders: ``read_spec`` of the written file gives the same model.
    """
    mechanism = model.mechanism
    game: dict[str, Any] = {"agents": model.num_agents, "actions": model.num_actions}
    if model.action_labels is not None:
        game["action_labels"] = list(model.action_labels)
    if model.agent_labels is not None:
        game["agent_labels"] = list(model.agent_labels)
    if model.modelled is not None:
        game["modelled"] = list(model.modelled)
    mech, files = mechanism.spec_table()
    prior = {**mech.pop("prior", {}), **model.mechanism_prior}  # a family may name prior options it needs
    if prior:
        mech["prior"] = prior
    if model.mechanism_known:
        mech["known"] = {name: np.asarray(value).tolist() for name, value in model.mechanism_known.items()}
    learner: dict[str, Any] = {"rule": model.learner.name}
    for name, value in model.learner_params.items():
        learner[name] = value.to_toml() if isinstance(value, Prior) else float(value)
    if model.initial != "zero":
        learner["initial"] = model.initial
        learner["initial_scale"] = float(model.initial_scale)
    if model.per_agent:
        learner["per_agent"] = list(model.per_agent)
        learner["per_agent_spread"] = float(model.per_agent_spread)
    table = {"game": game, "mechanism": mech, "learner": learner}
    sigma = model.payoff_sigma
    if sigma is not DEFAULT_PAYOFF_SIGMA:
        table["payoff"] = {"sigma": sigma.to_toml() if isinstance(sigma, Prior) else float(sigma)}
    if model.outcomes is not None:
        table.setdefault("payoff", {}).update(model.outcomes.to_toml())
    return table, files


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple, np.ndarray)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def dumps_toml(table: dict) -> str:
    """TOML text of a spec table (tables of scalars, arrays and inline tables)."""
    lines: list[str] = []

    def emit(prefix: str, section: dict) -> None:
        scalars = {k: v for k, v in section.items() if not (isinstance(v, dict) and _is_subtable(k, v))}
        tables = {k: v for k, v in section.items() if k not in scalars}
        if prefix:
            lines.append(f"[{prefix}]")
        for key, value in scalars.items():
            lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
        for key, value in tables.items():
            emit(f"{prefix}.{key}" if prefix else key, value)

    emit("", table)
    return "\n".join(lines).lstrip("\n")


def _is_subtable(key: str, value: dict) -> bool:
    """Priors are inline tables (they have 'dist'); other dicts are sections."""
    return "dist" not in value


def model_to_toml(model: Model) -> str:
    """TOML text of ``model_to_table`` (without the referenced arrays)."""
    return dumps_toml(model_to_table(model)[0])
