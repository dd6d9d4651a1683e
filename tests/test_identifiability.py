"""Identifiability diagnostics (docs/design.md §3).

The direction naming is checked on hand-made information matrices whose null
spaces are known; the report is checked on a tiny congestion game, where the
payoff ``(tau - c1) L - c2 L^2`` makes ``c1[k] + tau[k]`` flat for every
resource: the expected directions are built from that analysis, never from the
code's own output.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

import bayes_diml as bd
from bayes_diml.inference import fisher
from bayes_diml.inference import identifiability as ident
from bayes_diml.inference.fisher import combination_name, direction_name, fisher_directions, rref
from bayes_diml.inference.identifiability import contraction_verdict
from bayes_diml.learners import LEARNERS
from bayes_diml.mechanisms import FAMILIES
from bayes_diml.model import Model

# Tolerances
SUBSPACE_ATOL = 1e-4  # distance of a computed basis vector from the analytic subspace (float32 Hessian)
FLOAT32_NOISE = 1e-7  # relative perturbation of a hand-made information matrix (float32 round-off)
PRIOR_ONLY_ATOL = 0.1  # |contraction - 1| of a parameter that only meets its prior (1000 draws each side: sd ~0.03)
LOADING_ATOL = 1e-3  # flat loading of c1 / tau vs the analytic 1/sqrt(2)

NUM_ACTIONS = 3
LEARNER_PARAMS = {"alpha": 0.25, "beta": 3.0, "eps": 0.06}
TRUTH = {
    "mechanism": {
        "c1": np.array([0.20, 0.30, 0.15]),
        "c2": np.array([0.10, 0.06, 0.12]),
        "tau": np.array([0.05, 0.15, 0.10]),
    },
    "learner": dict(LEARNER_PARAMS),
}


# ------------------------------------------------------------------ helpers
def parse_combination(text: str) -> dict[str, float]:
    """``"c2[3] - 0.45*tau[3] + c1[3] + ..."`` -> ``{"c2[3]": 1, "tau[3]": -0.45, "c1[3]": 1}``."""
    terms = {}
    for sign, coefficient, name in re.findall(r"(-|\+)?\s*(?:([0-9.]+)\*)?([A-Za-z_]\w*(?:\[[0-9,]+\])?)", text):
        terms[name] = (-1.0 if sign == "-" else 1.0) * (float(coefficient) if coefficient else 1.0)
    return terms


def information_with_null_space(null_vectors: np.ndarray, seed: int) -> np.ndarray:
    """A symmetric PSD matrix whose null space is exactly the span of the rows of ``null_vectors``."""
    d = null_vectors.shape[1]
    q, _ = np.linalg.qr(null_vectors.T)
    projector = np.eye(d) - q @ q.T
    a = np.random.default_rng(seed).normal(size=(d, d))
    return projector @ (a @ a.T + np.eye(d)) @ projector


def distance_from_span(vectors: np.ndarray, span_rows: np.ndarray) -> float:
    """Largest norm of the part of a (normalised) row of ``vectors`` outside the span."""
    q, _ = np.linalg.qr(span_rows.T)
    v = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return float(np.max(np.linalg.norm(v - (v @ q) @ q.T, axis=1)))


def unit(coordinates: list[str], terms: dict[str, float]) -> np.ndarray:
    v = np.zeros(len(coordinates))
    for name, value in terms.items():
        v[coordinates.index(name)] = value
    return v


# --------------------------------------------------- (a) naming on known null spaces
def test_rref_of_a_small_matrix():
    reduced, pivots = rref(np.array([[0.0, 2.0, 4.0], [1.0, 1.0, 1.0], [1.0, 3.0, 5.0]]))
    np.testing.assert_allclose(reduced, [[1, 0, -1], [0, 1, 2], [0, 0, 0]], atol=1e-12)
    assert pivots == [0, 1]


def test_combination_name_format():
    names = ["a", "b", "c", "d", "e"]
    assert combination_name([1, -1, 0.5, -2.25, 0], names) == "a - b + 0.5*c - 2.25*d"
    assert combination_name([-1, 0, 0, 0, 0.004], names) == "-a"
    assert combination_name(np.zeros(5), names) == "0"
    # Largest loading first and positive; a tie goes to the coordinate listed last.
    assert direction_name([-0.5, 0.0, 0.5, 0.0, 0.1], names) == "c - a"
    assert direction_name([0.3, -1.0, 0.0, 0.0, 0.2], names) == "b - 0.3*a"


@pytest.mark.parametrize("noise", [0.0, FLOAT32_NOISE])
def test_flat_and_identified_directions_of_a_known_quadratic_form(noise):
    # Null space: a + b and c - 2 d. Its complement: b - a, c + 0.5 d, e.
    names = ["a", "b", "c", "d", "e"]
    null = np.array([[1.0, 1.0, 0, 0, 0], [0, 0, 1.0, -2.0, 0]])
    info = information_with_null_space(null, seed=0)
    perturbation = np.random.default_rng(1).normal(size=info.shape)
    info = info + noise * np.abs(info).max() * (perturbation + perturbation.T) / 2

    result = fisher_directions(info, names)

    assert result.flat.sum() == 2
    assert result.flat_directions == ["a + b", "c - 2*d"]
    assert result.identified_combinations == ["b - a", "c + 0.5*d", "e"]
    assert np.all(np.diff(result.eigenvalues) <= 0)
    assert distance_from_span(result.flat_basis, null) < SUBSPACE_ATOL
    np.testing.assert_allclose(result.flat_loading, [2**-0.5, 2**-0.5, 5**-0.5, 2 * 5**-0.5, 0.0], atol=1e-6)
    for text in result.identified_directions:  # every named eigenvector is orthogonal to a + b
        terms = parse_combination(text)
        assert terms.get("a", 0.0) == pytest.approx(-terms.get("b", 0.0), abs=0.011)


def test_full_rank_information_has_no_flat_direction():
    names = ["x", "y"]
    result = fisher_directions(np.array([[2.0, 0.5], [0.5, 1.0]]), names)
    assert result.flat_directions == []
    assert result.identified_combinations == ["x", "y"]


def test_contraction_verdict_thresholds():
    assert contraction_verdict(0.1) == "identified"
    assert contraction_verdict(0.49) == "identified"
    assert contraction_verdict(0.5) == "weakly identified"
    assert contraction_verdict(0.89) == "weakly identified"
    assert contraction_verdict(0.9) == "prior-driven"
    assert contraction_verdict(1.2) == "prior-driven"
    assert contraction_verdict(float("nan")) == "not assessed (one draw)"


# ------------------------------------------------------- (b) a tiny congestion game
@pytest.fixture(scope="module")
def congestion_fit():
    """3 agents on 3 resources, 8 x 20 rounds, MAP with Laplace draws (one fit per module)."""
    mechanism = FAMILIES["congestion"](num_agents=3, num_actions=NUM_ACTIONS)
    model = Model(mechanism, LEARNERS["logit_q"], learner_params=dict(LEARNER_PARAMS))
    data = bd.simulate(model, TRUTH, num_episodes=8, num_rounds=20, seed=1)
    return bd.fit(
        model, data, method="map", seed=0, steps=300, restarts=2, progress=False,
        laplace=True, num_samples=1000, posterior_predictive_draws=1,
    )


@pytest.fixture(scope="module")
def congestion_report(congestion_fit):
    return congestion_fit.identifiability(seed=0)


def analytic_null_space(coordinates: list[str]) -> np.ndarray:
    """payoff = (tau - c1) L - c2 L^2: moving c1[k] and tau[k] together changes nothing."""
    return np.stack([unit(coordinates, {f"c1[{k}]": 1.0, f"tau[{k}]": 1.0}) for k in range(NUM_ACTIONS)])


def test_congestion_flat_directions_are_c1_plus_tau(congestion_report):
    report = congestion_report
    assert sorted(report.coordinates) == sorted(f"{p}[{k}]" for p in ("c1", "c2", "tau") for k in range(NUM_ACTIONS))
    null = analytic_null_space(report.coordinates)

    assert report.flat_directions == [f"c1[{k}] + tau[{k}]" for k in range(NUM_ACTIONS)]
    assert report.flat_basis.shape == null.shape
    assert distance_from_span(report.flat_basis, null) < SUBSPACE_ATOL
    assert distance_from_span(null, report.flat_basis) < SUBSPACE_ATOL
    assert report.eigenvalues.shape == (3 * NUM_ACTIONS,)
    assert np.all(np.diff(report.eigenvalues) <= 0)
    relative = np.abs(report.eigenvalues) / report.eigenvalues[0]
    assert (relative <= fisher.FLAT_TOL).sum() == NUM_ACTIONS


def test_congestion_identified_directions_are_tau_minus_c1_and_c2(congestion_report):
    report = congestion_report
    expected = [f"tau[{k}] - c1[{k}]" for k in range(NUM_ACTIONS)] + [f"c2[{k}]" for k in range(NUM_ACTIONS)]
    assert sorted(report.identified_combinations) == sorted(expected)

    # Every named top eigenvector is orthogonal to the analytic null space: c1[k] and
    # tau[k] carry opposite loadings, i.e. they enter only as tau - c1 (next to c2).
    assert len(report.identified_directions) in range(1, fisher.NUM_IDENTIFIED + 1)
    for text in report.identified_directions:
        terms = parse_combination(text)
        for k in range(NUM_ACTIONS):
            assert terms.get(f"c1[{k}]", 0.0) == pytest.approx(-terms.get(f"tau[{k}]", 0.0), abs=0.011), text
    named = set().union(*(parse_combination(t) for t in report.identified_directions))
    assert any(n.startswith("c2[") for n in named) and any(n.startswith("tau[") for n in named)
    identified = report.eigenvectors[:, : 2 * NUM_ACTIONS].T
    np.testing.assert_allclose(identified @ analytic_null_space(report.coordinates).T, 0.0, atol=SUBSPACE_ATOL)


def test_congestion_parameter_table(congestion_report):
    table = congestion_report.parameters.set_index("entry")
    assert list(table.columns) == ["name", "prior_sd", "posterior_sd", "contraction", "flat_loading", "verdict"]
    for k in range(NUM_ACTIONS):
        assert table.loc[f"c1[{k}]", "flat_loading"] == pytest.approx(2**-0.5, abs=LOADING_ATOL)
        assert table.loc[f"tau[{k}]", "flat_loading"] == pytest.approx(2**-0.5, abs=LOADING_ATOL)
        assert table.loc[f"c2[{k}]", "flat_loading"] == pytest.approx(0.0, abs=LOADING_ATOL)
        assert table.loc[f"c2[{k}]", "verdict"] == "identified"
        # tau = d + c1 narrows (d is identified) but only c1's prior is left: not identified alone.
        assert table.loc[f"tau[{k}]", "verdict"] == "not identified on its own"


# ------------------------------------------------------------ (c) contraction
def test_prior_only_parameter_has_contraction_one(congestion_report):
    table = congestion_report.parameters.set_index("entry")
    for k in range(NUM_ACTIONS):
        assert table.loc[f"c1[{k}]", "contraction"] == pytest.approx(1.0, abs=PRIOR_ONLY_ATOL)
        assert table.loc[f"c1[{k}]", "verdict"] == "prior-driven"
        assert table.loc[f"c2[{k}]", "contraction"] < ident.IDENTIFIED_BELOW


def test_differences_and_outputs(congestion_fit, congestion_report):
    report = congestion_report
    diffs = report.differences
    assert len(diffs) == 20
    assert diffs["in_support"].all()  # the default queries are drawn from observed rounds
    assert (diffs["contraction"] < ident.IDENTIFIED_BELOW).all()
    assert (diffs["verdict"] == "identified").all()
    assert "Payoff levels are not identified under a full-information learner; report differences." in report.notes
    assert any(note.startswith("beta multiplies every payoff") for note in report.notes)

    frame = report.to_frame()
    assert list(frame["kind"].value_counts().sort_index().items()) == [("difference", 20), ("parameter", 9)]
    assert {"kind", "name", "entry", "prior_sd", "posterior_sd", "contraction", "verdict", "in_support"} <= set(frame)

    text = report.verdict()
    for line in ["c1[0] + tau[0]", "tau[2] - c1[2]", "3 flat direction(s)", "Payoff levels are not identified"]:
        assert line in text

    queries = diffs[["agent", "action", "baseline", "joint"]].head(3)
    again = congestion_fit.identifiability(queries, seed=0)
    np.testing.assert_allclose(again.differences["contraction"], diffs["contraction"].head(3), rtol=1e-6)


def test_single_draw_fit_is_judged_by_the_fisher_information(congestion_fit):
    fit = congestion_fit
    best = int(np.argmax(fit.log_likelihood.sum(axis=-1).reshape(-1)))
    one = dataclasses.replace(
        fit,
        posterior={k: np.asarray(v).reshape(-1, *np.shape(v)[2:])[best][None, None] for k, v in fit.posterior.items()},
        log_likelihood=fit.log_likelihood.reshape(-1, fit.log_likelihood.shape[-1])[best][None, None],
    )
    report = one.identifiability(seed=0)
    table = report.parameters.set_index("entry")
    assert report.flat_directions == [f"c1[{k}] + tau[{k}]" for k in range(NUM_ACTIONS)]
    assert (table.loc[[f"c2[{k}]" for k in range(NUM_ACTIONS)], "verdict"] == "not assessed (one draw)").all()
    assert (table.loc[[f"c1[{k}]" for k in range(NUM_ACTIONS)], "verdict"] == "not identified on its own").all()
    assert (report.differences["verdict"] == "not assessed (one draw)").all()
    assert any(note.startswith("One draw (MAP)") for note in report.notes)


def test_fisher_is_skipped_above_max_dim(congestion_fit, monkeypatch):
    monkeypatch.setattr(ident, "MAX_FISHER_DIM", 4)
    report = congestion_fit.identifiability(seed=0)
    assert report.eigenvalues.size == 0 and report.flat_directions == []
    assert any(note.startswith("Fisher information skipped") for note in report.notes)
    assert np.isfinite(report.parameters["contraction"]).all()
    assert "Fisher information at the posterior mode" not in report.verdict()


@pytest.mark.slow
def test_prior_only_parameter_under_nuts(congestion_fit):
    fit = bd.fit(
        congestion_fit.model, congestion_fit.data, method="nuts", seed=0, num_chains=2,
        num_warmup=300, num_samples=500, progress=False, posterior_predictive_draws=1,
    )
    table = fit.identifiability(seed=0).parameters.set_index("entry")
    for k in range(NUM_ACTIONS):
        assert table.loc[f"c1[{k}]", "contraction"] == pytest.approx(1.0, abs=PRIOR_ONLY_ATOL)
        assert table.loc[f"c1[{k}]", "verdict"] == "prior-driven"
        assert table.loc[f"tau[{k}]", "verdict"] == "not identified on its own"
        assert table.loc[f"c2[{k}]", "verdict"] == "identified"
