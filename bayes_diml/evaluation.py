"""Score a fitted estimate on held-out play (docs/design.md §6): ``evaluate_estimate`` and
``evaluate_run`` (the ``bayes-diml evaluate`` verb), with the episode split they use.

Every metric is a pure function of ``bayes_diml.metrics``; this module wires them to an
estimate (a ``baselines.Estimate``: a Bayesian fit, a MAP or maximum-likelihood point, or a
behaviour-only baseline), its training data and test data. The paper study
(``experiments/`` of a source checkout) calls the same functions for its tables.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from . import metrics
from .baselines import Estimate
from .errors import DataError
from .likelihood import teacher_forced_log_policies
from .model import Model
from .simulate import simulate_arrays

__all__ = [
    "EvaluationSettings",
    "evaluate_estimate",
    "evaluate_run",
    "split_episodes",
    "episode_subset",
    "TRAIN_FRACTION",
]

TRAIN_FRACTION = 0.8
"""Share of episodes ``split_episodes`` keeps for training (the first ones)."""
DIFFERENCE_DRAWS = 400
"""Posterior draws used for payoff-difference means and 90% intervals (at most)."""
RHAT_QUERIES = 1000
"""Payoff-difference queries whose R-hat is checked on a NUTS fit (``rhat_differences``)."""
COUNTERFACTUAL_SEED_BASE = 2000
"""The counterfactual simulations of seed ``k`` use ``key(COUNTERFACTUAL_SEED_BASE + 7 k + 1)``."""


@dataclasses.dataclass(frozen=True)
class EvaluationSettings:
    """Sizes of the metrics: payoff-difference queries, posterior draws scored, and the
    counterfactual simulation's episodes and rounds. Any object with these attributes
    will do (the paper study passes its own, larger settings)."""

    num_queries: int = 4000
    max_draws: int = 50
    cf_episodes: int = 300
    cf_rounds: int = 50


def split_episodes(data, fraction: float = TRAIN_FRACTION):
    """The first ``round(fraction * E)`` episodes for training, the rest for testing."""
    E = data.num_episodes
    cut = int(round(fraction * E))
    if not 0 < cut < E:
        raise DataError(f"split_episodes: {E} episodes cannot be split {fraction:.0%}/{1 - fraction:.0%}")
    return episode_subset(data, slice(0, cut)), episode_subset(data, slice(cut, E))


def episode_subset(data, rows: slice):
    """The episodes ``rows`` of ``data`` as new ``Trajectories`` (same labels)."""
    from .trajectories import Trajectories

    return Trajectories.from_arrays(
        np.asarray(data.actions[rows]), np.asarray(data.mask[rows]), num_actions=data.num_actions,
        agent_labels=data.agent_labels, action_labels=data.action_labels,
    )


def _with_draw_axis(params: dict) -> dict:
    return {k: jnp.asarray(v, jnp.float32)[None] for k, v in params.items()}


def _thinned(estimate: Estimate, max_draws: int) -> dict:
    S = estimate.num_draws
    index = np.unique(np.linspace(0, S - 1, min(S, max_draws)).round().astype(int))
    return jax.tree.map(lambda v: jnp.asarray(v)[index], estimate.params)


def _mixture_log_policies(estimate: Estimate, params: dict, data) -> np.ndarray:
    """``log mean_s pi_s`` over draws, ``(E, T, n, A)`` (teacher-forced)."""
    if not estimate.has_mechanism:
        return estimate.behaviour(data)
    S = int(np.shape(next(iter(params["mechanism"].values())))[0])
    logs = [
        np.asarray(teacher_forced_log_policies(estimate.model, jax.tree.map(lambda v: v[s], params), data), np.float64)
        for s in range(S)
    ]
    return np.logaddexp.reduce(np.stack(logs), axis=0) - np.log(S)


def evaluate_estimate(estimate: Estimate, model: Model, truth: dict | None, train, test, *, seed: int = 0,
                      settings: EvaluationSettings | None = None, counterfactual: bool = True) -> dict[str, float]:
    """Every metric of one estimate (docs/design.md §6).

    Paper's conventions: ``diff_mse`` (contexts from test rounds ``0..T-2``, independent
    own-action pairs), ``nll_test`` / ``nll_test_in_support`` (rounds ``1..T-1``),
    ``cfkl`` / ``cfkl_in_support`` (both mechanisms re-simulated with the true learner
    shifted by ``metrics.SHIFTED_LEARNER``), ``mse_on`` (raw payoffs on the test rounds'
    joint actions) and ``mse_off`` (joint actions never played in training).
    Ours: ``rel_error`` and ``rel_error_in_support`` (distinct pairs, every test round),
    ``coverage90`` (draws only), ``rhat_differences`` (NUTS with several chains: the largest
    R-hat over ``RHAT_QUERIES`` payoff differences), ``nll`` (every round), ``pp_nll`` (posterior predictive,
    whole test episodes), ``support_share`` (queries whose context was seen in training).
    Without a ``truth`` only the behaviour metrics are computed; ``counterfactual=False``
    skips the simulation-based ``cfkl`` columns.
    """
    from .inference.numpyro_model import draws_log_likelihoods

    s = settings or EvaluationSettings()
    params = _thinned(estimate, s.max_draws) if estimate.has_mechanism else None
    out = _behaviour_metrics(estimate, params, train, test, model.num_actions)
    if not estimate.has_mechanism:
        return out
    actions, mask = jnp.asarray(test.actions), jnp.asarray(test.mask)
    ll = np.asarray(draws_log_likelihoods(estimate.model, params, actions, mask))
    out["pp_nll"] = metrics.posterior_predictive_nll(ll, int((~test.mask).sum()))
    if truth is None:
        return out
    out |= _difference_metrics(estimate, model, truth, train, test, s, seed)
    out |= _payoff_metrics(estimate, model, truth, train, test, params["mechanism"], seed)
    if counterfactual:
        out |= _counterfactual_metrics(estimate, model, truth, train, params["mechanism"], s, seed)
    return out


def _behaviour_metrics(estimate: Estimate, params, train, test, num_actions: int) -> dict[str, float]:
    """``nll_test``, ``nll_test_in_support`` and ``nll`` of the draws' mixture policy (teacher-forced)."""
    log_pi = _mixture_log_policies(estimate, params, test)
    keep = metrics.in_support_rounds(test.actions, train.actions, num_actions)
    nll = functools.partial(metrics.nll_per_agent_round, log_pi, test.actions, test.mask)
    return {"nll_test": nll(skip_first=True), "nll_test_in_support": nll(skip_first=True, keep=keep), "nll": nll()}


def _difference_metrics(estimate: Estimate, model: Model, truth: dict, train, test, s, seed: int) -> dict[str, float]:
    """``diff_mse`` (paper's queries), ``rel_error``, ``support_share``, ``rel_error_in_support``,
    ``coverage90`` and, for a NUTS fit with several chains, ``rhat_differences`` (ours)."""
    from .inference.queries import in_support, support_contexts

    A = model.num_actions
    true_mech = _with_draw_axis(truth["mechanism"])
    paper_codes = metrics.difference_queries(test.actions, test.mask, A, s.num_queries, seed)
    ours_codes = metrics.difference_queries(test.actions, test.mask, A, s.num_queries, seed + 1, distinct=True, skip_last=False)
    diff_mech = _thinned(estimate, DIFFERENCE_DRAWS)["mechanism"]  # more draws for interval ends
    true_paper = metrics.mechanism_differences(model.mechanism, true_mech, paper_codes)[0]
    est_paper = metrics.mechanism_differences(estimate.model.mechanism, diff_mech, paper_codes).mean(axis=0)
    out = {"diff_mse": metrics.difference_mse(est_paper, true_paper)}
    true_ours = metrics.mechanism_differences(model.mechanism, true_mech, ours_codes)[0]
    draws_ours = metrics.mechanism_differences(estimate.model.mechanism, diff_mech, ours_codes)
    out["rel_error"] = metrics.relative_difference_error(draws_ours.mean(axis=0), true_ours)
    contexts = support_contexts(train, model.mechanism.counts_context, A)
    seen = in_support(ours_codes, contexts, model.mechanism.counts_context, A)
    out["support_share"] = float(seen.mean())
    out["rel_error_in_support"] = (
        metrics.relative_difference_error(draws_ours.mean(axis=0)[seen], true_ours[seen]) if seen.sum() > 1 else float("nan")
    )
    out["coverage90"] = metrics.interval_coverage(draws_ours, true_ours) if draws_ours.shape[0] > 1 else float("nan")
    fit = estimate.fit
    if fit is not None and fit.method == "nuts" and fit.num_chains > 1:  # every draw, chain after chain
        every = metrics.mechanism_differences(estimate.model.mechanism, estimate.params["mechanism"], ours_codes[:RHAT_QUERIES])
        out["rhat_differences"] = metrics.difference_rhat(every, fit.num_chains)
    return out


def _payoff_metrics(estimate: Estimate, model: Model, truth: dict, train, test, est_mech: dict, seed: int) -> dict[str, float]:
    """``mse_on`` and ``mse_off``: raw payoffs (gauge-dependent, as in the paper) on the test
    rounds' joint actions (at most 20,000, a seeded subset) and on those never played in training."""
    n, A = model.num_agents, model.num_actions
    on = test.actions[~test.mask.any(axis=2)]
    if len(on) > 20_000:
        on = on[np.random.default_rng(seed).choice(len(on), 20_000, replace=False)]
    off = metrics.unvisited_joints(metrics.visited_joints(train.actions, train.mask), n, A)
    S = est_mech[next(iter(est_mech))].shape[0]
    out = {}
    for name, joints in (("mse_on", on), ("mse_off", off)):
        truth_pay = metrics.mechanism_payoffs(model.mechanism, truth["mechanism"], joints)
        est_pay = np.mean([
            metrics.mechanism_payoffs(estimate.model.mechanism, jax.tree.map(lambda v: v[d], est_mech), joints) for d in range(S)
        ], axis=0)
        out[name] = metrics.payoff_mse(est_pay, truth_pay)
    return out


def _counterfactual_metrics(estimate: Estimate, model: Model, truth: dict, train, est_mech: dict, s, seed: int) -> dict[str, float]:
    """``cfkl`` and ``cfkl_in_support``: counterfactual KL under the paper's shifted learner
    (the true learner, shifted, for both the true and the estimated mechanism)."""
    A = model.num_actions
    shifted = {k: jnp.asarray(v, jnp.float32) for k, v in metrics.shift_learner(truth["learner"]).items()}
    key = jax.random.key(COUNTERFACTUAL_SEED_BASE + 7 * seed + 1)
    k_true, k_est = jax.random.split(key)
    true_sim = np.asarray(
        simulate_arrays(model, {"mechanism": {k: jnp.asarray(v, jnp.float32) for k, v in truth["mechanism"].items()}, "learner": shifted},
                        k_true, s.cf_episodes, s.cf_rounds)
    )
    S = est_mech[next(iter(est_mech))].shape[0]
    sims_per_draw = min(S, 10)
    per = max(1, s.cf_episodes // sims_per_draw)
    est_sims = [
        np.asarray(simulate_arrays(estimate.model, {"mechanism": jax.tree.map(lambda v: v[d * S // sims_per_draw], est_mech), "learner": shifted},
                                   jax.random.fold_in(k_est, d), per, s.cf_rounds))
        for d in range(sims_per_draw)
    ]
    est_sim = np.concatenate(est_sims, axis=0)
    return {
        "cfkl": metrics.counterfactual_kl(true_sim, est_sim, A),
        "cfkl_in_support": metrics.counterfactual_kl(true_sim, est_sim, A, support=np.asarray(train.actions)),
    }


def evaluate_run(run, data, spec=None, *, seed: int = 0, num_queries: int = 4000, counterfactual: bool = False) -> dict[str, float]:
    """Held-out metrics of a fitted run folder on test data.

    Args:
        run: a run folder written by ``bayes-diml fit`` (or a ``Fit``).
        data: test ``Trajectories`` (or a CSV/Parquet path, read against the run's model).
        spec: optional spec path with ``[mechanism.truth]`` (of the run's family and
            sizes): adds the payoff-difference metrics.

    Returns:
        ``nll`` (every round), ``nll_test`` (from round 1, the paper's), ``pp_nll``
        (posterior predictive), and with a truth ``rel_error``, ``diff_mse``,
        ``coverage90`` (``diff`` metrics on queries from the test data's contexts;
        in-support variants against the run's own training data; with a truth the
        raw-payoff metrics of ``evaluate_estimate`` too, and with ``counterfactual``
        its simulated ``cfkl`` columns).
    """
    from .inference import load_fit
    from .loading import load_data
    from .spec import read_spec

    fit = run if hasattr(run, "params_draws") else load_fit(run)
    if not hasattr(data, "actions"):
        data = load_data(data, fit.model)
    truth, model = None, fit.model
    if spec is not None:
        true_model, truth = read_spec(spec)
        if truth is None:
            raise DataError(f"{spec}: has no [mechanism.truth]")
        if (true_model.num_agents, true_model.num_actions) != (model.num_agents, model.num_actions):
            raise DataError(
                f"{spec}: {true_model.num_agents} agents x {true_model.num_actions} actions, the run has "
                f"{model.num_agents} x {model.num_actions}"
            )
        model = true_model
    s = EvaluationSettings(num_queries=num_queries, max_draws=50)
    return evaluate_estimate(Estimate.from_fit(fit), model, truth, fit.data, data, seed=seed, settings=s,
                             counterfactual=counterfactual)
