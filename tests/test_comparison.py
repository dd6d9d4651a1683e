"""Model comparison (PSIS-LOO over episodes) and prior sensitivity (power scaling)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import bayes_diml as bd
from bayes_diml.cli import main
from bayes_diml.learners import LEARNERS
from bayes_diml.mechanisms import Tabular
from bayes_diml.model import Model
from bayes_diml.priors import Prior

LEARNER = {"alpha": 0.3, "beta": 3.0, "eps": 0.05}
# PSIS smooths only the largest weights; with every Pareto k small the raw
# importance-sampling LOO estimate differs from it by far less than this (nats, total).
RAW_IS_TOLERANCE = 0.5
# Power-scaling sensitivity above ArviZ's default threshold 0.05 counts as "influential".
SENSITIVITY_THRESHOLD = 0.05


def _data():
    model = Model(Tabular(num_agents=2, num_actions=2), LEARNERS["logit_q"], dict(LEARNER))
    rng = np.random.default_rng(3)
    truth = {"mechanism": {"payoffs": rng.normal(size=(4, 2))}, "learner": dict(LEARNER)}
    return model, bd.simulate(model, truth, num_episodes=12, num_rounds=10, seed=1)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two tiny Laplace fits of the same data: logit-Q vs logit-Q with a decreasing step."""
    model, data = _data()
    other = Model(model.mechanism, LEARNERS["logit_q_decreasing"], {"c": 2.0, "beta": 3.0, "eps": 0.05})
    root = tmp_path_factory.mktemp("runs")
    fits = {}
    for name, m in (("logit_q", model), ("decreasing", other)):
        fit = bd.fit(m, data, method="map", seed=0, steps=300, restarts=1, laplace=True, num_samples=400, progress=False)
        fit.save(root / name)
        fits[name] = fit
    return root, fits


def _raw_is_elpd(log_lik: np.ndarray) -> float:
    """Importance-sampling LOO without smoothing: ``sum_e -log mean_s exp(-ll[s, e])``."""
    ll = log_lik.reshape(-1, log_lik.shape[-1]).astype(np.float64)
    neg = -ll
    m = neg.max(axis=0)
    return float(np.sum(-(m + np.log(np.mean(np.exp(neg - m), axis=0)))))


def test_compare_cli_prints_and_writes_csv(two_runs, tmp_path, capsys):
    root, fits = two_runs
    out = tmp_path / "table.csv"
    code = main(["compare", str(root / "logit_q"), str(root / "decreasing"), "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "logit_q" in printed and "decreasing" in printed and "elpd" in printed
    table = pd.read_csv(out, index_col="model")
    assert set(table.index) == {"logit_q", "decreasing"}
    assert {"rank", "elpd", "elpd_diff", "weight"} <= set(table.columns)
    # each model's elpd against an independent importance-sampling LOO from the saved draws
    for name, fit in fits.items():
        assert table.loc[name, "elpd"] == pytest.approx(_raw_is_elpd(fit.log_likelihood), abs=RAW_IS_TOLERANCE)
    best = table["elpd"].idxmax()
    assert table.loc[best, "rank"] == 0 and table.loc[best, "elpd_diff"] == pytest.approx(0.0)


def test_compare_cli_refuses_one_run_and_existing_output(two_runs, tmp_path, capsys):
    root, _ = two_runs
    assert main(["compare", str(root / "logit_q"), "--out", str(tmp_path / "x.csv")]) == 2
    assert "at least two" in capsys.readouterr().err
    existing = tmp_path / "there.csv"
    existing.write_text("x")
    assert main(["compare", str(root / "logit_q"), str(root / "decreasing"), "--out", str(existing)]) == 2


def test_compare_refuses_fits_of_other_data(two_runs):
    import dataclasses

    _, fits = two_runs
    model, data = _data()
    other = bd.simulate(
        model, {"mechanism": {"payoffs": np.zeros((4, 2))}, "learner": dict(LEARNER)}, num_episodes=12, num_rounds=10, seed=9
    )
    with pytest.raises(bd.DataError, match="other data"):
        bd.compare([fits["logit_q"], dataclasses.replace(fits["decreasing"], data=other)])


def test_pareto_k_warning_in_plain_words():
    from bayes_diml.inference.comparison import pareto_k_warnings

    class Fake:
        pareto_k = np.array([0.1, 0.9, 1.4])
        good_k = 0.7

    (message,) = pareto_k_warnings("m", Fake(), ["a", "b", "c"])
    assert "episode(s) b, c" in message and "2 of 3" in message
    Fake.pareto_k = np.array([0.1, 0.2])
    assert pareto_k_warnings("m", Fake()) == []


@pytest.fixture(scope="module")
def narrow_prior_fit():
    """alpha's prior Beta(3000, 7000) has sd 0.005, far narrower than what 12 short
    episodes say about alpha; the payoffs' N(0, 1) prior is wide."""
    model, data = _data()
    narrow = Model(model.mechanism, model.learner, {**LEARNER, "alpha": Prior("beta", (("a", 3000.0), ("b", 7000.0)))})
    return bd.fit(narrow, data, method="map", seed=0, steps=300, restarts=1, laplace=True, num_samples=1000, progress=False)


def test_sensitivity_flags_a_prior_narrower_than_the_likelihood(narrow_prior_fit):
    """Power-scaling the prior moves alpha's posterior (it is the prior), barely the payoffs."""
    fit = narrow_prior_fit
    assert set(fit.to_arviz()["log_prior"].data_vars) == {"alpha", "free_payoffs"}
    table = fit.sensitivity()
    assert {"prior", "likelihood", "diagnosis", "meaning"} <= set(table.columns)
    assert table.loc["alpha", "prior"] > SENSITIVITY_THRESHOLD
    assert table.loc["alpha", "likelihood"] < SENSITIVITY_THRESHOLD
    assert "prior dominates" in table.loc["alpha", "meaning"]
    payoff_rows = [i for i in table.index if i.startswith("payoffs")]
    assert payoff_rows
    assert table.loc["alpha", "prior"] > table.loc[payoff_rows, "prior"].max()


def test_log_prior_matches_closed_form(narrow_prior_fit):
    """The log_prior group against SciPy's densities at the same draws."""
    from scipy import stats

    fit = narrow_prior_fit
    log_prior = fit.log_prior_draws()
    alpha = np.asarray(fit.posterior["alpha"], np.float64)
    np.testing.assert_allclose(log_prior["alpha"], stats.beta(3000, 7000).logpdf(alpha), rtol=1e-4, atol=2e-2)
    free = np.asarray(fit.posterior["free_payoffs"], np.float64)
    np.testing.assert_allclose(log_prior["free_payoffs"], stats.norm.logpdf(free).sum(-1), rtol=1e-4, atol=1e-3)
