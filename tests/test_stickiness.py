"""Choice stickiness (``[learner] stickiness``, ``bayes_diml.learners.stickiness``) for every
rule: against the NumPy loop reference, exact equality at kappa = 0, its effect in
simulation, the spec, and recovery of kappa by NUTS (slow)."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bayes_diml as bd
from bayes_diml.errors import SpecError
from bayes_diml.learners import LEARNERS, STICKINESS
from bayes_diml.likelihood import log_likelihood_per_episode, teacher_forced_log_policies
from bayes_diml.model import Model
from bayes_diml.priors import Prior
from bayes_diml.simulate import simulate_arrays
from bayes_diml.spec import model_to_toml

import reference as ref
from conftest import LEARNER_IDS, build_case, has_mid_episode_absence, make_data

FLOAT64_RTOL = 1e-10  # episode log-likelihoods, float64 package vs float64 loop
POLICY_ATOL = 1e-10  # float64 log-probabilities of the two
KAPPA = np.array([1.3, -0.8, 0.4])  # per agent: sticky, alternating, mildly sticky
CASE = "congestion"  # 3 agents x 4 actions; its payoffs are defined with agents absent


def _sticky_case(learner_name: str, kappa):
    """The conftest congestion case of ``learner_name`` with ``stickiness = kappa``; its
    parameters as NumPy float64 (float64 inside ``jax.enable_x64``). Call it outside
    ``enable_x64``: ``build_case`` is cached for the whole session."""
    case = build_case(CASE, learner_name)
    kappa = np.asarray(kappa, np.float64)
    fixed = {**case.model.learner_params, STICKINESS: Prior("normal", (("loc", 0.0), ("scale", 1.0)))}
    model = Model(case.mechanism, case.model.learner, learner_params=fixed, per_agent=(STICKINESS,) if kappa.ndim else ())
    params = jax.tree.map(lambda x: np.asarray(x, np.float64), case.params)
    params["learner"][STICKINESS] = kappa
    return case, model, params


def _reference(case, params, actions, mask):
    lls, pis = [], []
    for e in range(actions.shape[0]):
        ll, pi = ref.episode_log_likelihood(
            case.family, params["mechanism"], case.learner_name,
            {k: np.asarray(v, np.float64) for k, v in params["learner"].items()},
            actions[e], mask[e], num_actions=case.num_actions, **case.features,
        )
        lls.append(ll)
        pis.append(pi)
    return np.array(lls), np.stack(pis)


# ------------------------------------------------------------ against the NumPy loop


@pytest.mark.parametrize("learner_name", LEARNER_IDS)
@pytest.mark.parametrize("kappa", [KAPPA, 0.9], ids=["per_agent", "shared"])
def test_matches_numpy_loop_with_absences(learner_name, kappa):
    """Ragged episodes with agents absent mid-episode (no term after a missed round), the
    unchunked likelihood and the chunked one (chunks of 2 rounds: the previous action
    crosses every chunk boundary) against the loop, float64."""
    case, model, params = _sticky_case(learner_name, kappa)
    with jax.enable_x64(True):
        actions, mask = make_data(np.random.default_rng(7), case, 4, 7, "absent")
        assert has_mid_episode_absence(mask)
        want_ll, want_pi = _reference(case, params, actions, mask)
        for round_chunk in (None, 2):
            got = np.asarray(log_likelihood_per_episode(model, params, (actions, mask), round_chunk=round_chunk))
            np.testing.assert_allclose(got, want_ll, rtol=FLOAT64_RTOL, err_msg=f"round_chunk={round_chunk}")
        forced = np.asarray(teacher_forced_log_policies(model, params, (actions, mask)))
        np.testing.assert_allclose(forced, want_pi, atol=POLICY_ATOL)
        without = {**params, "learner": {k: v for k, v in params["learner"].items() if k != STICKINESS}}
        plain_ll, _ = _reference(case, without, actions, mask)
        assert abs(want_ll.sum() - plain_ll.sum()) > 1e-2  # the term is there


def test_gradient_in_kappa_matches_finite_differences():
    case, model, params = _sticky_case("ewa", KAPPA)
    with jax.enable_x64(True):
        actions, mask = make_data(np.random.default_rng(3), case, 3, 6, "absent")

        def total(kappa):
            p = {**params, "learner": {**params["learner"], STICKINESS: kappa}}
            return jnp.sum(log_likelihood_per_episode(model, p, (actions, mask)))

        grad = np.asarray(jax.grad(total)(jnp.asarray(KAPPA)))
        step = 1e-6
        for i in range(len(KAPPA)):
            e = np.eye(len(KAPPA))[i] * step
            fd = (_reference(case, {**params, "learner": {**params["learner"], STICKINESS: KAPPA + e}}, actions, mask)[0].sum()
                  - _reference(case, {**params, "learner": {**params["learner"], STICKINESS: KAPPA - e}}, actions, mask)[0].sum())
            np.testing.assert_allclose(grad[i], fd / (2 * step), rtol=1e-6, atol=1e-8)


# ------------------------------------------------------------------ kappa = 0


def _zero_case(learner_name: str):
    """The conftest case (no ``stickiness``) and the same model with ``stickiness = 0``."""
    case = build_case(CASE, learner_name)
    zero_model = Model(case.mechanism, case.model.learner, learner_params={**case.model.learner_params, STICKINESS: 0.0})
    assert zero_model.learner.param_names == (*case.model.learner.param_names, STICKINESS)
    assert case.model.learner is LEARNERS[learner_name]
    zero = {**case.params, "learner": {**case.params["learner"], STICKINESS: jnp.float32(0.0)}}
    actions, mask = make_data(np.random.default_rng(11), case, 3, 9, "absent")
    return case, zero_model, zero, actions, mask


@pytest.mark.parametrize("learner_name", LEARNER_IDS)
def test_kappa_zero_is_bit_for_bit_the_model_without(learner_name):
    """``stickiness = 0`` gives exactly (==) what a model without the key gives: the
    likelihood, and simulated play and policies."""
    case, zero_model, zero, actions, mask = _zero_case(learner_name)
    plain = log_likelihood_per_episode(case.model, case.params, (actions, mask))
    sticky = log_likelihood_per_episode(zero_model, zero, (actions, mask))
    np.testing.assert_array_equal(np.asarray(sticky), np.asarray(plain))
    key = jax.random.key(5)
    a_plain, pi_plain = simulate_arrays(case.model, case.params, key, 3, 9, return_log_policies=True)
    a_zero, pi_zero = simulate_arrays(zero_model, zero, key, 3, 9, return_log_policies=True)
    np.testing.assert_array_equal(np.asarray(a_zero), np.asarray(a_plain))
    np.testing.assert_array_equal(np.asarray(pi_zero), np.asarray(pi_plain))


def test_kappa_zero_is_bit_for_bit_chunked_and_in_the_gradient():
    case, zero_model, zero, actions, mask = _zero_case("logit_q")
    plain = log_likelihood_per_episode(case.model, case.params, (actions, mask), round_chunk=4)
    sticky = log_likelihood_per_episode(zero_model, zero, (actions, mask), round_chunk=4)
    np.testing.assert_array_equal(np.asarray(sticky), np.asarray(plain))

    def total(model, params):
        return lambda mech: jnp.sum(log_likelihood_per_episode(model, {**params, "mechanism": mech}, (actions, mask)))

    g_plain = jax.grad(total(case.model, case.params))(case.params["mechanism"])
    g_zero = jax.grad(total(zero_model, zero))(case.params["mechanism"])
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), g_zero, g_plain)


# ------------------------------------------------------------------ simulation


def _stay_share(actions):
    actions = np.asarray(actions)
    return float(np.mean(actions[:, 1:] == actions[:, :-1]))


@pytest.mark.parametrize("learner_name", ["logit_q", "hedge"])
def test_simulated_stay_share_rises_with_kappa_and_matches_the_reference_policy(learner_name):
    """Large kappa: agents repeat their last action more often. One-round check: in
    two-round episodes the share of agents repeating round 0's action equals the mean of
    the reference loop's ``pi_1(a_0 | i)`` over the simulated episodes (binomial noise)."""
    case, model, params = _sticky_case(learner_name, 2.5)
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
    plain = {**params, "learner": {k: v for k, v in params["learner"].items() if k != STICKINESS}}
    key = jax.random.key(2)
    with_kappa = _stay_share(simulate_arrays(model, params, key, 40, 30))
    without = _stay_share(simulate_arrays(model, plain, key, 40, 30))
    assert with_kappa > without + 0.2, (with_kappa, without)

    E = 1500
    actions = np.asarray(simulate_arrays(model, params, jax.random.key(9), E, 2))
    stays = actions[:, 1] == actions[:, 0]
    _, pis = _reference(case, params, actions, np.zeros(actions.shape, bool))
    n = case.num_agents
    expected = np.exp(pis[np.arange(E)[:, None], 1, np.arange(n)[None], actions[:, 0]])  # pi_1(a_0i | i)
    p = expected.mean()
    se = math.sqrt(p * (1 - p) / (E * n))  # agents of one episode are independent given round 0
    assert abs(stays.mean() - p) < 4 * se, (stays.mean(), p, se)
    assert p > 0.6  # kappa = 2.5 on 4 actions: stay probability well above 1/4


# ------------------------------------------------------------------ spec


def _spec(stickiness_line: str, extra: str = "") -> str:
    return (
        "[game]\nagents = 3\nactions = 3\n\n[mechanism]\nfamily = \"congestion\"\n\n[mechanism.truth]\n"
        "c1 = [0.3, 0.3, 0.3]\nc2 = [0.2, 0.2, 0.2]\ntau = [0.0, 0.5, -0.5]\n\n"
        f"[learner]\nrule = \"logit_q\"\nalpha = 0.3\nbeta = 2.0\neps = 0.05\n{stickiness_line}\n{extra}"
    )


def test_spec_forms_of_stickiness(tmp_path):
    path = tmp_path / "spec.toml"
    path.write_text(_spec("", ""), encoding="utf-8")
    model, truth = bd.read_spec(path)
    assert model.learner is LEARNERS["logit_q"] and STICKINESS not in truth["learner"]  # default: no term (0)

    path.write_text(_spec("stickiness = -0.5"), encoding="utf-8")
    model, truth = bd.read_spec(path)
    assert truth["learner"][STICKINESS] == -0.5 and STICKINESS in model.learner.param_names

    path.write_text(_spec('stickiness = "prior"', "[learner.truth]\nstickiness = 1.0\n"), encoding="utf-8")
    model, truth = bd.read_spec(path)
    assert model.learner_priors[STICKINESS] == Prior("normal", (("loc", 0.0), ("scale", 1.0)))
    assert truth["learner"][STICKINESS] == 1.0
    again = tmp_path / "again.toml"
    again.write_text(model_to_toml(model), encoding="utf-8")
    assert bd.read_spec(again)[0] == model
    dropped = {k: v for k, v in model.learner_params.items() if k != STICKINESS}
    assert dataclasses.replace(model, learner_params=dropped).learner.param_names == LEARNERS["logit_q"].param_names

    path.write_text(_spec("stickiness = 0.0").replace("alpha = 0.3", 'alpha = "prior"'), encoding="utf-8")
    assert bd.read_spec(path)[0].learner_priors == {"alpha": Prior("beta", (("a", 2.0), ("b", 5.0)))}  # any parameter

    path.write_text(_spec('stickiness = {dist = "normal", loc = 0.5, scale = 2}', 'per_agent = ["stickiness"]\n'
                          "[learner.truth]\nstickiness = [1.0, 0.0, -1.0]\n"), encoding="utf-8")
    model, truth = bd.read_spec(path)
    assert model.per_agent == (STICKINESS,)
    np.testing.assert_array_equal(truth["learner"][STICKINESS], [1.0, 0.0, -1.0])
    data = bd.simulate(model, truth, num_episodes=2, num_rounds=5, seed=0)
    assert data.actions.shape == (2, 5, 3)


@pytest.mark.parametrize("line", ['stickiness = "sticky"', "stickiness = true", "stickiness = nan",
                                  'stickiness = {dist = "beta", a = 2}'])
def test_bad_stickiness_is_refused_naming_the_key(tmp_path, line):
    path = tmp_path / "spec.toml"
    path.write_text(_spec(line), encoding="utf-8")
    with pytest.raises(SpecError, match="stickiness") as err:
        bd.read_spec(path)
    assert "\n" not in str(err.value)


def test_check_params_refuses_a_non_finite_kappa():
    with pytest.raises(SpecError, match="'stickiness'"):
        LEARNERS["hedge"].check_params({"eta": 0.5, STICKINESS: float("inf")}, "learner")


# ------------------------------------------------------------------ recovery


@pytest.mark.slow
def test_nuts_recovers_kappa_and_counterfactuals_keep_it():
    """Logit-Q with kappa = 1 on a 3-agent congestion game, 6 simulated data sets (20
    episodes x 30 rounds), NUTS 1 x (150 + 150), Normal(0, 1) prior on kappa (beta fixed,
    so the payoff scale is pinned). A calibrated 90% interval misses a truth with
    probability 0.1: 4 or more hits of 6 has probability 0.98 (Binomial(6, 0.9)), so
    the bound fails by chance about once in 60 runs of a correct program, while a
    biased kappa (e.g. absorbed into payoffs, or a term dropped) misses nearly always.
    Measured: 5 of 6 (seeds 0-5; seed 1 gave [1.02, 1.22])."""
    path_spec = _spec('stickiness = "prior"', "[learner.truth]\nstickiness = 1.0\n")
    model, truth = bd.parse_spec(__import__("tomllib").loads(path_spec))
    hits, fits = [], []
    for seed in range(6):
        data = bd.simulate(model, truth, num_episodes=20, num_rounds=30, seed=seed)
        fit = bd.fit(model, data, method="nuts", seed=seed, num_chains=1, num_warmup=150, num_samples=150, progress=False)
        low, high = np.quantile(np.asarray(fit.posterior[STICKINESS]).ravel(), [0.05, 0.95])
        hits.append(low <= 1.0 <= high)
        fits.append(fit)
    assert sum(hits) >= 4, hits
    fit = fits[0]
    kept = bd.counterfactual(fit, num_episodes=4, num_rounds=10, seed=0, max_draws=20, return_actions=True)
    none = bd.counterfactual(fit, learner={STICKINESS: 0.0}, num_episodes=4, num_rounds=10, seed=0, max_draws=20,
                             return_actions=True)
    assert none.intervention["learner"] == {STICKINESS: 0.0}
    assert _stay_share(kept.draws["actions"].reshape(-1, 10, 3)) > _stay_share(none.draws["actions"].reshape(-1, 10, 3))
