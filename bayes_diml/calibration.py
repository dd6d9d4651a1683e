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
with the same model function, warm start and mass matrix: the Laplace frame above
``nuts.ADAPTED_DENSE_MAX_DIM`` coordinates, 0 as shipped, NumPyro's dense adaptation
below). Prior draws and simulations are one jitted function of a batch of dataset
keys, ``vmap``-ed over datasets and compiled once (batches of equal size, the last
one padded); ranks are one jitted function of the draws; a progress bar runs over
datasets. The ranks' statistics, their uniformity tests and the result record
(``SBCResult``, re-exported here) are in ``calibration_ranks.py``.

Many fits in one process: each NUTS fit compiles NumPyro's sampling loop once, and JAX keeps
the compiled programs in its caches; on Linux each holds memory mappings (about 80-400 per
fit measured, against ``vm.max_map_count`` = 65,530), so a process that has run about 150
fits can fail with "LLVM compilation error: Cannot allocate memory" (measured: 100 tabular
then 56 congestion datasets). Split long studies into calls of at most ~100 datasets and
call ``jax.clear_caches()`` between them (``sbc`` does not: it would throw away every other
compiled program of the caller), or run them in separate processes, as
``tests/test_calibration.py`` and ``benchmarks/calibration.py`` do.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import time

import jax
import jax.numpy as jnp
import numpy as np

from ._random import as_key
from .calibration_ranks import SBCResult, bonferroni, break_ties, uniformity_test
from .errors import DataError, SpecError
from .model import Model
from .priors import Prior

__all__ = ["sbc", "SBCResult"]

TRACE_COUNT = 0
"""How many times the batched SBC function has been traced (a Python side effect
at trace time; tests check that one ``sbc`` call compiles once)."""

_METHODS = ("nuts", "svi")


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
    shipped one (``dense_mass=None``: the Laplace frame above ``nuts.ADAPTED_DENSE_MAX_DIM``
    coordinates, 0 as shipped, NumPyro's dense adaptation below; a diagonal one above
    ``nuts.DENSE_MASS_MAX_DIM``). SVI draws ``L`` times from its
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
    ``{"dist": "beta", "a": 2, "b": 5}``) and make that parameter unknown. No cache:
    models compare and hash by value, so the same model and prior built again re-use
    the compiled functions of an earlier study.
    """
    if prior is None:
        return model
    if not isinstance(prior, dict):
        raise SpecError(f"prior must be None or a dict ([mechanism.prior] options and learner priors), got {type(prior).__name__}")
    learner_names = set(model.learner.param_names)
    mechanism_prior = dict(model.mechanism_prior)
    learner_params = dict(model.learner_params)
    for key, value in prior.items():
        if key in learner_names:
            learner_params[key] = value if isinstance(value, Prior) else Prior.parse(value, f"prior '{key}'")
        else:
            mechanism_prior[key] = value
    model.mechanism.check_prior_options(mechanism_prior, "prior")
    return dataclasses.replace(model, mechanism_prior=mechanism_prior, learner_params=learner_params)


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


def _check_options(method, num_datasets, num_episodes, num_rounds, num_draws, num_chains, thin, num_warmup,
                   max_tree_depth, svi_steps, init_steps, target_accept, batch_size) -> None:
    """Refuse a bad setting (``DataError``) before any work."""
    if method not in _METHODS:
        raise DataError(f"method must be one of {list(_METHODS)}, got {method!r}")
    _check_positive_int("num_datasets", num_datasets, 2)
    for name, value in (("num_episodes", num_episodes), ("num_rounds", num_rounds), ("num_draws", num_draws),
                        ("num_chains", num_chains)):
        _check_positive_int(name, value)
    if method == "nuts" and num_draws % num_chains:
        raise DataError(f"num_draws ({num_draws}) must be a multiple of num_chains ({num_chains})")
    for name, value in (("thin", thin), ("num_warmup", num_warmup), ("max_tree_depth", max_tree_depth), ("svi_steps", svi_steps)):
        _check_positive_int(name, value)
    if init_steps is not None:
        _check_positive_int("init_steps", init_steps, 0)
    if not 0 < target_accept < 1:
        raise DataError(f"target_accept must be in (0, 1), got {target_accept!r}")
    if batch_size is not None:
        _check_positive_int("batch_size", batch_size)


def _difference_codes(model: Model, differences: bool, max_differences: int, key) -> np.ndarray:
    """The payoff-difference queries ranked (``_default_codes``, their subset seeded by
    ``key``), or none."""
    if not differences:
        return np.zeros((0, 3 + model.num_agents), int)
    seed_int = int(np.asarray(jax.random.key_data(key)).ravel()[-1])
    return _default_codes(model, _check_positive_int("max_differences", max_differences), seed_int)


def _quantity_names(model: Model, codes: np.ndarray) -> tuple[list[str], list[str], dict]:
    """``(names, kinds, latents)``: the ranked quantities' names and kinds (``"parameter"``
    per entry of a latent site, then ``"difference"`` per query), and one concrete prior
    draw of the latent sites (their names and shapes; no compilation of the study)."""
    latents = _prior_latents(model, jax.random.key(0))
    names, kinds = [], []
    for site, value in sorted(latents.items()):
        shape = np.shape(value)
        for index in np.ndindex(*shape):
            names.append(site + ("[" + ", ".join(map(str, index)) + "]" if shape else ""))
            kinds.append("parameter")
    names += [_difference_name(model, row) for row in codes]
    kinds += ["difference"] * len(codes)
    return names, kinds, latents


def _mass_matrix(dim: int, dense_mass: bool | None) -> tuple[bool, str]:
    """``(dense, description)`` of the mass matrix ``run_nuts`` uses for ``dim`` latent
    coordinates (its own default when ``dense_mass`` is ``None``)."""
    from .inference.nuts import ADAPTED_DENSE_MAX_DIM, DENSE_MASS_MAX_DIM

    dense = dim <= DENSE_MASS_MAX_DIM if dense_mass is None else bool(dense_mass)
    return dense, ("laplace frame" if dim > ADAPTED_DENSE_MAX_DIM else "adapted dense") if dense else "adapted diagonal"


def _run_datasets(setup: _Setup, keys, num_datasets: int, batch: int, num_quantities: int, sites, progress: bool):
    """Simulate and fit every dataset: ``(truth, less, equal, divergences)``, the true
    quantities ``(N, Q)``, the counts of draws below / on each (``_rank_counts``) and the
    post-warmup divergences per dataset. Batches of ``batch`` datasets (``keys``: one per
    padded slot) are simulated together; each dataset is fitted by the shipped runner."""
    from tqdm.auto import tqdm

    N = num_datasets
    truth = np.zeros((N, num_quantities))
    less, equal = np.zeros(truth.shape, np.int64), np.zeros(truth.shape, np.int64)
    divergences = np.zeros(N, np.int64)
    bar = tqdm(total=N, desc=f"SBC ({setup.method}, {N} datasets)", unit="dataset", disable=not progress)
    for b in range(-(-N // batch)):
        batch_truth, batch_actions, fit_keys = _simulate_batch(setup, keys[b * batch : (b + 1) * batch])
        for j in range(min(batch, N - b * batch)):
            n = b * batch + j
            truth[n] = np.asarray(batch_truth[j])
            draws, divergences[n], _ = _posterior_draws(setup, batch_actions[j], fit_keys[j])
            counts = _rank_counts(setup, batch_truth[j], {k: jnp.asarray(draws[k]) for k in sites})
            less[n], equal[n] = (np.asarray(c) for c in counts)
            bar.update()
    bar.close()
    return truth, less, equal, divergences


def _settings(setup: _Setup, num_datasets: int, batch: int, latent_dim: int, mass_matrix: str, seed, key) -> dict:
    """The study's settings, as ``SBCResult.settings`` records them (JSON-ready)."""
    model = setup.model
    return {
        "method": setup.method, "num_datasets": num_datasets, "num_episodes": setup.num_episodes,
        "num_rounds": setup.num_rounds, "num_draws": setup.num_draws, "thin": setup.thin, "num_chains": setup.num_chains,
        "num_warmup": setup.num_warmup, "target_accept": setup.target_accept, "max_tree_depth": setup.max_tree_depth,
        "dense_mass": setup.dense_mass, "mass_matrix": mass_matrix, "init_steps": setup.init_steps,
        "svi_steps": setup.svi_steps, "svi_learning_rate": setup.svi_learning_rate, "batch_size": batch,
        "latent_dim": latent_dim, "seed": seed if isinstance(seed, int) else np.asarray(jax.random.key_data(key)).tolist(),
        "difference_queries": [list(row) for row in setup.codes], "family": model.mechanism.family,
        "learner": model.learner.name, "num_agents": model.num_agents, "num_actions": model.num_actions,
        "mechanism_prior": {k: (v.to_toml() if isinstance(v, Prior) else v) for k, v in model.mechanism_prior.items()},
        "learner_params": {k: (v.to_toml() if isinstance(v, Prior) else v) for k, v in model.learner_params.items()},
    }


def _result(ranks, names, kinds, truth, divergences, tests: dict, settings: dict, start: float) -> SBCResult:
    """The ``SBCResult`` of ranks and their uniformity ``tests`` (``uniformity_test``)."""
    return SBCResult(
        ranks=ranks, quantities=tuple(names), kinds=tuple(kinds), num_draws=settings["num_draws"],
        true_values=np.asarray(truth), num_bins=int(tests["num_bins"]), chi2=tests["chi2"], p_values=tests["p_chi2"],
        ks=tests["ks"], ks_p_values=tests["p_ks"], combined_p_value=bonferroni(tests["p_chi2"], np.asarray(truth)),
        divergences=np.asarray(divergences, np.int64), settings=settings, wall_seconds=time.perf_counter() - start,
    )


def sbc(
    model: Model, prior=None, num_datasets: int = 100, *, seed, num_episodes: int = 8, num_rounds: int = 20,
    method: str = "nuts", num_draws: int = 99, thin: int = 2, num_chains: int = 1, num_warmup: int = 300,
    target_accept: float = 0.8, max_tree_depth: int = 8, dense_mass: bool | None = None, init_steps: int | None = None,
    svi_steps: int = 2000, svi_learning_rate: float = 0.01, differences: bool = True, max_differences: int = 24,
    num_bins: int | None = None, batch_size: int | None = None, progress: bool = True,
) -> SBCResult:
    """Simulation-based calibration of the Bayesian fit of ``model`` (Talts et al. 2018).

    For each of ``num_datasets`` datasets: true parameters from the prior, play of
    ``num_episodes x num_rounds`` simulated by the model's learner (``simulate_arrays``),
    ``num_draws`` thinned posterior draws by NUTS (or SVI), and the rank of each true
    scalar quantity among them. Under a correct posterior each rank is uniform on
    ``{0..num_draws}``.

    Args:
        model: the model; its learner parameters that are numbers stay fixed.
        prior: ``None`` uses the model's own prior. A dict overrides it: keys among the
            family's ``[mechanism.prior]`` options (e.g. ``{"scale": 2.0}`` for tabular)
            replace those of the model; keys naming a learner parameter (e.g.
            ``{"alpha": {"dist": "beta", "a": 2, "b": 5}}`` or a ``Prior``) make it
            unknown with that prior. The same prior generates the truths and is used in
            the fit, as SBC requires.
        num_datasets: ``N``. num_episodes, num_rounds: size of each simulated dataset.
        seed: an int or a JAX key (required): dataset keys, tie breaking, query subset.
        method: ``"nuts"`` or ``"svi"`` (an ``AutoNormal`` guide: mean-field, expected
            to be miscalibrated when the posterior is correlated).
        num_draws: ``L``, posterior draws per dataset (all chains together; a multiple
            of ``num_chains``); ``L + 1`` with divisors near ``N / 10`` gives equal
            histogram bins (99 and 49 do).
        thin: NUTS keeps every ``thin``-th draw (autocorrelation skews the ranks, §5.1).
        num_chains, num_warmup, target_accept, max_tree_depth: NUTS settings.
        dense_mass: passed to ``run_nuts`` as ``fit`` does (``None``: its own default,
            see ``_mass_matrix``).
        init_steps: Adam steps towards the mode before warmup (default: ``run_nuts``'s).
        svi_steps, svi_learning_rate: SVI settings.
        differences: also rank identified payoff differences ``Delta_i(k, 0 | a_-i)``
            (one per agent, action ``k >= 1`` and opponent context; at most
            ``max_differences``, a seeded random subset).
        num_bins: bins of the chi-square test (default ``default_num_bins``).
        batch_size: datasets per vectorised batch of prior draws and simulations
            (default: equal batches of at most 64; the last one is padded, so the batched
            function compiles once); the fits run one dataset at a time.
        progress: a tqdm bar over datasets.

    Returns:
        an ``SBCResult``; its ``combined_p_value`` is the Bonferroni correction ``min(1,
        Q min_q p_q)`` of the per-quantity chi-square p-values (``Q`` distinct quantities).

    Long studies: at most ~100 datasets per call (the module docstring says why).
    """
    from .inference.numpyro_model import check_identifiable_setup

    start = time.perf_counter()
    _check_options(method, num_datasets, num_episodes, num_rounds, num_draws, num_chains, thin, num_warmup,
                   max_tree_depth, svi_steps, init_steps, target_accept, batch_size)
    model = _with_prior(model, prior)
    check_identifiable_setup(model)
    key = as_key(seed)
    codes = _difference_codes(model, differences, max_differences, key)
    names, kinds, latents = _quantity_names(model, codes)
    dim = int(sum(np.size(v) for v in latents.values()))
    dense, mass_matrix = _mass_matrix(dim, dense_mass)
    setup = _Setup(
        model, int(num_episodes), int(num_rounds), method, int(num_draws), int(num_chains), int(thin), int(num_warmup),
        float(target_accept), int(max_tree_depth), dense, None if init_steps is None else int(init_steps), int(svi_steps),
        float(svi_learning_rate), tuple(map(tuple, codes.tolist())),
    )
    N = int(num_datasets)
    B = -(-N // -(-N // 64)) if batch_size is None else int(batch_size)  # equal batches of at most 64: little padding
    keys = jax.random.split(key, -(-N // B) * B + 1)
    truth, less, equal, divergences = _run_datasets(setup, keys[1:], N, B, len(names), latents, progress)
    tie_seed = np.asarray(jax.random.key_data(keys[0])).tolist()
    ranks = break_ties(less, equal, tie_seed)
    tests = uniformity_test(ranks, setup.num_draws, num_bins, seed=tie_seed)
    settings = _settings(setup, N, B, dim, mass_matrix, seed, key)
    return _result(ranks, names, kinds, truth, divergences, tests, settings, start)
