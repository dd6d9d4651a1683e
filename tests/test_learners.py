"""Learning rules (DESIGN §2): every learner in the registry against the NumPy reference."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import reference as ref
from bayes_diml.errors import SpecError
from bayes_diml.learners import LEARNERS, step_coefficients
from bayes_diml.likelihood import linear_recurrence
from conftest import LEARNER_VALUES, PER_AGENT_LEARNER_VALUES, learner_values

NUM_AGENTS, NUM_ACTIONS = 3, 4
SIMPLEX_ATOL = 1e-5  # float32 sums of probabilities
LOG_POLICY_ATOL = 1e-5  # float32 log-probabilities of O(1..10) against float64
RECURRENCE_RTOL = 1e-5  # float32 states of a contraction (|decay| <= 1) over <= 40 steps
RECURRENCE_ATOL = 1e-5
Q_SCALES = [0.0, 1.0, 30.0, 1e3]  # 1e3 * beta saturates the softmax


def _q(seed, scale, shape=(NUM_AGENTS, NUM_ACTIONS)):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape) * scale, jnp.float32)


def _ref_log_policy(learner, params, Q):
    Q = np.asarray(Q, np.float64)
    out = np.zeros(Q.shape)
    for i in range(Q.shape[0]):
        precision, eps = ref.policy_parameters(learner.name, params, i)
        out[i] = ref.log_policy(Q[i], precision, eps)
    return out


def _ref_step(learner, params, Q, U, actions, t, present=None):
    """The NumPy reference's new state: updated rows for agents that played, the old rows otherwise."""
    params = {k: np.asarray(v, np.float64) for k, v in params.items()}
    Q, U = np.asarray(Q, np.float64), np.asarray(U, np.float64)
    out = Q.copy()
    for i in range(Q.shape[0]):
        if present is None or present[i]:
            out[i] = ref.update_row(learner.name, params, i, t, Q[i], U[i], int(actions[i]))
    return out


def _apply(coefficients, Q):
    decay, drive = (np.broadcast_to(np.asarray(x, np.float64), np.shape(Q)) for x in coefficients)
    return decay * np.asarray(Q, np.float64) + drive


def test_every_learner_has_values():
    for learner in LEARNERS.values():
        assert set(learner.param_names) <= set(LEARNER_VALUES), learner.name
        assert set(learner.param_names) <= set(PER_AGENT_LEARNER_VALUES), learner.name
        assert learner.name in ref.LEARNER_UPDATES, f"no NumPy reference update for {learner.name}"
        assert learner.scale_param in learner.param_names, learner.name


@pytest.mark.parametrize("scale", Q_SCALES)
@pytest.mark.parametrize("per_agent", [False, True], ids=["scalar", "per_agent"])
def test_policy_on_simplex_and_matches_reference(learner, scale, per_agent):
    params = learner_values(learner, per_agent=per_agent)
    Q = _q(seed=int(scale) + 1, scale=scale)
    log_pi = np.asarray(learner.log_policy(params, Q, jnp.asarray(0)))
    assert log_pi.shape == (NUM_AGENTS, NUM_ACTIONS)
    assert np.all(np.isfinite(log_pi))
    assert np.all(log_pi <= 1e-6)
    np.testing.assert_allclose(np.exp(log_pi).sum(-1), 1.0, atol=SIMPLEX_ATOL)
    np.testing.assert_allclose(log_pi, _ref_log_policy(learner, params, Q), atol=LOG_POLICY_ATOL, rtol=1e-6)


@pytest.mark.parametrize("traced", [False, True], ids=["concrete", "jit"])
def test_eps_zero_is_plain_softmax_with_finite_gradients(learner, traced):
    """With eps = 0 (Hedge: always) the policy is the plain softmax of (precision x Q)."""
    beta = 2.0
    Q = _q(seed=3, scale=2.0)
    Q = Q.at[0, 0].set(60.0)  # probability of the other actions of agent 0 underflows in float32

    def selected_log_prob(beta, Q, eps):
        params = {**learner_values(learner), learner.scale_param: beta}
        if "eps" in learner.param_names:
            params["eps"] = eps
        log_pi = learner.log_policy(params, Q, jnp.asarray(0))
        return log_pi[:, 1].sum(), log_pi

    fn = jax.jit(selected_log_prob) if traced else selected_log_prob
    (value, log_pi), (g_beta, g_q) = jax.value_and_grad(fn, argnums=(0, 1), has_aux=True)(
        jnp.asarray(beta), Q, jnp.asarray(0.0)
    )
    Qn = np.asarray(Q, np.float64)
    want = np.stack([beta * q - np.log(np.sum(np.exp(beta * q - (beta * q).max()))) - (beta * q).max() for q in Qn])
    np.testing.assert_allclose(np.asarray(log_pi), want, atol=LOG_POLICY_ATOL, rtol=1e-6)
    assert np.isfinite(float(value))
    assert np.isfinite(float(g_beta)) and np.all(np.isfinite(np.asarray(g_q)))
    # analytic gradients of sum_i log softmax(beta Q_i)[1]
    soft = np.exp(want)
    want_g_beta = sum(Qn[i, 1] - soft[i] @ Qn[i] for i in range(NUM_AGENTS))
    want_g_q = beta * (np.eye(NUM_ACTIONS)[1][None, :] - soft)
    np.testing.assert_allclose(float(g_beta), want_g_beta, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(g_q), want_g_q, rtol=1e-4, atol=1e-4)


def test_per_agent_parameters_broadcast(learner):
    """(n,) parameter arrays act agent by agent: row i equals the scalar computation with entry i."""
    params = learner_values(learner, per_agent=True)
    Q = _q(seed=4, scale=1.5)
    U = _q(seed=5, scale=1.0)
    t = jnp.asarray(2)
    actions = jnp.asarray([2, 0, 1], jnp.int32)
    log_pi = np.asarray(learner.log_policy(params, Q, t))
    new_Q = _apply(learner.transition(params, U, actions, t), Q)
    for i in range(NUM_AGENTS):
        scalar = {k: v[i] for k, v in params.items()}
        np.testing.assert_allclose(
            log_pi[i], np.asarray(learner.log_policy(scalar, Q, t))[i], atol=LOG_POLICY_ATOL
        )
        np.testing.assert_allclose(new_Q[i], _apply(learner.transition(scalar, U, actions, t), Q)[i], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(log_pi, _ref_log_policy(learner, params, Q), atol=LOG_POLICY_ATOL)
    np.testing.assert_allclose(new_Q, _ref_step(learner, params, Q, U, actions, 2), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("t", [0, 1, 7])
def test_transition_matches_reference(learner, t):
    params = learner_values(learner)
    U = _q(seed=6, scale=1.0)
    Q = _q(seed=16, scale=1.0)
    actions = jnp.asarray([0, 2, 1], jnp.int32)
    coefficients = learner.transition(params, U, actions, jnp.asarray(t))
    np.testing.assert_allclose(_apply(coefficients, Q), _ref_step(learner, params, Q, U, actions, t), rtol=1e-5, atol=1e-6)


def test_absent_agents_keep_their_state(learner):
    params = learner_values(learner)
    U = _q(seed=7, scale=1.0)
    Q = _q(seed=8, scale=1.0)
    present = jnp.asarray([True, False, True])
    actions = jnp.asarray([0, 1, 2])
    decay, drive = step_coefficients(learner, params, U, actions, present, jnp.asarray(1))
    new_Q = np.asarray(decay * Q + drive)
    np.testing.assert_allclose(new_Q[1], np.asarray(Q[1]), rtol=0, atol=0)
    want = _ref_step(learner, params, Q, U, actions, 1, present=[True, False, True])
    np.testing.assert_allclose(new_Q, want, rtol=1e-5, atol=1e-6)


def test_init_is_zero_or_q0(learner):
    params = learner_values(learner)
    np.testing.assert_array_equal(np.asarray(learner.init(params, NUM_AGENTS, NUM_ACTIONS)), 0.0)
    q0 = np.arange(NUM_ACTIONS, dtype=np.float32)
    got = np.asarray(learner.init({**params, "q0": jnp.asarray(q0)}, NUM_AGENTS, NUM_ACTIONS))
    np.testing.assert_array_equal(got, np.broadcast_to(q0, (NUM_AGENTS, NUM_ACTIONS)))


@pytest.mark.parametrize("per_agent", [False, True], ids=["scalar", "per_agent"])
def test_jit_equals_eager(learner, per_agent):
    params = learner_values(learner, per_agent=per_agent)
    Q = _q(seed=9, scale=2.0)
    U = _q(seed=10, scale=1.0)
    actions = jnp.asarray([1, 0, 3], jnp.int32)
    t = jnp.asarray(4)
    eager_pi = learner.log_policy(params, Q, t)
    jit_pi = jax.jit(learner.log_policy)(params, Q, t)
    np.testing.assert_allclose(np.asarray(jit_pi), np.asarray(eager_pi), rtol=1e-6, atol=1e-6)
    eager = learner.transition(params, U, actions, t)
    jitted = jax.jit(learner.transition)(params, U, actions, t)
    for e, j in zip(eager, jitted):
        np.testing.assert_allclose(np.asarray(j), np.asarray(e), rtol=1e-6, atol=1e-7)


def test_check_params_domains(learner):
    good = {k: float(v) for k, v in LEARNER_VALUES.items() if k in learner.param_names}
    learner.check_params(good, "test")
    bad_values = {
        "beta": [0.0, -1.0, np.nan], "eps": [-0.1, 1.0], "alpha": [0.0, 1.5], "c": [0.5],
        "phi": [-0.1, 1.01, np.nan], "rho": [-0.5, 1.5], "delta": [-1e-3, 2.0], "eta": [0.0, -2.0, np.inf],
    }
    for name in learner.param_names:
        for value in bad_values[name]:
            with pytest.raises(SpecError, match=name):
                learner.check_params({**good, name: value}, "test")
        with pytest.raises(SpecError, match=name):  # a per-agent array with one bad entry
            learner.check_params({**good, name: np.array([good[name], bad_values[name][0]])}, "test")


# ------------------------------------------------------------ linear recurrence


_jit_recurrence = jax.jit(linear_recurrence, static_argnames="method")


@settings(max_examples=20, deadline=None, derandomize=True, database=None)
@given(
    num_rounds=st.sampled_from([1, 2, 3, 8, 40]),  # a few shapes: one compilation each
    width=st.just(3),
    seed=st.integers(0, 2**16),
)
def test_linear_recurrence_methods_agree_with_loop(num_rounds, width, seed):
    rng = np.random.default_rng(seed)
    decay = rng.uniform(0.0, 1.0, size=(num_rounds, width, 2)).astype(np.float32)
    drive = rng.normal(size=(num_rounds, width, 2)).astype(np.float32)
    initial = rng.normal(size=(width, 2)).astype(np.float32)
    want = ref.linear_recurrence(decay, drive, initial)
    for method in ("associative", "sequential"):
        got = np.asarray(_jit_recurrence(jnp.asarray(decay), jnp.asarray(drive), jnp.asarray(initial), method=method))
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=RECURRENCE_RTOL, atol=RECURRENCE_ATOL, err_msg=method)


def test_linear_recurrence_eager_matches_loop():
    rng = np.random.default_rng(11)
    decay = rng.uniform(0.0, 1.0, size=(6, 2)).astype(np.float32)
    drive = rng.normal(size=(6, 2)).astype(np.float32)
    initial = rng.normal(size=2).astype(np.float32)
    want = ref.linear_recurrence(decay, drive, initial)
    for method in ("associative", "sequential"):
        got = np.asarray(linear_recurrence(jnp.asarray(decay), jnp.asarray(drive), jnp.asarray(initial), method))
        np.testing.assert_allclose(got, want, rtol=RECURRENCE_RTOL, atol=RECURRENCE_ATOL, err_msg=method)


def test_linear_recurrence_rejects_unknown_method():
    with pytest.raises(ValueError, match="method"):
        linear_recurrence(jnp.ones((3, 1)), jnp.ones((3, 1)), jnp.zeros(1), "cumsum")
