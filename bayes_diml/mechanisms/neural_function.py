"""The ``neural`` family's prior in function space (``[mechanism.prior] space = "function"``).

On a finite game the network of ``Neural`` is only ever evaluated at the ``A**n`` joint
actions, so its weight prior is, in effect, a prior on the payoff table (docs/design.md
§11). ``NeuralFunction`` samples that table directly, from a Gaussian with the covariance
the weight prior induces on the gauge-fixed payoff differences, under a hierarchical
payoff scale; everything downstream sees a tabular mechanism (``{"payoffs": table}``).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from .layers import sample_network
from .network import _prior_where, refuse_weight_space
from .neural import PRIOR_SPACES, TABLE_MAX_JOINT, Neural
from .options import SPEC_COMMON_KEYS, check_keys, positive_number
from .tabular import Tabular

__all__ = [
    "NeuralFunction",
    "function_prior_factor",
    "FUNCTION_PRIOR_DRAWS",
    "FUNCTION_PRIOR_SEED",
    "FUNCTION_PRIOR_TOLERANCE",
    "FUNCTION_PRIOR_MAX_ENTRIES",
]

FUNCTION_PRIOR_DRAWS = 16_384
"""Prior draws of the network weights from which the covariance of the payoff entries is
estimated. The Monte Carlo error of a covariance entry is ``sqrt((C_ii C_jj + C_ij**2) / N)``,
i.e. ``sqrt(2 / N)`` = 1.1% of a variance and ``1 / sqrt(N)`` = 0.008 on a correlation at
this N: well below the spread of a posterior interval, and far more draws than free entries
(540 on E1, 2,000 on E2), so the estimate has full rank. Cost: N draws of the weights and
``N * A**n`` network evaluations, once per mechanism and process: 10-18 s on 2 CPU cores
for the default 128 x 128 network from 2 x 3 to 3 x 6 games (most of it drawing the
middle layer's 16k weights N times); the factor is cached (``function_prior_factor``)."""

FUNCTION_PRIOR_SEED = 20_260_517
"""The fixed key of those draws, so that the prior (and so every fit) is deterministic."""

FUNCTION_PRIOR_TOLERANCE = 1e-6
"""Share of the prior variance (trace of the covariance) that the dropped eigen-directions
may carry: the factor keeps the leading ``r`` components that carry all but this share."""

FUNCTION_PRIOR_MAX_ENTRIES = 8_192
"""Most sampled table entries (``A**n * n``, fewer under the gauge): the covariance is an
``m x m`` float64 array (512 MiB at this limit) and its eigendecomposition ``O(m**3)``."""

_ROWS_PER_BLOCK = 1 << 17
"""Network evaluations (draws x joint actions) per block of the covariance estimate: at
128 hidden units one activation array of a block is 64 MiB."""


def _baseline_rows(rows: np.ndarray, agents: np.ndarray, num_actions: int) -> np.ndarray:
    """Row of the same opponents' context with the agent itself playing action 0."""
    place = num_actions**agents
    return rows - ((rows // place) % num_actions) * place


@functools.lru_cache(maxsize=32)
def function_prior_factor(network: Neural, weight_scale: float, fix_gauge: bool) -> np.ndarray:
    """``L`` (``(m, r)``, float32) with ``L L^T`` the covariance of the sampled table entries
    under the network's weight prior at ``output_scale = 1``.

    The entries are ``Tabular.free_entries(fix_gauge)``: with the gauge fixed the payoff
    differences ``M(k, a_-i)_i - M(0, a_-i)_i`` for ``k != 0`` (output bias pinned at 0, as
    in ``sample_network``), else every table entry (output bias included). Their mean is 0
    (the output layer's weights are symmetric about 0), so the covariance is the second
    moment ``E[d d^T]``, averaged over ``FUNCTION_PRIOR_DRAWS`` draws of ``sample_network``
    (``weight_scale``, ``output_scale = 1``) from the fixed key ``FUNCTION_PRIOR_SEED``.
    Its eigendecomposition keeps the leading ``r`` components that carry all but
    ``FUNCTION_PRIOR_TOLERANCE`` of the trace: ``L = V_r diag(sqrt(lambda_r))``.

    Cached per (network, weight_scale, fix_gauge): families hash by value (``_static``).
    """
    import numpyro

    n, A = network.num_agents, network.num_actions
    rows, agents = Tabular(n, A).free_entries(fix_gauge)
    base = _baseline_rows(rows, agents, A)
    options = {"weight_scale": float(weight_scale), "output_scale": 1.0}
    embed_shape, sizes = network.embed_shape(), network.layer_sizes()

    def entries(key):
        # block: the sites stay out of an enclosing model's handlers (the factor may first be
        # asked for inside one, e.g. while NumPyro traces the model)
        params = numpyro.handlers.block(numpyro.handlers.seed(sample_network, key))(embed_shape, sizes, options, fix_gauge)
        table = network.prepare(params)["payoffs"]
        return table[rows, agents] - table[base, agents] if fix_gauge else table[rows, agents]

    per_block = int(2 ** np.clip(np.floor(np.log2(max(1, _ROWS_PER_BLOCK // A**n))), 0, 12))

    @jax.jit
    def block_moment(keys):
        d = jax.vmap(entries)(keys)  # (B, m)
        return d.T @ d

    moment = np.zeros((rows.size, rows.size))
    with jax.ensure_compile_time_eval():  # concrete numbers, also when first asked inside a jitted model
        keys = jax.random.split(jax.random.PRNGKey(FUNCTION_PRIOR_SEED), FUNCTION_PRIOR_DRAWS)
        for start in range(0, FUNCTION_PRIOR_DRAWS, per_block):
            moment += np.asarray(block_moment(keys[start : start + per_block]), np.float64)
    values, vectors = np.linalg.eigh(moment / FUNCTION_PRIOR_DRAWS)
    values, vectors = np.clip(values[::-1], 0.0, None), vectors[:, ::-1]
    kept = np.cumsum(values) < (1.0 - FUNCTION_PRIOR_TOLERANCE) * values.sum()
    rank = min(values.size, int(kept.sum()) + 1)
    factor = (vectors[:, :rank] * np.sqrt(values[:rank])).astype(np.float32)
    factor.flags.writeable = False  # shared by every caller of the cache
    return factor


@dataclasses.dataclass(frozen=True, eq=False)
class NeuralFunction(Tabular):
    """The ``neural`` family with its prior in function space: a payoff table whose prior
    is a Gaussian with the covariance that the network prior induces on it.

    Written in a spec as ``family = "neural"`` with ``[mechanism.prior] space =
    "function"`` (``Neural.from_spec`` builds this class); for games with ``A**n <=
    TABLE_MAX_JOINT`` only. The parameters are ``Tabular``'s (``payoffs``, ``(A**n, n)``),
    so likelihood, simulation, counterfactuals, queries and storage treat it as a table;
    ``hidden``, ``embed_dim`` and the prior options ``weight_scale`` (1.0) and
    ``output_scale`` (1.0) describe the network whose prior is imitated.

    Prior (gauge fixed)::

        s ~ LogNormal(log(output_scale), 1)           site payoff_scale
        z ~ Normal(0, I_r)                            site function_coords
        d = s * L z,   L L^T = Cov_w[d(w)]            (function_prior_factor)
        payoffs[index(k, a_-i), i] = d               for k != 0; 0 for k = 0

    where ``d(w)`` are the payoff differences ``M_w(k, a_-i)_i - M_w(0, a_-i)_i`` of the
    network with weights ``w`` drawn from the weight-space prior (``sample_network``,
    ``weight_scale``, output scale 1) and ``r`` the rank that keeps all but 1e-6 of their
    variance. Without the gauge (learners that see payoff levels, observed payoffs) ``d``
    is every table entry and ``L L^T`` their covariance, the output bias included.

    What is approximated: the network prior's first two moments on the table, not the
    network prior itself (whose marginals are not Gaussian at finite width; it tends to
    this Gaussian, the NNGP, as the layers widen). The scale ``s`` is hierarchical: the
    payoffs are linear in the output layer, so ``s`` is the network's ``output_scale``
    learned from the data, with ``output_scale`` its prior median; a user need not know
    the scale of the payoffs.
    """

    hidden: tuple[int, ...] = (128, 128)
    embed_dim: int | None = None

    family = "neural"
    prior_options = frozenset({"space", "weight_scale", "output_scale"})
    prior_numbers = frozenset({"weight_scale", "output_scale"})
    prior_choices = {"space": PRIOR_SPACES}
    spec_options = Neural.spec_options
    off_support_note = (
        "the data reach them only through the prior's covariance between contexts (the network prior's "
        "smoothness, an assumption the data cannot check), so what contraction they show is borrowed from visited "
        "contexts: weakly identified at best, and only as far as that prior holds"
    )

    AUTO_NUTS = {"num_chains": 2, "num_warmup": 300, "num_samples": 300}
    """NUTS options ``method="auto"`` uses (the settings measured calibrated,
    ``benchmarks/coverage_neural.py``): 90% coverage 0.903-0.920 pooled over 8 truth draws
    on E1 scaled and E2 (paper and scaled), 150-380 s per fit on the 2-core CPU. The
    R-hat of the differences is 1.03-1.05 at this length (independent draws of the same
    length would read 1.013-1.025 over 540 differences); the sampler's defaults,
    4 x (500 + 500), read 1.013 on E1 (one draw, 675 s with another benchmark on the
    cores): the price of the hierarchical payoff scale's geometry (docs/results.md)."""

    def auto_nuts(self):
        return dict(self.AUTO_NUTS), (
            "the function-space prior is a Gaussian prior over the payoff table, fitted as a tabular game; "
            "2 chains x (300 + 300), calibrated with these settings (0.903-0.920 over 8 truth draws each on E1 and E2, "
            "150-380 s per fit); the R-hat of the differences reads 1.03-1.05 at this length and 1.013 at "
            "4 x (500 + 500) (num_chains=4, num_warmup=500, num_samples=500; measured once on E1): longer chains lower it"
        )

    def __post_init__(self):
        from ..errors import SpecError
        from ..resources import check_table

        check_function_space(self.num_agents, self.num_actions, "NeuralFunction", SpecError)
        check_table(self.num_agents, self.num_actions, 'the neural family with space = "function"')

    def network(self) -> Neural:
        """The weight-space ``Neural`` whose prior this one imitates."""
        return Neural(self.num_agents, self.num_actions, hidden=tuple(self.hidden), embed_dim=self.embed_dim)

    # ------------------------------------------------------------------- spec
    @classmethod
    def from_spec(cls, section, num_agents, num_actions, where="[mechanism]", base_dir="."):
        """``hidden`` and ``embed_dim`` as for ``Neural``; refuses ``A**n > TABLE_MAX_JOINT``."""
        from pathlib import Path

        from ..errors import SpecError

        check_keys(section, cls.spec_options | SPEC_COMMON_KEYS, where)
        check_function_space(num_agents, num_actions, _prior_where(where), SpecError)
        kwargs = Neural.spec_kwargs(section, where, Path(base_dir))
        return cls(num_agents=num_agents, num_actions=num_actions, **kwargs)

    def spec_table(self):
        """``family = "neural"``, ``hidden``, ``embed_dim`` and ``prior.space = "function"``."""
        table, files = self.network().spec_table()
        table["prior"] = {"space": "function"}
        return table, files

    def check_prior_options(self, options, where="[mechanism.prior]"):
        """``space`` (``"function"`` or absent here), ``weight_scale``, ``output_scale``."""
        refuse_weight_space(options, where, "a NeuralFunction", "Neural")
        super().check_prior_options(options, where)

    # ----------------------------------------------------------------- priors
    def prior_factor(self, options: dict, fix_gauge: bool) -> np.ndarray:
        """``function_prior_factor`` of this network at ``options``' ``weight_scale``."""
        return function_prior_factor(self.network(), positive_number(options, "weight_scale", 1.0), bool(fix_gauge))

    def sample_prior(self, options, fix_gauge):
        """See the class docstring: ``payoff_scale``, ``function_coords``, then ``payoffs``."""
        import numpyro
        import numpyro.distributions as dist

        factor = jnp.asarray(self.prior_factor(options, fix_gauge))
        median = positive_number(options, "output_scale", 1.0)
        scale = numpyro.sample("payoff_scale", dist.LogNormal(float(np.log(median)), 1.0))
        coords = numpyro.sample("function_coords", dist.Normal(0.0, 1.0).expand((factor.shape[1],)).to_event(1))
        rows, agents = self.free_entries(fix_gauge)
        table = jnp.zeros(self.param_shapes()["payoffs"]).at[rows, agents].set(scale * (factor @ coords))
        return {"payoffs": numpyro.deterministic("payoffs", table)}

    # ------------------------------------------------------------------ truths
    def truth_params(self, params, where="[mechanism.truth]"):
        """Network weights (``[mechanism.truth] weights = "file.npz"`` of a ``neural`` spec)
        become their payoff table, evaluated by the weight-space ``Neural``; a ``payoffs``
        table is kept as it is."""
        network = self.network()
        if "payoffs" in params or not set(params) & set(network.param_shapes()):
            return params
        network.check_params(params, where)
        table = network.prepare({k: jnp.asarray(v, jnp.float32) for k, v in params.items()})["payoffs"]
        return {"payoffs": np.asarray(table, np.float64)}


def check_function_space(num_agents: int, num_actions: int, where: str, error) -> None:
    """Refuse, in one line, a game too large for the function-space prior."""
    joint = num_actions**num_agents
    if joint > TABLE_MAX_JOINT:
        raise error(
            f"{where}: space = \"function\" needs at most {TABLE_MAX_JOINT} joint actions, this game has "
            f"A**n = {num_actions}**{num_agents} = {joint}; use space = \"weights\""
        )
    if joint * num_agents > FUNCTION_PRIOR_MAX_ENTRIES:
        raise error(
            f"{where}: space = \"function\" holds a covariance of at most {FUNCTION_PRIOR_MAX_ENTRIES} payoff "
            f"entries, this game has A**n * n = {joint * num_agents}; use space = \"weights\""
        )
