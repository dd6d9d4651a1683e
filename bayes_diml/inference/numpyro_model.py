"""The NumPyro model: priors at the edge, the parallel likelihood as one factor.

    theta ~ p(theta)                    (family's gauge-fixed parameterisation)
    learner params: fixed, or ~ prior   (alpha ~ Beta, beta ~ LogNormal, ...)
    log p(data | theta) = sum_e loglik_e   (jitted, vmap over episodes)

Per-episode log-likelihoods are recomputed after sampling for the
``log_likelihood`` group (dims chain, draw, episode), so LOO leaves out whole
episodes.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpyro

from ..errors import SpecError
from ..likelihood import episode_log_likelihoods as _episodes
from ..model import Model

__all__ = ["numpyro_model", "check_identifiable_setup", "fix_gauge", "draws_log_likelihoods"]


def fix_gauge(model: Model) -> bool:
    """Whether the payoff gauge must be fixed: only for shift-invariant learners (DESIGN §3)."""
    return bool(model.learner.shift_invariant)


def check_identifiable_setup(model: Model, data=None) -> None:
    """Refuse set-ups whose likelihood has a ridge the sampler would crawl along.

    With ``beta`` unknown only ``beta * Delta`` is identified (DESIGN §3): a
    prior on ``beta`` needs the payoff scale pinned by observed payoffs.
    """
    model.mechanism.check_prior_options(model.mechanism_prior)
    if "beta" in model.learner_priors:
        has_payoff = data is not None and getattr(data, "payoff", None) is not None
        if not has_payoff:
            raise SpecError(
                "[learner] beta carries a prior, but the payoff scale is free: only beta x (payoff "
                "differences) is identified. Fix beta to a number (e.g. beta = 3.0), or fit data with an "
                "observed 'payoff' column that pins the scale"
            )


def sample_params(model: Model) -> dict:
    """Sample every unknown under NumPyro; returns the natural params PyTree."""
    mechanism = model.mechanism.sample_prior(model.mechanism_prior, fix_gauge(model))
    learner = dict(model.fixed_learner_params)
    for name, prior in model.learner_priors.items():
        learner[name] = numpyro.sample(name, prior.to_numpyro())
    return {"mechanism": mechanism, "learner": learner}


@functools.partial(jax.jit, static_argnums=0, static_argnames=("round_chunk",))
def _total_log_likelihood(model: Model, params, actions, mask, round_chunk: int | None = None):
    """Jitted, so that NumPyro's eager evaluations (the initial-value search, one
    value and gradient per chain) compile one program instead of hundreds of
    single operations (E2 NUTS: 650 compilations before, see benchmarks/inference.py)."""
    return jnp.sum(_episodes(model, params, actions, mask, round_chunk=round_chunk))


def numpyro_model(model: Model, actions, mask, *, round_chunk: int | None = None):
    """The NumPyro model (call with ``actions``, ``mask`` of shape ``(E, T, n)``).

    ``round_chunk``: checkpoint the likelihood's rounds in chunks (long horizons;
    see ``bayes_diml.likelihood.episode_log_likelihood``).
    """
    params = sample_params(model)
    numpyro.factor("log_likelihood", _total_log_likelihood(model, params, actions, mask, round_chunk=round_chunk))


def draws_log_likelihoods(model: Model, params_draws: dict, actions, mask, batch_size: int = 64, round_chunk: int | None = None):
    """Per-episode log-likelihood of every draw: ``(num_draws, num_episodes)``.

    ``params_draws`` is the params PyTree with a leading draw axis; draws are
    processed ``batch_size`` at a time (``lax.map``) to bound memory.
    """
    fn = jax.jit(
        lambda p: jax.lax.map(
            lambda q: _episodes(model, q, actions, mask, round_chunk=round_chunk), p, batch_size=batch_size
        )
    )
    return fn(params_draws)
