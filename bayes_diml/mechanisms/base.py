"""The mechanism interface shared by every family.

A mechanism maps a joint action ``a`` (shape ``(num_agents,)``) to payoffs
``M(a)`` (shape ``(num_agents,)``). Its parameters are a flat ``dict`` of arrays
(a PyTree); the family object itself only holds static configuration (sizes,
feature tables), so it can be closed over by jitted code.

Every family provides ``counterfactual_payoffs(params, a, present)``: entry
``[i, k]`` is the payoff agent ``i`` would have received had it played ``k``
while everybody else played ``a_{-i}`` (docs/design.md §2, full-information feedback)::

    U[i, k] = M(k, a_{-i})_i
"""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from .._static import dataclass_key
from .._types import Array, Params, PRNGKey

__all__ = [
    "Mechanism",
    "present_counts",
    "mlp",
    "dense_stack_shapes",
    "init_dense_stack",
    "sample_site",
    "sample_dense_stack",
    "sample_network",
    "positive_number",
    "check_choice",
    "check_keys",
    "positive_int_list",
    "load_npz",
    "SPEC_COMMON_KEYS",
]

SPEC_COMMON_KEYS = frozenset({"family", "truth", "prior"})
"""Keys of ``[mechanism]`` that every family accepts (the spec reader parses them)."""


def check_keys(keys, allowed, where: str) -> None:
    """Raise ``SpecError`` naming the first key of ``keys`` outside ``allowed`` (with the
    closest allowed key as a hint)."""
    from ..errors import SpecError

    for key in keys:
        if key not in allowed:
            close = difflib.get_close_matches(key, sorted(allowed), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise SpecError(f"{where}: unknown key '{key}'{hint}; allowed: {sorted(allowed)}")


def load_npz(base_dir: Path, name, key: str, where: str) -> dict[str, np.ndarray]:
    """The arrays of the ``.npz`` file a spec names under ``key`` (relative to ``base_dir``)."""
    import os

    from ..errors import SpecError

    if not isinstance(name, str):
        raise SpecError(f"{where}: '{key}' must be the name of a .npz file, got {name!r}")
    file = (Path(base_dir) / name) if not os.path.isabs(name) else Path(name)
    try:
        with np.load(file, allow_pickle=False) as archive:
            return {k: archive[k] for k in archive.files}
    except FileNotFoundError:
        raise SpecError(f"{where}: '{key}' names {file}, which does not exist") from None
    except (OSError, ValueError) as err:
        raise SpecError(f"{where}: cannot read {file} as a NumPy .npz archive: {err}") from None


def positive_int_list(value, key: str, where: str) -> tuple[int, ...]:
    """A spec value that must be a list of positive integers (layer sizes), as a tuple."""
    from ..errors import SpecError

    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
        raise SpecError(f"{where}: '{key}' must be a list of positive integers, got {value!r}")
    return tuple(value)


@dataclasses.dataclass(frozen=True, eq=False)
class Mechanism:
    """Base class of mechanism families (static configuration only).

    Attributes:
        num_agents: n.
        num_actions: A.

    Class attributes:
        family: the name used in specs (``[mechanism] family = ...``).
        allows_absence: whether payoffs are defined when some agents did not
            play a round (docs/design.md §2). Joint families (tabular, neural) need every
            agent in every round that anybody played.
        counts_context: True when an agent's payoffs depend on the others only
            through their action counts (the "opponent context" is then the
            count vector, e.g. for support checks).
        prior_options: keys this family accepts in ``[mechanism.prior]``.
        prior_numbers: those of them that are plain positive numbers (scales).
        prior_choices: those of them that take one of a few strings -> the strings
            (the first is the default; the neural family's ``space``). The remaining
            keys are prior tables.
        prior_domains: prior-table keys whose parameter is constrained -> its
            ``Domain``; a prior whose support reaches outside it is refused. Keys
            not listed are real-valued.
        spec_options: keys of ``[mechanism]`` this family accepts besides
            ``family``, ``truth`` and ``prior`` (parsed by ``spec_kwargs``, written
            back by ``spec_table``).

    Everything a family needs lives on its class, so adding a family is one module
    plus a registry entry (``mechanisms.FAMILIES``): its spec keys (``from_spec``,
    ``spec_table``), its priors (``prior_options``, ``sample_prior`` with its
    defaults and gauge), absences (``allows_absence``), support contexts
    (``counts_context``), the rescaled truths (``output_params``, ``scale_params``)
    and the labels of its parameter axes (``param_coords``).
    """

    num_agents: int
    num_actions: int

    family: ClassVar[str] = ""
    allows_absence: ClassVar[bool] = False
    counts_context: ClassVar[bool] = False
    prior_options: ClassVar[frozenset[str]] = frozenset()
    prior_numbers: ClassVar[frozenset[str]] = frozenset()
    prior_choices: ClassVar[dict[str, tuple[str, ...]]] = {}
    prior_domains: ClassVar[dict] = {}
    spec_options: ClassVar[frozenset[str]] = frozenset()
    svi_warning: ClassVar[str | None] = None
    """Set on families whose SVI intervals were measured too narrow (or never checked against
    a truth): what ``fit`` warns when SVI runs on them, and why ``method="auto"`` runs
    low-rank SVI on them (no NUTS budget measured) with that warning."""

    # ------------------------------------------------------------------- spec
    @classmethod
    def from_spec(cls, section: dict, num_agents: int, num_actions: int, where: str = "[mechanism]",
                  base_dir: Path | str = ".") -> "Mechanism":
        """The family object of a spec's ``[mechanism]`` table.

        Refuses keys outside ``spec_options`` (besides ``family``, ``truth`` and
        ``prior``, which the spec reader handles), then builds the object from
        ``spec_kwargs``. ``base_dir``: where files named in the table are read from.

        Raises:
            SpecError: naming ``where`` and the wrong key.
        """
        check_keys(section, cls.spec_options | SPEC_COMMON_KEYS, where)
        return cls(num_agents=num_agents, num_actions=num_actions, **cls.spec_kwargs(section, where, Path(base_dir)))

    @classmethod
    def spec_kwargs(cls, section: dict, where: str, base_dir: Path) -> dict:
        """Constructor keyword arguments from the ``spec_options`` keys of ``section``
        (validated); none by default."""
        return {}

    def spec_table(self) -> tuple[dict, dict[str, dict[str, np.ndarray]]]:
        """The ``[mechanism]`` table that ``from_spec`` reads back into this object
        (``family`` and the family's options; no ``truth``, and no ``prior`` except the
        options that choose the class, e.g. ``NeuralFunction``'s ``space``, which
        ``spec.model_to_table`` merges with the model's prior table), and the ``.npz``
        files it names (file name -> arrays)."""
        return {"family": self.family}, {}

    def auto_nuts(self) -> tuple[dict, str]:
        """NUTS options ``fit(method="auto")`` uses for this mechanism and why, where the
        measured settings differ from the sampler's defaults (``({}, "")`` here)."""
        return {}, ""

    # ---------------------------------------------------------------- scaling
    def output_params(self) -> tuple[str, ...]:
        """Parameters in which the payoffs are linear (homogeneous of degree 1): scaling
        them all by ``c`` scales every payoff, hence every payoff difference, by ``c``."""
        raise NotImplementedError

    def scale_params(self, params: Params, factor: float) -> Params:
        """Parameters whose payoffs are ``factor`` times those of ``params`` (the
        rescaled truths of the benchmark's scaled variant): ``output_params`` times
        ``factor``, the others unchanged."""
        out = dict(params)
        for name in self.output_params():
            out[name] = np.asarray(params[name]) * factor
        return out

    def table_entries(self) -> int:
        """Entries of a joint payoff table that each likelihood evaluation builds from the
        parameters (memory estimates, ``resources``); 0 when the family builds none."""
        return 0

    # ------------------------------------------------------------------ labels
    def param_coords(self, action_labels=None) -> dict[str, list]:
        """Labels of parameter axes that only this family has, keyed by dimension name
        (the tabular family's ``joint``: one joint action per table row); none by
        default."""
        return {}

    # Compared and hashed by value of the fields (arrays by their bytes), so equal families
    # share compiled programs (``bayes_diml._static``); subclasses keep ``eq=False``.
    def __eq__(self, other):
        return type(other) is type(self) and dataclass_key(self) == dataclass_key(other)

    def __hash__(self):
        return hash(dataclass_key(self))

    # ----------------------------------------------------------------- params
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shapes of every parameter array, keyed by name."""
        raise NotImplementedError

    def init_params(self, key: PRNGKey) -> Params:
        """Random parameters (used as a starting point, or as a random truth)."""
        raise NotImplementedError

    # ---------------------------------------------------------------- payoffs
    def payoffs(self, params: Params, joint_action: Array, present: Array | None = None) -> Array:
        """Payoffs of a joint action.

        Args:
            params: the family's parameters.
            joint_action: int array ``(num_agents,)``.
            present: bool array ``(num_agents,)``; absent agents do not count in
                the others' payoffs. ``None`` means everybody played.

        Returns:
            ``(num_agents,)`` payoffs (entries of absent agents are meaningless).
        """
        cf = self.counterfactual_payoffs(params, joint_action, present)
        return jnp.take_along_axis(cf, joint_action[:, None], axis=1)[:, 0]

    def counterfactual_payoffs(
        self, params: Params, joint_action: Array, present: Array | None = None
    ) -> Array:
        """``U[i, k] = M(k, a_{-i})_i``, shape ``(num_agents, num_actions)``."""
        raise NotImplementedError

    def prepare(self, params: Params):
        """Work that depends on the parameters only, hoisted out of the loops over
        rounds and episodes (the likelihood and the simulator call it once per
        evaluation). The default does nothing."""
        return params

    def prepared_counterfactual_payoffs(self, prepared, joint_action: Array, present: Array | None = None) -> Array:
        """``counterfactual_payoffs`` from the output of ``prepare``."""
        return self.counterfactual_payoffs(prepared, joint_action, present)

    def rounds_counterfactual_payoffs(self, prepared, joint_actions: Array, present: Array) -> Array:
        """``prepared_counterfactual_payoffs`` of many rounds at once.

        The likelihood calls this once on every (episode, round) of the data,
        flattened: ``joint_actions`` and ``present`` are ``(B, num_agents)``;
        returns ``(B, num_agents, num_actions)``. The default is a ``vmap``; a
        family whose per-round work is large overrides it (see ``Anonymous``).
        """
        return jax.vmap(self.prepared_counterfactual_payoffs, (None, 0, 0))(prepared, joint_actions, present)

    # ----------------------------------------------------------------- priors
    def sample_prior(self, options: dict, fix_gauge: bool) -> Params:
        """Sample the parameters under NumPyro (call inside a model).

        The sampled coordinates are the family's gauge-fixed, sampler-friendly
        parameterisation; the natural parameters (those of ``param_shapes``) are
        returned, and recorded as deterministic sites where they differ.

        Args:
            options: the ``[mechanism.prior]`` table (validated against
                ``prior_options``).
            fix_gauge: True when the learner cannot see per-context payoff shifts
                (docs/design.md §3), so directions it cannot see are pinned.
        """
        raise NotImplementedError

    def check_prior_options(self, options: dict, where: str = "[mechanism.prior]") -> None:
        """Raise ``SpecError`` naming an unknown ``[mechanism.prior]`` key."""
        import difflib

        from ..errors import SpecError
        from ..priors import Prior

        for key, value in options.items():
            if key not in self.prior_options:
                close = difflib.get_close_matches(key, sorted(self.prior_options), n=1, cutoff=0.5)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise SpecError(
                    f"{where}: unknown key '{key}' for the {self.family} family{hint}; "
                    f"allowed: {sorted(self.prior_options)}"
                )
            if key in self.prior_numbers:
                positive_number(options, key, 1.0, where)
            elif key in self.prior_choices:
                check_choice(value, key, self.prior_choices[key], where)
            else:
                prior = Prior.parse(value, f"{where} '{key}'")
                if key in self.prior_domains:
                    self.prior_domains[key].check_prior(prior, key, f"{where} '{key}'")

    # ------------------------------------------------------------ truth tables
    def truth_from_table(self, name: str, table: dict, action_labels=None, where: str = "[mechanism.truth]"):
        """A true parameter given as a TOML table (``[mechanism.truth.NAME]``); only
        families with a keyed form (``Tabular``'s joint-action table) accept one."""
        from ..errors import SpecError

        raise SpecError(f"{where}: '{name}' must be a number or a list of numbers, got a table")

    def truth_params(self, params: dict, where: str = "[mechanism.truth]") -> dict:
        """The true parameters of this family from those a spec gives (``read_spec``, before
        ``check_params``); as given by default. A family whose parameters differ from the
        form its truths are written in converts them here (``NeuralFunction``: network
        weights -> their payoff table)."""
        return params

    def truth_lines(self, params: Params, action_labels=None, agent_labels=None, max_rows: int = 8) -> list[str]:
        """Lines showing true parameters with their labels (``bayes-diml check --spec``);
        none by default."""
        return []

    # ---------------------------------------------------------------- helpers
    def check_params(self, params: Params, where: str = "params") -> None:
        """Raise ``SpecError`` if ``params`` lacks a key or has a wrong shape."""
        from ..errors import SpecError

        shapes = self.param_shapes()
        missing = sorted(set(shapes) - set(params))
        extra = sorted(set(params) - set(shapes))
        if missing or extra:
            raise SpecError(
                f"{where}: the {self.family} family expects parameters {sorted(shapes)}; "
                f"missing {missing}, unexpected {extra}"
            )
        for name, shape in shapes.items():
            got = tuple(np.shape(params[name]))
            if got != tuple(shape):
                raise SpecError(f"{where}: parameter '{name}' has shape {got}, expected {tuple(shape)}")
            if not np.all(np.isfinite(np.asarray(params[name], dtype=float))):
                raise SpecError(f"{where}: parameter '{name}' has non-finite entries")


def present_counts(joint_action: Array, present: Array | None, num_actions: int) -> tuple[Array, Array]:
    """Action counts among present agents, and each agent's opponents' counts.

    Returns:
        counts: ``(num_actions,)``; counts_minus: ``(num_agents, num_actions)``,
        ``counts - onehot(a_i)`` for present agents (``counts`` for absent ones).
    """
    onehot = jax.nn.one_hot(joint_action, num_actions)
    if present is not None:
        onehot = onehot * present[:, None].astype(onehot.dtype)
    counts = onehot.sum(axis=0)
    return counts, counts[None, :] - onehot


ROWS_PER_BLOCK = 4_096
"""Rows of the widest hidden layer that ``map_in_blocks`` gives one block on a CPU: at
256 hidden units a block's activation is 4 MB, about one core's 2 MB L2 cache plus
its share of L3. Measured on the 2-core AMD EPYC of the benchmarks (E7 n = 120 and
n = 300 likelihood + gradient): blocks of 1,250–8,192 rows were fastest, 32k–64k rows
about 15% slower, no blocking 30–40% slower."""


def map_in_blocks(fn, xs: tuple, rows_per_item: int):
    """``jax.vmap(fn)(*xs)``, evaluated on a CPU in cache-sized blocks.

    On a CPU a large batched network evaluation is bound by memory traffic: every
    elementwise step (bias, ReLU, its mask in the backward pass) streams a full
    activation array through main memory. Here the leading axis is cut into
    blocks of about ``ROWS_PER_BLOCK // rows_per_item`` items, mapped over with
    ``lax.map``, and each block is ``jax.checkpoint``-ed with a policy that saves
    only the matrix products: the backward pass recomputes the cheap elementwise
    steps of one block at a time while it is in cache, and stores one activation
    array per hidden layer instead of several. The value and gradient are those
    of the plain ``vmap`` (to float rounding). On a GPU or TPU, which want one
    large batch, and when everything fits in one block, it is the plain ``vmap``.

    Args:
        fn: a function of one item of each array in ``xs``.
        xs: arrays with the same leading length B.
        rows_per_item: the rows of the widest activation one item produces
            (``A**2`` for an ``A x A`` payoff table).

    Returns:
        ``fn``'s outputs stacked along a leading axis of length B.
    """
    num = xs[0].shape[0]
    num_blocks = -(-num // max(1, ROWS_PER_BLOCK // max(1, rows_per_item)))
    if jax.default_backend() != "cpu" or num_blocks <= 1:
        return jax.vmap(fn)(*xs)
    block = -(-num // num_blocks)
    pad = num_blocks * block - num  # < num_blocks items, repeats of the last one, dropped below
    blocked = [
        jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1), mode="edge").reshape(num_blocks, block, *x.shape[1:])
        for x in xs
    ]
    body = jax.checkpoint(lambda b: jax.vmap(fn)(*b), policy=jax.checkpoint_policies.dots_with_no_batch_dims_saveable)
    out = jax.lax.map(body, tuple(blocked))
    return jax.tree.map(lambda y: y.reshape(num_blocks * block, *y.shape[2:])[:num], out)


def mlp(params: Params, prefix: str, x: Array, num_layers: int, activation) -> Array:
    """Dense layers ``{prefix}w{l}``, ``{prefix}b{l}``; activation on all but the last."""
    for layer in range(num_layers):
        x = x @ params[f"{prefix}w{layer}"] + params[f"{prefix}b{layer}"]
        if layer < num_layers - 1:
            x = activation(x)
    return x


def torch_default_dense(key: PRNGKey, fan_in: int, fan_out: int) -> tuple[Array, Array]:
    """A dense layer at PyTorch's default initialisation: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

    The paper's random true networks are drawn this way (docs/design.md §6).
    """
    bound = 1.0 / np.sqrt(fan_in)
    kw, kb = jax.random.split(key)
    w = jax.random.uniform(kw, (fan_in, fan_out), minval=-bound, maxval=bound)
    b = jax.random.uniform(kb, (fan_out,), minval=-bound, maxval=bound)
    return w, b


def dense_stack_shapes(prefix: str, sizes: list[int]) -> dict[str, tuple[int, ...]]:
    """Parameter shapes of dense layers mapping ``sizes[0] -> ... -> sizes[-1]``."""
    shapes: dict[str, tuple[int, ...]] = {}
    for layer, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        shapes[f"{prefix}w{layer}"] = (fan_in, fan_out)
        shapes[f"{prefix}b{layer}"] = (fan_out,)
    return shapes


def init_dense_stack(key: PRNGKey, prefix: str, sizes: list[int]) -> Params:
    """PyTorch-default initialisation of a dense stack (see ``dense_stack_shapes``)."""
    params: Params = {}
    keys = jax.random.split(key, len(sizes) - 1)
    for layer, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        params[f"{prefix}w{layer}"], params[f"{prefix}b{layer}"] = torch_default_dense(keys[layer], fan_in, fan_out)
    return params


# ------------------------------------------------------------------ priors
def sample_site(name: str, options: dict, default: dict, shape: tuple[int, ...], where: str = "[mechanism.prior]"):
    """``numpyro.sample(name, prior)`` of an array of ``shape`` i.i.d. entries.

    The prior is ``options[name]`` (an inline table, e.g. ``{dist = "normal",
    loc = 0, scale = 1}``) if the spec gives one, else ``default``.
    """
    import numpyro

    from ..priors import Prior

    prior = Prior.parse(options.get(name, default), f"{where} {name}")
    distribution = prior.to_numpyro()
    if shape:
        distribution = distribution.expand(shape).to_event(len(shape))
    return numpyro.sample(name, distribution)


def sample_dense_stack(
    prefix: str, sizes: list[int], scale: float, drop_last_bias: bool, output_scale: float = 1.0
) -> Params:
    """Normal(0, scale / sqrt(fan_in)) priors on a dense stack's weights and biases
    (the output layer's multiplied by ``output_scale``: the prior payoff scale).

    With ``drop_last_bias`` the output bias is fixed at zero: it shifts every
    action's payoff alike, which no full-information learner can see (the gauge).
    """
    import numpyro
    import numpyro.distributions as dist

    params: Params = {}
    num_layers = len(sizes) - 1
    for layer, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        s = scale / np.sqrt(fan_in) * (output_scale if layer == num_layers - 1 else 1.0)
        params[f"{prefix}w{layer}"] = numpyro.sample(
            f"{prefix}w{layer}", dist.Normal(0.0, s).expand((fan_in, fan_out)).to_event(2)
        )
        if drop_last_bias and layer == num_layers - 1:
            params[f"{prefix}b{layer}"] = numpyro.deterministic(f"{prefix}b{layer}", jnp.zeros((fan_out,)))
        else:
            params[f"{prefix}b{layer}"] = numpyro.sample(
                f"{prefix}b{layer}", dist.Normal(0.0, s).expand((fan_out,)).to_event(1)
            )
    return params


def sample_network(embed_shape: tuple[int, ...], sizes: list[int], options: dict, fix_gauge: bool) -> Params:
    """Prior of an embedding + dense network (neural and anonymous families).

    ``embed ~ Normal(0, 1)``; weights and biases ``~ Normal(0, weight_scale /
    sqrt(fan_in))``, the output layer's times ``output_scale``; the output bias
    pinned at 0 when the gauge is fixed (it shifts every action's payoff alike).
    """
    import numpyro
    import numpyro.distributions as dist

    params: Params = {
        "embed": numpyro.sample("embed", dist.Normal(0.0, 1.0).expand(embed_shape).to_event(len(embed_shape)))
    }
    params.update(
        sample_dense_stack(
            "", sizes, positive_number(options, "weight_scale", 1.0), fix_gauge,
            positive_number(options, "output_scale", 1.0),
        )
    )
    return params


def check_choice(value, key: str, choices: tuple[str, ...], where: str = "[mechanism.prior]") -> str:
    """``value`` if it is one of ``choices``, else ``SpecError`` in one line naming ``key``."""
    from ..errors import SpecError

    if not isinstance(value, str) or value not in choices:
        allowed = " or ".join(f'"{c}"' for c in choices)
        raise SpecError(f"{where}: '{key}' must be {allowed}, got {value!r}")
    return value


def positive_number(options: dict, key: str, default: float, where: str = "[mechanism.prior]") -> float:
    """A positive number option of ``[mechanism.prior]`` (e.g. a prior scale)."""
    from ..errors import SpecError

    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value <= 0:
        raise SpecError(f"{where}: '{key}' must be a positive number, got {value!r}")
    return float(value)
