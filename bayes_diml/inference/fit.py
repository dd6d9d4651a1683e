"""``bayes_diml.fit``: one entry point for NUTS, SVI and MAP, returning a ``Fit``."""

from __future__ import annotations

import inspect
import time

import jax
import numpy as np

from .._random import as_key
from ..errors import DataError, FitError
from ..likelihood import as_arrays
from ..model import Model
from ..sharding import shard_episodes, shard_padded, to_host, use_sharding
from .numpyro_model import check_identifiable_setup, check_minibatch, draws_log_likelihoods, model_function, observed_payoffs
from .results import Fit
from .samplers import run_map, run_nuts, run_svi

__all__ = ["fit", "METHODS"]

METHODS = {"nuts": run_nuts, "svi": run_svi, "map": run_map}


def fit(
    model: Model,
    data,
    method: str = "nuts",
    seed=0,
    *,
    posterior_predictive_draws: int = 200,
    round_chunk: int | None = None,
    shard: bool | None = None,
    **options,
) -> Fit:
    """Posterior over the mechanism (and unknown learner parameters) given observed play.

    Args:
        model: from ``read_spec`` or built in Python.
        data: ``Trajectories`` (validated against the model first).
        method: ``"nuts"`` (options: ``num_chains``, ``num_warmup``, ``num_samples``,
            ``target_accept``, ``max_tree_depth``, ``chain_method``, and ``dense_mass``:
            ``None`` (default) = a dense mass matrix for models with at most
            ``samplers.DENSE_MASS_MAX_DIM`` (1000) unconstrained coordinates, taken
            from the Hessian at the posterior mode and refined during warmup
            (``samplers.run_nuts``), ``True`` / ``False`` to force or refuse it),
            ``"svi"`` (``guide`` = ``"normal"`` | ``"lowrank"``, ``steps``,
            ``learning_rate``, ``num_samples``, ``rank``, ``num_particles``,
            ``batch_episodes`` for minibatches of episodes on large data sets) or
            ``"map"`` (``steps``, ``learning_rate``, ``restarts``, ``laplace``,
            ``num_samples``).
        seed: an int or a JAX key; recorded in the result.
        posterior_predictive_draws: draws used for the posterior predictive
            action frequencies (at most this many, spread over all draws).
        round_chunk: checkpoint the likelihood's recursion over chunks of this
            many rounds (bounded gradient memory for long horizons, same
            posterior; see ``bayes_diml.likelihood.episode_log_likelihood``).
        shard: split the episodes over all devices (``bayes_diml.sharding``,
            ``docs/scaling.md``); ``None`` = when more than one device exists.
            NUTS runs its chains one per device instead when there are at least
            as many devices as chains, and minibatch SVI (``batch_episodes``) and
            models with per-episode initial propensities (``initial =
            "per_episode"``) run on one device (the data are then not split).
        **options: passed to the method; ``progress=False`` turns progress bars off.

    Returns:
        A ``Fit``.

    Raises:
        FitError: the fit met a non-finite loss, gradient or draw; the message
            names the parameter and the step (or draw).
    """
    from ..loading import check_data

    if method not in METHODS:
        raise DataError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    allowed = [p for p in inspect.signature(METHODS[method]).parameters if p not in ("fn", "actions", "mask", "key", "payoff")]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise DataError(f"fit(method={method!r}): unknown option(s) {unknown}; options: {allowed}")
    if round_chunk is not None:
        from ..likelihood import _check_round_chunk

        round_chunk = _check_round_chunk(round_chunk)
    check_data(data, model)
    check_identifiable_setup(model, data)
    key = as_key(seed)
    k_fit, k_ppc = jax.random.split(key)
    actions, mask = as_arrays(data)
    payoff = observed_payoffs(data)
    num_episodes = actions.shape[0]
    batch_episodes = options.get("batch_episodes")
    if batch_episodes is not None:
        check_minibatch(model)
    sharded = (
        use_sharding(shard)
        and batch_episodes is None
        and model.initial != "per_episode"
        and not _chains_on_devices(method, options)
    )
    if sharded:
        actions, mask = shard_episodes(actions, mask)
        if payoff is not None:  # dummy episodes: nothing observed
            payoff = shard_padded(payoff, np.nan)
    start = time.perf_counter()
    fn = model_function(model, round_chunk)
    posterior, stats, info = METHODS[method](fn, actions, mask, k_fit, payoff=payoff, **options)
    info["wall_seconds"] = time.perf_counter() - start
    info["method"] = method
    info["round_chunk"] = round_chunk
    info["seed"] = seed if isinstance(seed, int) else np.asarray(jax.random.key_data(key)).tolist()
    result = Fit(model=model, data=data, method=method, posterior=posterior, sample_stats=stats, info=info)
    _check_finite(result)
    info["sharded"] = sharded
    pointwise = draws_log_likelihoods(
        model, result.params_draws(), actions, mask, payoff, round_chunk=round_chunk, episode_batch=batch_episodes
    )
    result.log_likelihood = to_host(pointwise)[:, :num_episodes].reshape(result.num_chains, result.num_draws, -1)
    result.posterior_predictive = result.simulate_frequencies(k_ppc, max_draws=posterior_predictive_draws)
    return result


def _chains_on_devices(method: str, options: dict) -> bool:
    """Whether NUTS runs its chains in parallel, one per device (then the data stay whole)."""
    if method != "nuts":
        return False
    from .samplers import nuts_chain_method

    return nuts_chain_method(options.get("num_chains", 4), options.get("chain_method")) == "parallel"


def _check_finite(result: Fit) -> None:
    for name, values in result.posterior.items():
        values = np.asarray(values)
        if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
            where = np.argwhere(~np.isfinite(values))[0]
            raise FitError(
                f"{result.method}: parameter '{name}' is not finite at draw {int(where[1])} of chain {int(where[0])}; "
                "the fit stopped (try a smaller step size / learning rate, tighter priors, or float64 (--x64))"
            )
