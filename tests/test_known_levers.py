"""Known levers (``[mechanism.known]``): parameters whose values are known (the policy in
force when the data were recorded) are held as constants, not sampled.

For congestion only ``d = tau - c1`` and ``c2`` are identified (docs/design.md §3); with
``tau`` known, ``c1 = tau - d`` is identified too, and the Fisher analysis finds no flat
direction (without it: one per resource, ``c1[k] + tau[k]``).
"""

from __future__ import annotations

import numpy as np
import pytest

import bayes_diml as bd
from bayes_diml.errors import SpecError
from bayes_diml.learners import LEARNERS
from bayes_diml.mechanisms import FAMILIES
from bayes_diml.model import Model
from bayes_diml.spec import dumps_toml, model_to_table, parse_spec

N, A = 4, 5
LEARNER = {"alpha": 0.25, "beta": 3.0, "eps": 0.06}
TRUTH = {  # models/e2_congestion.toml
    "mechanism": {
        "c1": np.array([0.1785, 0.1895, 0.3443, 0.1276, 0.2800]),
        "c2": np.array([0.1229, 0.0688, 0.0555, 0.0775, 0.1157]),
        "tau": np.array([0.1125, 0.0300, 0.0865, 0.1339, 0.0846]),
    },
    "learner": dict(LEARNER),
}
C1_PRIOR_SD = 1.0
"""With tau known, c1 = tau - d and d ~ Normal(0, 1): the prior sd of each c1."""
RECOVERY_SD = 3.0
"""The posterior mean of c1 lies within this many posterior sds of the truth."""

SPEC = """
[game]
agents = 4
actions = 5

[mechanism]
family = "congestion"

[mechanism.known]
tau = [0.1125, 0.0300, 0.0865, 0.1339, 0.0846]

[learner]
rule = "logit_q"
alpha = 0.25
beta = 3.0
eps = 0.06
"""


def make_model(known: dict | None = None) -> Model:
    mechanism = FAMILIES["congestion"](num_agents=N, num_actions=A)
    return Model(mechanism, LEARNERS["logit_q"], learner_params=dict(LEARNER), mechanism_known=known or {})


@pytest.fixture(scope="module")
def data():
    return bd.simulate(make_model(), TRUTH, num_episodes=30, num_rounds=40, seed=1)


def laplace_fit(model, data):
    return bd.fit(
        model, data, method="map", seed=0, steps=400, restarts=2, progress=False,
        laplace=True, num_samples=1000, posterior_predictive_draws=1,
    )


@pytest.fixture(scope="module")
def known_fit(data):
    return laplace_fit(make_model({"tau": TRUTH["mechanism"]["tau"]}), data)


@pytest.fixture(scope="module")
def unknown_fit(data):
    return laplace_fit(make_model(), data)


# ------------------------------------------------------------------ inference
def test_known_tau_is_constant_in_every_draw(known_fit):
    tau = np.asarray(known_fit.posterior["tau"]).reshape(-1, A)
    assert tau.shape[0] == 1000
    np.testing.assert_allclose(tau, np.broadcast_to(TRUTH["mechanism"]["tau"], tau.shape), rtol=1e-6)
    assert "tau" in known_fit.params_draws(np.arange(3))["mechanism"]


def test_known_tau_identifies_c1(known_fit, unknown_fit):
    c1 = np.asarray(known_fit.posterior["c1"]).reshape(-1, A)
    mean, sd = c1.mean(axis=0), c1.std(axis=0)
    assert np.all(np.abs(mean - TRUTH["mechanism"]["c1"]) <= RECOVERY_SD * sd), (mean, sd)
    assert np.all(sd < 0.5 * C1_PRIOR_SD), sd
    # without tau known, c1 only meets its prior Normal(0.25, 0.25)
    free = np.asarray(unknown_fit.posterior["c1"]).reshape(-1, A).std(axis=0)
    assert np.all(free > 0.8 * 0.25), free


def test_identifiability_report_has_no_flat_direction_with_tau_known(known_fit, unknown_fit):
    known = known_fit.identifiability(seed=0)
    assert known.flat_directions == []
    assert len(known.coordinates) == 2 * A  # c1 and c2; tau is data
    verdicts = known.parameters.set_index("entry")["verdict"]
    assert all(verdicts[f"tau[{k}]"] == "known (data)" for k in range(A))
    assert any("[mechanism.known]" in note for note in known.notes)
    unknown = unknown_fit.identifiability(seed=0)
    assert len(unknown.flat_directions) == A  # c1[k] + tau[k], one per resource
    assert len(unknown.coordinates) == 3 * A


# ------------------------------------------------------------------ spec
def test_spec_round_trip_keeps_known_levers(tmp_path):
    import tomllib

    model, _ = parse_spec(tomllib.loads(SPEC))
    np.testing.assert_array_equal(model.mechanism_known["tau"], TRUTH["mechanism"]["tau"])
    assert model == make_model({"tau": list(TRUTH["mechanism"]["tau"])})
    assert model != make_model()
    assert hash(model) == hash(make_model({"tau": TRUTH["mechanism"]["tau"]}))
    table, _ = model_to_table(model)
    assert table["mechanism"]["known"] == {"tau": TRUTH["mechanism"]["tau"].tolist()}
    path = tmp_path / "spec.toml"
    path.write_text(dumps_toml(table), encoding="utf-8")
    again, _ = bd.read_spec(path)
    assert again == model


def _spec_with(known_lines: str, family: str = "congestion") -> str:
    return SPEC.replace("tau = [0.1125, 0.0300, 0.0865, 0.1339, 0.0846]", known_lines).replace(
        '"congestion"', f'"{family}"'
    )


@pytest.mark.parametrize(
    "lines, fragments",
    [
        ("toll = [0, 0, 0, 0, 0]", ["'toll'", "congestion", "allowed: ['c1', 'c2', 'tau']"]),
        ("tau = [0.1, 0.2]", ["'tau'", "shape (2,)", "expected (5,)"]),
        ("tau = [0.1, 0.2, 0.3, 0.4, nan]", ["'tau'", "non-finite"]),
        ("tau = \"high\"", ["'tau'"]),
    ],
)
def test_refusals_in_one_line(lines, fragments):
    import tomllib

    with pytest.raises(SpecError) as err:
        parse_spec(tomllib.loads(_spec_with(lines)), source="s.toml")
    message = str(err.value)
    assert "\n" not in message and "[mechanism.known]" in message
    for fragment in fragments:
        assert fragment in message, message


def test_a_family_refuses_what_it_does_not_allow():
    mechanism = FAMILIES["tabular"](num_agents=2, num_actions=2)
    with pytest.raises(SpecError, match="allows no known parameters"):
        mechanism.check_known({"payoffs": np.zeros(8)})
    public = FAMILIES["public_goods"](num_agents=2, num_actions=3, subsidy_hidden=None)
    with pytest.raises(SpecError, match="'k' must be > 0"):
        public.check_known({"k": -1.0})
    assert set(public.check_known({"scale": 2.0, "cost": 0.5})) == {"scale", "cost"}


def test_public_goods_known_scale_is_held(tmp_path):
    """The generic holding of a directly sampled site (block + substitute)."""
    from numpyro.infer import Predictive

    from bayes_diml.inference.numpyro_model import sample_params

    mechanism = FAMILIES["public_goods"](num_agents=2, num_actions=3, subsidy_hidden=None)
    model = Model(mechanism, LEARNERS["logit_q"], learner_params=dict(LEARNER), mechanism_known={"scale": 2.0})
    import jax

    draws = Predictive(lambda: sample_params(model), num_samples=50)(jax.random.PRNGKey(0))
    np.testing.assert_allclose(np.asarray(draws["scale"]), 2.0)
    assert np.std(np.asarray(draws["k"])) > 0


def test_summary_and_queries_treat_known_tau_as_data(known_fit):
    table = known_fit.summary()
    for k in range(A):
        assert np.isnan(table.loc[f"tau[{k}]", "ess_bulk"]) and np.isnan(table.loc[f"tau[{k}]", "r_hat"])
        assert table.loc[f"tau[{k}]", "mean"] == pytest.approx(TRUTH["mechanism"]["tau"][k], rel=1e-6)
    assert np.isfinite(table.loc["c1[0]", "ess_bulk"])
