"""The teacher-forced log-likelihood (docs/design.md §2) against a plain-NumPy loop, for every
family × learner, with and without masks; jit, vmap, gradients and the simulator."""

from __future__ import annotations

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayes_diml import Trajectories
from bayes_diml.likelihood import (
    episode_log_likelihood,
    log_likelihood,
    log_likelihood_per_episode,
    teacher_forced_log_policies,
)
from bayes_diml.mechanisms import FAMILIES
from bayes_diml.model import Model
from bayes_diml.simulate import simulate_arrays
from bayes_diml.spec import read_spec

import reference as ref
from conftest import (
    FAMILY_CASE_IDS,
    FAMILY_LEARNER_IDS,
    LEARNER_IDS,
    MECHANISM_CASES,
    PER_AGENT_LEARNER_VALUES,
    build_case,
    case_param,
    has_mid_episode_absence,
    make_data,
)

# Tolerances
FLOAT32_RTOL = 1e-5  # relative error of an episode log-likelihood, float32 vs float64 loop
FLOAT64_RTOL = 1e-10  # same, with JAX_ENABLE_X64
POLICY_ATOL = 2e-5  # float32 log-probabilities (|log pi| <= ~6) of two code paths / the loop
INVARIANCE_RTOL = 1e-6  # float32 results of reordered but equivalent computations
GRAD_RTOL = 1e-6  # float64 autodiff vs central differences of the float64 reference
GRAD_ATOL = 1e-7
FD_STEP = 1e-5  # central differences: truncation ~ h^2, round-off ~ 1e-16 / h

NUM_EPISODES, NUM_ROUNDS = 3, 6

MASK_KINDS = [  # mid-episode absences only for families whose payoffs are defined without the agent
    case_param(case_id, case_id, learner_name, kind)
    for case_id, learner_name in FAMILY_LEARNER_IDS
    for kind in ("full", "trailing", "absent")
    if kind != "absent" or FAMILIES[MECHANISM_CASES[case_id][0]].allows_absence
]


def test_every_family_is_covered():
    assert FAMILY_CASE_IDS == sorted(FAMILIES)


def _data(case, kind, seed=0, num_episodes=NUM_EPISODES, num_rounds=NUM_ROUNDS):
    rng = np.random.default_rng(seed + sum(map(ord, case.case_id + kind)))
    actions, mask = make_data(rng, case, num_episodes, num_rounds, kind)
    if kind == "absent":
        assert has_mid_episode_absence(mask)
    return actions, mask


def _reference(case, params, actions, mask, q0=None):
    """Per-episode log-likelihoods and log-policies of the NumPy loop (float64)."""
    lls, pis = [], []
    for e in range(actions.shape[0]):
        ll, pi = ref.episode_log_likelihood(
            case.family,
            params["mechanism"],
            case.learner_name,
            {k: np.asarray(v, np.float64) for k, v in params["learner"].items()},
            actions[e],
            mask[e],
            num_actions=case.num_actions,
            q0=q0,
            **case.features,
        )
        lls.append(ll)
        pis.append(pi)
    return np.array(lls), np.stack(pis)


def _to64(tree):
    return jax.tree.map(lambda x: jnp.asarray(np.asarray(x, np.float64)), tree)


def _rel_err(got, want):
    return np.max(np.abs(np.asarray(got, np.float64) - want) / np.maximum(np.abs(want), 1e-300))


# --------------------------------------------------------- against the NumPy loop


@pytest.mark.parametrize("case_id,learner_name,kind", MASK_KINDS)
def test_matches_numpy_loop_float32(case_id, learner_name, kind):
    case = build_case(case_id, learner_name)
    actions, mask = _data(case, kind)
    want, _ = _reference(case, case.params, actions, mask)
    got = log_likelihood_per_episode(case.model, case.params, (actions, mask))
    assert got.dtype == jnp.float32 and got.shape == (NUM_EPISODES,)
    assert _rel_err(got, want) <= FLOAT32_RTOL, (np.asarray(got), want)
    np.testing.assert_allclose(float(log_likelihood(case.model, case.params, (actions, mask))), want.sum(),
                               rtol=FLOAT32_RTOL)


@pytest.mark.parametrize("case_id,learner_name,kind", MASK_KINDS)
def test_matches_numpy_loop_float64(case_id, learner_name, kind):
    case = build_case(case_id, learner_name)
    actions, mask = _data(case, kind)
    with jax.enable_x64(True):
        params = _to64(case.params)
        want, _ = _reference(case, params, actions, mask)
        # the sequential method once per family (its recurrence is also checked in test_learners)
        methods = ("associative", "sequential") if learner_name == "logit_q_decreasing" else ("associative",)
        for method in methods:
            got = log_likelihood_per_episode(case.model, params, (actions, mask), method=method)
            assert got.dtype == jnp.float64
            assert _rel_err(got, want) <= FLOAT64_RTOL, (method, np.asarray(got), want)


@pytest.mark.parametrize("case_id", [case_param(c) for c in sorted(set(MECHANISM_CASES) - set(FAMILY_CASE_IDS))])
def test_other_mechanism_cases_match_numpy_loop_float32(case_id):
    """The family variants (no subsidy, own/cross-only features, an untabulated neural
    joint space) through the likelihood, with the richest mask their family allows."""
    case = build_case(case_id, "logit_q")
    actions, mask = _data(case, "absent" if case.allows_absence else "trailing")
    want, _ = _reference(case, case.params, actions, mask)
    got = log_likelihood_per_episode(case.model, case.params, (actions, mask))
    assert _rel_err(got, want) <= FLOAT32_RTOL, (np.asarray(got), want)


@pytest.mark.parametrize("learner_name", LEARNER_IDS)
@pytest.mark.parametrize("case_id", ["congestion", "neural"])
def test_per_agent_learner_parameters_match_numpy_loop(case_id, learner_name):
    case = build_case(case_id, learner_name)
    learner = case.model.learner
    params = {
        "mechanism": case.params["mechanism"],
        "learner": {k: jnp.asarray(PER_AGENT_LEARNER_VALUES[k]) for k in learner.param_names},
    }
    actions, mask = _data(case, "trailing")
    with jax.enable_x64(True):
        params = _to64(params)
        want, _ = _reference(case, params, actions, mask)
        got = log_likelihood_per_episode(case.model, params, (actions, mask))
        assert _rel_err(got, want) <= FLOAT64_RTOL


@pytest.mark.parametrize("learner_name", LEARNER_IDS)
def test_initial_state_q0_matches_numpy_loop(learner_name):
    case = build_case("public_goods", learner_name)
    q0 = np.linspace(-1.0, 1.0, case.num_actions).astype(np.float32).astype(np.float64)  # exact in float32
    params = {"mechanism": case.params["mechanism"], "learner": {**case.params["learner"], "q0": jnp.asarray(q0)}}
    actions, mask = _data(case, "absent")
    with jax.enable_x64(True):
        params = _to64(params)
        want, _ = _reference(case, params, actions, mask, q0=q0)
        got = log_likelihood_per_episode(case.model, params, (actions, mask))
        assert _rel_err(got, want) <= FLOAT64_RTOL
        baseline, _ = _reference(case, params, actions, mask)
        assert np.all(np.abs(baseline - want) > 1e-3)  # q0 matters


def test_masked_entries_do_not_matter():
    """Whatever sits in masked entries (random codes here, zeros in Trajectories) is ignored."""
    case = build_case("anonymous", "logit_q")
    actions, mask = _data(case, "absent")
    zeroed = np.where(mask, 0, actions).astype(np.int32)
    a = log_likelihood_per_episode(case.model, case.params, (actions, mask))
    b = log_likelihood_per_episode(case.model, case.params, (zeroed, mask))
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=INVARIANCE_RTOL)


def test_trajectories_input_equals_arrays():
    case = build_case("congestion", "logit_q")
    actions, mask = _data(case, "absent")
    data = Trajectories.from_arrays(actions, mask, num_actions=case.num_actions)
    want, _ = _reference(case, case.params, actions, mask)
    got = log_likelihood_per_episode(case.model, case.params, data)
    assert _rel_err(got, want) <= FLOAT32_RTOL


# ---------------------------------------------------------------- invariances


def test_vmap_equals_loop_and_jit_equals_eager(model_case):
    """The jitted, episode-vmapped likelihood equals an eager (un-jitted) loop over episodes."""
    case = model_case
    actions, mask = _data(case, "absent" if case.allows_absence else "trailing", seed=1)
    batched = np.asarray(log_likelihood_per_episode(case.model, case.params, (actions, mask)))
    eager = np.array([
        float(episode_log_likelihood(case.model, case.params, jnp.asarray(actions[e]), jnp.asarray(mask[e])))
        for e in range(actions.shape[0])
    ])
    np.testing.assert_allclose(batched, eager, rtol=INVARIANCE_RTOL)


@pytest.mark.parametrize("case_id,learner_name", [("congestion", "logit_q_decreasing")])
def test_vmap_equals_jitted_loop(case_id, learner_name):
    case = build_case(case_id, learner_name)
    actions, mask = _data(case, "absent" if case.allows_absence else "trailing", seed=1)
    batched = np.asarray(log_likelihood_per_episode(case.model, case.params, (actions, mask)))
    looped = np.array([
        float(log_likelihood_per_episode(case.model, case.params, (actions[e : e + 1], mask[e : e + 1]))[0])
        for e in range(actions.shape[0])
    ])
    np.testing.assert_allclose(batched, looped, rtol=INVARIANCE_RTOL)


@pytest.mark.parametrize("case_id,learner_name", [("congestion", "logit_q"), ("neural", "logit_q_decreasing")])
def test_one_round_episodes_score_n_log_uniform(case_id, learner_name):
    """T = 1 (no update at all): each played agent scores log(1/A)."""
    case = build_case(case_id, learner_name)
    n, A = case.num_agents, case.num_actions
    actions, mask = _data(case, "full", seed=2)
    got = log_likelihood_per_episode(case.model, case.params, (actions[:, :1], mask[:, :1]))
    np.testing.assert_allclose(np.asarray(got), -n * math.log(A), rtol=1e-6)


def test_teacher_forcing_reproduces_simulated_policies(model_case):
    """Simulated actions fed back through the likelihood give the simulator's policies,
    both equal the NumPy loop's, and round 0 is uniform (Q_0 = 0: log pi_0 = log(1/A))."""
    case = model_case
    n, A = case.num_agents, case.num_actions
    key = jax.random.key(sum(map(ord, case.case_id + case.learner_name)))
    actions, sim_log_pi = simulate_arrays(case.model, case.params, key, NUM_EPISODES, NUM_ROUNDS,
                                          return_log_policies=True)
    actions, sim_log_pi = np.asarray(actions), np.asarray(sim_log_pi)
    assert actions.shape == (NUM_EPISODES, NUM_ROUNDS, n)
    assert sim_log_pi.shape == (NUM_EPISODES, NUM_ROUNDS, n, A)
    assert actions.min() >= 0 and actions.max() < A
    mask = np.zeros(actions.shape, bool)
    forced = np.asarray(teacher_forced_log_policies(case.model, case.params, (actions, mask)))
    np.testing.assert_allclose(forced, sim_log_pi, atol=POLICY_ATOL)
    want_ll, want_pi = _reference(case, case.params, actions, mask)
    np.testing.assert_allclose(forced, want_pi, atol=POLICY_ATOL)
    np.testing.assert_allclose(forced[:, 0], -math.log(A), rtol=1e-6)
    np.testing.assert_allclose(sim_log_pi[:, 0], -math.log(A), rtol=1e-6)
    got_ll = log_likelihood_per_episode(case.model, case.params, (actions, mask))
    assert _rel_err(got_ll, want_ll) <= FLOAT32_RTOL


# ------------------------------------------------------------------- gradients


def _directions(tree, rng):
    return {k: rng.normal(size=np.shape(v)) for k, v in tree.items()}


def test_gradient_matches_finite_differences(model_case):
    """``jax.grad`` (float64) of the likelihood w.r.t. every mechanism leaf and every learner
    parameter equals central differences of the NumPy reference, leaf by leaf along random
    directions (scalar leaves: the plain partial derivative)."""
    case = model_case
    actions, mask = _data(case, "absent" if case.allows_absence else "trailing", seed=3,
                          num_episodes=2, num_rounds=5)
    _check_gradient(case, actions, mask)


@pytest.mark.parametrize("items_per_block", [1, 3])
def test_blocked_payoff_tables_match_the_reference(monkeypatch, items_per_block):
    """On a CPU the anonymous family's payoff tables of all (episode, round) pairs are
    evaluated in cache-sized, rematerialised blocks (``map_in_blocks``). Forced here to
    blocks of 1 and 3 rounds (2 x 6 rounds: 10 tables, so with 3 the last block is padded),
    the value and the gradient still equal the NumPy reference."""
    from bayes_diml.mechanisms import base

    case = build_case("anonymous", "logit_q")
    monkeypatch.setattr(base, "ROWS_PER_BLOCK", items_per_block * case.num_actions**2)
    jax.clear_caches()  # traces of the unblocked path must not be reused
    try:
        actions, mask = _data(case, "absent", seed=6, num_episodes=2, num_rounds=6)
        with jax.enable_x64(True):
            params = _to64(case.params)
            jaxpr = str(jax.make_jaxpr(lambda p: log_likelihood(case.model, p, (actions, mask)))(params))
            assert "checkpoint" in jaxpr or "remat" in jaxpr  # the blocked path did run
            want, _ = _reference(case, params, actions, mask)
            got = log_likelihood_per_episode(case.model, params, (actions, mask))
            assert _rel_err(got, want) <= FLOAT64_RTOL
        _check_gradient(case, actions, mask)
    finally:
        jax.clear_caches()


def _check_gradient(case, actions, mask):
    rng = np.random.default_rng(4)
    with jax.enable_x64(True):
        params = _to64(case.params)
        # one compilation of forward + backward (data closed over, so concrete inside)
        grad = jax.jit(jax.grad(lambda p: log_likelihood(case.model, p, (actions, mask))))(params)
    base = {part: {k: np.asarray(v, np.float64) for k, v in params[part].items()} for part in params}

    def reference_total(p):
        return _reference(case, p, actions, mask)[0].sum()

    for part in ("mechanism", "learner"):
        directions = _directions(base[part], rng)
        assert set(grad[part]) == set(base[part])
        for name, direction in directions.items():
            if direction.ndim == 0:
                direction = np.float64(1.0)
            plus = {**base, part: {**base[part], name: base[part][name] + FD_STEP * direction}}
            minus = {**base, part: {**base[part], name: base[part][name] - FD_STEP * direction}}
            fd = (reference_total(plus) - reference_total(minus)) / (2 * FD_STEP)
            ad = float(np.sum(np.asarray(grad[part][name]) * direction))
            assert np.isfinite(ad), (part, name)
            np.testing.assert_allclose(ad, fd, rtol=GRAD_RTOL, atol=GRAD_ATOL, err_msg=f"{part}/{name}")


def test_gradient_with_eps_zero_is_finite_and_correct():
    """eps = 0 traced: no log(0), so no NaN gradient (docs/design.md §2)."""
    case = build_case("tabular", "logit_q")
    actions, mask = _data(case, "trailing", seed=5)
    with jax.enable_x64(True):
        params = _to64(case.params)
        params["learner"]["eps"] = jnp.asarray(0.0)
        grad = jax.grad(log_likelihood, argnums=1)(case.model, params, (actions, mask))
    for part in grad.values():
        for value in part.values():
            assert np.all(np.isfinite(np.asarray(value)))
    base = {part: {k: np.asarray(v, np.float64) for k, v in params[part].items()} for part in params}
    for name in ("alpha", "beta"):
        plus = {**base, "learner": {**base["learner"], name: base["learner"][name] + FD_STEP}}
        minus = {**base, "learner": {**base["learner"], name: base["learner"][name] - FD_STEP}}
        fd = (_reference(case, plus, actions, mask)[0].sum() - _reference(case, minus, actions, mask)[0].sum()) / (2 * FD_STEP)
        np.testing.assert_allclose(float(grad["learner"][name]), fd, rtol=GRAD_RTOL, atol=GRAD_ATOL)


# ------------------------------------------------------------------------ specs

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
SPEC_FILES = sorted(MODELS_DIR.glob("*.toml"))
LARGE_SPECS = {"e7_n300_a40.toml": (1, 3)}  # (episodes, rounds) for the largest game


def test_spec_files_exist():
    assert len(SPEC_FILES) >= 7


@pytest.mark.parametrize("path", SPEC_FILES, ids=lambda p: Path(p).name)
def test_spec_truth_simulates_with_finite_likelihood(path):
    model, truth = read_spec(path)
    assert isinstance(model, Model) and truth is not None
    model.mechanism.check_params(truth["mechanism"])
    params = {
        "mechanism": {k: jnp.asarray(v, jnp.float32) for k, v in truth["mechanism"].items()},
        "learner": {k: jnp.asarray(v, jnp.float32) for k, v in truth["learner"].items()},
    }
    num_episodes, num_rounds = LARGE_SPECS.get(Path(path).name, (2, 5))
    actions = np.asarray(simulate_arrays(model, params, jax.random.key(0), num_episodes, num_rounds))
    assert actions.shape == (num_episodes, num_rounds, model.num_agents)
    assert actions.min() >= 0 and actions.max() < model.num_actions
    ll = np.asarray(log_likelihood_per_episode(model, params, (actions, np.zeros(actions.shape, bool))))
    assert ll.shape == (num_episodes,) and np.all(np.isfinite(ll)) and np.all(ll < 0)
    if model.num_agents * model.num_actions <= 40:  # small games: the NumPy loop too
        family = model.mechanism.family
        features = {k: getattr(model.mechanism, k) for k in ("own", "cross") if getattr(model.mechanism, k, None) is not None}
        want = [
            ref.episode_log_likelihood(family, truth["mechanism"], model.learner.name, truth["learner"],
                                       actions[e], None, num_actions=model.num_actions, **features)[0]
            for e in range(num_episodes)
        ]
        assert _rel_err(ll, np.array(want)) <= FLOAT32_RTOL
