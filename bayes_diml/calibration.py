"""Simulation-based calibration (SBC) of the whole inference pipeline.

Talts, Betancourt, Simpson, Vehtari & Gelman (2018), "Validating Bayesian
inference algorithms with simulation-based calibration", arXiv:1804.06788.
For ``n = 1..N`` datasets:

    theta~_n ~ p(theta)                      (the model's own prior)
    y_n      ~ p(y | theta~_n)               (the learners' play, ``simulate_arrays``)
    theta_{n,1..L} ~ p(theta | y_n)          (NUTS or SVI, L thinned draws)
    r_{n,q}  = #{l : f_q(theta_{n,l}) < f_q(theta~_n)}      in {0, ..., L}

If the posterior draws are exact, each rank ``r_{n,q}`` is uniform on
``{0, ..., L}`` (Talts et al. 2018, Theorem 1), whatever ``f_q``. The scalar
quantities ``f_q`` are every entry of the sampled (gauge-fixed) latent sites of
the NumPyro model, and identified payoff differences
``Delta_i(k, 0 | a_-i) = M(k, a_-i)_i - M(0, a_-i)_i`` (``inference/queries.py``).

SBC validates the shipped sampler: every dataset is fitted by the runner
``bayes_diml.fit`` calls (``inference.nuts.run_nuts`` or ``inference.svi.run_svi``,
with the same model function, warm start and mass matrix: NumPyro's dense
adaptation up to ``nuts.ADAPTED_DENSE_MAX_DIM`` coordinates, the Laplace frame
above). Prior draws and simulations are one jitted function of a batch of dataset
keys, ``vmap``-ed over datasets and compiled once (batches of equal size, the last
one padded); ranks are one jitted function of the draws; a progress bar runs over
datasets.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ._random import as_key
from .errors import DataError, SpecError
from .model import Model
from .priors import Prior

__all__ = [
    "sbc",
    "SBCResult",
    "normalised_ranks",
    "rank_statistics",
    "uniformity_test",
    "default_num_bins",
    "distinct_quantities",
]

TRACE_COUNT = 0
"""How many times the batched SBC function has been traced (a Python side effect
at trace time; tests check that one ``sbc`` call compiles once)."""

_METHODS = ("nuts", "svi")



# ------------------------------------------------------------------ ranks and tests (plain NumPy)
def rank_statistics(draws: np.ndarray, truth: np.ndarray, seed=0) -> np.ndarray:
    """SBC ranks of the truths among posterior draws, ties broken at random.

    ``r = #{l : x_l < x~} + U``, ``U`` uniform on ``{0, ..., #{l : x_l = x~}}``
    (Talts et al. 2018, §4.1: randomised ranks keep exact uniformity when draws
    can equal the truth).

    Args:
        draws: ``(..., num_draws, num_quantities)``.
        truth: ``(..., num_quantities)``.
        seed: seeds the NumPy generator that breaks ties.

    Returns:
        int ranks ``(..., num_quantities)`` in ``{0, ..., num_draws}``.
    """
    draws, truth = np.asarray(draws), np.asarray(truth)
    if draws.shape[:-2] + draws.shape[-1:] != truth.shape:
        raise DataError(f"draws {draws.shape} and truth {truth.shape}: expected (..., L, Q) and (..., Q)")
    less = np.sum(draws < truth[..., None, :], axis=-2)
    equal = np.sum(draws == truth[..., None, :], axis=-2)
    return _break_ties(less, equal, seed)


def _break_ties(less: np.ndarray, equal: np.ndarray, seed) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (less + np.floor(rng.random(less.shape) * (equal + 1))).astype(np.int64)


def default_num_bins(num_datasets: int, num_draws: int) -> int:
    """Bins of the rank histogram: the largest divisor ``B`` of ``L + 1`` with
    ``2 <= B <= max(2, N // 10)`` (equal bins, >= 10 expected counts per bin, the
    chi-square approximation's comfort zone); ``max(2, N // 10)`` unequal bins when
    ``L + 1`` has no such divisor."""
    cap = max(2, min(num_datasets // 10, num_draws + 1))
    divisors = [b for b in range(2, cap + 1) if (num_draws + 1) % b == 0]
    return divisors[-1] if divisors else cap


def _bin_edges(num_draws: int, num_bins: int) -> np.ndarray:
    """Integer bin edges over the rank values ``0..L``: bin ``b`` holds ``edges[b] <= r < edges[b+1]``."""
    return np.round(np.linspace(0, num_draws + 1, num_bins + 1)).astype(int)


def uniformity_test(ranks: np.ndarray, num_draws: int, num_bins: int | None = None, seed=0) -> dict[str, np.ndarray]:
    """Tests of discrete uniformity of SBC ranks, one per quantity (column).

    * Chi-square on ``B`` binned ranks: ``X2 = sum_b (O_b - E_b)^2 / E_b``,
      ``E_b = N * (#rank values in bin b) / (L + 1)``, against chi-square(``B - 1``)
      (Pearson; Talts et al. 2018 §4.2 use the binned histogram).
    * Kolmogorov-Smirnov on randomised normalised ranks ``u = (r + V) / (L + 1)``,
      ``V ~ U(0, 1)``: exactly ``U(0, 1)`` under the null when ``r`` is uniform on
      ``{0..L}``, so the continuous KS distribution applies (``scipy.stats.kstest``).

    Args:
        ranks: ``(num_datasets, num_quantities)`` ints in ``{0..L}``.
        num_draws: ``L``.
        num_bins: ``B`` (default ``default_num_bins``).
        seed: seeds the jitter of the KS test.

    Returns:
        dict of ``(num_quantities,)`` arrays: ``chi2``, ``p_chi2``, ``ks``, ``p_ks``,
        and the scalar ``num_bins``.
    """
    from scipy import stats

    ranks = np.asarray(ranks)
    if ranks.ndim != 2:
        raise DataError(f"ranks must be (num_datasets, num_quantities), got shape {ranks.shape}")
    if ranks.size and (ranks.min() < 0 or ranks.max() > num_draws):
        raise DataError(f"ranks must lie in 0..{num_draws}")
    N = ranks.shape[0]
    B = default_num_bins(N, num_draws) if num_bins is None else int(num_bins)
    if not 2 <= B <= num_draws + 1:
        raise DataError(f"num_bins must be in 2..{num_draws + 1}, got {B}")
    edges = _bin_edges(num_draws, B)
    expected = N * np.diff(edges) / (num_draws + 1)
    observed = np.stack([np.histogram(ranks[:, q], bins=edges)[0] for q in range(ranks.shape[1])], axis=0)
    chi2 = np.sum((observed - expected) ** 2 / expected, axis=1)
    p_chi2 = stats.chi2.sf(chi2, B - 1)
    u = (ranks + np.random.default_rng(seed).random(ranks.shape)) / (num_draws + 1)
    ks = np.array([stats.kstest(u[:, q], "uniform") for q in range(ranks.shape[1])]).reshape(-1, 2)
    return {"chi2": chi2, "p_chi2": p_chi2, "ks": ks[:, 0], "p_ks": ks[:, 1], "num_bins": B, "counts": observed, "edges": edges}


def distinct_quantities(true_values: np.ndarray, rtol: float = 1e-5) -> np.ndarray:
    """Indices of the first of each group of equal quantities, ``(Q',)``.

    Two quantities are equal when their true values agree in every dataset up to
    ``rtol`` (a tabular payoff difference against the pinned baseline is a sampled
    entry itself; symmetric agents share differences). The tolerance absorbs the
    last-bit differences that compiled arithmetic leaves between the two routes.
    """
    values = np.asarray(true_values, float)
    keep: list[int] = []
    for q in range(values.shape[1]):
        if not any(np.allclose(values[:, q], values[:, k], rtol=rtol, atol=rtol) for k in keep):
            keep.append(q)
    return np.asarray(keep, int)


def _bonferroni(p_values: np.ndarray, true_values: np.ndarray) -> float:
    """``min(1, Q' min_q p_q)`` over the ``Q'`` distinct quantities (``distinct_quantities``):
    equal quantities are the same test and count once."""
    if not len(p_values):
        return 1.0
    first = distinct_quantities(true_values)
    return float(min(1.0, len(first) * float(np.min(p_values[first]))))


def normalised_ranks(ranks: np.ndarray, num_draws: int) -> np.ndarray:
    """``r / L`` in ``[0, 1]``; mean 0.5 and sd ``sqrt((L + 2) / (12 L))`` under uniformity."""
    return np.asarray(ranks) / num_draws


# ------------------------------------------------------------------ the result
@dataclasses.dataclass(frozen=True, eq=False)
class SBCResult:
    """Ranks and uniformity tests of a simulation-based calibration study.

    Attributes:
        ranks: int ``(num_datasets, num_quantities)``, values in ``{0..num_draws}``.
        quantities: names of the scalar quantities (columns of ``ranks``).
        kinds: ``"parameter"`` (an entry of a sampled latent site) or
            ``"difference"`` (an identified payoff difference), per quantity.
        num_draws: ``L``, thinned posterior draws per dataset.
        true_values: ``(num_datasets, num_quantities)`` prior draws of the quantities.
        num_bins: bins of the chi-square test and the histograms.
        chi2, p_values: chi-square statistic and p-value per quantity.
        ks, ks_p_values: KS statistic and p-value (randomised normalised ranks).
        combined_p_value: Bonferroni over quantities of the chi-square p-values,
            ``min(1, Q * min_q p_q)``, ``Q`` counting distinct quantities only
            (equal true values in every dataset count once, ``distinct_quantities``): the probability,
            under calibration, that at least one of the ``Q`` tests looks this
            extreme is at most this (valid whatever the dependence between
            quantities, conservative when they are correlated).
        divergences: post-warmup divergent transitions per dataset (NUTS; zeros
            for SVI).
        settings: the study's settings (method, sizes, seed, queries).
        wall_seconds: total wall time (compilation included).
    """

    ranks: np.ndarray
    quantities: tuple[str, ...]
    kinds: tuple[str, ...]
    num_draws: int
    true_values: np.ndarray
    num_bins: int
    chi2: np.ndarray
    p_values: np.ndarray
    ks: np.ndarray
    ks_p_values: np.ndarray
    combined_p_value: float
    divergences: np.ndarray
    settings: dict[str, Any]
    wall_seconds: float

    @property
    def num_datasets(self) -> int:
        return int(self.ranks.shape[0])

    @property
    def normalised_ranks(self) -> np.ndarray:
        """``ranks / L`` (see ``normalised_ranks``)."""
        return normalised_ranks(self.ranks, self.num_draws)

    def to_frame(self) -> pd.DataFrame:
        """One row per quantity: ``quantity, kind, mean_rank`` (normalised, 0.5 under
        calibration), ``chi2, p_chi2, ks, p_ks``."""
        return pd.DataFrame(
            {
                "quantity": list(self.quantities),
                "kind": list(self.kinds),
                "mean_rank": self.normalised_ranks.mean(axis=0),
                "chi2": self.chi2,
                "p_chi2": self.p_values,
                "ks": self.ks,
                "p_ks": self.ks_p_values,
            }
        )

    def verdict(self, level: float = 0.01) -> str:
        """One line: calibrated or not at ``level`` (combined Bonferroni p-value)."""
        ok = self.combined_p_value > level
        return (
            f"SBC over {self.num_datasets} datasets, {len(self.quantities)} quantities, L = {self.num_draws}: "
            f"combined p = {self.combined_p_value:.3g} ({'no evidence of miscalibration' if ok else 'MISCALIBRATED'} "
            f"at {level}); {int(np.sum(self.divergences))} divergences"
        )

    def plot(self, quantities=None, max_panels: int = 24, columns: int = 4, title: str | None = None):
        """Rank histograms with the 99% band of a uniform histogram.

        Each bin count of ``N`` uniform ranks is Binomial(``N``, ``p_b``); the grey
        band spans its 0.5% and 99.5% quantiles (Talts et al. 2018, Fig. 3).

        Args:
            quantities: names to show (default: the first ``max_panels`` distinct
                quantities; a tabular difference against the pinned baseline
                duplicates a sampled entry).
        Returns:
            a matplotlib ``Figure``.
        """
        from matplotlib.figure import Figure
        from scipy import stats

        if quantities is None:  # distinct quantities (a duplicate has the same truths everywhere)
            quantities = [self.quantities[q] for q in distinct_quantities(self.true_values)][:max_panels]
        names = list(quantities)
        unknown = [q for q in names if q not in self.quantities]
        if unknown:
            raise DataError(f"unknown quantities {unknown}; known: {list(self.quantities)}")
        edges = _bin_edges(self.num_draws, self.num_bins)
        prob = np.diff(edges) / (self.num_draws + 1)
        lo = stats.binom.ppf(0.005, self.num_datasets, prob)
        hi = stats.binom.ppf(0.995, self.num_datasets, prob)
        rows = -(-len(names) // columns)
        cols = min(columns, len(names))
        fig = Figure(figsize=(2.6 * cols, 2.0 * rows + 0.6), layout="constrained")
        axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
        for ax, name in zip(axes, names):
            q = self.quantities.index(name)
            counts = np.histogram(self.ranks[:, q], bins=edges)[0]
            ax.stairs(counts, edges, fill=True, color="C0", alpha=0.75, zorder=2)
            ax.fill_between(edges, np.r_[lo, lo[-1]], np.r_[hi, hi[-1]], step="post", color="0.5", alpha=0.3, lw=0, zorder=3)
            ax.axhline(self.num_datasets / self.num_bins, color="k", lw=0.6, ls=":")
            ax.set_title(f"{name}\np = {self.p_values[q]:.2g}", fontsize=7)
            ax.set_xlim(0, self.num_draws + 1)
            ax.tick_params(labelsize=6)
        for ax in axes[len(names):]:
            ax.set_visible(False)
        fig.suptitle(
            title
            or f"SBC rank histograms ({self.num_datasets} datasets, L = {self.num_draws}; grey: 99% band of uniform); "
            f"combined p = {self.combined_p_value:.2g}",
            fontsize=9,
        )
        return fig


# ------------------------------------------------------------------ static set-up of the traced function
@dataclasses.dataclass(frozen=True)
class _Setup:
    """Everything static about one SBC study (hashable: the jit cache key)."""

    model: Model
    num_episodes: int
    num_rounds: int
    method: str
    num_draws: int
    num_chains: int
    thin: int
    num_warmup: int
    target_accept: float
    max_tree_depth: int
    dense_mass: bool
    init_steps: int | None  # None: run_nuts's warm start
    svi_steps: int
    svi_learning_rate: float
    codes: tuple  # payoff-difference queries, rows (agent, action, baseline, *joint)


def _prior_latents(model: Model, key) -> dict:
    """One prior draw of every latent (sampled) site, constrained values."""
    from numpyro import handlers

    from .inference.numpyro_model import sample_params

    trace = handlers.trace(handlers.seed(sample_params, key)).get_trace(model)
    return {n: s["value"] for n, s in trace.items() if s["type"] == "sample" and not s["is_observed"]}


def _natural_params(model: Model, latents: dict) -> dict:
    """The natural params PyTree (``{"mechanism", "learner"}``) of latent values."""
    from numpyro import handlers

    from .inference.numpyro_model import sample_params

    with handlers.substitute(data=latents):
        return sample_params(model)


def _quantities(setup: _Setup, latents: dict) -> jax.Array:
    """``(Q,)``: every latent entry (sites by name, entries in C order), then the differences."""
    from .differences import differences

    flat = [jnp.ravel(latents[name]) for name in sorted(latents)]  # sorted: as PyTree flattening orders dicts
    params = _natural_params(setup.model, latents)
    if setup.codes:
        mech = jax.tree.map(lambda v: jnp.asarray(v)[None], params["mechanism"])
        flat.append(differences(setup.model.mechanism, mech, jnp.asarray(setup.codes, jnp.int32))[0])
    return jnp.concatenate(flat)


@functools.partial(jax.jit, static_argnums=0)
def _simulate_batch(setup: _Setup, keys):
    """Prior draws and simulated play for a batch of datasets (``keys``: one typed key per
    dataset), vmapped and compiled once per study set-up.

    Returns ``(truth, actions, fit_keys)``: the true quantities ``(B, Q)``, the actions
    ``(B, E, T, n)`` and one key per dataset for its fit.
    """
    global TRACE_COUNT
    TRACE_COUNT += 1  # Python side effect: runs once per trace, not per call
    from .simulate import simulate_arrays

    model = setup.model

    def simulate(key):
        k_prior, k_sim = jax.random.split(key)
        truth_latents = _prior_latents(model, k_prior)
        params = _natural_params(model, truth_latents)
        actions = simulate_arrays(model, params, k_sim, setup.num_episodes, setup.num_rounds)
        return _quantities(setup, truth_latents), actions

    k_data, k_fit = jnp.moveaxis(jax.vmap(lambda k: jax.random.split(k))(keys), 1, 0)
    truth, actions = jax.vmap(simulate)(k_data)
    return truth, actions, k_fit


@functools.partial(jax.jit, static_argnums=0)
def _rank_counts(setup: _Setup, truth, latents: dict):
    """``(less, equal)``, ``(Q,)`` each: how many of the ``L`` draws (``latents``: latent
    sites with a leading draw axis) fall below / on each true quantity."""
    draws = jax.vmap(lambda lat: _quantities(setup, lat))(latents)
    return jnp.sum(draws < truth, axis=0), jnp.sum(draws == truth, axis=0)


def _posterior_draws(setup: _Setup, actions, key) -> tuple[dict, int, dict]:
    """One dataset's fit by the runner ``bayes_diml.fit`` calls (``inference.nuts.run_nuts``
    or ``inference.svi.run_svi``, on the same model function): ``L`` latent draws
    (constrained, leading draw axis), the post-warmup divergences, and the runner's info.

    NUTS runs ``num_chains`` chains of ``thin * L / num_chains`` draws after ``num_warmup``
    warmup steps and keeps every ``thin``-th draw of each chain; its mass matrix is the
    shipped one (``dense_mass=None``: NumPyro's dense adaptation started from the inverse
    Hessian up to ``nuts.ADAPTED_DENSE_MAX_DIM`` coordinates, the Laplace frame above,
    a diagonal one above ``nuts.DENSE_MASS_MAX_DIM``). SVI draws ``L`` times from its
    fitted guide.
    """
    from .inference.numpyro_model import model_function
    from .inference.nuts import run_nuts
    from .inference.svi import run_svi

    fn = model_function(setup.model)
    mask = jnp.zeros(actions.shape, bool)
    if setup.method == "nuts":
        per_chain = setup.num_draws // setup.num_chains
        options = {} if setup.init_steps is None else {"warm_start_steps": setup.init_steps}
        run = run_nuts(
            fn, actions, mask, key, num_chains=setup.num_chains, num_warmup=setup.num_warmup,
            num_samples=per_chain * setup.thin, target_accept=setup.target_accept, dense_mass=setup.dense_mass,
            max_tree_depth=setup.max_tree_depth, progress=False, **options,
        )
        draws = {k: np.asarray(v)[:, setup.thin - 1 :: setup.thin] for k, v in run.posterior.items()}
        draws = {k: v.reshape(setup.num_draws, *v.shape[2:]) for k, v in draws.items()}
        divergences = int(np.sum(run.stats["diverging"]))
    else:
        run = run_svi(
            fn, actions, mask, key, steps=setup.svi_steps, learning_rate=setup.svi_learning_rate,
            num_samples=setup.num_draws, progress=False,
        )
        draws = {k: np.asarray(v)[0] for k, v in run.posterior.items()}
        divergences = 0
    return draws, divergences, run.info


# ------------------------------------------------------------------ host-side set-up
def _with_prior(model: Model, prior) -> Model:
    """The model whose prior generates the truths and is used in the fit.

    ``prior`` is ``None`` (the model's own prior), or a dict: keys among the
    family's ``[mechanism.prior]`` options replace the model's table; keys naming
    learner parameters take a ``Prior`` (or an inline table such as
    ``{"dist": "beta", "a": 2, "b": 5}``) and make that parameter unknown.
    """
    if prior is None:
        return model
    if not isinstance(prior, dict):
        raise SpecError(f"prior must be None or a dict ([mechanism.prior] options and learner priors), got {type(prior).__name__}")
    # cached on (model, prior): models hash by identity, so a repeated study of the same
    # model and prior re-uses the compiled function
    cache_key = (id(model), repr(sorted(prior.items(), key=lambda kv: str(kv[0]))))
    if cache_key in _PRIOR_MODELS and _PRIOR_MODELS[cache_key][0] is model:
        return _PRIOR_MODELS[cache_key][1]
    learner_names = set(model.learner.param_names)
    mechanism_prior = dict(model.mechanism_prior)
    learner_params = dict(model.learner_params)
    for key, value in prior.items():
        if key in learner_names:
            learner_params[key] = value if isinstance(value, Prior) else Prior.parse(value, f"prior '{key}'")
        else:
            mechanism_prior[key] = value
    model.mechanism.check_prior_options(mechanism_prior, "prior")
    built = dataclasses.replace(model, mechanism_prior=mechanism_prior, learner_params=learner_params)
    if len(_PRIOR_MODELS) >= 16:
        _PRIOR_MODELS.clear()
    _PRIOR_MODELS[cache_key] = (model, built)
    return built


_PRIOR_MODELS: dict = {}


def _default_codes(model: Model, max_differences: int, seed: int) -> np.ndarray:
    """Payoff-difference queries ``(agent, k, 0, *joint)`` for ``k = 1..A-1``: one per
    agent and distinct opponent context (the others' joint action, or their action
    counts for count-based families), at most ``max_differences`` of them (a
    seeded random subset when there are more)."""
    n, A = model.num_agents, model.num_actions
    if A**n <= 4096:
        joints = np.array(list(itertools.product(range(A), repeat=n)), dtype=np.int64)
    else:
        joints = np.random.default_rng(seed).integers(0, A, size=(4096, n))
    rows, seen = [], set()
    for joint in joints:
        for i in range(n):
            others = np.delete(joint, i)
            context = tuple(np.bincount(others, minlength=A)) if model.mechanism.counts_context else tuple(others)
            for k in range(1, A):
                if (i, k, context) in seen:
                    continue
                seen.add((i, k, context))
                row = joint.copy()
                row[i] = k
                rows.append([i, k, 0, *row])
    codes = np.array(rows, dtype=np.int64).reshape(-1, 3 + n)
    if len(codes) > max_differences:
        keep = np.sort(np.random.default_rng(seed).choice(len(codes), size=max_differences, replace=False))
        codes = codes[keep]
    return codes


def _difference_name(model: Model, row) -> str:
    agents = model.agent_labels or tuple(range(model.num_agents))
    actions = model.action_labels or tuple(range(model.num_actions))
    i, k, base, joint = int(row[0]), int(row[1]), int(row[2]), row[3:]
    others = " ".join("_" if j == i else str(actions[int(a)]) for j, a in enumerate(joint))
    return f"diff[{agents[i]}: {actions[k]} vs {actions[base]} | {others}]"


def _check_positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise DataError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def sbc(
    model: Model,
    prior=None,
    num_datasets: int = 100,
    *,
    num_episodes: int = 8,
    num_rounds: int = 20,
    method: str = "nuts",
    num_draws: int = 99,
    thin: int = 2,
    num_chains: int = 1,
    num_warmup: int = 300,
    target_accept: float = 0.8,
    max_tree_depth: int = 8,
    dense_mass: bool | None = None,
    init_steps: int | None = None,
    svi_steps: int = 2000,
    svi_learning_rate: float = 0.01,
    differences: bool = True,
    max_differences: int = 24,
    num_bins: int | None = None,
    batch_size: int | None = None,
    seed=0,
    progress: bool = True,
) -> SBCResult:
    """Simulation-based calibration of the Bayesian fit of ``model`` (Talts et al. 2018).

    For each of ``num_datasets`` datasets: true parameters from the prior, play of
    ``num_episodes x num_rounds`` simulated by the model's learner
    (``simulate_arrays``), ``num_draws`` thinned posterior draws by NUTS (or SVI),
    and the rank of each true scalar quantity among them. Under a correct
    posterior each rank is uniform on ``{0..num_draws}``.

    Args:
        model: the model; its learner parameters that are numbers stay fixed.
        prior: ``None`` uses the model's own prior (``[mechanism.prior]`` and the
            learner priors). A dict overrides it: keys among the family's
            ``[mechanism.prior]`` options (e.g. ``{"scale": 2.0}`` for tabular,
            ``{"d": {"dist": "normal", "loc": 0, "scale": 0.5}}`` for congestion)
            replace those of the model; keys naming a learner parameter (e.g.
            ``{"alpha": {"dist": "beta", "a": 2, "b": 5}}`` or a ``Prior``) make
            it unknown with that prior. The same prior generates the truths and
            is used in the fit, as SBC requires.
        num_datasets: ``N``.
        num_episodes, num_rounds: size of each simulated dataset.
        method: ``"nuts"`` or ``"svi"`` (an ``AutoNormal`` guide; a mean-field
            approximation, expected to be miscalibrated when the posterior is
            correlated).
        num_draws: ``L``, posterior draws per dataset (all chains together; a
            multiple of ``num_chains``). ``L + 1`` should have divisors near
            ``N / 10`` for equal histogram bins (99 and 49 do).
        thin: NUTS keeps every ``thin``-th draw (autocorrelated draws make the
            histogram of ranks non-uniform, Talts et al. §5.1).
        num_chains, num_warmup, target_accept, max_tree_depth: NUTS settings.
        dense_mass: passed to ``run_nuts`` as ``fit`` does; default (``None``): its
            own, dense up to ``nuts.DENSE_MASS_MAX_DIM`` coordinates (NumPyro's dense
            adaptation started from the inverse Hessian up to
            ``nuts.ADAPTED_DENSE_MAX_DIM``, the Laplace frame above).
        init_steps: Adam steps towards the mode before warmup (``run_nuts``'s
            ``warm_start_steps``; default: its own, 300).
        svi_steps, svi_learning_rate: SVI settings.
        differences: also rank identified payoff differences
            ``Delta_i(k, 0 | a_-i)`` (one per agent, action ``k >= 1`` and opponent
            context; at most ``max_differences``, a seeded random subset).
        num_bins: bins of the chi-square test (default ``default_num_bins``).
        batch_size: datasets per vectorised batch of prior draws and simulations
            (default: all of them, or equal batches of at most 64). Every batch has
            this size (the last one is padded), so the batched function compiles
            once; the fits run one dataset at a time.
        seed: an int or a JAX key (dataset keys, tie breaking, query subset).
        progress: a tqdm bar over datasets.

    Returns:
        an ``SBCResult``; its ``combined_p_value`` is the Bonferroni correction
        ``min(1, Q min_q p_q)`` of the per-quantity chi-square p-values (``Q``
        distinct quantities).
    """
    from tqdm.auto import tqdm

    from .inference.numpyro_model import check_identifiable_setup

    start = time.perf_counter()
    if method not in _METHODS:
        raise DataError(f"method must be one of {list(_METHODS)}, got {method!r}")
    N = _check_positive_int("num_datasets", num_datasets, 2)
    E = _check_positive_int("num_episodes", num_episodes)
    T = _check_positive_int("num_rounds", num_rounds)
    L = _check_positive_int("num_draws", num_draws)
    chains = _check_positive_int("num_chains", num_chains)
    if method == "nuts" and L % chains:
        raise DataError(f"num_draws ({L}) must be a multiple of num_chains ({chains})")
    for name, value in (("thin", thin), ("num_warmup", num_warmup), ("max_tree_depth", max_tree_depth), ("svi_steps", svi_steps)):
        _check_positive_int(name, value)
    if init_steps is not None:
        _check_positive_int("init_steps", init_steps, 0)
    if not 0 < target_accept < 1:
        raise DataError(f"target_accept must be in (0, 1), got {target_accept!r}")
    model = _with_prior(model, prior)
    check_identifiable_setup(model)
    key = as_key(seed)
    seed_int = int(np.asarray(jax.random.key_data(key)).ravel()[-1])
    if differences:
        codes = _default_codes(model, _check_positive_int("max_differences", max_differences), seed_int)
    else:
        codes = np.zeros((0, 3 + model.num_agents), int)

    # names and latent dimension from one concrete prior draw (no compilation of the study)
    latents = _prior_latents(model, jax.random.key(0))
    names, kinds = [], []
    for site, value in sorted(latents.items()):
        shape = np.shape(value)
        for index in np.ndindex(*shape):
            names.append(site + ("[" + ", ".join(map(str, index)) + "]" if shape else ""))
            kinds.append("parameter")
    names += [_difference_name(model, row) for row in codes]
    kinds += ["difference"] * len(codes)
    dim = int(sum(np.size(v) for v in latents.values()))
    from .inference.nuts import ADAPTED_DENSE_MAX_DIM, DENSE_MASS_MAX_DIM

    dense = dim <= DENSE_MASS_MAX_DIM if dense_mass is None else bool(dense_mass)  # run_nuts's default
    mass_matrix = ("laplace frame" if dim > ADAPTED_DENSE_MAX_DIM else "adapted dense") if dense else "adapted diagonal"
    init_steps = None if init_steps is None else int(init_steps)

    setup = _Setup(
        model, E, T, method, L, chains, int(thin), int(num_warmup), float(target_accept), int(max_tree_depth),
        dense, init_steps, int(svi_steps), float(svi_learning_rate), tuple(map(tuple, codes.tolist())),
    )
    if batch_size is None:
        B = -(-N // -(-N // 64))  # equal batches of at most 64: little padding
    else:
        B = _check_positive_int("batch_size", batch_size)
    num_batches = -(-N // B)
    keys = jax.random.split(key, num_batches * B + 1)
    k_ties, keys = keys[0], keys[1:]
    truth = np.zeros((N, len(names)))
    less, equal = np.zeros(truth.shape, np.int64), np.zeros(truth.shape, np.int64)
    divergences = np.zeros(N, np.int64)
    bar = tqdm(total=N, desc=f"SBC ({method}, {N} datasets)", unit="dataset", disable=not progress)
    for b in range(num_batches):
        # one fit per dataset by the shipped runner (what ``bayes_diml.fit`` calls)
        batch_truth, batch_actions, fit_keys = _simulate_batch(setup, keys[b * B : (b + 1) * B])
        for j in range(min(B, N - b * B)):
            n = b * B + j
            truth[n] = np.asarray(batch_truth[j])
            draws, divergences[n], _ = _posterior_draws(setup, batch_actions[j], fit_keys[j])
            counts = _rank_counts(setup, batch_truth[j], {k: jnp.asarray(draws[k]) for k in latents})
            less[n], equal[n] = (np.asarray(c) for c in counts)
            bar.update()
    bar.close()
    tie_seed = np.asarray(jax.random.key_data(k_ties)).tolist()
    ranks = _break_ties(less, equal, tie_seed)
    tests = uniformity_test(ranks, L, num_bins, seed=tie_seed)
    p = tests["p_chi2"]
    combined = _bonferroni(p, np.asarray(truth))
    settings = {
        "method": method, "num_datasets": N, "num_episodes": E, "num_rounds": T, "num_draws": L, "thin": int(thin),
        "num_chains": chains, "num_warmup": int(num_warmup), "target_accept": float(target_accept),
        "max_tree_depth": int(max_tree_depth), "dense_mass": dense, "mass_matrix": mass_matrix, "init_steps": init_steps,
        "svi_steps": int(svi_steps), "svi_learning_rate": float(svi_learning_rate), "batch_size": B,
        "latent_dim": dim, "seed": seed if isinstance(seed, int) else np.asarray(jax.random.key_data(key)).tolist(),
        "difference_queries": codes.tolist(), "family": model.mechanism.family, "learner": model.learner.name,
        "num_agents": model.num_agents, "num_actions": model.num_actions,
        "mechanism_prior": {k: (v.to_toml() if isinstance(v, Prior) else v) for k, v in model.mechanism_prior.items()},
        "learner_params": {k: (v.to_toml() if isinstance(v, Prior) else v) for k, v in model.learner_params.items()},
    }
    return SBCResult(
        ranks=ranks,
        quantities=tuple(names),
        kinds=tuple(kinds),
        num_draws=L,
        true_values=np.asarray(truth),
        num_bins=int(tests["num_bins"]),
        chi2=tests["chi2"],
        p_values=p,
        ks=tests["ks"],
        ks_p_values=tests["p_ks"],
        combined_p_value=combined,
        divergences=np.asarray(divergences, np.int64),
        settings=settings,
        wall_seconds=time.perf_counter() - start,
    )
