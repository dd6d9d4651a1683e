"""Anonymous (count-based) games with a neural payoff: hundreds to millions of agents."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from .base import map_in_blocks, present_counts
from .layers import mlp
from .network import NetworkMechanism
from .neural import PRIOR_SPACES

__all__ = ["Anonymous"]


@dataclasses.dataclass(frozen=True, eq=False)
class Anonymous(NetworkMechanism):
    """``M(a)_i = f(a_i, x_i)`` with ``x_i = counts_{-i} / (N - 1)`` the opponents'
    action shares (N present agents) and ``f`` an MLP over ``[emb(a_i); x_i]``
    with ReLU hidden layers (An & Du 2026, E7: embedding ``min(32, max(12, A))``,
    two ReLU layers of 256).

    Counterfactuals through the ``A x A`` table of docs/design.md §4: ``counts_{-i}``
    depends on agent i only through ``a_i``, so with
    ``F[c, k] = f(k, (counts - e_c) / (N - 1))`` we have ``U[i, k] = F[a_i, k]``.
    The first layer splits, ``W [emb(k); x] = W_e emb(k) + W_x x``, so the table
    costs ``O(A**2 H**2)`` whatever n is; only the final gather is ``O(n A)``.

    Gauge: ``f`` can add any function of the opponents' shares to all own actions
    (the last layer's bias, for one), which full-information learners cannot see;
    only differences ``f(k, x) - f(k', x)`` are identified. Absent agents are not
    counted. Parameters, prior, spec keys and scaling: ``NetworkMechanism``. With
    ``[mechanism.prior] space = "function"`` a spec is read into ``AnonymousFunction``
    instead: ``f`` under a Gaussian process prior in a basis of random features.
    """

    hidden: tuple[int, ...] = (256, 256)
    embed_dim: int | None = None

    family = "anonymous"
    allows_absence = True
    svi_warning = (
        "SVI intervals on the anonymous family (prior over the network's weights) have not been shown "
        "calibrated: no such fit of the paper's anonymous games (E7) was checked against a truth, and on the neural family the same "
        "guides' 90% intervals covered only 0.25-0.75 of the true payoff differences (docs/results.md); "
        "read them as too narrow (a lower bound on the uncertainty). Use the function-space prior "
        '([mechanism.prior] space = "function"), which fits with the Laplace grid and was measured calibrated on E7; '
        "to keep these intervals, pass accept_uncalibrated=True (--accept-uncalibrated)."
    )
    counts_context = True
    embed_bounds = (12, 32)
    prior_options = NetworkMechanism.prior_options | {"space"}
    prior_choices = {"space": PRIOR_SPACES}

    @classmethod
    def function_space_class(cls):
        from .anonymous_function import AnonymousFunction

        return AnonymousFunction

    def embed_shape(self):
        return (self.num_actions, self.embedding_size)

    def layer_sizes(self):
        return [self.embedding_size + self.num_actions, *self.hidden, 1]

    def round_entries(self) -> int:
        """``A x A`` table entries x the hidden units (``map_in_blocks`` keeps the products)."""
        return self.num_actions**2 * sum(self.hidden)

    def payoff_function(self, params, own_action, shares):
        """``f(k, x)`` for arrays of own actions ``(...,)`` and shares ``(..., A)``."""
        x = jnp.concatenate([params["embed"][own_action], shares], axis=-1)
        return mlp(params, "", x, len(self.layer_sizes()) - 1, jax.nn.relu)[..., 0]

    def table(self, params, counts, num_present):
        """``F[c, k] = f(k, (counts - e_c) / (N - 1))``, shape ``(A, A)``."""
        A, E = self.num_actions, self.embedding_size
        shares = (counts[None, :] - jnp.eye(A)) / jnp.maximum(num_present - 1.0, 1.0)  # (A_c, A)
        w0 = params["w0"]
        own_part = params["embed"] @ w0[:E]  # (A_k, H)
        context_part = shares @ w0[E:]  # (A_c, H)
        h = own_part[None, :, :] + context_part[:, None, :] + params["b0"]  # (A_c, A_k, H)
        num_layers = len(self.layer_sizes()) - 1
        for layer in range(1, num_layers):
            h = jax.nn.relu(h) @ params[f"w{layer}"] + params[f"b{layer}"]
        return h[..., 0]

    def payoffs(self, params, joint_action, present=None):
        """Only the table's diagonal, ``M(a)_i = F[a_i, a_i]``: A network evaluations
        instead of the ``A**2`` of a whole table."""
        counts, _ = present_counts(joint_action, present, self.num_actions)
        A = self.num_actions
        shares = (counts[None, :] - jnp.eye(A)) / jnp.maximum(counts.sum() - 1.0, 1.0)  # (A_c, A)
        return self.payoff_function(params, jnp.arange(A), shares)[joint_action]

    def counterfactual_payoffs(self, params, joint_action, present=None):
        counts, _ = present_counts(joint_action, present, self.num_actions)
        num_present = counts.sum()
        return self.table(params, counts, num_present)[joint_action]

    def rounds_counterfactual_payoffs(self, prepared, joint_actions, present):
        """All rounds' tables in cache-sized blocks (``map_in_blocks``), then
        ``U[b, i, k] = F_b[a_bi, k]``."""
        onehot = jax.nn.one_hot(joint_actions, self.num_actions) * present[..., None]
        counts = onehot.sum(axis=1)  # (B, A)
        tables = map_in_blocks(
            lambda c: self.table(prepared, c, c.sum()), (counts,), rows_per_item=self.num_actions**2
        )  # (B, A_c, A_k)
        return jnp.take_along_axis(tables, joint_actions[:, :, None], axis=1)
