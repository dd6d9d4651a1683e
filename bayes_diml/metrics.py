"""Evaluation metrics of fitted mechanisms and behaviour models (docs/design.md §6).

Pure functions over arrays; ``bayes_diml.evaluation`` wires them to
fits and baselines. Two sets of conventions:

* **the paper's** (An & Du 2026, to reproduce its columns like for like): NLL scores
  rounds ``1..T-1`` only; payoff-difference MSE draws the two own actions
  independently (pairs with ``k = k'`` count, as zeros); contexts are rounds
  ``0..T-2`` of the test episodes; KL uses ``log(p + 1e-12)``; in large games
  (``context_keys``) an outcome or context is the sum of the agents' action indices;
* **ours**: NLL scores every played round (round 0 included); relative error
  ``MSE(Δ_est − Δ_true) / Var(Δ_true)``; 90% interval coverage; posterior
  predictive NLL of whole held-out episodes; R-hat of the payoff differences.

Payoff differences ``Δ_i(k, k' | a_-i) = M(k, a_-i)_i − M(k', a_-i)_i`` (docs/design.md §1)
use the query codes of ``bayes_diml.inference.queries`` (``agent, action, baseline,
joint...``) and are computed in ``bayes_diml.differences``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ._types import Params
from .differences import draw_differences, random_queries
from .errors import DataError

__all__ = [
    "SHIFTED_LEARNER",
    "KL_EPS",
    "difference_queries",
    "mechanism_differences",
    "difference_mse",
    "relative_difference_error",
    "interval_coverage",
    "visited_joints",
    "unvisited_joints",
    "mechanism_payoffs",
    "payoff_mse",
    "nll_per_agent_round",
    "context_keys",
    "in_support_rounds",
    "posterior_predictive_nll",
    "shift_learner",
    "outcome_histogram",
    "kl_divergence",
    "counterfactual_kl",
]

SHIFTED_LEARNER = {"alpha": 0.6, "beta": 1.4, "eps": 1.5}
"""The paper's counterfactual learner: each parameter multiplied by this factor (docs/design.md §6)."""

KL_EPS = 1e-12
"""The paper's KL: ``sum p (log(p + KL_EPS) − log(q + KL_EPS))``."""

JOINT_KEY_MAX = 2_000_000
"""Contexts are exact joint actions while ``A**n`` is at most this (and ``n <= 10``), else
the paper's large-game key (``context_keys``)."""


# ----------------------------------------------------------- payoff differences
difference_queries = random_queries
"""Random query codes over observed rounds (``differences.random_queries``)."""


def mechanism_differences(mechanism, params_draws: Params, codes: np.ndarray) -> np.ndarray:
    """``Δ`` of each query under each parameter draw, ``(S, Q)``.

    ``params_draws``: the mechanism's parameters with a leading draw axis ``(S, ...)``.
    Through ``mechanism.prepare`` (``differences.draw_differences(..., prepared=True)``).
    """
    return draw_differences(mechanism, params_draws, codes, prepared=True)


def difference_mse(estimate: np.ndarray, truth: np.ndarray) -> float:
    """``mean_q (Δ_est[q] − Δ_true[q])**2`` (the paper's ``diff_mse``)."""
    estimate, truth = np.asarray(estimate, np.float64), np.asarray(truth, np.float64)
    return float(np.mean((estimate - truth) ** 2))


def relative_difference_error(estimate: np.ndarray, truth: np.ndarray) -> float:
    """``MSE(Δ_est − Δ_true) / Var(Δ_true)``: 0 is perfect, 1 is as bad as predicting
    the mean difference everywhere; invariant to the payoff scale (docs/design.md §6)."""
    truth = np.asarray(truth, np.float64)
    var = float(np.var(truth))
    if var == 0.0:
        return float("nan")
    return difference_mse(estimate, truth) / var


def interval_coverage(draws: np.ndarray, truth: np.ndarray, prob: float = 0.90) -> float:
    """Share of queries whose true ``Δ`` lies in the equal-tailed ``prob`` interval of
    the draws ``(S, Q)`` (quantiles ``(1 − prob)/2`` and ``(1 + prob)/2``, inclusive)."""
    draws, truth = np.asarray(draws, np.float64), np.asarray(truth, np.float64)
    lo = np.quantile(draws, (1 - prob) / 2, axis=0)
    hi = np.quantile(draws, (1 + prob) / 2, axis=0)
    return float(np.mean((truth >= lo) & (truth <= hi)))


def difference_rhat(draws: np.ndarray, num_chains: int) -> float:
    """Largest R-hat over the queries of difference draws ``(C * S, Q)`` stored chain
    after chain: rank-normalised split R-hat (Vehtari, Gelman, Simpson, Carpenter &
    Bürkner 2021, Bayesian Analysis 16(2), eq. 4-5; ArviZ's ``rhat``).

    The identified quantities' convergence: where the model's own coordinates are
    not identified (a network's weights, a gauge), their R-hat can stay above 1.01
    while every payoff difference has mixed.
    """
    from arviz_stats.base import array_stats

    draws = np.asarray(draws, np.float64)
    total, Q = draws.shape
    if num_chains < 2 or total % num_chains:
        raise DataError(f"difference_rhat: {total} draws do not split into {num_chains} chains of equal length (need 2 or more)")
    by_chain = draws.reshape(num_chains, total // num_chains, Q).transpose(2, 0, 1)  # (Q, C, S)
    return float(np.nanmax(array_stats.rhat(by_chain, chain_axis=-2, draw_axis=-1)))


# ------------------------------------------------------------------ raw payoffs
def visited_joints(actions: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Distinct joint actions of the rounds in which every agent played, ``(J, n)``."""
    actions = np.asarray(actions)
    n = actions.shape[-1]
    flat = actions.reshape(-1, n)
    if mask is not None:
        flat = flat[~np.asarray(mask, bool).reshape(-1, n).any(axis=1)]
    return np.unique(flat, axis=0)


def unvisited_joints(visited: np.ndarray, num_agents: int, num_actions: int, max_joints: int = 20_000,
                     seed: int = 123) -> np.ndarray:
    """Joint actions outside ``visited``: all of them when ``A**n <= max_joints``, else
    ``max_joints // 4`` uniform random joint actions not in ``visited``."""
    seen = {tuple(r) for r in np.asarray(visited).tolist()}
    if num_actions**num_agents <= max_joints:
        index = np.arange(num_actions**num_agents)
        joints = (index[:, None] // num_actions ** np.arange(num_agents)) % num_actions
    else:
        joints = np.random.default_rng(seed).integers(num_actions, size=(max_joints // 4, num_agents))
    keep = np.array([tuple(r) not in seen for r in joints.tolist()], bool)
    return joints[keep].astype(np.int32)


def mechanism_payoffs(mechanism, params: Params, joints: np.ndarray) -> np.ndarray:
    """``M(a)`` for each joint action, ``(J, n)`` (one parameter set, no draw axis)."""
    if len(joints) == 0:
        return np.zeros((0, mechanism.num_agents))
    return np.asarray(_payoffs_jit(mechanism, params, jnp.asarray(joints, jnp.int32)))


@functools.partial(jax.jit, static_argnums=0)
def _payoffs_jit(mechanism, params, joints):
    return jax.vmap(mechanism.payoffs, (None, 0))(params, joints)


def payoff_mse(estimate: np.ndarray, truth: np.ndarray) -> float:
    """``mean (M_est(a)_i − M_true(a)_i)**2`` over joint actions and agents (the paper's
    ``mse_on`` / off-support MSE). Raw payoffs: levels are not identified (docs/design.md §3),
    so this depends on each estimator's gauge."""
    estimate, truth = np.asarray(estimate, np.float64), np.asarray(truth, np.float64)
    if estimate.size == 0:
        return float("nan")
    return float(np.mean((estimate - truth) ** 2))


# ---------------------------------------------------------------------- NLL
def nll_per_agent_round(log_policies: np.ndarray, actions: np.ndarray, mask: np.ndarray | None = None,
                        skip_first: bool = False, keep: np.ndarray | None = None) -> float:
    """Mean negative log-probability of the played actions per scored agent-round.

    Args:
        log_policies: ``(E, T, n, A)`` log-probabilities of each round's actions.
        actions: ``(E, T, n)``; mask: ``(E, T, n)`` True where the agent did not play.
        skip_first: do not score round 0 (the paper's convention).
        keep: optional ``(E, T)`` bool: score only these rounds (in-support variant).
    """
    log_policies = np.asarray(log_policies, np.float64)
    actions = np.asarray(actions)
    scored = np.ones(actions.shape, bool) if mask is None else ~np.asarray(mask, bool)
    if skip_first:
        scored[:, 0] = False
    if keep is not None:
        scored &= np.asarray(keep, bool)[..., None]
    if not scored.any():
        return float("nan")
    played = np.take_along_axis(log_policies, actions[..., None], axis=-1)[..., 0]
    return float(-played[scored].mean())


def context_keys(actions: np.ndarray, num_actions: int) -> np.ndarray:
    """One key per round, as the paper's code keys contexts and outcomes: the joint
    action's base-A index while ``A**n <= JOINT_KEY_MAX`` and ``n <= 10``, else the sum
    of the agents' action indices, an int64 ``(...)`` array.

    The large-game key reproduces what the authors' ``counts_hash_index`` computes
    (``run_experiments.py``, used for E7's support vocabulary and counterfactual KL): it
    hashes the action counts as ``sum_k counts_k (k + 1) C`` modulo 2**64 (C odd), which
    is ``C`` times ``sum_i (a_i + 1)``, followed by bijective mixing, so two rounds get
    the same key exactly when their action-index sums agree, not when their count
    vectors do (checked: 20,000 random rounds of n = 300, A = 40 have 20,000 distinct
    count vectors and 1,169 distinct sums, and the hash takes 1,169 values). The paper's
    E7 ``cfkl`` and in-support columns therefore compare histograms of that sum; the
    columns marked "(paper)" do the same, so that they are comparable.
    """
    actions = np.asarray(actions, np.int64)
    n = actions.shape[-1]
    if n <= 10 and num_actions**n <= JOINT_KEY_MAX:
        return (actions * num_actions ** np.arange(n)).sum(axis=-1)
    return actions.sum(axis=-1)


def in_support_rounds(test_actions: np.ndarray, train_actions: np.ndarray, num_actions: int) -> np.ndarray:
    """``(E, T)`` bool: round ``t >= 1`` of a test episode whose context (the joint
    action of round ``t − 1``) occurs among the contexts of the training data
    (rounds ``0..T−2``), the paper's support vocabulary. Round 0 has no context: False."""
    test_actions, train_actions = np.asarray(test_actions), np.asarray(train_actions)
    vocabulary = np.unique(context_keys(train_actions[:, :-1], num_actions))
    E, T = test_actions.shape[:2]
    out = np.zeros((E, T), bool)
    out[:, 1:] = np.isin(context_keys(test_actions[:, :-1], num_actions), vocabulary)
    return out


def posterior_predictive_nll(episode_log_likelihoods: np.ndarray, num_agent_rounds: int) -> float:
    """Held-out posterior predictive NLL per agent-round.

    ``−sum_e log( (1/S) sum_s p(episode_e | θ_s) ) / num_agent_rounds`` with
    ``episode_log_likelihoods`` of shape ``(S, E)`` (the expected log predictive
    density of new episodes, Gelman, Hwang & Vehtari 2014, eq. 3, computed from draws).
    """
    ll = np.asarray(episode_log_likelihoods, np.float64)
    per_episode = np.logaddexp.reduce(ll, axis=0) - np.log(ll.shape[0])
    return float(-per_episode.sum() / num_agent_rounds)


# ----------------------------------------------------------- counterfactual KL
def shift_learner(learner_params: dict, factors: dict | None = None) -> dict:
    """Learner parameters with each named one multiplied by its factor (default:
    the paper's shifted learner ``SHIFTED_LEARNER``); others unchanged. ``alpha`` is
    capped at 1 and ``eps`` below 1 so the result stays in the learner's domain."""
    factors = SHIFTED_LEARNER if factors is None else factors
    out = dict(learner_params)
    for name, factor in factors.items():
        if name in out:
            out[name] = jnp.asarray(out[name]) * factor
    if "alpha" in out:
        out["alpha"] = jnp.minimum(out["alpha"], 1.0)
    if "eps" in out:
        out["eps"] = jnp.minimum(out["eps"], 0.999)
    return out


def outcome_histogram(actions: np.ndarray, num_actions: int, keep: np.ndarray | None = None) -> dict:
    """Counts of joint actions (or, in large games, of the paper's key, see
    ``context_keys``) over the rounds of ``actions (E, T, n)`` where ``keep (E, T)``."""
    keys = context_keys(actions, num_actions).reshape(-1)
    if keep is not None:
        keys = keys[np.asarray(keep, bool).reshape(-1)]
    values, counts = np.unique(keys, return_counts=True)
    return dict(zip(values.tolist(), counts.tolist()))


def kl_divergence(p_counts: dict, q_counts: dict, eps: float = KL_EPS) -> float:
    """``KL(p || q) = sum_x p(x) (log(p(x) + eps) − log(q(x) + eps))`` between two
    histograms (dicts outcome -> count), normalised over their own totals."""
    p_total, q_total = sum(p_counts.values()), sum(q_counts.values())
    if p_total == 0 or q_total == 0:
        return float("nan")
    kl = 0.0
    for x, count in p_counts.items():
        p = count / p_total
        q = q_counts.get(x, 0) / q_total
        kl += p * (np.log(p + eps) - np.log(q + eps))
    return float(kl)


def counterfactual_kl(true_actions: np.ndarray, fitted_actions: np.ndarray, num_actions: int,
                      support: np.ndarray | None = None) -> float:
    """KL between the joint-action histograms of play simulated under the true and the
    fitted mechanism with the shifted learner (each ``(E, T, n)``; the paper's ``cfkl``).

    With ``support`` (training actions ``(E', T', n)``), only transitions whose context
    (the previous round's joint action) occurs in the training data are counted and
    the histograms are of the next round's joint action (the in-support variant).
    """
    if support is None:
        return kl_divergence(outcome_histogram(true_actions, num_actions), outcome_histogram(fitted_actions, num_actions))
    keep_true = in_support_rounds(true_actions, support, num_actions)
    keep_fit = in_support_rounds(fitted_actions, support, num_actions)
    return kl_divergence(
        outcome_histogram(true_actions, num_actions, keep_true),
        outcome_histogram(fitted_actions, num_actions, keep_fit),
    )
