"""Which learning rule do the agents follow? PSIS-LOO between EWA and logit-Q fits,
and recovery of EWA's parameters (issue 7, "Done means").

All tests are ``slow`` (NUTS fits), with fixed seeds; the numbers measured for the
fixed seed, and for a second seed checked by hand, are in each docstring.
Cost (2-core CPU, shared): about 100 s of CPU for the file -- two fits on EWA data
(~50 s, shared by the first two tests through a module fixture) and two on logit-Q
data (~46 s).

Setup shared by all tests: a 2-agent tabular game with 3 actions, payoff table
``N(SHIFT, 1)`` per entry (seeded), logit precision ``beta`` and mixing ``eps`` fixed
in both the truth and every fit (a prior on ``beta`` with a free payoff scale is
refused, docs/design.md §3). EWA's ``phi``, ``rho``, ``delta`` and logit-Q's ``alpha`` get
uniform(0, 1) priors. EWA is not shift invariant, so its fit keeps every payoff
entry free; logit-Q's fit fixes the gauge (docs/design.md §3) -- ``compare`` must handle
two fits with different numbers of payoff parameters.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import bayes_diml as bd
from bayes_diml.learners import LEARNERS
from bayes_diml.mechanisms import Tabular
from bayes_diml.model import Model
from bayes_diml.priors import Prior

NUM_ACTIONS = 3
# 40 episodes x 25 rounds: with 20 x 20 the second seed's EWA-vs-logit-Q margin was only
# 2.1 standard errors and its delta interval [0.12, 0.48] missed 0.5 (see the docstrings).
NUM_EPISODES, NUM_ROUNDS = 40, 25
SHIFT = 0.0
BETA, EPS = 3.0, 0.05
EWA_TRUTH = {"phi": 0.9, "rho": 0.9, "delta": 0.5, "beta": BETA, "eps": EPS}
LOGIT_Q_TRUTH = {"alpha": 0.3, "beta": BETA, "eps": EPS}
UNIT = Prior("uniform", (("low", 0.0), ("high", 1.0)))
NUTS = dict(method="nuts", seed=0, num_chains=2, num_warmup=300, num_samples=300, progress=False)
# "Clearly prefers" = elpd difference beyond two standard errors of the difference
# (ArviZ's dse), the rule ``bd.compare`` itself uses for its "within two standard
# errors" warning.
SE_FACTOR = 2.0


def _mechanism() -> Tabular:
    return Tabular(num_agents=2, num_actions=NUM_ACTIONS)


def _simulate(rule: str, learner: dict, seed: int):
    rng = np.random.default_rng(seed)
    payoffs = SHIFT + rng.normal(size=(NUM_ACTIONS**2, 2))
    model = Model(_mechanism(), LEARNERS[rule], dict(learner))
    truth = {"mechanism": {"payoffs": payoffs}, "learner": dict(learner)}
    return bd.simulate(model, truth, num_episodes=NUM_EPISODES, num_rounds=NUM_ROUNDS, seed=seed)


def _fit_both(data) -> dict:
    ewa = Model(_mechanism(), LEARNERS["ewa"], {"phi": UNIT, "rho": UNIT, "delta": UNIT, "beta": BETA, "eps": EPS})
    logit_q = Model(_mechanism(), LEARNERS["logit_q"], {"alpha": UNIT, "beta": BETA, "eps": EPS})
    return {"ewa": bd.fit(ewa, data, **NUTS), "logit_q": bd.fit(logit_q, data, **NUTS)}


def _compare(fits: dict):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pareto-k / tie sentences: kept in table.attrs["warnings"]
        return bd.compare(fits)


@pytest.fixture(scope="module")
def ewa_fits():
    """EWA data (seed 0), fitted by EWA and by logit-Q (shared by two tests)."""
    return _fit_both(_simulate("ewa", EWA_TRUTH, seed=0))


@pytest.mark.slow
def test_loo_prefers_ewa_on_ewa_data(ewa_fits):
    """Data from EWA with delta = 0.5 (the played action's payoff counts twice as much
    as a foregone one): LOO ranks the EWA fit first, by more than two standard errors.

    Measured (CPU, 40 x 25): seed 0: EWA ahead by 21.9 +- 7.8 (2.8 standard errors);
    seed 1 (by hand): 27.7 +- 6.7 (4.1 se). Smaller data are not robust: 20 x 20 gave
    12.4 +- 4.1 (3.0 se) and 12.8 +- 6.0 (2.1 se). The bound is ArviZ's own standard
    error of the paired difference; the margin of ~0.8 se at seed 0 is modest, so a
    change of sampler or ArviZ version may need a new look at this number before the
    test is loosened. Pareto k: at most 1 of 40 episodes above 0.64 (600 draws), in
    the logit-Q fit only (the table's sentences are in ``attrs["warnings"]``).
    """
    table = _compare(ewa_fits)
    assert table.index[0] == "ewa", table
    diff, dse = -table.loc["logit_q", "elpd_diff"], table.loc["logit_q", "dse"]
    assert diff > SE_FACTOR * dse, table
    # the elpd of each model is a finite sum over all episodes, both fits of the same data
    assert np.all(np.isfinite(table["elpd"]))


@pytest.mark.slow
def test_ewa_phi_delta_recovered_in_90_percent_intervals(ewa_fits):
    """The true phi = 0.9 and delta = 0.5 lie inside the EWA fit's 5%-95% posterior
    quantiles. (rho is not asserted; it was covered too: [0.88, 0.97] and [0.89, 0.98].)

    Measured (40 x 25): seed 0: phi [0.88, 0.96], delta [0.37, 0.63]; seed 1 (by
    hand): phi [0.81, 0.93], delta [0.29, 0.63]. delta trades off against the payoff
    level (the played action gets the extra (1 - delta) u), so it is the weaker of the
    two; with 20 x 20 seed 1 gave delta [0.12, 0.48] and missed. Width bound 0.5: the
    measured widths are <= 0.35, the uniform prior's 90% width is 0.9.
    """
    posterior = ewa_fits["ewa"].posterior
    for name in ("phi", "delta"):
        draws = np.asarray(posterior[name]).ravel()
        low, high = np.quantile(draws, [0.05, 0.95])
        assert low < EWA_TRUTH[name] < high, (name, low, high)
        # and the interval says something: narrower than the uniform prior's (0.05, 0.95)
        assert high - low < 0.5, (name, low, high)


@pytest.mark.slow
def test_loo_prefers_logit_q_or_ties_on_logit_q_data():
    """Data from logit-Q: EWA nests logit-Q up to the payoff scale (delta = 1, rho = 0,
    phi = 1 - alpha), so it cannot be clearly worse in fit, only in complexity; LOO must
    not clearly prefer EWA: either logit-Q ranks first, or EWA is ahead by less than
    two standard errors.

    Measured (40 x 25): seed 0: logit-Q first, EWA behind by 4.0 +- 1.7; seed 1 (by
    hand): logit-Q first, EWA behind by 1.1 +- 3.0 (a tie). The EWA fit moves toward
    logit-Q (delta 90% intervals [0.84, 0.99] and [0.76, 0.99]).
    """
    table = _compare(_fit_both(_simulate("logit_q", LOGIT_Q_TRUTH, seed=0)))
    if table.index[0] == "ewa":
        row = table.loc["logit_q"]
        assert -row["elpd_diff"] < SE_FACTOR * row["dse"], table
    assert np.all(np.isfinite(table["elpd"]))
