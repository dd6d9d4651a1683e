"""The model's negative log joint in its unconstrained coordinates, and what the runners
share around it: starting points, constraining draws, the runners' typed result.

The runners keep every jitted function at module level, keyed on hashable static
arguments (the model function from ``numpyro_model.model_function``, a cached optimiser,
a cached ``SVI`` object) and take the data as arguments: a second fit on data of the same
shape reuses the compiled likelihood and gradient instead of tracing new closures. The
model's arguments are ``(actions, mask, payoff)`` (``payoff``: observed payoffs, NaN where
unobserved, or ``None``).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpyro import handlers
from numpyro.infer import init_to_median, init_to_sample
from numpyro.infer.util import constrain_fn, potential_energy, unconstrain_fn

from .watch import _bad_gradients, _failure, _site_labeller

__all__ = ["SamplerResult", "init_to_shrunk_sample"]


class SamplerResult(NamedTuple):
    """What ``run_nuts``, ``run_svi`` and ``run_map`` return.

    ``posterior`` maps every latent and deterministic site to an array with leading
    ``(chain, draw)`` axes; ``stats`` holds NUTS's sample statistics (same leading axes;
    ``None`` for SVI and MAP); ``info`` the run's settings and timings (a dict).
    """

    posterior: dict
    stats: dict | None
    info: dict


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


@functools.partial(jax.jit, static_argnames=("fn",))
def _potentials(fn, z, key, actions, mask, payoff=None):
    return jax.vmap(lambda v: _potential(fn, v, key, actions, mask, payoff))(z)


@functools.partial(jax.jit, static_argnames=("fn",))
def _potential_and_grad(fn, z, actions, mask, payoff=None):
    return jax.value_and_grad(_potential, argnums=1)(fn, z, jax.random.key(0), actions, mask, payoff)


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
