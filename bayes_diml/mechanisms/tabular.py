"""Tabular mechanism: one free payoff per (joint action, agent) — the enumeration oracle."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from .._types import Array, Params, PRNGKey
from .base import Mechanism

__all__ = ["Tabular", "joint_index"]


def joint_index(joint_action: Array, num_actions: int) -> Array:
    """Base-``num_actions`` index of a joint action, agent 0 least significant.

    ``index(a) = sum_i a_i * A**i``.
    """
    n = joint_action.shape[-1]
    weights = num_actions ** jnp.arange(n)
    return jnp.sum(joint_action * weights, axis=-1)


@dataclasses.dataclass(frozen=True, eq=False)
class Tabular(Mechanism):
    """``M(a)_i = payoffs[index(a), i]`` with ``payoffs`` of shape ``(A**n, n)``.

    Counterfactuals replace agent i's digit of the index:
    ``U[i, k] = payoffs[index(a) + (k - a_i) * A**i, i]``.

    Gauge: under full-information learners only differences
    ``payoffs[index(k, a_-i), i] - payoffs[index(k', a_-i), i]`` are identified
    (DESIGN §3); the inference layer fixes action 0 of each agent in each
    opponent context at zero.  Small games only: ``A**n * n`` entries.
    """

    family = "tabular"
    allows_absence = False
    prior_options = frozenset({"scale"})
    prior_numbers = frozenset({"scale"})

    def free_entries(self, fix_gauge: bool) -> tuple[np.ndarray, np.ndarray]:
        """(row, agent) index arrays of the table entries that are sampled.

        With the gauge fixed, entries where the agent itself plays action 0 are
        pinned at zero (the baseline action), so only the ``n (A-1) A**(n-1)``
        payoff differences are free.
        """
        n, A = self.num_agents, self.num_actions
        rows, agents = np.meshgrid(np.arange(A**n), np.arange(n), indexing="ij")
        own = (rows // A**agents) % A
        keep = own != 0 if fix_gauge else np.ones_like(own, bool)
        return rows[keep], agents[keep]

    def sample_prior(self, options, fix_gauge):
        """Free entries ``~ Normal(0, scale)`` (default ``scale = 1``), baseline entries 0."""
        import numpyro
        import numpyro.distributions as dist

        from .base import positive_number

        scale = positive_number(options, "scale", 1.0)
        rows, agents = self.free_entries(fix_gauge)
        free = numpyro.sample("free_payoffs", dist.Normal(0.0, scale).expand((rows.size,)).to_event(1))
        table = jnp.zeros(self.param_shapes()["payoffs"]).at[rows, agents].set(free)
        return {"payoffs": numpyro.deterministic("payoffs", table)}

    def param_shapes(self):
        return {"payoffs": (self.num_actions**self.num_agents, self.num_agents)}

    def init_params(self, key: PRNGKey) -> Params:
        return {"payoffs": jax.random.uniform(key, self.param_shapes()["payoffs"])}

    def payoffs(self, params, joint_action, present=None):
        idx = joint_index(joint_action, self.num_actions)
        return params["payoffs"][idx]

    def counterfactual_payoffs(self, params, joint_action, present=None):
        n, A = self.num_agents, self.num_actions
        place = A ** jnp.arange(n)  # (n,)
        base = joint_index(joint_action, A) - joint_action * place  # (n,)
        idx = base[:, None] + jnp.arange(A)[None, :] * place[:, None]  # (n, A)
        return params["payoffs"][idx, jnp.arange(n)[:, None]]
