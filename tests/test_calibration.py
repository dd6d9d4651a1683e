"""Simulation-based calibration: rank statistics, uniformity tests, and ``sbc`` itself.

The fast tests check the rank and test arithmetic against plain NumPy loops and on a
conjugate normal model whose exact posterior is known in closed form; one fast test
runs a tiny ``sbc`` through the shipped runner (``inference.nuts.run_nuts``) and
checks that its simulation compiles once. The slow tests run SBC of the NUTS fit of a
2-agent, 2-action tabular game (NumPyro's dense adaptation) and of a 2-agent, 11-action
one (220 free payoff differences: the Laplace frame) and check for gross miscalibration.
"""

from __future__ import annotations

import numpy as np
import pytest

from bayes_diml import calibration
from bayes_diml.calibration import sbc
from bayes_diml.calibration_ranks import default_num_bins, distinct_quantities, rank_statistics, uniformity_test
from bayes_diml.errors import DataError, SpecError
from bayes_diml.learners import logit_q
from bayes_diml.mechanisms import Tabular
from bayes_diml.model import Model

LEARNER = {"alpha": 0.3, "beta": 3.0, "eps": 0.05}

# Per-quantity uniformity tests on fixed seeds: a calibrated sampler passes at this level
# except with probability ~ Q * 1e-3 per seed (Bonferroni), a grossly wrong one fails.
P_MIN = 1e-3
# Deliberately wrong posteriors must be rejected far beyond chance.
P_WRONG_MAX = 1e-6
# Mathematically equal quantities computed by two compiled routes: last-bit float32 differences.
EQUAL_RTOL = 1e-6


def tabular_2x2() -> Model:
    return Model(Tabular(num_agents=2, num_actions=2), logit_q, dict(LEARNER))


# ------------------------------------------------------------------ fast: ranks and tests
def conjugate_normal_ranks(num_datasets: int, num_draws: int, scale_factor: float, seed: int):
    """Ranks for theta ~ N(0, 1), y_1..m ~ N(theta, 1), with posterior draws from
    N(sum y / (m + 1), scale_factor**2 / (m + 1)): exact when ``scale_factor = 1``."""
    rng = np.random.default_rng(seed)
    m = 5
    theta = rng.normal(size=num_datasets)
    y = theta[:, None] + rng.normal(size=(num_datasets, m))
    mean, sd = y.sum(axis=1) / (m + 1), scale_factor / np.sqrt(m + 1)
    draws = mean[:, None] + sd * rng.normal(size=(num_datasets, num_draws))
    return rank_statistics(draws[:, :, None], theta[:, None], seed=seed), theta, draws


def test_ranks_match_a_plain_loop_and_break_ties_uniformly():
    rng = np.random.default_rng(0)
    draws = rng.integers(0, 4, size=(300, 9, 2)).astype(float)  # many ties
    truth = rng.integers(0, 4, size=(300, 2)).astype(float)
    ranks = rank_statistics(draws, truth, seed=1)
    for n in range(300):
        for q in range(2):
            less = sum(draws[n, d, q] < truth[n, q] for d in range(9))
            equal = sum(draws[n, d, q] == truth[n, q] for d in range(9))
            assert less <= ranks[n, q] <= less + equal
    # with discrete draws and truth from the same law, randomised ranks are exactly uniform on 0..9
    big = rank_statistics(rng.integers(0, 4, size=(4000, 9, 1)).astype(float), rng.integers(0, 4, size=(4000, 1)).astype(float), seed=0)
    assert uniformity_test(big, 9, seed=0)["p_chi2"][0] > P_MIN


def test_chi_square_statistic_matches_hand_computation():
    ranks = np.array([[0], [1], [2], [3], [3], [3], [4], [5], [5], [5]])  # L = 5: values 0..5
    out = uniformity_test(ranks, 5, num_bins=3, seed=0)  # bins {0,1}, {2,3}, {4,5}
    observed, expected = np.array([2, 4, 4]), np.full(3, 10 / 3)
    assert np.isclose(out["chi2"][0], np.sum((observed - expected) ** 2 / expected))
    from scipy import stats

    assert np.isclose(out["p_chi2"][0], stats.chi2.sf(out["chi2"][0], 2))
    # unequal bins: L + 1 = 7 values in 3 bins get expected counts proportional to their widths
    out = uniformity_test(np.arange(7)[:, None], 6, num_bins=3, seed=0)
    assert np.isclose(out["chi2"][0], 0.0)
    assert default_num_bins(100, 99) == 10 and default_num_bins(60, 49) == 5 and default_num_bins(5, 99) == 2


def test_exact_posterior_gives_uniform_ranks_and_a_narrow_one_does_not():
    num_datasets, num_draws = 1000, 99
    exact, _, _ = conjugate_normal_ranks(num_datasets, num_draws, 1.0, seed=3)
    tests = uniformity_test(exact, num_draws, seed=0)
    assert tests["p_chi2"][0] > P_MIN and tests["p_ks"][0] > P_MIN, tests
    # mean normalised rank: sd sqrt((L + 2) / (12 L)) / sqrt(N) = 0.0093; 4 sd
    assert abs(exact.mean() / num_draws - 0.5) < 4 * np.sqrt((num_draws + 2) / (12 * num_draws) / num_datasets)
    narrow, _, _ = conjugate_normal_ranks(num_datasets, num_draws, 0.5, seed=3)  # sd halved: U-shaped ranks
    tests = uniformity_test(narrow, num_draws, seed=0)
    assert tests["p_chi2"][0] < P_WRONG_MAX and tests["p_ks"][0] < P_WRONG_MAX, tests
    counts = tests["counts"][0]
    assert counts[0] + counts[-1] > 2 * counts[len(counts) // 2 - 1 : len(counts) // 2 + 1].sum()


def test_distinct_quantities_groups_equal_columns():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(50, 3))
    values = np.c_[values, values[:, 1] * (1 + 1e-7), values[:, 0] + 1e-3, values[:, 2]]
    assert distinct_quantities(values).tolist() == [0, 1, 2, 4]


def test_bad_inputs_are_refused():
    with pytest.raises(DataError, match="ranks must lie"):
        uniformity_test(np.array([[0], [12]]), 9, seed=0)
    with pytest.raises(DataError, match="num_bins"):
        uniformity_test(np.array([[0], [1]]), 9, num_bins=11, seed=0)
    model = tabular_2x2()
    with pytest.raises(DataError, match="method"):
        sbc(model, None, 4, method="hmc", seed=0)
    with pytest.raises(DataError, match="num_datasets"):
        sbc(model, None, 1, seed=0)
    with pytest.raises(SpecError, match="unknown key 'scael'"):
        sbc(model, {"scael": 2.0}, 4, seed=0)
    with pytest.raises(SpecError, match="beta"):
        sbc(model, {"beta": {"dist": "lognormal", "loc": 1.0, "scale": 0.3}}, 4, seed=0)


# ------------------------------------------------------------------ fast: sbc runs and compiles once
def spy_on_run_nuts(monkeypatch) -> list[dict]:
    """Record the ``info`` of every ``run_nuts`` call (the runner ``fit`` calls)."""
    from bayes_diml.inference import nuts

    infos, real = [], nuts.run_nuts

    def spy(*args, **kwargs):
        result = real(*args, **kwargs)
        infos.append(result.info)
        return result

    monkeypatch.setattr(nuts, "run_nuts", spy)
    return infos


def test_tiny_sbc_runs_and_compiles_once(monkeypatch):
    model = tabular_2x2()
    prior = {"scale": 2.0, "alpha": {"dist": "beta", "a": 3.0, "b": 7.0}}  # alpha unknown
    infos = spy_on_run_nuts(monkeypatch)
    before = calibration.TRACE_COUNT
    # 3 datasets in batches of 2: two calls of the batched function (the last one padded)
    result = sbc(model, prior, 3, num_episodes=2, num_rounds=4, num_draws=9, thin=1, num_warmup=20,
                 init_steps=10, max_tree_depth=4, batch_size=2, seed=0, progress=False)
    assert calibration.TRACE_COUNT - before == 1
    # each dataset is fitted by the shipped runner, with the settings asked for
    assert len(infos) == 3 and all(i["mass_matrix"] == "laplace frame" and i["warm_start_steps"] == 10 for i in infos)
    assert all(i["num_samples"] == 9 and i["num_warmup"] == 20 and i["max_tree_depth"] == 4 for i in infos)
    assert result.settings["mass_matrix"] == "laplace frame"
    assert result.ranks.shape == (3, 9) and result.ranks.min() >= 0 and result.ranks.max() <= 9
    assert result.kinds.count("parameter") == 5 and result.kinds.count("difference") == 4
    assert "alpha" in result.quantities and result.settings["mechanism_prior"] == {"scale": 2.0}
    alpha = result.true_values[:, result.quantities.index("alpha")]
    assert np.all((alpha > 0) & (alpha < 1))
    # tabular gauge (baseline action 0 pinned at 0): free payoffs are the entries with own
    # action 1 in C order of (joint index a0 + 2 a1, agent): (1,0)_0, (0,1)_1, (1,1)_0, (1,1)_1,
    # so each difference "agent i: 1 vs 0 | others" equals one free payoff exactly
    truth = dict(zip(result.quantities, result.true_values.T))
    np.testing.assert_allclose(truth["diff[0: 1 vs 0 | _ 0]"], truth["free_payoffs[0]"], rtol=EQUAL_RTOL, atol=EQUAL_RTOL)
    np.testing.assert_allclose(truth["diff[1: 1 vs 0 | 0 _]"], truth["free_payoffs[1]"], rtol=EQUAL_RTOL, atol=EQUAL_RTOL)
    np.testing.assert_allclose(truth["diff[0: 1 vs 0 | _ 1]"], truth["free_payoffs[2]"], rtol=EQUAL_RTOL, atol=EQUAL_RTOL)
    np.testing.assert_allclose(truth["diff[1: 1 vs 0 | 1 _]"], truth["free_payoffs[3]"], rtol=EQUAL_RTOL, atol=EQUAL_RTOL)
    frame = result.to_frame()
    assert list(frame.columns) == ["quantity", "kind", "mean_rank", "chi2", "p_chi2", "ks", "p_ks"]
    assert 0.0 <= result.combined_p_value <= 1.0
    # Bonferroni over the 5 distinct quantities (each difference duplicates a free payoff)
    assert np.isclose(result.combined_p_value, min(1.0, 5 * frame["p_chi2"].min()))
    assert result.plot().axes
    # same model and sizes, another seed: the compiled function is reused
    sbc(model, dict(prior), 3, num_episodes=2, num_rounds=4, num_draws=9, thin=1, num_warmup=20,
        init_steps=10, max_tree_depth=4, batch_size=2, seed=1, progress=False)
    assert calibration.TRACE_COUNT - before == 1


# ------------------------------------------------------------------ slow: SBC of NUTS on a tabular game
@pytest.mark.slow
def test_nuts_on_a_two_agent_tabular_game_is_calibrated():
    """200 datasets of 5 episodes x 12 rounds from the N(0, 1) prior on the 4 free
    payoff differences; NUTS with L = 49 draws (thin 2), one ``run_nuts`` fit per dataset
    (about 2 s each on 2 cores in the Laplace-frame test below, most of it NumPyro compiling
    its sampling loop): several minutes. (Before ``sbc`` went through the shipped runner, one
    vmapped program: about 2 minutes.)

    Bounds: the combined (Bonferroni) p-value of 4 distinct chi-square tests exceeds 1e-3 unless
    some rank histogram is far from flat. The mean normalised rank of N uniform ranks
    on 0..L has sd sqrt((L + 2) / (12 L)) / sqrt(N) = 0.021; 4 sd (0.083) bounds it per
    quantity (false alarm ~ 8 x 6e-5), while a posterior shifted by 0.25 posterior sd
    moves it by about 0.1.
    """
    # Four studies of 50 datasets (seeds 11..14), pooled: every fit compiles NumPyro's sampling
    # loop anew, and 200 compilations in one process exhaust the kernel's memory mappings
    # (LLVM cannot allocate section memory); the test, not the library, drops them in between.
    import jax

    from bayes_diml.calibration_ranks import bonferroni

    num_draws, parts = 49, []
    for seed in range(11, 15):
        parts.append(sbc(tabular_2x2(), None, 50, num_episodes=5, num_rounds=12, num_draws=num_draws,
                         thin=2, num_warmup=200, seed=seed, progress=False))
        jax.clear_caches()
    ranks = np.concatenate([r.ranks for r in parts])
    true_values = np.concatenate([r.true_values for r in parts])
    num_datasets = len(ranks)
    combined = bonferroni(uniformity_test(ranks, num_draws, seed=0)["p_chi2"], true_values)
    assert combined > P_MIN, combined
    band = 4 * np.sqrt((num_draws + 2) / (12 * num_draws) / num_datasets)
    mean_rank = np.concatenate([r.normalised_ranks for r in parts]).mean(axis=0)
    assert np.all(np.abs(mean_rank - 0.5) < band), (mean_rank, band)
    divergences = sum(int(r.divergences.sum()) for r in parts)
    assert divergences <= 0.01 * num_datasets * num_draws * 2, divergences


LAPLACE_FRAME_SBC = dict(num_episodes=2, num_rounds=10, num_draws=19, thin=2, num_warmup=150, max_differences=4,
                         num_bins=4, seed=3, progress=False)
"""30 datasets, L = 19 draws (thin 2), ranks in 4 bins of 5 values (7.5 expected counts per bin),
4 payoff-difference queries."""


def laplace_frame_game() -> Model:
    """2 agents x 11 actions, tabular: 2 x 11 x 10 = 220 free payoff differences (the gauge
    pins action 0): a Laplace frame of a few hundred coordinates (the frame runs at every
    size above ``nuts.ADAPTED_DENSE_MAX_DIM``, 0 as shipped)."""
    return Model(Tabular(num_agents=2, num_actions=11), logit_q, dict(LEARNER))


def difference_p_value(result) -> float:
    """Bonferroni over the payoff-difference queries only: ``min(1, Q_d min_q p_q)``."""
    p = result.p_values[[kind == "difference" for kind in result.kinds]]
    return float(min(1.0, len(p) * p.min()))


@pytest.mark.slow
def test_nuts_in_the_laplace_frame_is_calibrated(monkeypatch):
    """SBC through the shipped sampler at 220 coordinates (``run_nuts`` samples in the
    Laplace frame); 30 datasets of 2 episodes x 10 rounds.

    Bounds: neither the combined (Bonferroni) p-value over all distinct quantities nor the
    one over the 4 difference queries rejects calibration at 0.01 (each does so with
    probability <= 0.01 under calibration). With 220 parameters and 30 datasets the
    first has little power (a Bonferroni factor of 224); the second has it: draws shrunk
    towards their mean by 0.3 (an over-confident posterior) give p < 1e-3 on this seed
    (a U-shaped rank histogram; 2 bins, the default at 30 datasets, could not see it).
    """
    from bayes_diml.inference.nuts import ADAPTED_DENSE_MAX_DIM

    infos = spy_on_run_nuts(monkeypatch)
    num_datasets = 30
    result = sbc(laplace_frame_game(), None, num_datasets, **LAPLACE_FRAME_SBC)
    assert result.settings["latent_dim"] == 220 > ADAPTED_DENSE_MAX_DIM
    assert len(infos) == num_datasets and all(i["mass_matrix"] == "laplace frame" for i in infos)
    assert result.combined_p_value > 0.01, result.to_frame().sort_values("p_chi2").head()
    assert difference_p_value(result) > 0.01, result.to_frame()[result.to_frame()["kind"] == "difference"]
    assert result.divergences.sum() <= 0.01 * num_datasets * 19 * 2, result.divergences.sum()
