"""The NumPyro model: priors at the edge, the parallel likelihood as one factor.

    theta ~ p(theta)                    (family's parameterisation; gauge-fixed where needed;
                                         [mechanism.known] parameters held as constants)
    learner params: fixed, or ~ prior   (alpha ~ Beta, beta ~ LogNormal, ...)
      per-agent (hierarchical, non-centred):
        T(theta_i) = T(theta_mean) + theta_spread * z_i,  z_i ~ Normal(0, 1),
        theta_mean ~ prior,  theta_spread ~ HalfNormal(per_agent_spread)
      (T maps the prior's support onto the real line; Gelman & Hill 2007, ch. 13;
      non-centring: Papaspiliopoulos, Roberts & Skold 2007)
    Q_0: 0 | q0 ~ Normal(0, s) | q0[e] = q0_mean + q0_spread * z[e]  (initial = zero|shared|per_episode)
    log p(actions | theta) = sum_e loglik_e   (jitted, vmap over episodes)
    payoff[e, t, i] ~ Normal(M(a_{e,t})_i, sigma)   for each observed payoff
      an outcome column ([payoff] outcomes, bayes_diml/outcomes.py): payoff[e, t, i] = v(o[e, t, i]),
      v(o) a number or a parameter ~ its [payoff.prior]
    [game] modelled: only modelled agents' actions and payoffs are scored (Model.scored_agents);
      the others' actions enter the counterfactual payoffs as data

Per-episode log-likelihoods (actions and observed payoffs of the episode) are
recomputed after sampling for the ``log_likelihood`` group (dims chain, draw,
episode), so LOO leaves out whole episodes.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from ..errors import DataError, SpecError
from ..likelihood import episode_log_likelihoods as _episodes
from ..model import Model
from ..priors import Prior

__all__ = [
    "numpyro_model",
    "model_function",
    "check_identifiable_setup",
    "fix_gauge",
    "draws_log_likelihoods",
    "observed_payoffs",
    "payoff_log_likelihoods",
    "sample_params",
    "draws_log_prior",
]


def fix_gauge(model: Model, observed_payoffs: bool = False) -> bool:
    """Whether the payoff gauge must be fixed: only for shift-invariant learners (docs/design.md §3),
    and not when observed payoffs pin the levels (an outcome column does too: ``[payoff]
    outcomes`` give at least one outcome a number, ``outcomes.parse_outcome_rule``)."""
    return bool(model.learner.shift_invariant) and not observed_payoffs


def observed_payoffs(data):
    """The data's ``payoff`` column as a float array ``(E, T, n)`` (NaN = not observed),
    or ``None`` when there is none or no entry is observed.

    With an outcome column (``Trajectories.outcome``) the array holds the outcome codes
    instead (``OutcomeColumn.floats``), which ``payoff_log_likelihoods`` maps to payoffs
    through the model's ``[payoff] outcomes`` (``check_data`` makes the two agree)."""
    outcome = getattr(data, "outcome", None)
    payoff = getattr(data, "payoff", None) if outcome is None else outcome.floats()
    if payoff is None:
        return None
    payoff = np.asarray(payoff, float)
    if not np.any(np.isfinite(payoff)):
        return None
    return jnp.asarray(payoff)


def check_identifiable_setup(model: Model, data=None) -> None:
    """Refuse set-ups whose likelihood has a ridge the sampler would crawl along.

    With ``beta`` (the learner's payoff-scale parameter) unknown only
    ``beta * Delta`` is identified (docs/design.md §3): a prior on it, pooled or per agent,
    needs the payoff scale pinned by observed payoffs.
    """
    model.mechanism.check_prior_options(model.mechanism_prior)
    scale = getattr(model.learner, "scale_param", "beta")
    if scale in model.learner_priors and model.outcomes is not None and len(set(model.outcomes.numbers)) < 2:
        raise SpecError(
            f"[learner] {scale} carries a prior, but [payoff] outcomes give fewer than two different numbers, so "
            f"the payoff scale is free: fix {scale} to a number, or give two outcomes numbers (e.g. tie = 1, lose = 0)"
        )
    if scale in model.learner_priors:
        if data is None or observed_payoffs(data) is None:
            raise SpecError(
                f"[learner] {scale} carries a prior, but the payoff scale is free: only {scale} x (payoff "
                f"differences) is identified. Fix {scale} to a number (e.g. {scale} = 3.0), or fit data with an "
                "observed 'payoff' column that pins the scale"
            )


def _per_agent(name: str, prior: Prior, num_agents: int, spread_scale: float):
    """A per-agent parameter under a non-centred hierarchical prior (module docstring).

    The values lie in the prior's support (``T^-1`` maps onto it: exp, a sigmoid, a
    scaled sigmoid for ``uniform(low, high)``), which ``Model`` checks is inside the
    parameter's domain (``c >= 1`` takes a ``uniform`` prior with ``low >= 1``)."""
    base = prior.to_numpyro()
    bijection = dist.transforms.biject_to(base.support)
    mean = numpyro.sample(f"{name}_mean", base)
    spread = numpyro.sample(f"{name}_spread", dist.HalfNormal(spread_scale))
    z = numpyro.sample(f"{name}_z", dist.Normal(0.0, 1.0).expand((num_agents,)).to_event(1))
    return numpyro.deterministic(name, bijection(bijection.inv(mean) + spread * z))


def _sample_initial(model: Model, num_episodes: int):
    """``Q_0`` under ``model.initial`` (``shared``: ``(n, A)``; ``per_episode``: ``(E, n, A)``).

    Shift-invariant learners see ``Q_0`` only up to a constant per agent (softmax), so
    their action 0 is pinned at 0, like the payoff gauge (docs/design.md §3).
    """
    n, A = model.num_agents, model.num_actions
    gauge = bool(model.learner.shift_invariant)
    free = A - 1 if gauge else A
    scale = model.initial_scale

    def pad(x):
        return jnp.concatenate([jnp.zeros((*x.shape[:-1], 1), x.dtype), x], axis=-1) if gauge else x

    if model.initial == "shared":
        q0 = numpyro.sample("q0_free", dist.Normal(0.0, scale).expand((n, free)).to_event(2))
        return numpyro.deterministic("q0", pad(q0))
    mean = numpyro.sample("q0_mean_free", dist.Normal(0.0, scale).expand((n, free)).to_event(2))
    spread = numpyro.sample("q0_spread", dist.HalfNormal(scale))
    z = numpyro.sample("q0_z", dist.Normal(0.0, 1.0).expand((num_episodes, n, free)).to_event(3))
    numpyro.deterministic("q0_mean", pad(mean))
    return numpyro.deterministic("q0", pad(mean[None] + spread * z))


def sample_params(model: Model, num_episodes: int | None = None, observed: bool = False) -> dict:
    """Sample every unknown under NumPyro; returns the natural params PyTree.

    ``num_episodes`` is needed for ``initial = "per_episode"``; ``observed`` says
    whether observed payoffs enter (they pin the payoff levels: no gauge, and a
    ``payoff_sigma`` entry).
    """
    mechanism = model.mechanism.sample_prior_known(
        model.mechanism_prior, fix_gauge(model, observed), model.mechanism_known
    )
    learner = dict(model.fixed_learner_params)
    for name, prior in model.learner_priors.items():
        if name in model.per_agent:
            learner[name] = _per_agent(name, prior, model.num_agents, model.per_agent_spread)
        else:
            learner[name] = numpyro.sample(name, prior.to_numpyro())
    params = {"mechanism": mechanism, "learner": learner}
    if model.learned_initial:
        if model.initial == "per_episode" and num_episodes is None:
            raise ValueError("initial = 'per_episode' needs num_episodes")
        params["initial"] = _sample_initial(model, num_episodes)
    if observed:
        sigma = model.payoff_sigma
        params["payoff_sigma"] = numpyro.sample("payoff_sigma", sigma.to_numpyro()) if isinstance(sigma, Prior) else sigma
        if model.outcomes is not None:  # the outcome parameters (e.g. the payoff of a win)
            params["outcome"] = model.outcomes.sample()
    return params


def payoff_log_likelihoods(model: Model, params: dict, actions, mask, payoff):
    """Per-episode log density of the observed payoffs, ``(num_episodes,)``::

        sum_{t, i observed} log Normal(payoff[e, t, i] | M(a_{e,t})_i, sigma)

    ``payoff`` is NaN where not observed; masked entries never count, nor do those of
    unmodelled agents (``Model.scored_agents``). With ``[payoff] outcomes`` it holds
    outcome codes, mapped to ``v(o)`` (``OutcomeRule.payoffs``) with ``params["outcome"]``.
    """
    mechanism = model.mechanism
    present = ~mask
    if model.outcomes is not None:
        payoff = model.outcomes.payoffs(params.get("outcome", {}), payoff)
    realised = jax.vmap(jax.vmap(lambda a, p: mechanism.payoffs(params["mechanism"], a, p)))(actions, present)
    seen = present & jnp.isfinite(payoff)
    if model.scored_agents is not None:
        seen = seen & model.scored_agents
    log_density = dist.Normal(realised, params["payoff_sigma"]).log_prob(jnp.where(seen, payoff, realised))
    return jnp.sum(jnp.where(seen, log_density, 0.0), axis=(1, 2))


@functools.partial(jax.jit, static_argnums=0, static_argnames=("round_chunk",))
def _total_log_likelihood(model: Model, params, actions, mask, round_chunk: int | None = None):
    """Jitted, so that NumPyro's eager evaluations (the initial-value search, one
    value and gradient per chain) compile one program instead of hundreds of
    single operations (E2 NUTS: 650 compilations before, see benchmarks/inference.py)."""
    return jnp.sum(_episodes(model, params, actions, mask, round_chunk=round_chunk))


@functools.partial(jax.jit, static_argnums=0)
def _total_payoff_log_likelihood(model: Model, params, actions, mask, payoff):
    return jnp.sum(payoff_log_likelihoods(model, params, actions, mask, payoff))


def numpyro_model(
    model: Model,
    actions,
    mask,
    payoff=None,
    *,
    round_chunk: int | None = None,
    batch_episodes: int | None = None,
    priors_only: bool = False,
):
    """The NumPyro model (call with ``actions``, ``mask`` of shape ``(E, T, n)``; ``payoff``
    the same shape, NaN where not observed, or ``None``).

    ``round_chunk``: checkpoint the likelihood's rounds in chunks (long horizons;
    see ``bayes_diml.likelihood.episode_log_likelihood``).

    ``priors_only``: sample the priors only (latent and deterministic sites without
    evaluating the likelihood; the data give only the number of episodes and whether
    observed payoffs enter).

    With ``batch_episodes = B`` the likelihood (of the actions and of the observed
    payoffs) is estimated from a random minibatch of ``B`` of the ``E`` episodes (a
    subsampled ``numpyro.plate("episode")``), each term scaled by ``E / B``: an
    unbiased estimate of the full log-likelihood,

        E_S[(E / B) sum_{e in S} loglik_e] = sum_e loglik_e,   S uniform of size B,

    so only ``B`` episodes' payoffs are ever computed at once (Hoffman et al.
    2013, stochastic variational inference). Per-episode initial propensities
    (``initial = "per_episode"``) are refused with minibatches.
    """
    if batch_episodes is not None:
        check_minibatch(model)
    params = sample_params(model, num_episodes=actions.shape[0], observed=payoff is not None)
    if priors_only:
        return
    if batch_episodes is None:
        numpyro.factor("log_likelihood", _total_log_likelihood(model, params, actions, mask, round_chunk=round_chunk))
        if payoff is not None:
            numpyro.factor("payoff_log_likelihood", _total_payoff_log_likelihood(model, params, actions, mask, payoff))
        return
    with numpyro.plate("episode", actions.shape[0], subsample_size=batch_episodes) as index:
        a, m = actions[index], mask[index]
        numpyro.factor("log_likelihood", _episodes(model, params, a, m, round_chunk=round_chunk))
        if payoff is not None:
            numpyro.factor("payoff_log_likelihood", payoff_log_likelihoods(model, params, a, m, payoff[index]))


def check_minibatch(model: Model) -> None:
    """Refuse minibatches of episodes with per-episode latent initial propensities."""
    if model.initial == "per_episode":
        raise DataError(
            "batch_episodes (minibatch SVI) cannot be combined with initial = 'per_episode' (a latent Q_0 per "
            "episode); use initial = 'shared' or 'zero', or fit without batch_episodes"
        )


@functools.lru_cache(maxsize=64)
def model_function(model: Model, round_chunk: int | None = None):
    """``numpyro_model`` closed over ``model`` (and ``round_chunk``): the same object for the
    same model, so jitted inference code keyed on it compiles once per data shape, not once
    per fit. The data (``actions, mask, payoff``) stay arguments."""
    return functools.partial(numpyro_model, model, round_chunk=round_chunk)


@functools.partial(jax.jit, static_argnames=("model", "batch_size", "episode_batch", "round_chunk"))
def _draws_log_likelihoods(model, params_draws, actions, mask, payoff, batch_size, episode_batch, round_chunk):
    with_payoff = payoff is not None and "payoff_sigma" in params_draws

    def one(q):
        total = _episodes(model, q, actions, mask, episode_batch=episode_batch, round_chunk=round_chunk)
        if with_payoff:
            total = total + payoff_log_likelihoods(model, q, actions, mask, payoff)
        return total

    return jax.lax.map(one, params_draws, batch_size=batch_size)


def draws_log_likelihoods(
    model: Model,
    params_draws: dict,
    actions,
    mask,
    payoff=None,
    batch_size: int = 64,
    round_chunk: int | None = None,
    episode_batch: int | None = None,
):
    """Per-episode log-likelihood of every draw: ``(num_draws, num_episodes)``.

    ``params_draws`` is the params PyTree with a leading draw axis; draws are
    processed ``batch_size`` at a time (``lax.map``), and with ``episode_batch``
    episodes too, to bound memory. With ``payoff`` (and ``payoff_sigma`` in the
    draws) the observed payoffs' log density of each episode is added. Jitted
    once per model and shape.
    """
    return _draws_log_likelihoods(model, params_draws, actions, mask, payoff, batch_size, episode_batch, round_chunk)


def draws_log_prior(model: Model, posterior: dict, num_episodes: int, observed: bool) -> dict:
    """Log prior density of every draw, per sampled site: ``{site: (chain, draw)}``.

    Each latent site's ``log p(value)`` (summed over its elements) with the draws
    substituted into ``sample_params``; for ArviZ's ``log_prior`` group (power-scaling
    sensitivity, Kallioinen et al. 2024).
    """
    from numpyro import handlers

    seeded = handlers.seed(sample_params, jax.random.PRNGKey(0))

    def trace(values):
        return handlers.trace(handlers.substitute(seeded, data=values)).get_trace(model, num_episodes, observed)

    probe = handlers.trace(seeded).get_trace(model, num_episodes, observed)
    names = [n for n, site in probe.items() if site["type"] == "sample" and not site["is_observed"]]
    names = [n for n in names if n in posterior]
    if not names:
        return {}
    lead = np.shape(posterior[names[0]])[:2]
    flat = {n: jnp.reshape(jnp.asarray(posterior[n]), (-1, *np.shape(posterior[n])[2:])) for n in names}

    def one(values):
        sites = trace(values)
        return {n: jnp.sum(sites[n]["fn"].log_prob(sites[n]["value"])) for n in names}

    out = jax.jit(lambda v: jax.lax.map(one, v, batch_size=256))(flat)
    return {n: np.asarray(v).reshape(lead) for n, v in out.items()}
