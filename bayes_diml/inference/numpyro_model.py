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

__all__ = ["numpyro_model", "model_function", "check_identifiable_setup", "fix_gauge", "draws_log_likelihoods"]


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


@functools.partial(jax.jit, static_argnums=0)
def _total_log_likelihood(model: Model, params, actions, mask):
    """Jitted, so that NumPyro's eager evaluations (the initial-value search, one
    value and gradient per chain) compile one program instead of hundreds of
    single operations (E2 NUTS: 650 compilations before, see benchmarks/inference.py)."""
    return jnp.sum(_episodes(model, params, actions, mask))


def numpyro_model(model: Model, actions, mask, batch_episodes: int | None = None):
    """The NumPyro model (call with ``actions``, ``mask`` of shape ``(E, T, n)``).

    With ``actions=None`` only the priors are sampled (for drawing latent and
    deterministic sites without touching the data). With ``batch_episodes = B``
    the likelihood is estimated from a random minibatch of ``B`` of the ``E``
    episodes (a subsampled ``numpyro.plate("episode")``), each term scaled by
    ``E / B``: an unbiased estimate of the full log-likelihood,

        E_S[(E / B) sum_{e in S} loglik_e] = sum_e loglik_e,   S uniform of size B,

    so only ``B`` episodes' payoffs are ever computed at once (Hoffman et al.
    2013, stochastic variational inference).
    """
    params = sample_params(model)
    if actions is None:
        return
    if batch_episodes is None:
        numpyro.factor("log_likelihood", _total_log_likelihood(model, params, actions, mask))
        return
    with numpyro.plate("episode", actions.shape[0], subsample_size=batch_episodes) as index:
        numpyro.factor("log_likelihood", _episodes(model, params, actions[index], mask[index]))


@functools.lru_cache(maxsize=64)
def model_function(model: Model):
    """``numpyro_model`` closed over ``model``: the same object for the same model, so
    jitted inference code keyed on it compiles once per data shape, not once per fit."""
    return functools.partial(numpyro_model, model)


@functools.partial(jax.jit, static_argnames=("model", "batch_size", "episode_batch"))
def _draws_log_likelihoods(model, params_draws, actions, mask, batch_size, episode_batch):
    one = lambda q: _episodes(model, q, actions, mask, episode_batch=episode_batch)  # noqa: E731
    return jax.lax.map(one, params_draws, batch_size=batch_size)


def draws_log_likelihoods(
    model: Model, params_draws: dict, actions, mask, batch_size: int = 64, episode_batch: int | None = None
):
    """Per-episode log-likelihood of every draw: ``(num_draws, num_episodes)``.

    ``params_draws`` is the params PyTree with a leading draw axis; draws are
    processed ``batch_size`` at a time (``lax.map``), and with ``episode_batch``
    episodes too, to bound memory. Jitted once per model and shape.
    """
    return _draws_log_likelihoods(model, params_draws, actions, mask, batch_size, episode_batch)
