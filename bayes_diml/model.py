"""A model: a mechanism family, a learning rule, and which learner parameters are known.

Beyond the paper's set-up (homogeneous agents, ``Q_0 = 0``, actions only) a model may
declare latent initial propensities (``initial``), agent-specific learner parameters
with a hierarchical prior (``per_agent``) and the noise of an observed ``payoff``
column (``payoff_sigma``); the NumPyro model (``inference/numpyro_model.py``) reads them.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np

from ._static import static_key
from .errors import SpecError
from .learners import STICKINESS, Learner, with_stickiness
from .learners.base import PARAMETER_DOMAINS
from .mechanisms import Mechanism
from .priors import Domain, Interval, Prior

__all__ = ["Model", "INITIAL_MODES", "DEFAULT_PAYOFF_SIGMA"]

INITIAL_MODES = ("zero", "shared", "per_episode")
"""``zero``: Q_0 = 0 (the paper); ``shared``: one learned Q_0 per agent, common to all
episodes; ``per_episode``: a latent Q_0 per episode and agent under a hierarchical prior."""

DEFAULT_PAYOFF_SIGMA = Prior("halfnormal", (("scale", 1.0),))
"""Prior of the noise sd of observed payoffs when none is given."""

PAYOFF_SIGMA_DOMAIN = Domain(Interval(0.0), DEFAULT_PAYOFF_SIGMA)
"""``[payoff] sigma`` > 0; a prior on it must have its support inside."""


@dataclasses.dataclass(frozen=True, eq=False)
class Model:
    """Mechanism family + learner rule + the learner parameters' values or priors.

    Compared and hashed by value (``static_key``): two ``read_spec`` of one file, or two
    equal models built in Python, are equal and share the compiled programs of jitted
    code that takes the model as a static argument. ``spec`` (provenance only) is left
    out of the comparison.

    Attributes:
        mechanism: the family object (static configuration).
        learner: the learning rule; with ``stickiness`` among ``learner_params`` it is
            replaced by ``with_stickiness(learner)`` (and back without), so that
            ``learner.param_names`` lists every parameter of the model.
        learner_params: parameter name -> a number (fixed) or a ``Prior``; the rule's
            parameters, and optionally ``stickiness`` (``learners.stickiness``; absent = 0).
        mechanism_prior: the ``[mechanism.prior]`` table of the spec (family options
            for the prior; interpreted by the inference layer).
        action_labels, agent_labels: labels from the spec, or ``None``.
        spec: the parsed spec (for provenance), or ``None``.
        initial: ``"zero"`` (default), ``"shared"`` or ``"per_episode"`` (see
            ``INITIAL_MODES``): how the learners' initial propensities ``Q_0`` enter.
        initial_scale: prior scale of ``Q_0``: ``Normal(0, initial_scale)`` for the
            shared ``Q_0`` and for the population mean of per-episode ``Q_0``, whose
            spread is ``HalfNormal(initial_scale)``.
        per_agent: learner parameters that differ between agents, each with a
            hierarchical prior: its prior in ``learner_params`` is the prior of the
            population centre, and per agent
            ``theta_i = T^-1(T(centre) + spread * z_i)``, ``z_i ~ Normal(0, 1)``,
            ``spread ~ HalfNormal(per_agent_spread)``, with ``T`` the map of the
            prior's support onto the real line (log for positive, logit for (0, 1)).
        per_agent_spread: prior scale of the spread on the unconstrained scale.
        payoff_sigma: noise sd of an observed ``payoff`` column, a number or a
            ``Prior`` (default ``HalfNormal(1)``): ``payoff ~ Normal(M(a)_i, sigma)``.
        mechanism_known: the ``[mechanism.known]`` table: mechanism parameter name ->
            its known value (the policy in force when the data were recorded; float
            arrays, checked by ``Mechanism.check_known``). Known parameters are not
            sampled: they enter the likelihood as constants and every report treats
            them as data.
        modelled: ``[game] modelled``: the agent labels (``agent_labels``, else indices
            ``0..n-1``) whose play is scored; ``None`` = every agent. The others'
            actions are data: they enter the modelled agents' counterfactual payoffs
            but not the likelihood (``scored_agents``).
        outcomes: ``[payoff] outcomes`` (``outcomes.OutcomeRule``): an outcome column's
            labels mapped to realised payoffs (numbers or parameters with a prior), or ``None``.
    """

    mechanism: Mechanism
    learner: Learner
    learner_params: dict[str, Any]
    mechanism_prior: dict[str, Any] = dataclasses.field(default_factory=dict)
    action_labels: tuple | None = None
    agent_labels: tuple | None = None
    spec: dict | None = None
    initial: str = "zero"
    initial_scale: float = 1.0
    per_agent: tuple[str, ...] = ()
    per_agent_spread: float = 0.5
    payoff_sigma: Any = DEFAULT_PAYOFF_SIGMA
    mechanism_known: dict[str, Any] = dataclasses.field(default_factory=dict)
    modelled: tuple | None = None
    outcomes: Any = None

    def __post_init__(self):
        object.__setattr__(self, "mechanism_known", self.mechanism.check_known(dict(self.mechanism_known or {})))
        object.__setattr__(self, "learner", with_stickiness(self.learner, STICKINESS in self.learner_params))
        names = set(self.learner.param_names)
        given = set(self.learner_params) - {"q0"}
        if names - given or given - names:
            raise SpecError(
                f"learner '{self.learner.name}' takes parameters {sorted(names)}; "
                f"missing {sorted(names - given)}, unexpected {sorted(given - names)}"
            )
        fixed = self.fixed_learner_params
        self.learner.check_params({k: fixed.get(k, _domain_probe(k)) for k in self.learner.param_names}, "[learner]")
        for name, prior in self.learner_priors.items():
            PARAMETER_DOMAINS[name].check_prior(prior, name, f"[learner] {name}")
        self._check_extensions()
        self._check_observation()

    def _check_extensions(self) -> None:
        """Validate ``initial``, ``per_agent`` and ``payoff_sigma`` (host side, clear messages)."""
        if self.initial not in INITIAL_MODES:
            raise SpecError(f"[learner] initial = {self.initial!r}: must be one of {list(INITIAL_MODES)}")
        if self.initial != "zero" and "q0" in self.learner_params:
            raise SpecError(
                f"[learner] initial = {self.initial!r} learns Q_0, but a fixed 'q0' is given too; drop one of them"
            )
        for key in ("initial_scale", "per_agent_spread"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or value == float("inf"):
                raise SpecError(f"[learner] {key} must be a finite number > 0, got {value!r}")
        if isinstance(self.per_agent, str) or not all(isinstance(n, str) for n in self.per_agent):
            raise SpecError(f"[learner] per_agent must be a list of parameter names, got {self.per_agent!r}")
        object.__setattr__(self, "per_agent", tuple(self.per_agent))
        for name in self.per_agent:
            if name not in self.learner.param_names:
                raise SpecError(
                    f"[learner] per_agent names '{name}', which is not a parameter of '{self.learner.name}' "
                    f"({list(self.learner.param_names)})"
                )
            if not isinstance(self.learner_params[name], Prior):
                raise SpecError(
                    f"[learner] per_agent parameter '{name}' is fixed to a number; give it a prior (the prior of "
                    f"the population centre), e.g. {name} = {PARAMETER_DOMAINS[name].suggestion.to_inline()}"
                )
        if len(set(self.per_agent)) != len(self.per_agent):
            raise SpecError(f"[learner] per_agent lists a parameter twice: {list(self.per_agent)}")
        sigma = self.payoff_sigma
        if isinstance(sigma, Prior):
            PAYOFF_SIGMA_DOMAIN.check_prior(sigma, "sigma", "[payoff] sigma")
        elif (
            isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not 0 < sigma < float("inf")
        ):
            raise SpecError(f"[payoff] sigma must be a number > 0 or a prior table, got {sigma!r}")

    @functools.cached_property
    def static_key(self) -> tuple:
        """The frozen, hashable description of the model that ``==`` and ``hash`` use:
        every field but ``spec``, dicts as sorted items, arrays by their bytes (computed
        once: a ``Model`` is not changed after it is built)."""
        return tuple(
            static_key(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "spec"
        )

    @functools.cached_property
    def _hash(self) -> int:
        return hash(self.static_key)

    def __eq__(self, other):
        if self is other:
            return True
        return type(other) is type(self) and self._hash == other._hash and self.static_key == other.static_key

    def __hash__(self):
        return self._hash

    @property
    def num_agents(self) -> int:
        return self.mechanism.num_agents

    @property
    def num_actions(self) -> int:
        return self.mechanism.num_actions

    @property
    def fixed_learner_params(self) -> dict[str, Any]:
        """The learner parameters given as numbers."""
        return {k: v for k, v in self.learner_params.items() if not isinstance(v, Prior)}

    @property
    def learner_priors(self) -> dict[str, Prior]:
        """The learner parameters that carry a prior."""
        return {k: v for k, v in self.learner_params.items() if isinstance(v, Prior)}

    def _check_observation(self) -> None:
        """Validate ``modelled`` (labels of agents, at least one) and the outcome parameters' names."""
        object.__setattr__(self, "modelled", _modelled(self.modelled, self.agent_labels, self.num_agents))
        if self.outcomes is not None:
            from .outcomes import check_parameter_names

            check_parameter_names(self.outcomes, self)

    @property
    def scored_agents(self):
        """``(num_agents,)`` bool NumPy array: the agents whose play the likelihood scores
        (``[game] modelled``); ``None`` when every agent is."""
        if self.modelled is None:
            return None
        labels = self.agent_labels if self.agent_labels is not None else tuple(range(self.num_agents))
        scored = np.asarray([label in self.modelled for label in labels])
        return None if scored.all() else scored

    @property
    def learned_initial(self) -> bool:
        """Whether ``Q_0`` is an unknown (``initial`` is ``shared`` or ``per_episode``)."""
        return self.initial != "zero"

    def learner_values(self, truth_or_draw: dict | None = None) -> dict[str, Any]:
        """All learner parameter values: fixed ones, then those in ``truth_or_draw``.

        Raises ``SpecError`` naming any parameter that has a prior but no value.
        """
        values = dict(self.fixed_learner_params)
        values.update(truth_or_draw or {})
        missing = [k for k in self.learner.param_names if k not in values]
        if missing:
            raise SpecError(
                f"learner parameters {missing} carry a prior and have no value: give them in [learner.truth] "
                "or fix them to numbers"
            )
        return values


def _modelled(modelled, agent_labels, num_agents: int) -> tuple | None:
    """``[game] modelled`` checked against the agents' labels (``agent_labels``, else the
    indices ``0..n-1``), in the agents' order; ``SpecError`` naming an unknown label."""
    if modelled is None:
        return None
    labels = tuple(agent_labels) if agent_labels is not None else tuple(range(num_agents))
    if isinstance(modelled, (str, int)) or not isinstance(modelled, (list, tuple)) or not modelled:
        raise SpecError(f"[game] modelled must be a non-empty list of agent labels from {list(labels)}, got {modelled!r} "
                        "(at least one agent's play must be modelled)")
    for label in modelled:
        if isinstance(label, bool) or label not in labels:
            hint = "" if agent_labels is not None else " (name the agents with [game] agent_labels to list them by label)"
            raise SpecError(f"[game] modelled names {label!r}, which is not an agent; agents: {list(labels)}{hint}")
    if len(set(modelled)) != len(modelled):
        raise SpecError(f"[game] modelled lists an agent twice: {list(modelled)}")
    return tuple(label for label in labels if label in set(modelled))


def _domain_probe(name: str) -> float:
    """A value inside every learner parameter's domain (for checking fixed ones only)."""
    return {"c": 1.0}.get(name, 0.5)
