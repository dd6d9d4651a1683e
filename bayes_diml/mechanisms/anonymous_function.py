"""The ``anonymous`` family's prior in function space (``[mechanism.prior] space = "function"``).

An anonymous game's payoff ``f(k, x)`` (own action ``k``, opponents' shares ``x``) is
evaluated at contexts that cannot be enumerated, so the payoff function cannot be
tabulated as the neural family's is (``NeuralFunction``). It is instead written in a
fixed basis of random features, a Gaussian process prior over ``f`` whose covariance is
the one a random first layer of the anonymous network induces (Neal 1996; Rahimi & Recht
2007), under a hierarchical payoff scale: the payoffs are linear in the sampled
coordinates, which ``fit(method="laplace_grid")`` exploits (docs/design.md §11).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from .base import Mechanism, map_in_blocks, present_counts
from .network import refuse_weight_space
from .neural import PRIOR_SPACES
from .options import positive_number

__all__ = ["AnonymousFunction", "FEATURE_SEED", "DEFAULT_FEATURES"]

FEATURE_SEED = 20_261_206
"""The fixed key of the random features, so that the prior (and every fit) is deterministic."""

DEFAULT_FEATURES = 512
"""Random features by default. Measured on E7 (40 agents, 10 actions; truths are two-layer
256 x 256 networks): 90% intervals covered 0.872 (scaled) and 0.907 (paper's scale) of
the true differences over 8 draws each (docs/results.md); 1,536 features did not change
the worst draw's coverage (0.686 against 0.696)."""


@functools.lru_cache(maxsize=16)
def _feature_layer(num_actions: int, features: int, embed_dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(own (A, H), context (A, H), bias (H,))`` of the random first layer: action
    embeddings ``e_k ~ N(0, I_E)``, weights and bias ``N(0, 1 / (E + A))`` (the anonymous
    network's prior at ``weight_scale = 1``), with ``own[k] = e_k @ W_e``."""
    rng = np.random.default_rng(FEATURE_SEED)  # NumPy: concrete also when first asked inside a traced function
    fan_in = embed_dim + num_actions
    embed = rng.standard_normal((num_actions, embed_dim))
    own = embed @ (rng.standard_normal((embed_dim, features)) / np.sqrt(fan_in))
    context = rng.standard_normal((num_actions, features)) / np.sqrt(fan_in)
    bias = rng.standard_normal(features) / np.sqrt(fan_in)
    arrays = tuple(np.asarray(a, np.float32) for a in (own, context, bias))
    for a in arrays:
        a.flags.writeable = False  # shared by every caller of the cache
    return arrays


@dataclasses.dataclass(frozen=True, eq=False)
class AnonymousFunction(Mechanism):
    """``f(k, x) = phi(k, x) . readout`` over ``H`` fixed random ReLU features::

        phi_j(k, x) = sqrt(2 / H) * relu(e_k . u_j + x . v_j + b_j)
        s ~ LogNormal(log(output_scale), 1)           site payoff_scale
        z ~ Normal(0, I_H)                            site function_coords
        readout = s * z

    with ``x = counts_{-i} / (N - 1)`` the opponents' shares as in ``Anonymous``, and
    ``e_k, u_j, v_j, b_j`` drawn once from a fixed key (``FEATURE_SEED``) as the
    anonymous network's first layer is under its prior. So ``f`` is a Gaussian process
    with covariance ``s**2 phi(k, x) . phi(k', x')``: as ``H`` grows, that of a one-layer
    ReLU network's function (the arc-cosine kernel, Cho & Saul 2009) whose inputs are
    the network's own. Counterfactuals through the ``A x A`` table (docs/design.md §4):
    ``H`` features per table entry, whatever the number of agents.

    What is approximated: the prior of a finite network by a Gaussian process with a
    random-feature covariance, and ``f`` outside the span of ``H`` features is set to 0
    (the unexplained part of a truth that is not a combination of the features). Only
    differences ``f(k, x) - f(k', x)`` are identified, as for ``Anonymous``; the prior is
    proper, so no gauge needs pinning.

    Written in a spec as ``family = "anonymous"`` with ``[mechanism.prior] space =
    "function"``; ``features`` (512) and ``embed_dim`` (``min(32, max(12, A))``) in
    ``[mechanism]``; ``output_scale`` (1.0, the payoff scale's prior median) in
    ``[mechanism.prior]``.
    """

    features: int = DEFAULT_FEATURES
    embed_dim: int | None = None

    family = "anonymous"
    allows_absence = True
    counts_context = True
    prior_options = frozenset({"space", "output_scale"})
    prior_numbers = frozenset({"output_scale"})
    prior_choices = {"space": PRIOR_SPACES}
    spec_options = frozenset({"features", "embed_dim"})
    off_support_note = (
        "the data reach them only through the prior's covariance between contexts (a smooth function of the "
        "opponents' shares, an assumption the data cannot check): weakly identified at best"
    )

    @property
    def embedding_size(self) -> int:
        return self.embed_dim or min(32, max(12, self.num_actions))

    auto_inference = "laplace_grid"

    def layer(self):
        """The random first layer (``_feature_layer``) as JAX arrays."""
        return tuple(jnp.asarray(a) for a in _feature_layer(self.num_actions, self.features, self.embedding_size))

    def round_entries(self) -> int:
        """``A x A`` table entries x ``H`` features (``map_in_blocks`` keeps the products)."""
        return self.num_actions**2 * self.features

    # ----------------------------------------------------------------- params
    def param_shapes(self):
        return {"readout": (self.features,)}

    def init_params(self, key):
        return {"readout": jax.random.normal(key, (self.features,))}

    def output_params(self):
        return ("readout",)

    # ---------------------------------------------------------------- payoffs
    def table(self, params, counts, num_present):
        """``F[c, k] = f(k, (counts - e_c) / (N - 1))``, shape ``(A, A)``."""
        own, context, bias = self.layer()
        A = self.num_actions
        shares = (counts[None, :] - jnp.eye(A)) / jnp.maximum(num_present - 1.0, 1.0)  # (A_c, A)
        h = jax.nn.relu(own[None, :, :] + (shares @ context)[:, None, :] + bias)  # (A_c, A_k, H)
        return (h @ params["readout"]) * np.float32(np.sqrt(2.0 / self.features))

    def counterfactual_payoffs(self, params, joint_action, present=None):
        counts, _ = present_counts(joint_action, present, self.num_actions)
        return self.table(params, counts, counts.sum())[joint_action]

    def rounds_counterfactual_payoffs(self, prepared, joint_actions, present):
        """All rounds' tables in cache-sized blocks (``map_in_blocks``), then
        ``U[b, i, k] = F_b[a_bi, k]``."""
        onehot = jax.nn.one_hot(joint_actions, self.num_actions) * present[..., None]
        counts = onehot.sum(axis=1)  # (B, A)
        rows = self.num_actions**2 * max(1, self.features // 256)
        tables = map_in_blocks(lambda c: self.table(prepared, c, c.sum()), (counts,), rows_per_item=rows)
        return jnp.take_along_axis(tables, joint_actions[:, :, None], axis=1)

    # ----------------------------------------------------------------- priors
    def sample_prior(self, options, fix_gauge):
        """See the class docstring: ``payoff_scale``, ``function_coords``, then ``readout``."""
        import numpyro
        import numpyro.distributions as dist

        median = positive_number(options, "output_scale", 1.0)
        scale = numpyro.sample("payoff_scale", dist.LogNormal(float(np.log(median)), 1.0))
        coords = numpyro.sample("function_coords", dist.Normal(0.0, 1.0).expand((self.features,)).to_event(1))
        return {"readout": numpyro.deterministic("readout", scale * coords)}

    def check_prior_options(self, options, where="[mechanism.prior]"):
        """``space`` (``"function"`` or absent here) and ``output_scale``."""
        refuse_weight_space(options, where, "an AnonymousFunction", "Anonymous")
        super().check_prior_options(options, where)

    def truth_params(self, params, where="[mechanism.truth]"):
        """A ``readout`` is kept; network weights are refused in one line (a network is not a
        combination of these features: simulate with ``space = "weights"``)."""
        from ..errors import SpecError

        if "readout" not in params and {"embed", "w0"} <= set(params):
            raise SpecError(
                f"{where}: network weights cannot be written in the function-space basis; simulate with the network "
                "(drop [mechanism.prior] space) and fit this model to the simulated data"
            )
        return params

    # ------------------------------------------------------------------- spec
    @classmethod
    def spec_kwargs(cls, section, where, base_dir):
        """``features`` and ``embed_dim`` (positive integers)."""
        from ..errors import SpecError

        kwargs = {}
        for key in ("features", "embed_dim"):
            if key in section:
                value = section[key]
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise SpecError(f"{where}: '{key}' must be a positive integer, got {value!r}")
                kwargs[key] = value
        return kwargs

    def spec_table(self):
        """``family = "anonymous"``, ``features``, ``embed_dim`` and ``prior.space = "function"``."""
        table, files = super().spec_table()
        table["features"] = self.features
        if self.embed_dim is not None:
            table["embed_dim"] = self.embed_dim
        table["prior"] = {"space": "function"}
        return table, files
