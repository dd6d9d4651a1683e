"""The three inference methods behind ``bayes_diml.fit``: NUTS, SVI and MAP.

Each runner takes the NumPyro model (closed over the ``Model``), the data
arrays and a key, and returns ``(posterior, sample_stats, info)`` where
``posterior`` maps every latent and deterministic site to an array with leading
``(chain, draw)`` axes. The model's arguments are ``(actions, mask, payoff)``
(``payoff``: observed payoffs, NaN where unobserved, or ``None``).

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
from numpyro.infer import MCMC, NUTS, SVI, Trace_ELBO, init_to_median, init_to_sample
from numpyro.infer.autoguide import AutoLowRankMultivariateNormal, AutoNormal
from numpyro import handlers
from numpyro.infer.util import constrain_fn, log_density, potential_energy, unconstrain_fn
from numpyro.optim import optax_to_numpyro

from ..errors import FitError

__all__ = ["run_nuts", "run_svi", "run_map", "nuts_chain_method", "init_to_shrunk_sample", "DENSE_MASS_MAX_DIM"]

DENSE_MASS_MAX_DIM = 1000
"""Models with at most this many unconstrained coordinates get a dense mass matrix by default
(its Hessian costs ``d`` Hessian-vector products and its ``d x d`` matrix-vector product
per leapfrog step is small next to the likelihood's gradient)."""

ADAPTED_DENSE_MAX_DIM = 200
"""Up to this many coordinates a dense mass matrix is NumPyro's own windowed adaptation,
started from the inverse Hessian at the warm start; above it NUTS runs in the Laplace
frame (``_laplace_frame``), because a sample covariance of a few hundred warmup draws is
singular or noisy beyond a few hundred coordinates."""

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
    hint = hint or "try tighter priors, float64 (--x64), or a smaller learning_rate (an option of fit() in Python)"
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


def _check_draws(stage: str, posterior: dict, potential_energy, fn, args, latents) -> None:
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
    grads = jax.grad(lambda v: log_density(fn, args, {}, v)[0])(values)
    bad = _bad_gradients(jax.tree.map(jnp.isnan, grads), jax.tree.map(jnp.isinf, grads), lambda n, m: [label(n)])
    raise _failure(f"{stage} draw {draw} of chain {chain}", potential_energy[chain, draw], bad, "the log density is not finite at an accepted draw")


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


# ------------------------------------------------------------------ compiled once per model and shape
# The runners below keep every jitted function at module level, keyed on hashable static
# arguments (the model function from ``numpyro_model.model_function``, a cached optimiser,
# a cached ``SVI`` object) and take the data as arguments: a second fit on data of the same
# shape reuses the compiled likelihood and gradient instead of tracing new closures.


@functools.lru_cache(maxsize=32)
def _adam(learning_rate: float):
    return optax.adam(learning_rate)


def _loss_dtype():
    return jax.dtypes.canonicalize_dtype(jnp.float64)  # float32 unless x64 is on


def _priors_only(fn):
    """``fn`` sampling its priors only (``numpyro_model(..., priors_only=True)``): the data
    set only shapes (the number of episodes) and whether observed payoffs enter."""
    return functools.partial(fn, priors_only=True)


def _potential(fn, z, key, actions, mask, payoff=None):
    """Negative log joint at unconstrained ``z``; ``key`` draws the minibatch when ``fn`` subsamples."""
    return potential_energy(handlers.seed(fn, key), (actions, mask, payoff), {}, z)


def _latent_values(trace) -> dict:
    return {n: s["value"] for n, s in trace.items() if s["type"] == "sample" and not s["is_observed"]}


@functools.partial(jax.jit, static_argnames=("fn", "init_strategy"))
def _prior_starts(fn, keys, actions, mask, payoff=None, init_strategy=None):
    """Unconstrained starting points, one per key (``init_strategy``, by default
    ``init_to_shrunk_sample``, applied to the priors only: the likelihood is not evaluated)."""
    prior = _priors_only(fn)
    args = (actions, mask, payoff)

    def one(key):
        strategy = init_to_shrunk_sample if init_strategy is None else init_strategy
        seeded = handlers.substitute(handlers.seed(prior, key), substitute_fn=strategy)
        values = _latent_values(handlers.trace(seeded).get_trace(*args))
        return unconstrain_fn(prior, args, {}, values)

    return jax.vmap(one)(keys)


@functools.partial(jax.jit, static_argnames=("fn",))
def _constrain(fn, z, actions, mask, payoff=None):
    """Latent and deterministic sites from unconstrained draws with a leading axis."""
    prior = _priors_only(fn)
    return jax.vmap(lambda v: constrain_fn(prior, (actions, mask, payoff), {}, v, return_deterministic=True))(z)


@functools.partial(jax.jit, static_argnames=("fn", "optimizer", "block"))
def _map_block(fn, optimizer, block, z, state, watch, first, num_active, keys, actions, mask, payoff=None):
    """``block`` Adam steps on the negative log joint for every restart (leading axis),
    steps ``first + 1 .. first + block``; steps after ``first + num_active`` leave ``z``
    unchanged. Every step's loss and gradient go through the non-finite watch."""

    def run(z, state, watch, key):
        def step(carry, inputs):
            z, state, watch = carry
            i, k = inputs
            loss, grad = jax.value_and_grad(_potential, argnums=1)(fn, z, k, actions, mask, payoff)
            active = i < num_active
            watch = _watch(watch, first + i + 1, loss, grad, active)
            updates, new_state = optimizer.update(grad, state, z)
            keep = lambda new, old: jnp.where(active, new, old)  # noqa: E731
            return (jax.tree.map(keep, optax.apply_updates(z, updates), z), jax.tree.map(keep, new_state, state), watch), loss

        return jax.lax.scan(step, (z, state, watch), (jnp.arange(block), jax.random.split(key, block)))

    (z, state, watch), losses = jax.vmap(run)(z, state, watch, keys)
    return z, state, watch, losses


@functools.partial(jax.jit, static_argnames=("fn",))
def _potentials(fn, z, key, actions, mask, payoff=None):
    return jax.vmap(lambda v: _potential(fn, v, key, actions, mask, payoff))(z)


@functools.partial(jax.jit, static_argnames=("fn",))
def _potential_and_grad(fn, z, actions, mask, payoff=None):
    return jax.value_and_grad(_potential, argnums=1)(fn, z, jax.random.key(0), actions, mask, payoff)


HESSIAN_CHUNK = 32
"""Hessian columns computed together (``_potential_hessian``): bounds its memory to that
many gradients' worth of the likelihood's intermediates."""


@functools.partial(jax.jit, static_argnames=("fn",))
def _potential_hessian(fn, z, actions, mask, payoff=None):
    """Hessian of the negative log joint at unconstrained ``z`` (flattened as ``ravel_pytree``),
    column by column as forward-over-reverse Hessian-vector products, ``HESSIAN_CHUNK``
    columns at a time."""
    flat, unravel = jax.flatten_util.ravel_pytree(z)
    grad = jax.grad(lambda f: _potential(fn, unravel(f), jax.random.key(0), actions, mask, payoff))
    column = lambda e: jax.jvp(grad, (flat,), (e,))[1]  # noqa: E731
    eye = jnp.eye(flat.size, dtype=flat.dtype)
    return jax.lax.map(column, eye, batch_size=min(HESSIAN_CHUNK, flat.size))


@functools.lru_cache(maxsize=32)
def _svi_program(fn, guide: str, rank: int | None, learning_rate: float, num_particles: int, num_episodes: int) -> SVI:
    """One ``SVI`` object per configuration (its jitted step is keyed on it).

    ``num_episodes`` is part of the key: the guide is set up once from a trace of the model
    on data of that size (with minibatches, the full size of the subsampled ``episode`` plate)."""
    if guide == "normal":
        auto = AutoNormal(fn, init_loc_fn=init_to_shrunk_sample, init_scale=0.01)
    elif guide == "lowrank":
        auto = AutoLowRankMultivariateNormal(fn, init_loc_fn=init_to_shrunk_sample, init_scale=0.01, rank=rank)
    else:
        raise ValueError(f"guide must be 'normal' or 'lowrank', got {guide!r}")
    return SVI(fn, auto, optax_to_numpyro(optax.adam(learning_rate)), Trace_ELBO(num_particles=num_particles))


@functools.partial(jax.jit, static_argnames=("svi", "block"))
def _svi_block(svi, block, state, num_active, actions, mask, payoff=None, watch=None, first=0):
    """``block`` SVI steps (steps ``first + 1 .. first + block``) in one call; steps
    ``>= num_active`` leave the state unchanged (the last, shorter block is masked rather
    than compiled as a second length).

    Each step is NumPyro's ``SVI.update`` (the ELBO loss at the constrained guide
    parameters, its gradient, one optimiser update) written out so that the loss and
    gradient go through the non-finite watch. Returns ``((state, watch), losses)``.
    """
    args = (actions, mask, payoff)
    with_value = "value" in inspect.signature(svi.optim.update).parameters  # numpyro >= 0.20 passes the loss

    def loss_of(params, rng_key):
        return svi.loss.loss(rng_key, svi.constrain_fn(params), svi.model, svi.guide, *args)

    if watch is None:
        watch = _watch_start(svi.optim.get_params(state.optim_state), _loss_dtype())

    def step(carry, i):
        state, watch = carry
        rng_key, rng_step = jax.random.split(state.rng_key)
        params = svi.optim.get_params(state.optim_state)
        loss, grads = jax.value_and_grad(loss_of)(params, rng_step)
        active = i < num_active
        watch = _watch(watch, first + i + 1, loss, grads, active)
        extra = {"value": loss} if with_value else {}
        new = state._replace(optim_state=svi.optim.update(grads, state.optim_state, **extra), rng_key=rng_key)
        return (jax.tree.map(lambda a, b: jnp.where(active, a, b), new, state), watch), loss

    return jax.lax.scan(step, (state, watch), jnp.arange(block))


@functools.partial(jax.jit, static_argnames=("svi", "num_samples"))
def _guide_draws(svi, key, params, num_samples, actions, mask, payoff=None):
    """Latent and deterministic sites of ``num_samples`` draws from the fitted guide (priors
    only in the model: the likelihood is not evaluated)."""
    args = (actions, mask, payoff)
    prior = _priors_only(svi.model)

    def one(k):
        k_guide, k_model = jax.random.split(k)
        guide = handlers.seed(handlers.substitute(svi.guide, data=params), k_guide)
        latents = _latent_values(handlers.trace(guide).get_trace(*args))
        model = handlers.seed(handlers.substitute(prior, data=latents), k_model)
        trace = handlers.trace(model).get_trace(*args)
        return {
            n: s["value"]
            for n, s in trace.items()
            if (s["type"] == "sample" and not s["is_observed"]) or s["type"] == "deterministic"
        }

    return jax.vmap(one)(jax.random.split(key, num_samples))


@functools.lru_cache(maxsize=64)
def _subsampled(fn, batch_episodes: int):
    """``fn`` with its likelihood on random minibatches of ``batch_episodes`` episodes."""
    return functools.partial(fn, batch_episodes=batch_episodes)


def _adam_blocks(fn, z, key, args, learning_rate: float, steps: int, block: int, stage: str, progress=False, desc=""):
    """Adam on the negative log joint from ``z`` (leading restart axis, vmapped), ``steps``
    steps in jitted blocks of ``block`` (``_map_block``; the one optimiser loop of MAP, the
    SVI warm start and the NUTS warm start).

    Every step's loss and gradient are checked inside the loop (``_Watch``); the host
    looks once per block and raises ``FitError`` at the first bad step.
    Returns ``(z, losses (restarts, steps))``.
    """
    from tqdm.auto import tqdm

    optimizer = _adam(learning_rate)
    block = max(1, min(block, steps))
    state = jax.vmap(optimizer.init)(z)
    watch = jax.vmap(lambda v: _watch_start(v, _loss_dtype()))(z)
    label = _site_labeller(fn)
    sites = lambda name, mask: [label(name)]  # noqa: E731
    restarts = jax.tree.leaves(z)[0].shape[0]
    trace = []
    num_blocks = -(-steps // block)
    for b in tqdm(range(num_blocks), desc=desc or stage, disable=not progress, unit=f"x{block} steps"):
        keys = jax.random.split(jax.random.fold_in(key, b), restarts)
        z, state, watch, losses = _map_block(fn, optimizer, block, z, state, watch, b * block, min(block, steps - b * block), keys, *args)
        trace.append(np.asarray(losses))
        _raise_if_bad(watch, stage, steps, sites, restarts=True)
    return z, np.concatenate(trace, axis=1)[:, :steps]


def _check_start(fn, z, args, stage: str) -> None:
    """``FitError`` naming the parameters whose gradient is not finite at the start ``z``
    (or saying the log density is not finite there)."""
    value, grads = _potential_and_grad(fn, z, *args)
    nan, inf = jax.tree.map(jnp.isnan, grads), jax.tree.map(jnp.isinf, grads)
    if np.isfinite(float(value)) and not any(bool(jnp.any(n | i)) for n, i in zip(jax.tree.leaves(nan), jax.tree.leaves(inf))):
        return
    label = _site_labeller(fn)
    bad = _bad_gradients(nan, inf, lambda name, m: [label(name)])
    raise _failure(f"{stage} initial point", value, bad, "the model's log density is not finite where the fit starts")


def _warm_start(fn, z0, args, steps: int = 300):
    """``steps`` Adam steps (learning rate 0.05) from ``z0`` towards the mode of the
    posterior; a non-finite loss or gradient on the way raises ``FitError``."""
    z, _ = _adam_blocks(
        fn, jax.tree.map(lambda v: v[None], z0), jax.random.key(0), args, 0.05, steps, steps, "NUTS warm start (Adam)"
    )
    return jax.tree.map(lambda v: v[0], z)


class _Frame(NamedTuple):
    """Affine coordinates ``z = center + basis @ w`` of the unconstrained space.

    ``basis = V diag(|lambda|^(-1/2))`` from the eigendecomposition ``H = V diag(lambda) V^T``
    of the Hessian of the negative log joint at ``center`` (eigenvalues floored at
    ``EIGEN_FLOOR`` times the largest): where the posterior is close to its Laplace
    approximation ``N(center, H^-1)``, ``w`` is close to standard normal.
    """

    center: Any  # (d,)
    basis: Any  # (d, d)
    unravel: Any  # flat (d,) -> the latent PyTree


EIGEN_FLOOR = 1e-8
"""Eigenvalues of the Hessian below this fraction of the largest (in absolute value) are raised to it."""


def _hessian_eigen(fn, z, args):
    """``(eigenvalues, eigenvectors, flat z, unravel)`` of the (symmetrised) Hessian of the
    negative log joint at ``z``, or ``None`` when that Hessian is not finite."""
    flat, unravel = jax.flatten_util.ravel_pytree(z)
    hessian = np.asarray(_potential_hessian(fn, z, *args), np.float64)
    if not np.all(np.isfinite(hessian)):
        return None
    eigenvalues, vectors = np.linalg.eigh(0.5 * (hessian + hessian.T))
    return eigenvalues, vectors, flat, unravel


def _laplace_frame(fn, z, args) -> _Frame | None:
    """The Laplace frame at ``z`` (``_Frame``), or ``None`` when the Hessian there is not finite.

    Eigenvalues are taken in absolute value: at a saddle (e.g. a network whose weights
    all start at 0), a direction of negative curvature keeps its length scale and the
    adaptation in the frame sets its variance.
    """
    eigen = _hessian_eigen(fn, z, args)
    if eigen is None:
        return None
    eigenvalues, vectors, flat, unravel = eigen
    magnitude = np.abs(eigenvalues)
    if magnitude.max() <= 0:
        return None
    magnitude = np.maximum(magnitude, EIGEN_FLOOR * magnitude.max())
    return _Frame(flat, jnp.asarray(vectors / np.sqrt(magnitude), flat.dtype), unravel)


def _inverse_hessian(fn, z, args):
    """The inverse Hessian of the negative log joint at ``z`` (NumPyro's initial inverse
    mass matrix for its dense adaptation), or ``None`` when it is not finite or not
    positive definite (``z`` is not near a mode)."""
    eigen = _hessian_eigen(fn, z, args)
    if eigen is None or eigen[0].min() <= 0:
        return None
    eigenvalues, vectors, flat, _ = eigen
    return jnp.asarray((vectors / eigenvalues) @ vectors.T, flat.dtype)


def _frame_potential(fn, frame: _Frame, args):
    """``w -> `` the negative log joint at ``frame.center + frame.basis @ w`` (the affine
    map's constant log-Jacobian is left out: it does not change the posterior)."""
    key = jax.random.key(0)

    def potential(w):
        return _potential(fn, frame.unravel(frame.center + frame.basis @ w), key, *args)

    return potential


def _frame_starts(fn, frame: _Frame, key, num_chains: int, args):
    """Starting points in the frame, one per chain: standard normal draws (draws of the
    Laplace approximation), each halved up to 4 times until the potential and its
    gradient are finite there, else the centre. Dispersed starts let R-hat see chains
    that do not meet."""
    draws = np.asarray(jax.random.normal(key, (num_chains, frame.center.size), frame.center.dtype))
    starts = np.zeros_like(draws)
    for chain, draw in enumerate(draws):
        for shrink in (1.0, 0.5, 0.25, 0.125, 0.0625):
            z = frame.unravel(frame.center + frame.basis @ jnp.asarray(shrink * draw))
            value, grad = _potential_and_grad(fn, z, *args)
            if np.isfinite(float(value)) and all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree.leaves(grad)):
                starts[chain] = shrink * draw
                break
    return jnp.asarray(starts)


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


def nuts_chain_method(num_chains: int, chain_method: str | None = None) -> str:
    """``chain_method`` for NumPyro's MCMC; ``None`` chooses: ``"parallel"`` (one chain per
    device) when there are at least as many local devices as chains, else ``"vectorized"``
    for several chains (all chains step together, on the data split over the devices when
    there are several), ``"sequential"`` for one chain.

    Vectorised chains wait for the deepest tree of each step, but a batched gradient of
    small models costs little more than one: E2 NUTS, 4 chains x 600 iterations on a
    2-core CPU, 0.027 s vs 0.129 s of sampling per chain-iteration, one compilation
    instead of one per chain (``benchmarks/inference.py``, shared machine)."""
    if chain_method is not None:
        return chain_method
    devices = jax.local_device_count()
    if devices >= num_chains > 1:
        return "parallel"
    return "vectorized" if num_chains > 1 else "sequential"


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
    payoff=None,
):
    """NUTS (Hoffman & Gelman 2014) with NumPyro, preconditioned at the posterior mode.

    Warmup starts from a short MAP run (Adam, ``_warm_start``). With ``dense_mass``
    (default: when the model has at most ``DENSE_MASS_MAX_DIM`` unconstrained
    coordinates) and up to ``ADAPTED_DENSE_MAX_DIM`` coordinates, NumPyro adapts a
    dense mass matrix, starting from the inverse Hessian at the warm start (so early
    warmup does not spend thousands of leapfrog steps learning the posterior's
    scales). With more coordinates NUTS runs in the Laplace frame ``z = z_map + V diag(|lambda|^-1/2) w``
    of the Hessian ``H = V diag(lambda) V^T`` of the negative log joint at the warm
    start (``_laplace_frame``), with a diagonal mass matrix adapted in ``w`` by
    NumPyro's windowed schedule (Stan's). The effective mass matrix in ``z`` is dense,
    ``V diag(|lambda|^1/2) M_w diag(|lambda|^1/2) V^T``; where the posterior is near
    Gaussian, ``w`` is near standard normal and trajectories stay short, and where it
    is not, the per-direction variances along the Hessian's eigenvectors are still
    learned, where NumPyro's dense adaptation (a sample covariance of a few hundred
    warmup draws) would be singular or noisy. Chains then start at dispersed draws of
    the Laplace approximation (``_frame_starts``).

    Measured on the shared 2-core AMD EPYC (load 3-6), 48 x 60 training episodes, 2 chains
    x (400 + 400): E1 data with the tabular family (540 free payoff differences, a
    log-concave posterior): 15 leapfrog steps per iteration, 70-115 s per fit, no
    divergences, 90% coverage of true differences 0.91-0.92 over 3 truth draws; with
    NumPyro's diagonal adaptation it had not finished after 360 s. (E2 congestion, 15
    coordinates, forced into the frame: 7 leapfrog steps per iteration against 14 with
    NumPyro's dense adaptation, 22 s against 49 s, the same posterior; small models keep
    the adapted dense matrix, validated by the calibration study.) Not a cure for every geometry: E3's 64-unit tanh
    subsidy network has a curvature that changes across its posterior (largest
    Hessian eigenvalue 9e3 at the warm start, 5e4 at the true parameters), and NUTS
    still needs hundreds of leapfrog steps per iteration there.

    Without ``dense_mass`` (or where the Hessian is not finite) NUTS samples the model's
    unconstrained coordinates with a diagonal mass matrix, all chains from the warm start.
    """
    args = (actions, mask, payoff)
    k_init, k_run = jax.random.split(key)
    k_starts = jax.random.fold_in(k_init, 1)
    z0 = jax.tree.map(lambda v: v[0], _prior_starts(fn, jax.random.split(k_init, 1), *args, init_strategy=init_to_median))
    _check_start(fn, z0, args, "NUTS")
    dim = int(jax.flatten_util.ravel_pytree(z0)[0].size)
    if dense_mass is None:
        dense_mass = dim <= DENSE_MASS_MAX_DIM
    chain_method = nuts_chain_method(num_chains, chain_method)
    z_start = _warm_start(fn, z0, args)
    frame = _laplace_frame(fn, z_start, args) if dense_mass and dim > ADAPTED_DENSE_MAX_DIM else None
    if frame is not None:
        potential = _frame_potential(fn, frame, args)
        kernel = NUTS(potential_fn=potential, target_accept_prob=target_accept, max_tree_depth=max_tree_depth)
        init_params = _frame_starts(fn, frame, k_starts, num_chains, args)
        init_params = init_params if num_chains > 1 else init_params[0]
        run_args = ()
    else:
        kernel = NUTS(
            fn,
            dense_mass=bool(dense_mass),
            target_accept_prob=target_accept,
            max_tree_depth=max_tree_depth,
            inverse_mass_matrix=_inverse_hessian(fn, z_start, args) if dense_mass else None,
        )
        init_params = jax.tree.map(lambda v: jnp.broadcast_to(v, (num_chains, *v.shape)), z_start) if num_chains > 1 else z_start
        run_args = args
    # NumPyro's sampling loop (``fori_collect``) wraps its body in a fresh ``jax.jit`` on every
    # run, so each NUTS fit compiles that loop once; the warm start above compiles once per shape.
    mcmc = MCMC(
        kernel,
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        chain_method=chain_method,
        progress_bar=progress,
    )
    start = time.perf_counter()
    mcmc.run(k_run, *run_args, extra_fields=_NUTS_FIELDS, init_params=init_params)
    jax.block_until_ready((mcmc.get_samples(), mcmc.get_extra_fields()))  # JAX dispatches asynchronously
    seconds = time.perf_counter() - start
    if frame is not None:
        w = jnp.asarray(mcmc.get_samples(group_by_chain=True)).reshape(num_chains * num_samples, dim)
        zs = jax.vmap(frame.unravel)(frame.center + w @ frame.basis.T)
        posterior = {
            k: np.asarray(v).reshape(num_chains, num_samples, *np.shape(v)[1:]) for k, v in _constrain(fn, zs, *args).items()
        }
    else:
        posterior = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    fields = mcmc.get_extra_fields(group_by_chain=True)
    stats = {_STAT_NAMES[k]: np.asarray(v) for k, v in fields.items()}
    _check_draws("NUTS", posterior, stats["lp"], fn, args, list(z0))
    stats["lp"] = -stats["lp"]
    stats["tree_depth"] = np.floor(np.log2(stats["n_steps"])).astype(int) + 1
    info = {
        "num_chains": num_chains,
        "num_warmup": num_warmup,
        "num_samples": num_samples,
        "target_accept": target_accept,
        "max_tree_depth": max_tree_depth,
        "dense_mass": bool(dense_mass),
        "mass_matrix": "laplace frame" if frame is not None else ("adapted dense" if dense_mass else "adapted diagonal"),
        "chain_method": chain_method,
        "latent_dim": dim,
        "seconds": seconds,
        "mean_leapfrog_steps": float(np.mean(stats["n_steps"])),
        "divergences": int(np.sum(stats["diverging"])),
    }
    return posterior, stats, info


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
    batch_episodes: int | None = None,
    progress: bool = True,
    block: int = 100,
    payoff=None,
):
    """Stochastic variational inference: AutoNormal or AutoLowRankMultivariateNormal.

    The guide's means start at a MAP estimate (``map_steps`` Adam steps on the log
    joint, default ``steps // 2``; 0 starts from a shrunk prior draw): the noisy
    ELBO gradient of a large network rarely finds the mode by itself, the
    deterministic MAP objective does (measured on E1 with unit-scale payoff
    differences, 60 x 60 data: relative error 0.64 without the warm start, 0.09
    with it).

    With ``batch_episodes = B`` every step (of the MAP warm start and of SVI)
    uses a random minibatch of ``B`` episodes with the log-likelihood scaled by
    ``num_episodes / B`` (an unbiased ELBO gradient; ``numpyro_model``), so the
    memory of a step does not grow with the number of episodes. Steps run
    ``block`` at a time in one compiled call (a shorter last block is masked), with
    every step's loss and gradient watched: ``FitError`` at the first non-finite one.
    """
    from tqdm.auto import tqdm

    args = (actions, mask, payoff)
    num_episodes = int(actions.shape[0])
    if batch_episodes is not None:
        if not 1 <= int(batch_episodes) <= num_episodes:
            raise ValueError(f"batch_episodes must be between 1 and the number of episodes ({num_episodes}), got {batch_episodes}")
        fn = _subsampled(fn, int(batch_episodes))
    map_steps = steps // 2 if map_steps is None else map_steps
    k_map, k_init, k_run, k_draw = jax.random.split(key, 4)
    if map_steps > 0:
        try:
            z, _, _, _ = _map_optimize(fn, args, k_map, map_steps, map_learning_rate, 1, block, progress)
        except FitError as err:
            raise FitError(f"SVI warm start: {err}") from None
    else:
        z = _prior_starts(fn, jax.random.split(k_map, 1), *args)
    z = jax.tree.map(lambda v: v[0], z)
    svi = _svi_program(fn, guide, rank, learning_rate, num_particles, num_episodes)
    if svi.guide.prototype_trace is None:
        svi.init(k_init, *args)  # sets the guide up (once per configuration)
    if guide == "normal":
        start_locs = {f"{name}_{svi.guide.prefix}_loc": value for name, value in z.items()}
    else:
        # the low-rank guide's loc is the latents flattened in the guide's own site order
        flat = jnp.concatenate([jnp.reshape(z[name], -1) for name in svi.guide._init_locs])
        start_locs = {f"{svi.guide.prefix}_loc": flat}
    state = svi.init(k_init, *args, init_params=start_locs)
    watch = _watch_start(svi.optim.get_params(state.optim_state), _loss_dtype())
    sites = _guide_sites(svi.guide, _site_labeller(fn))
    block = max(1, min(block, steps))
    num_blocks = -(-steps // block)
    start = time.perf_counter()
    losses = []
    for b in tqdm(range(num_blocks), desc="SVI", disable=not progress, unit=f"x{block} steps"):
        (state, watch), block_losses = _svi_block(svi, block, state, min(block, steps - b * block), *args, watch, b * block)
        losses.append(np.asarray(block_losses))
        _raise_if_bad(watch, "SVI", steps, sites)
    losses = np.concatenate(losses)[:steps]
    seconds = time.perf_counter() - start
    samples = _guide_draws(svi, k_draw, svi.get_params(state), num_samples, *args)
    posterior = {k: np.asarray(v)[None] for k, v in samples.items()}
    info = {
        "guide": guide,
        "steps": steps,
        "map_steps": map_steps,
        "learning_rate": learning_rate,
        "num_samples": num_samples,
        "batch_episodes": batch_episodes,
        "seconds": seconds,
        "final_elbo": float(-np.mean(losses[-max(1, steps // 20) :])),
        "elbo_trace": (-losses[:: max(1, steps // 200)]).tolist(),
    }
    return posterior, None, info


def _map_optimize(fn, args, key, steps, learning_rate, restarts, block, progress):
    """Adam on the negative log joint from ``restarts`` shrunk prior draws, in whole blocks.

    Returns ``(z, finals, trace, num_blocks)``: unconstrained optima (leading restart
    axis), their final objective, the loss trace ``(restarts, num_blocks * block)``.
    """
    k_init, k_steps, k_final = jax.random.split(key, 3)
    z = _prior_starts(fn, jax.random.split(k_init, restarts), *args)
    num_blocks = max(1, -(-steps // block))
    z, trace = _adam_blocks(fn, z, k_steps, args, learning_rate, num_blocks * block, block, "MAP", progress, "MAP (Adam)")
    finals = np.asarray(_potentials(fn, z, k_final, *args))
    return z, finals, trace, num_blocks


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
    payoff=None,
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
    A non-finite loss or gradient stops the fit with ``FitError`` (step and parameter).
    """
    args = (actions, mask, payoff)
    k_opt, k_laplace = jax.random.split(key)
    start = time.perf_counter()
    z, finals, trace, num_blocks = _map_optimize(fn, args, k_opt, steps, learning_rate, restarts, block, progress)
    seconds = time.perf_counter() - start
    best = int(np.nanargmin(finals))
    z_best = jax.tree.map(lambda v: v[best], z)
    if laplace:
        flat, unravel = jax.flatten_util.ravel_pytree(z_best)
        hessian = np.asarray(_potential_hessian(fn, z_best, *args), np.float64)
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
    else:
        zs = jax.tree.map(lambda v: v[None], z_best)
    posterior = {k: np.asarray(v)[None] for k, v in _constrain(fn, zs, *args).items()}
    info = {
        "steps": num_blocks * block,
        "learning_rate": learning_rate,
        "restarts": restarts,
        "seconds": seconds,
        "best_restart": best,
        "neg_log_joint": finals.tolist(),
        "optimum_spread": float(np.nanmax(finals) - np.nanmin(finals)),
        "laplace": laplace,
        "loss_trace": trace[best, ::max(1, steps // 200)].tolist(),
    }
    return posterior, None, info
