"""``bayes_diml.fit``: one entry point for NUTS, SVI and MAP, returning a ``Fit``."""

from __future__ import annotations

import inspect
import time

import jax
import numpy as np

from .._random import as_key
from ..errors import DataError
from ..likelihood import as_arrays
from ..model import Model
from ..sharding import shard_episodes, to_host, use_sharding
from .numpyro_model import check_identifiable_setup, draws_log_likelihoods, model_function
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
    shard: bool | None = None,
    **options,
) -> Fit:
    """Posterior over the mechanism (and unknown learner parameters) given observed play.

    Args:
        model: from ``read_spec`` or built in Python.
        data: ``Trajectories`` (validated against the model first).
        method: ``"nuts"`` (options: ``num_chains``, ``num_warmup``, ``num_samples``,
            ``target_accept``, ``dense_mass``, ``max_tree_depth``, ``chain_method``),
            ``"svi"`` (``guide`` = ``"normal"`` | ``"lowrank"``, ``steps``,
            ``learning_rate``, ``num_samples``, ``rank``, ``num_particles``,
            ``batch_episodes`` for minibatches of episodes on large data sets) or
            ``"map"`` (``steps``, ``learning_rate``, ``restarts``, ``laplace``,
            ``num_samples``).
        seed: an int or a JAX key; recorded in the result.
        posterior_predictive_draws: draws used for the posterior predictive
            action frequencies (at most this many, spread over all draws).
        shard: split the episodes over all devices (``bayes_diml.sharding``,
            ``docs/scaling.md``); ``None`` = when more than one device exists.
            NUTS runs its chains one per device instead when there are at least
            as many devices as chains, and minibatch SVI (``batch_episodes``) runs
            on one device (the data are then not split).
        **options: passed to the method; ``progress=False`` turns progress bars off.

    Returns:
        A ``Fit``.
    """
    from ..loading import check_data

    if method not in METHODS:
        raise DataError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    allowed = [p for p in inspect.signature(METHODS[method]).parameters if p not in ("fn", "actions", "mask", "key")]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise DataError(f"fit(method={method!r}): unknown option(s) {unknown}; options: {allowed}")
    check_data(data, model)
    check_identifiable_setup(model, data)
    key = as_key(seed)
    k_fit, k_ppc = jax.random.split(key)
    actions, mask = as_arrays(data)
    num_episodes = actions.shape[0]
    batch_episodes = options.get("batch_episodes")
    sharded = use_sharding(shard) and batch_episodes is None and not _chains_on_devices(method, options)
    if sharded:
        actions, mask = shard_episodes(actions, mask)
    start = time.perf_counter()
    posterior, stats, info = METHODS[method](model_function(model), actions, mask, k_fit, **options)
    info["wall_seconds"] = time.perf_counter() - start
    info["method"] = method
    info["seed"] = seed if isinstance(seed, int) else np.asarray(jax.random.key_data(key)).tolist()
    result = Fit(model=model, data=data, method=method, posterior=posterior, sample_stats=stats, info=info)
    _check_finite(result)
    info["sharded"] = sharded
    pointwise = draws_log_likelihoods(model, result.params_draws(), actions, mask, episode_batch=batch_episodes)
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
            raise FloatingPointError(
                f"{result.method}: parameter '{name}' is not finite at (chain, draw) = {tuple(where[:2])}; "
                "the fit diverged (try a smaller step size / learning rate, or tighter priors)"
            )
