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
from .options import SPEC_COMMON_KEYS, check_choice, check_keys, positive_number

__all__ = [
    "Mechanism",
    "present_counts",
    "map_in_blocks",
    "ROWS_PER_BLOCK",
]

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
    known_params: ClassVar[frozenset[str]] = frozenset()
    """Parameters a spec may declare known in ``[mechanism.known]`` (the policy in force when
    the data were recorded): they are not sampled and enter the likelihood as constants
    (``sample_prior_known``). None by default."""
    levels_gauge: ClassVar[bool] = True
    """Whether the family's payoff *levels* carry a gauge freedom under full-information
    (shift-invariant) learners (docs/design.md §3): a constant added to every action's
    payoff in a context is invisible to them, so the levels (hence welfare, a sum of
    payoff levels) are fixed by the gauge convention, not by the data. False for families
    whose payoffs cannot express such a shift (congestion)."""
    unidentified_advice: ClassVar[str] = ""
    """What to do instead when a counterfactual depends on a parameter the data do not
    identify (``unidentified_by``): the end of the one-line warning."""
    off_support_note: ClassVar[str] = (
        "the data inform them only through the family's structure, so they are prior-driven unless that structure "
        "ties them to visited contexts"
    )
    """How identifiability's notes explain payoff differences in opponent contexts the data never visit."""
    svi_warning: ClassVar[str | None] = None
    """Set on families whose SVI intervals were measured too narrow (or never checked against
    a truth): what ``fit`` warns when SVI runs on them, and why ``method="auto"`` runs
    low-rank SVI on them (no NUTS budget measured) with that warning."""

    auto_inference: ClassVar[str] = "nuts"
    """What ``fit(method="auto")`` runs on this family within NUTS's size limit: ``"nuts"``,
    or ``"laplace_grid"`` for a prior that is Gaussian given one payoff scale and too
    large for NUTS on a CPU (``AnonymousFunction``)."""

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

    def round_entries(self) -> int:
        """Activations per round of data that the family's payoffs keep for the backward
        pass (memory estimates, ``resources``): families that evaluate a network on each
        round's ``A x A`` table; 0 by default."""
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

    def sample_prior_known(self, options: dict, fix_gauge: bool, known: dict) -> Params:
        """``sample_prior`` with the parameters in ``known`` (name -> array, checked by
        ``check_known``) held at their values: they are not latent (no sample site, no
        prior density), and appear as deterministic sites constant across draws, so the
        posterior still carries them.

        The default holds sites that ``sample_prior`` samples under the parameter's own
        name (NumPyro ``block`` + ``substitute``); a family whose known parameter is a
        function of its sampled coordinates overrides this (``Congestion``).
        """
        import numpyro

        if not known:
            return self.sample_prior(options, fix_gauge)
        names = list(known)
        with numpyro.handlers.block(hide=names), numpyro.handlers.substitute(data=dict(known)):
            params = dict(self.sample_prior(options, fix_gauge))
        for name in names:
            params[name] = numpyro.deterministic(name, jnp.asarray(known[name]))
        return params

    def check_known(self, known: dict, where: str = "[mechanism.known]") -> dict[str, np.ndarray]:
        """The ``[mechanism.known]`` values as float arrays, checked: each a parameter this
        family allows as known (``known_params``), of its shape, finite and inside its
        domain (``known_problem``). Raises ``SpecError`` in one line naming the parameter
        and what is allowed."""
        from ..errors import SpecError

        if not isinstance(known, dict):
            raise SpecError(f"{where}: must be a table of parameter = value")
        shapes = self.param_shapes()
        allowed = sorted(self.known_params)
        out: dict[str, np.ndarray] = {}
        for name, value in known.items():
            if name not in self.known_params:
                what = f"allowed: {allowed}" if allowed else "this family allows no known parameters"
                raise SpecError(f"{where}: '{name}' cannot be declared known for the {self.family} family; {what}")
            try:
                array = np.asarray(value, dtype=np.float64)
            except (TypeError, ValueError):
                raise SpecError(f"{where}: '{name}' must be numbers, got {value!r}") from None
            if array.shape != tuple(shapes[name]):
                raise SpecError(f"{where}: '{name}' has shape {array.shape}, expected {tuple(shapes[name])}")
            if not np.all(np.isfinite(array)):
                raise SpecError(f"{where}: '{name}' has non-finite entries")
            problem = self.known_problem(name, array)
            if problem:
                raise SpecError(f"{where}: '{name}' {problem}")
            out[name] = array
        return out

    def known_problem(self, name: str, value: np.ndarray) -> str | None:
        """Why a known value is outside its parameter's domain, or ``None`` (any finite value
        by default)."""
        return None

    def unidentified_by(self, overrides, known) -> list[str]:
        """Names of the prior-driven parameters on which play under ``overrides`` depends.

        Args:
            overrides: ``(name, op, array)`` of mechanism-parameter changes, ``op`` one of
                ``"="`` (replace), ``"+"``, ``"*"`` (change each draw's value).
            known: the names declared known (``[mechanism.known]``).

        None by default: the family's payoff differences are identified up to the gauge
        (whose directions no learner sees, so no change of them moves play); a family with
        flat directions beyond the gauge names them (``Congestion``).
        """
        return []

    def lever_transfers(self, params: Params, joint_action: Array, present: Array | None = None) -> Array:
        """The part of each agent's payoff that the levers pay (positive) or charge (negative):
        money moved by the designer, not value created, so that ``net_welfare`` (``bd.design``)
        is ``sum_i [M(a)_i - transfer_i(a)]`` and a design cannot buy welfare with subsidies.

        Returns ``(num_agents,)`` (zero for absent agents). The default refuses in one line:
        a family says which of its payoff terms are transfers (``Congestion``, ``PublicGoods``).
        """
        from ..errors import DataError

        raise DataError(
            f"design objective 'net_welfare': the {self.family} family does not say which of its payoff terms are "
            "transfers; use objective 'welfare' or 'share:ACTION'"
        )

    def check_prior_options(self, options: dict, where: str = "[mechanism.prior]") -> None:
        """Raise ``SpecError`` naming an unknown ``[mechanism.prior]`` key."""

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
