"""Unstructured neural joint mechanism (the paper's E1 family)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from .layers import mlp
from .network import NetworkMechanism
from .options import check_choice
from .tabular import Tabular

__all__ = ["Neural", "TABLE_MAX_JOINT", "PRIOR_SPACES", "prior_space"]

TABLE_MAX_JOINT = 4096
"""Joint spaces up to this size are tabulated once per evaluation (``Neural.prepare``), and
may take the function-space prior (``NeuralFunction``)."""

PRIOR_SPACES = ("weights", "function")
"""Values of ``[mechanism.prior] space`` for the neural family: a prior on the network's
weights (``Neural``, the default) or on the payoff table it induces (``NeuralFunction``)."""


def prior_space(options, where: str = "[mechanism.prior]") -> str:
    """The ``space`` of a neural ``[mechanism.prior]`` table (default ``"weights"``),
    refused in one line unless it is one of ``PRIOR_SPACES``."""
    if not isinstance(options, dict):  # the spec reader names a prior that is not a table
        return PRIOR_SPACES[0]
    return check_choice(options.get("space", PRIOR_SPACES[0]), "space", PRIOR_SPACES, where)


@dataclasses.dataclass(frozen=True, eq=False)
class Neural(NetworkMechanism):
    """``M(a) = MLP([emb_0(a_0); ...; emb_{n-1}(a_{n-1})])``, tanh hidden layers, n outputs.

    Each agent has its own action embedding (``embed``, shape ``(n, A, E)``,
    ``E = embed_dim``, default ``min(24, max(6, A))``) as in the paper's code
    (An & Du 2026, E1: two tanh layers of 128). Counterfactuals substitute each
    agent's action in turn: ``n * A`` network evaluations per joint action.

    Gauge: the network can express any payoff table, so levels are not
    identified under full-information learners; the inference layer reports and
    penalises only payoff differences against action 0. Parameters, prior, spec
    keys and scaling: ``NetworkMechanism``. With ``[mechanism.prior] space =
    "function"`` a spec is read into ``NeuralFunction`` instead: the payoff table under a
    Gaussian prior with this network prior's covariance (``from_spec``).
    """

    hidden: tuple[int, ...] = (128, 128)
    embed_dim: int | None = None

    family = "neural"
    allows_absence = False
    svi_warning = (
        "SVI intervals on the neural family (prior over the network's weights) were measured too narrow: "
        "the mean-field guide's 90% intervals covered 0.33 of E2's true payoff differences and 0.71 of "
        "E1 scaled's (0.25 on E2 scaled, 0.75 on E3 scaled; docs/results.md), and the low-rank guide has "
        "not been shown calibrated. On a finite game use the function-space prior "
        '([mechanism.prior] space = "function"), which fits with NUTS; to keep these intervals, pass '
        "accept_uncalibrated=True (--accept-uncalibrated)."
    )
    embed_bounds = (6, 24)
    prior_options = NetworkMechanism.prior_options | {"space"}
    prior_choices = {"space": PRIOR_SPACES}

    @classmethod
    def function_space_class(cls):
        from .neural_function import NeuralFunction

        return NeuralFunction

    def embed_shape(self):
        return (self.num_agents, self.num_actions, self.embedding_size)

    def layer_sizes(self):
        return [self.num_agents * self.embedding_size, *self.hidden, self.num_agents]

    def prepare(self, params):
        """For small joint spaces (``A**n <= TABLE_MAX_JOINT``) the whole payoff table,
        ``A**n`` network evaluations once, instead of ``n A`` per round."""
        if self.num_actions**self.num_agents > TABLE_MAX_JOINT:
            return params
        joints = (np.arange(self.num_actions**self.num_agents)[:, None] // self.num_actions ** np.arange(self.num_agents)) % self.num_actions
        return {"payoffs": jax.vmap(lambda a: self.payoffs(params, a))(jnp.asarray(joints))}

    def prepared_counterfactual_payoffs(self, prepared, joint_action, present=None):
        if "payoffs" in prepared:
            return Tabular(self.num_agents, self.num_actions).counterfactual_payoffs(prepared, joint_action)
        return self.counterfactual_payoffs(prepared, joint_action, present)

    def payoffs(self, params, joint_action, present=None):
        emb = jnp.asarray(params["embed"])[jnp.arange(self.num_agents), joint_action]  # (n, E)
        return mlp(params, "", emb.reshape(-1), len(self.layer_sizes()) - 1, jnp.tanh)

    def counterfactual_payoffs(self, params, joint_action, present=None):
        n, A = self.num_agents, self.num_actions
        # substituted[i, k] = a with a_i := k, shape (n, A, n)
        eye = jnp.eye(n, dtype=bool)[:, None, :]
        substituted = jnp.where(eye, jnp.arange(A)[None, :, None], joint_action[None, None, :])
        pay = jax.vmap(jax.vmap(lambda a: self.payoffs(params, a)))(substituted)  # (n, A, n)
        return jnp.take_along_axis(pay, jnp.arange(n)[:, None, None], axis=2)[..., 0]
