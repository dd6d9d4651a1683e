"""Metrics on hand-computed cases (each expected value worked out in the comment)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bayes_diml import metrics
from bayes_diml.errors import DataError
from bayes_diml.mechanisms import Congestion, Tabular

TOL = 1e-6  # float32 payoffs of O(1)


def _table_2x2():
    # rows: joint index a0 + 2 a1; columns: agent 0, agent 1
    return {"payoffs": np.array([[1.0, 2.0], [3.0, 5.0], [0.5, -1.0], [4.0, 0.0]], np.float32)}


def test_mechanism_differences_tabular_by_hand():
    mech = Tabular(num_agents=2, num_actions=2)
    params = {"payoffs": _table_2x2()["payoffs"][None]}
    codes = np.array(
        [
            # agent 0, k=1 vs k'=0, opponent plays 1: M((1,1))_0 - M((0,1))_0 = 4.0 - 0.5
            [0, 1, 0, 0, 1],
            # agent 1, k=1 vs k'=0, opponent plays 0: M((0,1))_1 - M((0,0))_1 = -1 - 2
            [1, 1, 0, 0, 0],
            # k = k': zero whatever the table
            [1, 1, 1, 1, 0],
        ],
        np.int32,
    )
    out = metrics.mechanism_differences(mech, params, codes)
    np.testing.assert_allclose(out, [[3.5, -3.0, 0.0]], atol=TOL)


def test_difference_queries_contexts_and_pairs():
    rng = np.random.default_rng(0)
    actions = rng.integers(3, size=(4, 5, 2))
    mask = np.zeros(actions.shape, bool)
    mask[1, 2, 0] = True  # round (1, 2) is not a full round
    codes = metrics.difference_queries(actions, mask, 3, num=500, seed=1)
    assert codes.shape == (500, 5)
    observed = {tuple(actions[e, t]) for e in range(4) for t in range(4) if (e, t) != (1, 2)}
    assert {tuple(c[3:]) for c in codes} <= observed  # last round (t = 4) and the masked round excluded
    assert (codes[:, 1] == codes[:, 2]).any()  # the paper draws k, k' independently: equal pairs occur
    distinct = metrics.difference_queries(actions, mask, 3, num=500, seed=1, distinct=True)
    assert (distinct[:, 1] != distinct[:, 2]).all()
    with pytest.raises(DataError, match="every agent played"):
        metrics.difference_queries(actions[:, :1], np.ones((4, 1, 2), bool), 3, num=5, seed=0)


def test_difference_errors_and_coverage_by_hand():
    truth = np.array([1.0, -1.0, 3.0, 1.0])  # mean 1, var (0 + 4 + 4 + 0) / 4 = 2
    estimate = np.array([2.0, -1.0, 1.0, 1.0])  # errors 1, 0, -2, 0 -> MSE 5 / 4
    assert metrics.difference_mse(estimate, truth) == pytest.approx(1.25)
    assert metrics.relative_difference_error(estimate, truth) == pytest.approx(1.25 / 2)
    assert math.isnan(metrics.relative_difference_error(estimate, np.ones(4)))
    # draws 0..100 per query: the 90% interval is [5, 95]
    draws = np.repeat(np.arange(101.0)[:, None], 4, axis=1)
    assert metrics.interval_coverage(draws, np.array([5.0, 50.0, 95.0, 96.0])) == pytest.approx(0.75)


def _split_rhat_by_hand(x: np.ndarray) -> float:
    """Gelman-Rubin on split chains (BDA3 §11.4), plain NumPy: ``x`` is ``(C, S)``."""
    half = x.shape[1] // 2
    x = np.concatenate([x[:, :half], x[:, half : 2 * half]])
    n = x.shape[1]
    within = x.var(axis=1, ddof=1).mean()
    between = n * x.mean(axis=1).var(ddof=1)
    return float(np.sqrt(((n - 1) / n * within + between / n) / within))


def test_difference_rhat_against_split_rhat_by_hand():
    rng = np.random.default_rng(3)
    C, S, Q = 4, 500, 3
    by_chain = rng.normal(size=(C, S, Q))
    mixed = metrics.difference_rhat(by_chain.reshape(C * S, Q), C)
    reference = max(_split_rhat_by_hand(by_chain[:, :, q]) for q in range(Q))
    # Gaussian draws: rank normalisation changes R-hat by far less than 0.01
    assert abs(mixed - reference) < 0.01 and mixed < 1.01
    stuck = by_chain.copy()
    stuck[0, :, 1] += 2.0  # one chain two sd away on query 1
    value = metrics.difference_rhat(stuck.reshape(C * S, Q), C)
    assert value > 1.2 and _split_rhat_by_hand(stuck[:, :, 1]) > 1.2
    assert value == pytest.approx(metrics.difference_rhat(stuck[:, :, 1].reshape(C * S, 1), C))
    # draws must come chain after chain: interleaved, the stuck chain is spread over all four
    assert metrics.difference_rhat(stuck.transpose(1, 0, 2).reshape(C * S, Q), C) < 1.05
    with pytest.raises(DataError, match="do not split into 4 chains"):
        metrics.difference_rhat(np.zeros((C * S - 1, Q)), C)


def test_raw_payoffs_on_and_off_support():
    actions = np.array([[[0, 0], [1, 0], [1, 0]]])
    visited = metrics.visited_joints(actions)
    np.testing.assert_array_equal(visited, [[0, 0], [1, 0]])
    unvisited = metrics.unvisited_joints(visited, 2, 2)
    assert {tuple(r) for r in unvisited} == {(0, 1), (1, 1)}
    mech = Tabular(num_agents=2, num_actions=2)
    truth = _table_2x2()
    est = {"payoffs": truth["payoffs"] + np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 2.0], [0.0, 0.0]], np.float32)}
    on = metrics.payoff_mse(metrics.mechanism_payoffs(mech, est, visited), metrics.mechanism_payoffs(mech, truth, visited))
    # visited rows 0 and 1: squared errors 1, 0, 0, 0 -> 1 / 4
    assert on == pytest.approx(0.25)
    off = metrics.payoff_mse(metrics.mechanism_payoffs(mech, est, unvisited), metrics.mechanism_payoffs(mech, truth, unvisited))
    # unvisited rows 2 (error 2 on agent 1) and 3: 4 / 4
    assert off == pytest.approx(1.0)
    sampled = metrics.unvisited_joints(visited, 12, 3, max_joints=400)
    assert len(sampled) <= 100 and sampled.shape[1] == 12


def test_nll_per_agent_round_by_hand():
    # one episode, 2 rounds, 1 agent, 2 actions
    log_pi = np.log(np.array([[[[0.5, 0.5]], [[0.2, 0.8]]]]))
    actions = np.array([[[0], [1]]])
    # all rounds: -(log .5 + log .8) / 2; paper: round 1 only: -log .8
    assert metrics.nll_per_agent_round(log_pi, actions) == pytest.approx(-(np.log(0.5) + np.log(0.8)) / 2)
    assert metrics.nll_per_agent_round(log_pi, actions, skip_first=True) == pytest.approx(-np.log(0.8))
    mask = np.array([[[False], [True]]])
    assert metrics.nll_per_agent_round(log_pi, actions, mask) == pytest.approx(-np.log(0.5))
    assert math.isnan(metrics.nll_per_agent_round(log_pi, actions, keep=np.zeros((1, 2), bool)))


def test_in_support_rounds_by_hand():
    train = np.array([[[0, 1], [1, 1], [0, 0]]])  # contexts (rounds 0..1): (0,1), (1,1)
    test = np.array([[[1, 1], [0, 0], [0, 1], [1, 0]]])
    # round t is in support when round t-1's joint action is a training context
    np.testing.assert_array_equal(metrics.in_support_rounds(test, train, 2), [[False, True, False, True]])
    # small games: exact joint actions, base-A index with agent 0 least significant
    np.testing.assert_array_equal(metrics.context_keys(np.array([[1, 0], [0, 1]]), 2), [1, 2])
    # large games (n > 10): the paper's key, the sum of the action indices, so count
    # vectors with the same sum collide: (2 x action 1) and (action 0 + action 2)
    a = np.zeros((3, 11), int)
    a[0, :2] = 1
    a[1, 0], a[1, 1] = 0, 2
    a[2, :3] = 1
    np.testing.assert_array_equal(metrics.context_keys(a, 3), [2, 2, 3])


def test_paper_large_game_key_is_the_reference_hash_up_to_relabelling():
    """The authors' ``counts_hash_index`` (re-derived here from its formula, not run):
    ``mix(sum_k counts_k (k + 1) C mod 2**64)`` with a bijective ``mix``; equal keys
    exactly where the hash pre-image ``sum_k counts_k (k + 1) C mod 2**64`` is equal."""
    rng = np.random.default_rng(0)
    a = rng.integers(0, 6, size=(4000, 12))
    counts = np.stack([np.bincount(r, minlength=6) for r in a]).astype(np.uint64)
    C = np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        pre = (counts * (np.arange(1, 7, dtype=np.uint64) * C)).sum(axis=1)
    keys = metrics.context_keys(a, 6)
    # same partition of the rounds: a one-to-one map between key values and hash values
    pairs = set(zip(keys.tolist(), pre.tolist()))
    assert len(pairs) == len(set(keys.tolist())) == len(set(pre.tolist()))
    assert len(set(map(tuple, counts.tolist()))) > 2 * len(pairs)  # far coarser than count vectors


def test_posterior_predictive_nll_by_hand():
    # two draws, one episode: p = 0.5 and 0.25 -> predictive 0.375 over 3 agent-rounds
    ll = np.log(np.array([[0.5], [0.25]]))
    assert metrics.posterior_predictive_nll(ll, 3) == pytest.approx(-np.log(0.375) / 3)


def test_kl_divergence_by_hand():
    p = {0: 3, 1: 1}
    q = {0: 1, 1: 1}
    expected = 0.75 * np.log(0.75 / 0.5) + 0.25 * np.log(0.25 / 0.5)
    assert metrics.kl_divergence(p, q) == pytest.approx(expected, rel=1e-9)
    assert metrics.kl_divergence(p, p) == pytest.approx(0.0, abs=1e-12)
    # an outcome that q never produces costs p * (log p - log 1e-12)
    assert metrics.kl_divergence({0: 1}, {1: 1}) == pytest.approx(-np.log(1e-12) + np.log(1 + 1e-12))


def test_counterfactual_kl_full_and_in_support():
    a = np.array([[[0, 0], [1, 1], [0, 1]]])
    b = np.array([[[0, 0], [1, 1], [1, 1]]])
    # histograms over joint indices: a -> {0: 1, 3: 1, 2: 1}; b -> {0: 1, 3: 2}
    expected = (1 / 3) * np.log((1 / 3) / (1 / 3)) + (1 / 3) * np.log((1 / 3) / (2 / 3)) + (1 / 3) * (
        np.log(1 / 3 + 1e-12) - np.log(1e-12)
    )
    assert metrics.counterfactual_kl(a, b, 2) == pytest.approx(expected, rel=1e-6)
    # support = contexts {(0,0)} only: both keep round 1 -> next outcome (1,1) on both sides -> 0
    support = np.array([[[0, 0], [0, 0]]])
    assert metrics.counterfactual_kl(a, b, 2, support=support) == pytest.approx(0.0, abs=1e-12)


def test_shift_learner():
    out = metrics.shift_learner({"alpha": 0.25, "beta": 3.0, "eps": 0.06})
    assert float(out["alpha"]) == pytest.approx(0.15)
    assert float(out["beta"]) == pytest.approx(4.2)
    assert float(out["eps"]) == pytest.approx(0.09)
    assert float(metrics.shift_learner({"alpha": 0.9}, {"alpha": 2.0})["alpha"]) == 1.0


def test_congestion_differences_match_formula():
    # M(k, a_-i)_i = (tau - c1)[k] L - c2[k] L^2 with L = 1 + #others on k
    mech = Congestion(num_agents=3, num_actions=2)
    c1, c2, tau = np.array([0.2, 0.3]), np.array([0.1, 0.05]), np.array([0.0, 0.1])
    params = {"c1": c1[None], "c2": c2[None], "tau": tau[None]}
    codes = np.array([[0, 1, 0, 0, 1, 1]], np.int32)  # agent 0; others on 1, 1
    pay = lambda k, L: (tau[k] - c1[k]) * L - c2[k] * L**2  # noqa: E731
    expected = pay(1, 3) - pay(0, 1)
    np.testing.assert_allclose(metrics.mechanism_differences(mech, params, codes), [[expected]], atol=TOL)


# ------------------------------------------------- one home for payoff differences (issue 16)
def test_differences_have_one_home():
    """``metrics``, ``inference.queries``, ``calibration`` and the identifiability report use
    ``bayes_diml.differences``: none evaluates counterfactual payoffs itself or imports a
    private helper for it."""
    import re
    from pathlib import Path

    from bayes_diml import differences
    from bayes_diml.inference import queries

    for name in ("true_differences", "support_contexts", "in_support", "sample_queries", "QUERY_COLUMNS"):
        assert getattr(queries, name) is getattr(differences, name), name
    assert metrics.difference_queries is differences.random_queries
    root = Path(differences.__file__).parent
    for path in ("metrics.py", "inference/queries.py", "calibration.py", "inference/identifiability.py"):
        text = (root / path).read_text(encoding="utf-8")
        assert not re.search(r"counterfactual_payoffs|\b_differences\b|_observed_rounds", text), path
    assert "from .differences import" in (root / "calibration.py").read_text(encoding="utf-8")
    assert "from ..differences import" in (root / "inference/identifiability.py").read_text(encoding="utf-8")


def test_difference_paths_agree_and_match_by_hand():
    """Both evaluation paths give the hand-computed tabular differences exactly (see
    ``test_mechanism_differences_tabular_by_hand``'s table)."""
    from bayes_diml import differences

    mech = Tabular(num_agents=2, num_actions=2)
    params = {"payoffs": _table_2x2()["payoffs"][None]}
    # agent 0, 1 vs 0 with agent 1 at 1: payoffs[1 + 2] - payoffs[0 + 2] = 4.0 - 0.5
    # agent 1, 0 vs 1 with agent 0 at 1: payoffs[1 + 0][1] - payoffs[1 + 2][1] = 5.0 - 0.0
    codes = np.array([[0, 1, 0, 0, 1], [1, 0, 1, 1, 0]], np.int32)
    for prepared in (False, True):
        np.testing.assert_allclose(differences.draw_differences(mech, params, codes, prepared), [[3.5, 5.0]], atol=TOL)
    truth = differences.true_differences(mech, {"payoffs": _table_2x2()["payoffs"]}, codes)
    np.testing.assert_allclose(truth, [3.5, 5.0], atol=TOL)


def test_opponent_context_and_in_support():
    from types import SimpleNamespace

    from bayes_diml import differences

    # joint (2, 0, 2): agent 1's opponents play (2, 2); their counts over 3 actions are (0, 0, 2)
    assert differences.opponent_context([2, 0, 2], 1, False, 3) == (2, 2)
    assert differences.opponent_context([2, 0, 2], 1, True, 3) == (0, 0, 2)
    actions = np.array([[[0, 1, 2], [2, 0, 2]]])  # one episode, two rounds
    data = SimpleNamespace(actions=actions, mask=np.zeros(actions.shape, bool), num_agents=3)
    joint_sets = differences.support_contexts(data, False, 3)
    assert joint_sets[1] == {(0, 2), (2, 2)}
    codes = np.array([[1, 1, 0, 2, 1, 2], [1, 1, 0, 0, 1, 0]])  # agent 1 against (2, 2), then (0, 0)
    np.testing.assert_array_equal(differences.in_support(codes, joint_sets, False, 3), [True, False])
    count_sets = differences.support_contexts(data, True, 3)
    # agent 0 against (1, 2) has counts (0, 1, 1), which agent 0 saw in round 0 (others 1, 2)
    np.testing.assert_array_equal(differences.in_support(np.array([[0, 1, 0, 0, 2, 1]]), count_sets, True, 3), [True])
