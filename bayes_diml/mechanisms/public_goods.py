"""Public-goods game with an optional neural subsidy (the paper's E3 family)."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from .._types import Params, PRNGKey
from ..priors import Domain, Interval, Prior
from .base import Mechanism
from .layers import dense_stack_shapes, init_dense_stack, mlp, sample_dense_stack
from .options import positive_int_list, positive_number, sample_site

__all__ = ["PublicGoods"]


@dataclasses.dataclass(frozen=True, eq=False)
class PublicGoods(Mechanism):
    """Contribution levels ``level(k) = linspace(0, 1, A)[k]``; with
    ``total = sum_j level(a_j)`` over present agents,

        M(a)_i = scale (1 - exp(-k total)) - cost level(a_i)**2 + subsidy(total, level(a_i))

    (An & Du 2026, E3). ``subsidy`` is a small tanh network ``2 -> hidden -> 1``
    (parameters ``sub_w*``, ``sub_b*``), or absent when ``subsidy_hidden`` is
    ``None``. Scalar parameters ``scale``, ``k``, ``cost`` have shape ``()``.

    Gauge: every term is a function of the agent's own level and the total, so a
    per-context shift is not expressible except through the subsidy network's
    output bias ``sub_b{last}``, which adds the same constant to all actions and is
    therefore not identified under full-information learners.
    """

    subsidy_hidden: tuple[int, ...] | None = (64,)

    family = "public_goods"
    allows_absence = True
    counts_context = True
    spec_options = frozenset({"subsidy", "subsidy_hidden"})
    prior_options = frozenset({"scale", "k", "cost", "weight_scale"})
    prior_numbers = frozenset({"weight_scale"})
    known_params = frozenset({"scale", "k", "cost"})
    """``[mechanism.known]``: the benefit's ``scale`` and ``k`` and the ``cost`` (scalars),
    held at their values (``Mechanism.sample_prior_known``)."""

    @property
    def levels_gauge(self) -> bool:
        """Only the subsidy network's output bias shifts every action alike: without a
        subsidy the payoff levels are identified (welfare is reported)."""
        return self.subsidy_hidden is not None

    def known_problem(self, name, value):
        if name in ("scale", "k") and not float(value) > 0:
            return f"must be > 0 (a saturating benefit), got {float(value)!r}"
        return None

    NETWORK_NUTS = {"num_chains": 2, "num_warmup": 200, "num_samples": 400, "max_tree_depth": 8}
    """NUTS options ``method="auto"`` uses with a subsidy network (E3's measured settings,
    ``experiments/reproduce.E3_NUTS_OPTIONS``): the network's weights are not identified by
    the payoff grid and every iteration runs to the depth cap, so the cap sets the cost.
    2 x (200 + 400) at depth 8: 380-400 s per fit on the 2-core CPU, 90% coverage 0.918
    over 8 truth draws (0.907 scaled), R-hat of the differences <= 1.015. At depth 10 and
    4 x (300 + 700) a fit would take about 1.5 hours."""

    def auto_nuts(self):
        if self.subsidy_hidden is None:
            return {}, ""
        return dict(self.NETWORK_NUTS), (
            "2 chains x (200 + 400) at tree depth 8 for a subsidy network, calibrated on E3 with these settings "
            "(0.918 over 8 truth draws, 380-400 s per fit)"
        )
    prior_domains = {  # a saturating benefit: scale > 0, k > 0 (k <= 0 is no benefit or a convex one)
        "scale": Domain(Interval(0.0), Prior("lognormal", (("loc", 0.0), ("scale", 1.0)))),
        "k": Domain(Interval(0.0), Prior("lognormal", (("loc", 0.7), ("scale", 1.0)))),
    }

    def sample_prior(self, options, fix_gauge):
        """``scale ~ LogNormal(0, 1)``, ``k ~ LogNormal(log 2, 1)``, ``cost ~ Normal(0, 1)``;
        subsidy weights ``~ Normal(0, weight_scale / sqrt(fan_in))`` with the output
        bias pinned at 0 when the gauge is fixed."""
        params: Params = {
            "scale": sample_site("scale", options, {"dist": "lognormal", "loc": 0.0, "scale": 1.0}, ()),
            "k": sample_site("k", options, {"dist": "lognormal", "loc": float(np.log(2.0)), "scale": 1.0}, ()),
            "cost": sample_site("cost", options, {"dist": "normal", "loc": 0.0, "scale": 1.0}, ()),
        }
        if self.subsidy_hidden is not None:
            scale = positive_number(options, "weight_scale", 1.0)
            params.update(sample_dense_stack("sub_", self._sizes(), scale, fix_gauge))
        return params

    def _sizes(self):
        return [2, *self.subsidy_hidden, 1]

    @classmethod
    def spec_kwargs(cls, section, where, base_dir):
        """``subsidy`` (true/false, default true) and ``subsidy_hidden`` (default [64])."""
        from ..errors import SpecError

        subsidy = section.get("subsidy", True)
        if not isinstance(subsidy, bool):
            raise SpecError(f"{where}: 'subsidy' must be true or false, got {subsidy!r}")
        hidden = positive_int_list(section.get("subsidy_hidden", [64]), "subsidy_hidden", where)
        return {"subsidy_hidden": hidden if subsidy else None}

    def spec_table(self):
        table, files = super().spec_table()
        table["subsidy"] = self.subsidy_hidden is not None
        if self.subsidy_hidden is not None:
            table["subsidy_hidden"] = list(self.subsidy_hidden)
        return table, files

    def output_params(self):
        """``scale``, ``cost`` and the subsidy's output layer."""
        if self.subsidy_hidden is None:
            return ("scale", "cost")
        last = len(self.subsidy_hidden)
        return ("scale", "cost", f"sub_w{last}", f"sub_b{last}")

    def param_shapes(self):
        shapes = {"scale": (), "k": (), "cost": ()}
        if self.subsidy_hidden is not None:
            shapes.update(dense_stack_shapes("sub_", self._sizes()))
        return shapes

    def init_params(self, key: PRNGKey) -> Params:
        # The paper's initial values; the subsidy at PyTorch's default initialisation.
        params: Params = {"scale": jnp.array(1.0), "k": jnp.array(2.0), "cost": jnp.array(0.8)}
        if self.subsidy_hidden is not None:
            params.update(init_dense_stack(key, "sub_", self._sizes()))
        return params

    def levels(self):
        return jnp.linspace(0.0, 1.0, self.num_actions)

    def _payoff_grid(self, params, total, level):
        """Payoff for a total contribution and own level (broadcasting arrays)."""
        pay = params["scale"] * (1.0 - jnp.exp(-params["k"] * total)) - params["cost"] * level**2
        if self.subsidy_hidden is not None:
            x = jnp.stack(jnp.broadcast_arrays(total, level), axis=-1)
            pay = pay + mlp(params, "sub_", x, len(self._sizes()) - 1, jnp.tanh)[..., 0]
        return pay

    def lever_transfers(self, params, joint_action, present=None):
        """The subsidy each agent receives, ``subsidy(total, level(a_i))`` (An & Du 2026, E3): money
        paid by the designer, so ``M(a)_i - subsidy = scale (1 - exp(-k total)) - cost level(a_i)**2``.
        Zero without a subsidy network."""
        if self.subsidy_hidden is None:
            return jnp.zeros((self.num_agents,))
        level = self.levels()[joint_action]
        if present is not None:
            level = jnp.where(present, level, 0.0)
        x = jnp.stack(jnp.broadcast_arrays(level.sum(), level), axis=-1)
        transfers = mlp(params, "sub_", x, len(self._sizes()) - 1, jnp.tanh)[..., 0]
        return transfers if present is None else jnp.where(present, transfers, 0.0)

    def counterfactual_payoffs(self, params, joint_action, present=None):
        return self.prepared_counterfactual_payoffs(self.prepare(params), joint_action, present)

    def prepare(self, params):
        """The payoff on the grid of (sum of contribution codes, own action):
        ``G[s, k] = payoff(total = s / (A - 1), level = k / (A - 1))``,
        ``s = 0 .. n (A - 1)``; every round then only gathers from it."""
        A = self.num_actions
        sums = jnp.arange(self.num_agents * (A - 1) + 1) / (A - 1)
        return {"grid": self._payoff_grid(params, sums[:, None], self.levels()[None, :])}

    def prepared_counterfactual_payoffs(self, prepared, joint_action, present=None):
        codes = joint_action if present is None else jnp.where(present, joint_action, 0)
        others = codes.sum() - codes  # (n,) code-sum of the others
        k = jnp.arange(self.num_actions)
        return prepared["grid"][others[:, None] + k[None, :], k[None, :]]
