"""The three inference methods behind ``bayes_diml.fit``: NUTS, SVI and MAP.

Each runner takes the NumPyro model (closed over the ``Model``), the data
arrays and a key, and returns ``(posterior, sample_stats, info)`` where
``posterior`` maps every latent and deterministic site to an array with leading
``(chain, draw)`` axes.

None of them returns a silently non-finite posterior: the optimisers (MAP, the
SVI ELBO, NUTS's Adam warm start) track, inside their jitted loops, the first
step whose loss or gradient is not finite and stop there with a ``FitError``
naming the step and the parameters; NUTS checks its initial point and its draws.
"""

from __future__ import annotations

import functools
import inspect
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from numpyro.infer import MCMC, NUTS, SVI, Predictive, Trace_ELBO, init_to_median, init_to_sample
from numpyro.infer.autoguide import AutoLowRankMultivariateNormal, AutoNormal
from numpyro.infer.util import initialize_model, log_density
from numpyro.optim import optax_to_numpyro

from ..errors import FitError

__all__ = ["run_nuts", "run_svi", "run_map", "init_to_shrunk_sample", "DENSE_MASS_MAX_DIM"]

DENSE_MASS_MAX_DIM = 200
"""Models with at most this many unconstrained dimensions get a dense mass matrix by default."""

_NUTS_FIELDS = ("diverging", "num_steps", "accept_prob", "energy", "potential_energy", "adapt_state.step_size")
_STAT_NAMES = {
    "diverging": "diverging",
    "num_steps": "n_steps",
    "accept_prob": "acceptance_rate",
    "energy": "energy",
    "potential_energy": "lp",
    "adapt_state.step_size": "step_size",
}


# ------------------------------------------------------------ non-finite watch
class _Watch(NamedTuple):
    """The first non-finite step of an optimiser, tracked inside its jitted loop.

    ``step`` is -1 while every loss and gradient so far was finite; after that it
    holds the first bad step (1-based), ``loss`` the loss there, and ``nan`` /
    ``inf`` the gradient's NaN / infinite entries there (PyTrees of bools).
    """

    step: Any
    loss: Any
    nan: Any
    inf: Any


def _watch_start(params, loss_dtype) -> _Watch:
    false = jax.tree.map(lambda p: jnp.zeros(jnp.shape(p), bool), params)
    return _Watch(jnp.int32(-1), jnp.zeros((), loss_dtype), false, false)


def _watch(watch: _Watch, step, loss, grads, active=True) -> _Watch:
    """Record ``step`` if it is the first whose loss or gradient is not finite."""
    nan = jax.tree.map(jnp.isnan, grads)
    inf = jax.tree.map(jnp.isinf, grads)
    bad = [jnp.any(n | i) for n, i in zip(jax.tree.leaves(nan), jax.tree.leaves(inf))]
    fine = jnp.isfinite(loss) & ~jnp.any(jnp.stack(bad)) if bad else jnp.isfinite(loss)
    first = (watch.step < 0) & ~fine & active
    pick = lambda new, old: jnp.where(first, new, old)  # noqa: E731
    return _Watch(
        pick(jnp.asarray(step, jnp.int32), watch.step),
        pick(loss, watch.loss),
        jax.tree.map(pick, nan, watch.nan),
        jax.tree.map(pick, inf, watch.inf),
    )


def _site_labeller(fn):
    """``site name -> 'mechanism.NAME'`` or ``'learner.NAME'`` for ``partial(numpyro_model, model)``."""
    model = fn.args[0] if isinstance(fn, functools.partial) and fn.args else None
    if not hasattr(model, "learner_priors"):
        return lambda name: name
    learner = set(model.learner_priors)
    return lambda name: f"learner.{name}" if name in learner else f"mechanism.{name}"


def _describe(value) -> str:
    value = float(value)
    return "NaN" if np.isnan(value) else ("infinite" if np.isinf(value) else f"finite: {value:.6g}")


def _failure(where: str, loss, bad: dict[str, str], hint: str = "") -> FitError:
    """``FitError`` for a step whose loss or gradient was not finite.

    ``bad``: parameter label -> ``"NaN"`` or ``"infinite"`` (its gradient).
    """
    if bad:
        names = ", ".join(f"'{name}'" for name in bad)
        kind = "NaN" if "NaN" in bad.values() else "infinite"
        what = f"the gradient of {names} is {kind}" if len(bad) == 1 else f"the gradients of {names} are {kind}"
        message = f"{where}: {what} (loss was {_describe(loss)})"
    else:
        message = f"{where}: the loss is {_describe(loss).split(':')[0]} (its gradient is finite)"
    hint = hint or "try a smaller learning rate, tighter priors, or float64 (--x64)"
    return FitError(f"{message}; the fit stopped ({hint})")


def _bad_gradients(nan: dict, inf: dict, sites) -> dict[str, str]:
    """Label -> kind for every parameter with a non-finite gradient entry.

    ``sites(name, mask)`` maps a gradient leaf to the model sites it belongs to.
    """
    bad: dict[str, str] = {}
    for name in nan:
        is_nan, is_inf = np.asarray(nan[name]), np.asarray(inf[name])
        for label in sites(name, is_nan | is_inf) if (is_nan.any() or is_inf.any()) else ():
            if bad.get(label) != "NaN":
                bad[label] = "NaN" if is_nan.any() else "infinite"
    return bad


def _raise_if_bad(watch: _Watch, stage: str, total: int, sites, restarts: bool = False) -> None:
    """Raise ``FitError`` if the watch (leading restart axis if ``restarts``) saw a bad step."""
    step = np.atleast_1d(np.asarray(watch.step))
    if not np.any(step >= 0):
        return
    which = int(np.argmin(np.where(step >= 0, step, np.iinfo(np.int32).max)))
    pick = (lambda tree: jax.tree.map(lambda v: np.asarray(v)[which], tree)) if restarts else (lambda tree: tree)
    where = f"{stage} step {int(step[which])} of {total}" + (f" (restart {which})" if restarts and step.size > 1 else "")
    loss = np.asarray(watch.loss).reshape(-1)[which]
    raise _failure(where, loss, _bad_gradients(pick(watch.nan), pick(watch.inf), sites))


def _adam(potential, z, learning_rate: float, steps: int, *, block: int, stage: str, label, progress: bool = False, desc: str = ""):
    """Adam on ``potential`` from ``z`` (leading restart axis, vmapped), in jitted blocks.

    Every step's loss and gradient are checked inside the loop (``_Watch``);
    the host looks once per block and raises ``FitError`` at the first bad step.
    Returns ``(z, losses)`` with ``losses`` of shape ``(restarts, steps)``.
    """
    from tqdm.auto import tqdm

    optimizer = optax.adam(learning_rate)
    block = max(1, min(block, steps))
    loss_dtype = jax.eval_shape(jax.vmap(potential), z).dtype

    @jax.jit
    def run_block(z, state, watch, first):
        def step(carry, t):
            z, state, watch = carry
            loss, grad = jax.value_and_grad(potential)(z)
            active = t <= steps
            watch = _watch(watch, t, loss, grad, active)
            updates, new_state = optimizer.update(grad, state, z)
            new_z = optax.apply_updates(z, updates)
            keep = lambda new, old: jnp.where(active, new, old)  # noqa: E731
            return (jax.tree.map(keep, new_z, z), jax.tree.map(keep, new_state, state), watch), loss

        ts = first + jnp.arange(1, block + 1)
        return jax.vmap(lambda z, s, w: jax.lax.scan(step, (z, s, w), ts))(z, state, watch)

    state = jax.vmap(optimizer.init)(z)
    watch = jax.vmap(lambda v: _watch_start(v, loss_dtype))(z)
    sites = lambda name, mask: [label(name)]  # noqa: E731
    trace = []
    num_blocks = -(-steps // block)
    for b in tqdm(range(num_blocks), desc=desc or stage, disable=not progress, unit=f"x{block} steps"):
        (z, state, watch), losses = run_block(z, state, watch, b * block)
        trace.append(np.asarray(losses))
        _raise_if_bad(watch, stage, steps, sites, restarts=True)
    return z, np.concatenate(trace, axis=1)[:, :steps]


def _initialize(key, fn, actions, mask, strategy, stage: str):
    """``initialize_model``, or ``FitError`` naming the parameters whose gradient is
    not finite where no finite initial log density was found."""
    try:
        return initialize_model(key, fn, model_args=(actions, mask), init_strategy=strategy)
    except RuntimeError as err:
        if "valid initial parameters" not in str(err):
            raise
    from numpyro import handlers

    typed = jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
    first = key[0] if jnp.ndim(key) == (1 if typed else 2) else key  # a batch of keys (restarts): the first
    seeded = handlers.substitute(handlers.seed(fn, first), substitute_fn=strategy)
    trace = handlers.trace(seeded).get_trace(actions, mask)
    values = {k: v["value"] for k, v in trace.items() if v["type"] == "sample" and not v["is_observed"]}
    value, grads = jax.value_and_grad(lambda v: log_density(fn, (actions, mask), {}, v)[0])(values)
    bad = _bad_gradients(
        jax.tree.map(jnp.isnan, grads), jax.tree.map(jnp.isinf, grads), lambda name, m: [_site_labeller(fn)(name)]
    )
    raise _failure(f"{stage} initial point", -value, bad, "the model's log density is not finite where the fit starts") from None


def _check_draws(stage: str, posterior: dict, potential_energy, fn, actions, mask, latents) -> None:
    """``FitError`` naming the parameter and the (chain, draw) of the first non-finite draw,
    or the parameters whose gradient is not finite where the potential energy is not."""
    label = _site_labeller(fn)
    for name, values in posterior.items():
        values = np.asarray(values)
        if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
            chain, draw = (int(i) for i in np.argwhere(~np.isfinite(values.reshape(*values.shape[:2], -1)).any(-1))[0])
            kind = "NaN" if np.isnan(values[chain, draw]).any() else "infinite"
            raise FitError(
                f"{stage}: parameter '{label(name)}' is {kind} at draw {draw} of chain {chain}; the fit stopped "
                "(try tighter priors, a higher target_accept, or float64 (--x64))"
            )
    if potential_energy is None:
        return
    potential_energy = np.asarray(potential_energy)
    if np.all(np.isfinite(potential_energy)):
        return
    chain, draw = (int(i) for i in np.argwhere(~np.isfinite(potential_energy))[0])
    values = {k: jnp.asarray(posterior[k][chain, draw]) for k in latents}
    grads = jax.grad(lambda v: log_density(fn, (actions, mask), {}, v)[0])(values)
    bad = _bad_gradients(jax.tree.map(jnp.isnan, grads), jax.tree.map(jnp.isinf, grads), lambda n, m: [label(n)])
    raise _failure(f"{stage} draw {draw} of chain {chain}", potential_energy[chain, draw], bad, "the log density is not finite at an accepted draw")


def _preconditioner(potential, z0, dense: bool, label, progress: bool, steps: int = 300):
    """A short Adam run towards the mode; with ``dense``, the inverse Hessian there.

    Returns ``(z, inverse_mass_matrix or None)``; ``None`` when the Hessian is
    not positive definite (the start is not near a mode). A non-finite loss or
    gradient on the way raises ``FitError``.
    """
    z, _ = _adam(
        potential,
        jax.tree.map(lambda v: v[None], z0),
        0.05,
        steps,
        block=steps,
        stage="NUTS warm start (Adam)",
        label=label,
    )
    z = jax.tree.map(lambda v: v[0], z)
    if not dense:
        return z, None
    flat, unravel = jax.flatten_util.ravel_pytree(z)
    hessian = np.asarray(jax.jit(jax.hessian(lambda f: potential(unravel(f))))(flat), np.float64)
    hessian = 0.5 * (hessian + hessian.T)
    if not np.all(np.isfinite(hessian)):
        return z, None
    eigenvalues, vectors = np.linalg.eigh(hessian)
    if eigenvalues.min() <= 0:
        return z, None
    inverse = (vectors / eigenvalues) @ vectors.T
    return z, jnp.asarray(inverse, flat.dtype)


def init_to_shrunk_sample(site=None, factor: float = 0.1):
    """Initial values for optimisation: a prior draw pulled towards the prior mean,
    ``mean + factor * (draw - mean)``, for sites on the real line (others: the
    prior median). Starts networks with small weights and payoffs near the
    prior's centre, where the likelihood is well behaved."""
    import functools

    from numpyro.distributions import constraints

    if site is None:
        return functools.partial(init_to_shrunk_sample, factor=factor)
    if site["type"] != "sample" or site["is_observed"]:
        return None
    value = init_to_sample(site)
    distribution = site["fn"]
    support = distribution.support
    base = getattr(support, "base_constraint", support)
    if base is not constraints.real:
        return init_to_median(site)
    try:
        mean = distribution.mean
    except NotImplementedError:
        return value
    return mean + factor * (value - mean)


def run_nuts(
    fn,
    actions,
    mask,
    key,
    *,
    num_chains: int = 4,
    num_warmup: int = 500,
    num_samples: int = 500,
    target_accept: float = 0.8,
    dense_mass: bool | None = None,
    max_tree_depth: int = 10,
    progress: bool = True,
    chain_method: str | None = None,
):
    """NUTS (Hoffman & Gelman 2014) with NumPyro; dense mass for small models.

    Warmup starts from a short MAP run (Adam) and, for dense-mass models, from the
    inverse Hessian of the negative log joint there as the initial inverse mass
    matrix, so early warmup does not spend thousands of leapfrog steps learning
    the posterior's scales (a well-scaled start; adaptation then goes on as usual).
    """
    k_init, k_run = jax.random.split(key)
    info0 = _initialize(k_init, fn, actions, mask, init_to_median, "NUTS")
    flat0, _ = jax.flatten_util.ravel_pytree(info0.param_info.z)
    dim = int(flat0.size)
    if dense_mass is None:
        dense_mass = dim <= DENSE_MASS_MAX_DIM
    if chain_method is None:
        chain_method = "parallel" if jax.local_device_count() >= num_chains > 1 else "sequential"
    z_start, inverse_mass = _preconditioner(info0.potential_fn, info0.param_info.z, dense_mass, _site_labeller(fn), progress)
    kernel = NUTS(
        fn,
        dense_mass=dense_mass,
        target_accept_prob=target_accept,
        max_tree_depth=max_tree_depth,
        inverse_mass_matrix=inverse_mass,
    )
    mcmc = MCMC(
        kernel,
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        chain_method=chain_method,
        progress_bar=progress,
    )
    start = time.perf_counter()
    init_params = jax.tree.map(lambda v: jnp.broadcast_to(v, (num_chains, *v.shape)), z_start) if num_chains > 1 else z_start
    mcmc.run(k_run, actions, mask, extra_fields=_NUTS_FIELDS, init_params=init_params)
    seconds = time.perf_counter() - start
    posterior = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    fields = mcmc.get_extra_fields(group_by_chain=True)
    stats = {_STAT_NAMES[k]: np.asarray(v) for k, v in fields.items()}
    _check_draws("NUTS", posterior, stats["lp"], fn, actions, mask, list(info0.param_info.z))
    stats["lp"] = -stats["lp"]
    stats["tree_depth"] = np.floor(np.log2(stats["n_steps"])).astype(int) + 1
    info = {
        "num_chains": num_chains,
        "num_warmup": num_warmup,
        "num_samples": num_samples,
        "target_accept": target_accept,
        "dense_mass": bool(dense_mass),
        "chain_method": chain_method,
        "latent_dim": dim,
        "seconds": seconds,
        "mean_leapfrog_steps": float(np.mean(stats["n_steps"])),
        "divergences": int(np.sum(stats["diverging"])),
    }
    return posterior, stats, info


def _predictive_sites(fn, actions, mask, key, guide=None, params=None, num_samples=1, posterior_samples=None):
    """Latent + deterministic sites (no factor) from a guide or given samples."""
    from numpyro import handlers

    trace = handlers.trace(handlers.seed(fn, key)).get_trace(actions, mask)
    names = [n for n, s in trace.items() if (s["type"] == "sample" and not s["is_observed"]) or s["type"] == "deterministic"]
    predictive = Predictive(
        fn,
        guide=guide,
        params=params,
        posterior_samples=posterior_samples,
        num_samples=None if posterior_samples is not None else num_samples,
        return_sites=names,
    )
    return {k: np.asarray(v) for k, v in predictive(key, actions, mask).items()}


def run_svi(
    fn,
    actions,
    mask,
    key,
    *,
    guide: str = "normal",
    steps: int = 2000,
    learning_rate: float = 0.002,
    num_samples: int = 1000,
    rank: int | None = None,
    num_particles: int = 1,
    map_steps: int | None = None,
    map_learning_rate: float = 0.01,
    progress: bool = True,
):
    """Stochastic variational inference: AutoNormal or AutoLowRankMultivariateNormal.

    The guide's means start at a MAP estimate (``map_steps`` Adam steps on the log
    joint, default ``steps // 2``; 0 starts from a shrunk prior draw): the noisy
    ELBO gradient of a large network rarely finds the mode by itself, the
    deterministic MAP objective does (measured on E1 with unit-scale payoff
    differences, 60 x 60 data: relative error 0.64 without the warm start, 0.09
    with it).
    """
    map_steps = steps // 2 if map_steps is None else map_steps
    init_loc = init_to_shrunk_sample
    if map_steps > 0:
        from numpyro.infer import init_to_value

        try:
            mode, _, _ = run_map(fn, actions, mask, key, steps=map_steps, learning_rate=map_learning_rate, restarts=1, progress=progress)
        except FitError as err:
            raise FitError(f"SVI warm start: {err}") from None
        init_loc = init_to_value(values={k: jnp.asarray(v[0, 0]) for k, v in mode.items()})
    if guide == "normal":
        auto = AutoNormal(fn, init_loc_fn=init_loc, init_scale=0.01)
    elif guide == "lowrank":
        auto = AutoLowRankMultivariateNormal(fn, init_loc_fn=init_loc, init_scale=0.01, rank=rank)
    else:
        raise ValueError(f"guide must be 'normal' or 'lowrank', got {guide!r}")
    optimizer = optax_to_numpyro(optax.adam(learning_rate))
    svi = SVI(fn, auto, optimizer, Trace_ELBO(num_particles=num_particles))
    k_run, k_draw = jax.random.split(key)
    start = time.perf_counter()
    params, losses = _svi_steps(svi, auto, fn, actions, mask, k_run, steps, _site_labeller(fn), progress)
    seconds = time.perf_counter() - start
    samples = _predictive_sites(fn, actions, mask, k_draw, guide=auto, params=params, num_samples=num_samples)
    posterior = {k: v[None] for k, v in samples.items()}
    info = {
        "guide": guide,
        "steps": steps,
        "map_steps": map_steps,
        "learning_rate": learning_rate,
        "num_samples": num_samples,
        "seconds": seconds,
        "final_elbo": float(-np.mean(losses[-max(1, steps // 20) :])),
        "elbo_trace": (-losses[:: max(1, steps // 200)]).tolist(),
    }
    return posterior, None, info


def _guide_sites(auto, label):
    """Guide parameter name (and its non-finite mask) -> the model sites it belongs to."""

    def sites(name, mask):
        for suffix in ("_auto_loc", "_auto_scale"):
            if name.endswith(suffix):
                return [label(name[: -len(suffix)])]
        unpack = getattr(auto, "_unpack_latent", None)
        mask = np.asarray(mask)
        if unpack is not None and mask.ndim >= 1:  # a flat latent vector (lowrank): split it by site
            try:
                parts = unpack(jnp.asarray(mask.reshape(mask.shape[0], -1).any(axis=1), jnp.float32))
                return [label(site) for site, flags in parts.items() if np.any(np.asarray(flags))]
            except (ValueError, TypeError):
                pass
        return [f"{name} (guide)"]

    return sites


def _svi_steps(svi, auto, fn, actions, mask, key, steps: int, label, progress: bool, block: int = 100):
    """``steps`` SVI updates (Adam on the ELBO) in jitted blocks of ``block``.

    Each step is NumPyro's ``SVI.update`` (the loss of ``svi.loss`` at the
    constrained guide parameters, its gradient, one optimiser update) with the
    loss and gradient watched for non-finite values inside the loop; the host
    looks once per block and stops with ``FitError`` at the first bad step.
    Returns ``(constrained guide params, losses (steps,))``.
    """
    from tqdm.auto import tqdm

    state = svi.init(key, actions, mask)
    params0 = svi.optim.get_params(state.optim_state)

    def loss_of(params, rng_key):
        return svi.loss.loss(rng_key, svi.constrain_fn(params), fn, auto, actions, mask)

    loss_dtype = jax.eval_shape(loss_of, params0, state.rng_key).dtype
    block = max(1, min(block, steps))
    with_value = "value" in inspect.signature(svi.optim.update).parameters  # numpyro >= 0.20 passes the loss

    @jax.jit
    def run_block(state, watch, first):
        def step(carry, t):
            state, watch = carry
            rng_key, rng_step = jax.random.split(state.rng_key)
            params = svi.optim.get_params(state.optim_state)
            loss, grads = jax.value_and_grad(loss_of)(params, rng_step)
            active = t <= steps
            watch = _watch(watch, t, loss, grads, active)
            extra = {"value": loss} if with_value else {}
            new = state._replace(optim_state=svi.optim.update(grads, state.optim_state, **extra), rng_key=rng_key)
            return (jax.tree.map(lambda n, o: jnp.where(active, n, o), new, state), watch), loss

        return jax.lax.scan(step, (state, watch), first + jnp.arange(1, block + 1))

    watch = _watch_start(params0, loss_dtype)
    trace = []
    for b in tqdm(range(-(-steps // block)), desc="SVI", disable=not progress, unit=f"x{block} steps"):
        (state, watch), losses = run_block(state, watch, b * block)
        trace.append(np.asarray(losses))
        _raise_if_bad(watch, "SVI", steps, _guide_sites(auto, label))
    return svi.get_params(state), np.concatenate(trace)[:steps]


def run_map(
    fn,
    actions,
    mask,
    key,
    *,
    steps: int = 2000,
    learning_rate: float = 0.01,
    restarts: int = 4,
    laplace: bool = False,
    num_samples: int = 1000,
    progress: bool = True,
    block: int = 100,
):
    """MAP by optax Adam on the negative log joint (prior as penalty), several restarts.

    The paper's estimator is the maximum-likelihood fit through the learning
    dynamics; with a weak prior this is its MAP version. Restarts start from prior
    draws shrunk towards the prior mean (``init_to_shrunk_sample``: a network
    started at full prior scale lands in poor optima, e.g. relative error 74 vs
    0.09 on E1 with unit-scale differences); the best is kept and the spread of
    the optima is reported. With
    ``laplace=True`` the posterior holds draws from the Laplace approximation
    (Gaussian at the mode in the unconstrained space, covariance = inverse Hessian).
    """
    k_init, k_laplace = jax.random.split(key)
    keys = jax.random.key_data(jax.random.split(k_init, restarts))
    info0 = _initialize(keys, fn, actions, mask, init_to_shrunk_sample, "MAP")
    potential = info0.potential_fn
    num_blocks = max(1, -(-steps // block))
    start = time.perf_counter()
    z, losses = _adam(
        potential,
        info0.param_info.z,
        learning_rate,
        num_blocks * block,
        block=block,
        stage="MAP",
        label=_site_labeller(fn),
        progress=progress,
        desc="MAP (Adam)",
    )
    seconds = time.perf_counter() - start
    finals = np.asarray(jax.vmap(potential)(z))
    best = int(np.nanargmin(finals))
    z_best = jax.tree.map(lambda v: v[best], z)
    postprocess = info0.postprocess_fn
    if laplace:
        flat, unravel = jax.flatten_util.ravel_pytree(z_best)
        hessian = np.asarray(jax.jit(jax.hessian(lambda f: potential(unravel(f))))(flat), np.float64)
        if not np.all(np.isfinite(hessian)):
            rows = ~np.all(np.isfinite(hessian), axis=1)
            names = [_site_labeller(fn)(k) for k, v in unravel(jnp.asarray(rows, flat.dtype)).items() if np.any(np.asarray(v))]
            raise FitError(
                f"MAP (Laplace): the Hessian at the mode is not finite for {', '.join(repr(n) for n in names)}; "
                "the fit stopped (use laplace=False, tighter priors, or float64 (--x64))"
            )
        cov = np.linalg.inv(hessian)
        cov = 0.5 * (cov + cov.T)
        chol = np.linalg.cholesky(cov + 1e-9 * np.eye(cov.shape[0]))
        normal = np.asarray(jax.random.normal(k_laplace, (num_samples, flat.size)))
        flats = np.asarray(flat)[None] + normal @ chol.T
        zs = jax.vmap(unravel)(jnp.asarray(flats, flat.dtype))
        samples = jax.vmap(postprocess)(zs)
    else:
        samples = jax.tree.map(lambda v: v[None], postprocess(z_best))
    posterior = {k: np.asarray(v)[None] for k, v in samples.items()}
    info = {
        "steps": num_blocks * block,
        "learning_rate": learning_rate,
        "restarts": restarts,
        "seconds": seconds,
        "best_restart": best,
        "neg_log_joint": finals.tolist(),
        "optimum_spread": float(np.nanmax(finals) - np.nanmin(finals)),
        "laplace": laplace,
        "loss_trace": losses[best, :: max(1, steps // 200)].tolist(),
    }
    return posterior, None, info
