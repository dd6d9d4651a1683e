"""A model: a mechanism family, a learning rule, and which learner parameters are known."""

from __future__ import annotations

import dataclasses
from typing import Any

from .errors import SpecError
from .learners import Learner
from .mechanisms import Mechanism
from .priors import Prior

__all__ = ["Model"]


@dataclasses.dataclass(frozen=True, eq=False)
class Model:
    """Mechanism family + learner rule + the learner parameters' values or priors.

    Hashed by identity, so a ``Model`` can be a static argument of jitted code.

    Attributes:
        mechanism: the family object (static configuration).
        learner: the learning rule.
        learner_params: parameter name -> a number (fixed) or a ``Prior``.
        mechanism_prior: the ``[mechanism.prior]`` table of the spec (family options
            for the prior; interpreted by the inference layer).
        action_labels, agent_labels: labels from the spec, or ``None``.
        spec: the parsed spec (for provenance), or ``None``.
    """

    mechanism: Mechanism
    learner: Learner
    learner_params: dict[str, Any]
    mechanism_prior: dict[str, Any] = dataclasses.field(default_factory=dict)
    action_labels: tuple | None = None
    agent_labels: tuple | None = None
    spec: dict | None = None

    def __post_init__(self):
        names = set(self.learner.param_names)
        given = set(self.learner_params) - {"q0"}
        if names - given or given - names:
            raise SpecError(
                f"learner '{self.learner.name}' takes parameters {sorted(names)}; "
                f"missing {sorted(names - given)}, unexpected {sorted(given - names)}"
            )
        fixed = self.fixed_learner_params
        self.learner.check_params({k: fixed.get(k, _domain_probe(k)) for k in self.learner.param_names}, "[learner]")

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


def _domain_probe(name: str) -> float:
    """A value inside every learner parameter's domain (for checking fixed ones only)."""
    return {"c": 1.0}.get(name, 0.5)
