"""Congestion game with tolls (the paper's E2 structured family)."""

from __future__ import annotations

import dataclasses

import jax
import numpyro

from .._types import Params, PRNGKey
from .base import Mechanism, present_counts, sample_site

__all__ = ["Congestion"]


@dataclasses.dataclass(frozen=True, eq=False)
class Congestion(Mechanism):
    """Each action is a resource; the payoff of agent i on resource ``k = a_i`` is

        M(a)_i = -(c1[k] L + c2[k] L**2) + tau[k] L,   L = #present agents on k

    (An & Du 2026, §5, E2). Parameters ``c1, c2, tau``, each ``(num_actions,)``.

    Gauge and identifiability: only ``d = tau - c1`` and ``c2`` enter the payoff
    (``payoff = d L - c2 L**2``), so the direction ``c1 + tau`` is not identified
    by any data; the inference layer samples ``(d, c2, c1)`` so that ``c1`` only
    meets its prior. Absent agents do not load any resource.
    """

    family = "congestion"
    allows_absence = True
    counts_context = True
    prior_options = frozenset({"d", "c2", "c1"})

    def param_shapes(self):
        A = self.num_actions
        return {"c1": (A,), "c2": (A,), "tau": (A,)}

    def init_params(self, key: PRNGKey) -> Params:
        # The paper's truth distribution (docs/design.md §6).
        k1, k2, k3 = jax.random.split(key, 3)
        A = self.num_actions
        return {
            "c1": jax.random.uniform(k1, (A,), minval=0.1, maxval=0.4),
            "c2": jax.random.uniform(k2, (A,), minval=0.05, maxval=0.15),
            "tau": jax.random.uniform(k3, (A,), minval=0.0, maxval=0.2),
        }

    def output_params(self):
        return ("c1", "c2", "tau")

    def sample_prior(self, options, fix_gauge):
        """Sample ``d = tau - c1`` and ``c2`` (identified) and ``c1`` (prior only).

        ``tau = d + c1`` is a deterministic site. Defaults: ``d ~ Normal(0, 1)``,
        ``c2 ~ Normal(0, 0.5)``, ``c1 ~ Normal(0.25, 0.25)`` (per resource). No
        further gauge: a shift common to all resources is not expressible.
        """
        A = self.num_actions
        d = sample_site("d", options, {"dist": "normal", "loc": 0.0, "scale": 1.0}, (A,))
        c2 = sample_site("c2", options, {"dist": "normal", "loc": 0.0, "scale": 0.5}, (A,))
        c1 = sample_site("c1", options, {"dist": "normal", "loc": 0.25, "scale": 0.25}, (A,))
        tau = numpyro.deterministic("tau", d + c1)
        return {"c1": c1, "c2": c2, "tau": tau}

    def counterfactual_payoffs(self, params, joint_action, present=None):
        _, counts_minus = present_counts(joint_action, present, self.num_actions)
        load = counts_minus + 1.0  # (n, A): load on k had agent i joined it
        return -(params["c1"] * load + params["c2"] * load**2) + params["tau"] * load
