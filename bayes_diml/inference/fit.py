"""``bayes_diml.fit``: one entry point for NUTS, SVI, MAP and the Laplace grid (or ``"auto"``, which picks one
per family and size: ``inference.auto``), returning a ``Fit``.

Options per method (``fit(..., **options)``):

* ``"nuts"``: ``num_chains``, ``num_warmup``, ``num_samples``, ``target_accept``,
  ``max_tree_depth``, ``chain_method``, ``warm_start_steps`` and ``dense_mass``: ``None``
  (default) = a dense mass matrix (the Laplace frame of the Hessian at the posterior mode,
  ``nuts.run_nuts``) for models with at most ``nuts.DENSE_MASS_MAX_DIM`` (1000)
  unconstrained coordinates, ``True`` / ``False`` to force or refuse it.
* ``"svi"``: ``guide`` = ``"normal"`` | ``"lowrank"``, ``steps``, ``learning_rate``,
  ``num_samples``, ``rank``, ``num_particles``, ``batch_episodes`` (minibatches of
  episodes on large data sets).
* ``"map"``: ``steps``, ``learning_rate``, ``restarts``, ``laplace``, ``num_samples``.
* ``"laplace_grid"``: ``num_samples``, ``warm_start_steps`` (integrated nested Laplace over
  the payoff scale of a function-space prior: ``laplace_grid.run_laplace_grid``).
"""

from __future__ import annotations

import inspect
import time
import warnings
from typing import NamedTuple

import jax
import numpy as np

from .._random import as_key
from ..errors import DataError, FitError, UncalibratedWarning
from ..likelihood import as_arrays
from ..model import Model
from ..sharding import shard_episodes, shard_padded, to_host, use_sharding
from .auto import calibration_warning, choose_method
from .laplace_grid import approximation_warning, run_laplace_grid
from .map import run_map
from .numpyro_model import check_identifiable_setup, check_minibatch, draws_log_likelihoods, model_function, observed_payoffs
from .nuts import run_nuts
from .potential import SamplerResult
from .results import Fit, draws_params, predictive_frequencies
from .svi import run_svi

__all__ = ["fit", "check_fit_inputs", "METHODS", "AUTO"]

METHODS = {"nuts": run_nuts, "svi": run_svi, "map": run_map, "laplace_grid": run_laplace_grid}

AUTO = "auto"
"""``fit(method="auto")`` (the default): the method ``inference.auto.choose_method`` picks
for the family and size."""


def check_fit_inputs(model: Model, data, source: str = "data") -> None:
    """Every refusal ``fit`` makes from the model and the data alone, before any work:
    the data against the model (``loading.check_data``) and set-ups the likelihood cannot
    identify (``numpyro_model.check_identifiable_setup``). ``bayes-diml check --spec``
    runs the same function, so a spec and data it passes are not refused by ``fit``.

    Raises:
        DataError (``SpecError`` for the spec's part), in one line.
    """
    from ..loading import check_data

    check_data(data, model, source=source)
    check_identifiable_setup(model, data)


def fit(
    model: Model,
    data,
    method: str = AUTO,
    *,
    seed,
    posterior_predictive_draws: int = 200,
    round_chunk: int | None = None,
    shard: bool | None = None,
    accept_uncalibrated: bool = False,
    ppc: bool = True,
    **options,
) -> Fit:
    """Posterior over the mechanism (and unknown learner parameters) given observed play.

    Args:
        model: from ``read_spec`` or built in Python.
        data: ``Trajectories``, or the path (str or ``Path``) of a CSV or Parquet data
            file, read with ``load_data(path, model)``; validated against the model first.
        method: ``"auto"`` (default: ``inference.auto.choose_method`` picks per family
            and size; a caller's options replace the rule's, options the chosen method
            does not take are listed in ``info["options_ignored"]``), ``"nuts"``,
            ``"svi"`` or ``"map"``; each method's options: the module docstring.
        seed: an int or a JAX key (required, keyword only: nothing random happens without
            it); recorded in the result.
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
        accept_uncalibrated: run SVI on a family where its intervals were measured too
            narrow (neural with a prior over the weights, anonymous) without the
            ``UncalibratedWarning`` (``auto.calibration_warning``) that ``fit`` gives
            otherwise (and records in ``info["calibration_warning"]``).
        ppc: record the conditional posterior predictive checks in ``info["ppc"]`` (``_conditional_checks``); ``False`` skips them.
        **options: passed to the method; ``progress=False`` turns progress bars off.

    Returns:
        A ``Fit``; its ``method`` is the method that ran, and ``info`` holds
        ``method``, ``method_requested`` and ``method_reason`` (one sentence).

    Raises:
        FitError: the fit met a non-finite loss, gradient or draw; the message
            names the parameter and the step (or draw).
    """
    requested = method
    if method == AUTO:
        _check_auto_options(options)
    else:
        _check_method_options(method, options)
    round_chunk = _checked_round_chunk(round_chunk)
    data = _checked_inputs(model, data)
    method, options, choice = _resolved(model, data, method, options)
    _check_memory(model, data, method, options)
    warning = _warned(None if accept_uncalibrated else calibration_warning(model, method))
    key = as_key(seed)
    k_fit, k_ppc = jax.random.split(key)
    observed = _observed(model, data, method, options, shard)
    start = time.perf_counter()
    run = _dispatch(method, model_function(model, round_chunk), observed, k_fit, options)
    wall_seconds = time.perf_counter() - start
    warning = _warned(None if accept_uncalibrated else approximation_warning(method, run.info)) or warning
    info = _fit_info(run.info, wall_seconds, method, round_chunk, seed, key, observed.sharded)
    info.update(method_requested=requested, **choice)
    if warning is not None:
        info["calibration_warning"] = warning
    _check_finite(method, run.posterior)
    info.update(_conditional_checks(model, data, run.posterior) if ppc else {})
    return Fit(
        model=model, data=data, method=method, posterior=run.posterior, sample_stats=run.stats, info=info,
        log_likelihood=_pointwise_log_likelihood(model, data, run.posterior, observed, round_chunk, options.get("batch_episodes")),
        posterior_predictive=predictive_frequencies(model, data, run.posterior, k_ppc, max_draws=posterior_predictive_draws),
    )


def _warned(message: str | None) -> str | None:
    """``message``, given as an ``UncalibratedWarning`` to ``fit``'s caller unless ``None``:
    a family's intervals measured too narrow (``auto.calibration_warning``, before the
    run) or an approximation whose own check failed (``laplace_grid.approximation_warning``)."""
    if message is not None:
        warnings.warn(message, UncalibratedWarning, stacklevel=3)
    return message


def _conditional_checks(model: Model, data, posterior: dict) -> dict:
    """``{"ppc": ...}``: the conditional posterior predictive checks (``inference.ppc``; stay /
    switch, opponent, outcome) as JSON data, with a ``MisfitWarning`` when a table fails
    (``bayes_diml.ppc(fit)`` runs them on a fit made with ``ppc=False``)."""
    from .ppc import fit_checks

    return {"ppc": fit_checks(model, data, posterior)}


class _Observed(NamedTuple):
    """The data as the samplers take them: ``actions`` and ``mask`` (split over the devices
    when ``sharded``, padded with dummy episodes), observed ``payoff`` (or ``None``), and
    the number of real episodes."""

    actions: object
    mask: object
    payoff: object
    num_episodes: int
    sharded: bool


def _runner_options(method: str) -> list[str]:
    """The options the runner of ``method`` takes."""
    return [p for p in inspect.signature(METHODS[method]).parameters if p not in ("fn", "actions", "mask", "key", "payoff")]


def _check_method_options(method: str, options: dict) -> None:
    """Refuse an unknown method, options its runner does not take, and options out of range."""
    if method not in METHODS:
        raise DataError(f"method must be one of {[AUTO, *sorted(METHODS)]}, got {method!r}")
    allowed = _runner_options(method)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise DataError(f"fit(method={method!r}): unknown option(s) {unknown}; options: {allowed}")
    _check_options(method, options)


def _check_auto_options(options: dict) -> None:
    """``method="auto"``: refuse options that no runner takes (the method is not chosen yet)."""
    allowed = sorted({name for method in METHODS for name in _runner_options(method)})
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise DataError(f"fit(method='auto'): unknown option(s) {unknown}; options of the methods it may pick: {allowed}")


def _resolved(model: Model, data, method: str, options: dict) -> tuple[str, dict, dict]:
    """The method that runs, its options, and what ``info`` records about the choice
    (``method_reason``; with ``"auto"`` also ``options_ignored``, the caller's options the
    chosen runner does not take). ``"auto"`` asks ``auto.choose_method``; the caller's
    options replace the rule's."""
    if method != AUTO:
        return method, options, {"method_reason": f"method={method!r} was requested"}
    choice = choose_method(model, data)
    allowed = set(_runner_options(choice.method))
    merged = {**choice.options, **{k: v for k, v in options.items() if k in allowed}}
    ignored = sorted(set(options) - allowed)
    _check_options(choice.method, merged)
    recorded = {"method_reason": choice.reason}
    if ignored:
        recorded["options_ignored"] = ignored
    return choice.method, merged, recorded


def _checked_round_chunk(round_chunk: int | None) -> int | None:
    """``round_chunk`` checked (``likelihood._check_round_chunk``); ``None`` stays ``None``."""
    if round_chunk is None:
        return None
    from ..likelihood import _check_round_chunk

    return _check_round_chunk(round_chunk)


def _checked_inputs(model: Model, data):
    """``data`` (read first when it is a path), refused unless it fits the model
    (``check_fit_inputs``; memory is checked once the method is known)."""
    if isinstance(data, str) or hasattr(data, "__fspath__"):  # a data file
        from ..loading import load_data

        data = load_data(data, model)
    check_fit_inputs(model, data)
    return data


def _observed(model: Model, data, method: str, options: dict, shard: bool | None) -> _Observed:
    """The arrays the runner takes, split over the devices where ``shard`` allows it (not
    for minibatches, per-episode initial propensities, or NUTS chains one per device)."""
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
    return _Observed(actions, mask, payoff, num_episodes, sharded)


def _dispatch(method: str, fn, observed: _Observed, key, options: dict) -> SamplerResult:
    """Run the inference ``method`` names on the model function ``fn``."""
    return METHODS[method](fn, observed.actions, observed.mask, key, payoff=observed.payoff, **options)


def _fit_info(run_info: dict, wall_seconds: float, method: str, round_chunk, seed, key, sharded: bool) -> dict:
    """The runner's ``info`` with what ``fit`` adds: wall time, method, ``round_chunk``,
    the seed (an int as given, a key as its key data) and whether the data were sharded."""
    return {
        **run_info,
        "wall_seconds": wall_seconds,
        "method": method,
        "round_chunk": round_chunk,
        "seed": seed if isinstance(seed, int) else np.asarray(jax.random.key_data(key)).tolist(),
        "sharded": sharded,
    }


def _pointwise_log_likelihood(model: Model, data, posterior: dict, observed: _Observed, round_chunk, batch_episodes):
    """Each draw's log-likelihood of each real episode, ``(chain, draw, episode)``."""
    from ..resources import pointwise_batch

    chains, draws = np.shape(next(iter(posterior.values())))[:2] if posterior else (1, 1)
    actions = observed.actions
    cells = (batch_episodes or observed.num_episodes) * actions.shape[1] * model.num_agents * model.num_actions
    pointwise = draws_log_likelihoods(
        model, draws_params(model, data, posterior), actions, observed.mask, observed.payoff, batch_size=pointwise_batch(cells),
        round_chunk=round_chunk, episode_batch=batch_episodes,
    )
    return to_host(pointwise)[:, :observed.num_episodes].reshape(chains, draws, -1)


_COUNT_OPTIONS = {
    "num_chains": 1, "num_warmup": 0, "num_samples": 1, "max_tree_depth": 1, "steps": 1, "restarts": 1,
    "num_particles": 1, "rank": 1, "map_steps": 0, "batch_episodes": 1, "block": 1,
}
"""Integer options of the samplers -> their least value."""

_OPEN_UNIT_OPTIONS = ("target_accept",)
_POSITIVE_OPTIONS = ("learning_rate", "map_learning_rate")


def _check_options(method: str, options: dict) -> None:
    """Refuse sampler options outside their range, naming the option (before anything is traced)."""
    for name, value in options.items():
        if value is None:
            continue
        where = f"fit(method={method!r}): {name} = {value!r}"
        if name in _COUNT_OPTIONS:
            least = _COUNT_OPTIONS[name]
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
                raise DataError(f"{where}: expected an integer >= {least}")
        elif name in _OPEN_UNIT_OPTIONS or name in _POSITIVE_OPTIONS:
            number = value if isinstance(value, (int, float, np.floating)) and not isinstance(value, bool) else None
            bad = number is None or not np.isfinite(number) or number <= 0 or (name in _OPEN_UNIT_OPTIONS and number >= 1)
            if bad:
                span = "in (0, 1)" if name in _OPEN_UNIT_OPTIONS else "a finite number > 0"
                raise DataError(f"{where}: expected {span}")


def _check_memory(model: Model, data, method: str, options: dict) -> None:
    """Refuse, before anything is traced, a fit that cannot fit in memory (``bayes_diml.resources``)."""
    from ..resources import check_memory, fit_memory

    nbytes, detail = fit_memory(model, data.num_episodes, data.num_rounds, method, options)
    advice = {
        "nuts": "use fewer chains or draws (--chains, --samples), fewer episodes, or a family with fewer parameters",
        "svi": "use minibatches of episodes (batch_episodes), fewer draws (--samples), or a family with fewer parameters",
        "map": "use fewer restarts, fewer episodes, or a family with fewer parameters",
        "laplace_grid": "use fewer features ([mechanism] features), fewer draws (--samples), or fewer episodes",
    }[method]
    check_memory(nbytes, f"this {method.upper()} fit", detail, advice)


def _chains_on_devices(method: str, options: dict) -> bool:
    """Whether NUTS runs its chains in parallel, one per device (then the data stay whole)."""
    if method != "nuts":
        return False
    from .nuts import nuts_chain_method

    return nuts_chain_method(options.get("num_chains", 4), options.get("chain_method")) == "parallel"


def _check_finite(method: str, posterior: dict) -> None:
    for name, values in posterior.items():
        values = np.asarray(values)
        if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
            where = np.argwhere(~np.isfinite(values))[0]
            raise FitError(
                f"{method}: parameter '{name}' is not finite at draw {int(where[1])} of chain {int(where[0])}; "
                "the fit stopped (try tighter priors, float64 (--x64), or a smaller step size / learning_rate (fit() options in Python))"
            )
