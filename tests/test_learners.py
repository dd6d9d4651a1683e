"""Learning rules (docs/design.md §2): every learner in the registry against the NumPy reference."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bayes_diml.errors import SpecError
from bayes_diml.learners import LEARNERS, step_coefficients
from bayes_diml.likelihood import linear_recurrence

import reference as ref
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


STICKINESS_VALUES = {"scalar": 1.7, "per_agent": np.array([2.0, -1.5, 0.0])}  # kappa: repeat, alternate, none


@pytest.mark.parametrize("kappa_kind", sorted(STICKINESS_VALUES))
@pytest.mark.parametrize("scale", [0.0, 1.0, 30.0])
def test_policy_with_stickiness_matches_reference(learner, kappa_kind, scale):
    """Every rule with ``stickiness``: ``learners.log_policy`` adds ``kappa_i`` to the logit
    of the previous action inside the softmax (before any eps mixing), as the reference
    does; agents without a previous action (an all-zero indicator row) get no term."""
    from bayes_diml.learners import STICKINESS, choice_indicator, log_policy

    kappa = STICKINESS_VALUES[kappa_kind]
    params = {**learner_values(learner), STICKINESS: jnp.asarray(kappa, jnp.float32)}
    Q = _q(seed=int(scale) + 3, scale=scale)
    last = jnp.array([1, 3, 0])
    present = jnp.array([True, True, False])  # agent 2 missed the previous round
    previous = choice_indicator(last, present, NUM_ACTIONS, jnp.float32)
    log_pi = np.asarray(jax.jit(log_policy, static_argnums=0)(learner, params, Q, jnp.asarray(1), previous))
    np.testing.assert_allclose(np.exp(log_pi).sum(-1), 1.0, atol=SIMPLEX_ATOL)
    host = {k: np.asarray(v, np.float64) for k, v in params.items()}
    for i in range(NUM_AGENTS):
        precision, eps = ref.policy_parameters(learner.name, host, i)
        bias = ref.stickiness_row(host, i, int(last[i]) if bool(present[i]) else None, NUM_ACTIONS)
        want = ref.log_policy(np.asarray(Q[i], np.float64), precision, eps, bias)
        np.testing.assert_allclose(log_pi[i], want, atol=LOG_POLICY_ATOL, rtol=1e-6)
    plain = np.asarray(learner.log_policy(learner_values(learner), Q, jnp.asarray(1)))
    np.testing.assert_array_equal(np.asarray(log_policy(learner, learner_values(learner), Q, 1, previous)), plain)
    learner.check_params({k: np.asarray(v) for k, v in params.items()}, "test")
    with pytest.raises(SpecError, match="'stickiness'"):
        learner.check_params({**params, STICKINESS: np.array([0.0, np.nan, 1.0])}, "test")


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


# ------------------------------------------------ EWA, Hedge, bandit-Q specifics

EWA_GAME = (2, 3)  # (agents, actions) of the hand-written reductions
PRECISION = 1.3


def _two_agent_game(seed):
    """Random 2-agent tabular model (EWA), its payoffs as ``u[i][own, other]``, and play."""
    from bayes_diml.mechanisms import FAMILIES
    from bayes_diml.model import Model

    n, A = EWA_GAME
    rng = np.random.default_rng(seed)
    table = rng.normal(size=(A**n, n))
    # tabular index: a_0 + A a_1 (agent 0 least significant)
    u = [np.array([[table[j + A * b, 0] for b in range(A)] for j in range(A)]),
         np.array([[table[b + A * j, 1] for b in range(A)] for j in range(A)])]
    actions = rng.integers(0, A, size=(2, 9, n)).astype(np.int32)
    mechanism = FAMILIES["tabular"](num_agents=n, num_actions=A)
    model = Model(mechanism, LEARNERS["ewa"], learner_params={k: LEARNER_VALUES[k] for k in LEARNERS["ewa"].param_names})
    return model, table, u, actions


def _ewa_log_policies(model, table, actions, **learner):
    from bayes_diml.likelihood import teacher_forced_log_policies

    params = {"mechanism": {"payoffs": jnp.asarray(table)},
              "learner": {k: jnp.asarray(v) for k, v in {"beta": PRECISION, "eps": 0.0, **learner}.items()}}
    return np.asarray(teacher_forced_log_policies(model, params, (actions, np.zeros(actions.shape, bool))))


def _log_softmax(x):
    x = PRECISION * np.asarray(x, np.float64)
    return x - x.max() - np.log(np.exp(x - x.max()).sum())


def test_ewa_delta_zero_is_reinforcement_learning():
    """delta = 0: only played actions are reinforced. rho = 0 gives cumulative reinforcement
    R_j(t) = sum_{s<t} phi^(t-1-s) 1[a_s = j] u(j, b_s); rho = phi gives the same sum divided
    by the total weight sum_{k<=t} phi^k (averaged reinforcement). Closed forms over the history."""
    model, table, u, actions = _two_agent_game(seed=21)
    phi = 0.7
    with jax.enable_x64(True):
        cumulative = _ewa_log_policies(model, table, actions, phi=phi, rho=0.0, delta=0.0)
        averaged = _ewa_log_policies(model, table, actions, phi=phi, rho=phi, delta=0.0)
    for e in range(actions.shape[0]):
        for t in range(actions.shape[1]):
            for i in range(2):
                R = np.zeros(EWA_GAME[1])
                for s in range(t):
                    own, other = actions[e, s, i], actions[e, s, 1 - i]
                    R[own] += phi ** (t - 1 - s) * u[i][own, other]
                total_weight = sum(phi**k for k in range(t + 1))
                np.testing.assert_allclose(cumulative[e, t, i], _log_softmax(R), rtol=1e-12, atol=1e-12)
                np.testing.assert_allclose(averaged[e, t, i], _log_softmax(R / total_weight), rtol=1e-12, atol=1e-12)


def test_ewa_delta_one_rho_phi_is_weighted_fictitious_play():
    """delta = 1, rho = phi: attractions are expected payoffs under beliefs about the opponent,
    belief weights C_t(b) = phi^t p0(b) + sum_{s<t} phi^(t-1-s) 1[b_s = b] (prior beliefs p0 of
    weight N(0) = 1, so A(0) = expected payoffs under p0)."""
    model, table, u, actions = _two_agent_game(seed=22)
    phi, A = 0.6, EWA_GAME[1]
    rng = np.random.default_rng(23)
    prior = rng.dirichlet(np.ones(A), size=2)  # p0 of each agent over the other's actions
    q0 = np.stack([u[i] @ prior[i] for i in range(2)])
    with jax.enable_x64(True):
        got = _ewa_log_policies(model, table, actions, phi=phi, rho=phi, delta=1.0, q0=q0)
    for e in range(actions.shape[0]):
        for t in range(actions.shape[1]):
            for i in range(2):
                counts = phi**t * prior[i]
                for s in range(t):
                    counts[actions[e, s, 1 - i]] += phi ** (t - 1 - s)
                beliefs = counts / counts.sum()
                expected = [sum(beliefs[b] * u[i][j, b] for b in range(A)) for j in range(A)]
                np.testing.assert_allclose(got[e, t, i], _log_softmax(expected), rtol=1e-12, atol=1e-12)


def test_ewa_with_phi_one_rho_zero_delta_one_is_hedge():
    """N(t) = 1, full weight on foregone payoffs, no decay: A(t) = cumulative payoffs = Hedge's S_t."""
    from bayes_diml.likelihood import log_likelihood_per_episode
    from bayes_diml.model import Model

    model, table, u, actions = _two_agent_game(seed=24)
    data = (actions, np.zeros(actions.shape, bool))
    hedge_model = Model(model.mechanism, LEARNERS["hedge"], learner_params={"eta": PRECISION})
    with jax.enable_x64(True):
        mech = {"payoffs": jnp.asarray(table)}
        ewa_ll = log_likelihood_per_episode(model, {"mechanism": mech, "learner": {
            "beta": jnp.asarray(PRECISION), "eps": jnp.asarray(0.0), "phi": jnp.asarray(1.0),
            "rho": jnp.asarray(0.0), "delta": jnp.asarray(1.0)}}, data)
        hedge_ll = log_likelihood_per_episode(hedge_model, {"mechanism": mech, "learner": {"eta": jnp.asarray(PRECISION)}}, data)
    np.testing.assert_allclose(np.asarray(ewa_ll), np.asarray(hedge_ll), rtol=1e-12)


@pytest.mark.parametrize("rho", [0.0, 1e-4, 0.3, 0.9, 1 - 1e-5, 1.0])
def test_ewa_experience_weight_matches_iteration(rho):
    """Closed form of N(t) (float32) against N(t) = rho N(t-1) + 1 iterated in float64."""
    from bayes_diml.learners.ewa import experience_weight

    ts = np.array([0, 1, 2, 5, 40])
    got = np.asarray(experience_weight(jnp.float32(rho), jnp.asarray(ts)))
    want = np.array([ref.experience_weight(rho, int(t)) for t in ts])
    np.testing.assert_allclose(got, want, rtol=2e-6)  # float32 expm1/log: a few ulps
    if 0 < rho < 1:
        with jax.enable_x64(True):
            grad = jax.grad(lambda r: experience_weight(r, 40))(jnp.float64(rho))
        np.testing.assert_allclose(float(grad), sum(k * rho ** (k - 1) for k in range(1, 41)), rtol=1e-8)


SHIFT = 2.5


def _shift_case(learner_name):
    """3-agent tabular data and the payoff table with agent 1's payoffs shifted by SHIFT for
    every own action in one context of the others (the one agent 1 met most before the end)."""
    from conftest import build_case

    case = build_case("tabular", learner_name)
    n, A = case.num_agents, case.num_actions
    rng = np.random.default_rng(31)
    actions = rng.integers(0, A, size=(3, 8, n)).astype(np.int32)
    contexts = [tuple(actions[e, t, [0, 2]]) for e in range(3) for t in range(7)]
    a0, a2 = max(set(contexts), key=contexts.count)
    payoffs = np.asarray(case.params["mechanism"]["payoffs"], np.float64)
    shifted = payoffs.copy()
    for k in range(A):
        shifted[a0 + A * k + A * A * a2, 1] += SHIFT
    return case, actions, payoffs, shifted


def test_declared_shift_invariance_holds_numerically(learner):
    """docs/design.md §3: for a learner declared shift invariant, adding a constant to all of one agent's
    payoffs in one opponents' context leaves every episode's likelihood unchanged (float64, to
    rounding); for the others it changes it."""
    from bayes_diml.likelihood import log_likelihood_per_episode

    case, actions, payoffs, shifted = _shift_case(learner.name)
    data = (actions, np.zeros(actions.shape, bool))
    with jax.enable_x64(True):
        lp = {k: jnp.asarray(np.float64(v)) for k, v in case.params["learner"].items()}
        before, after = (np.asarray(log_likelihood_per_episode(case.model, {"mechanism": {"payoffs": jnp.asarray(p)},
                                                                            "learner": lp}, data))
                         for p in (payoffs, shifted))
    if learner.shift_invariant:
        np.testing.assert_allclose(after, before, rtol=1e-12)
    else:
        assert np.max(np.abs(after - before)) > 1e-3, (before, after)


def test_ewa_with_delta_one_is_shift_invariant():
    """EWA is declared not invariant (delta < 1 in general); at delta = 1 it is."""
    from bayes_diml.likelihood import log_likelihood_per_episode

    case, actions, payoffs, shifted = _shift_case("ewa")
    data = (actions, np.zeros(actions.shape, bool))
    with jax.enable_x64(True):
        lp = {**{k: jnp.asarray(np.float64(v)) for k, v in case.params["learner"].items()}, "delta": jnp.asarray(1.0)}
        before, after = (np.asarray(log_likelihood_per_episode(case.model, {"mechanism": {"payoffs": jnp.asarray(p)},
                                                                            "learner": lp}, data))
                         for p in (payoffs, shifted))
    np.testing.assert_allclose(after, before, rtol=1e-12)


def test_bandit_q_updates_only_the_played_action_with_its_realised_payoff():
    """Unplayed actions keep their Q exactly, whatever their counterfactual payoffs."""
    learner = LEARNERS["bandit_q"]
    params = learner_values(learner)
    Q, U = _q(seed=41, scale=1.0), _q(seed=42, scale=5.0)
    actions = jnp.asarray([3, 0, 2], jnp.int32)
    new_Q = _apply(learner.transition(params, U, actions, jnp.asarray(0)), Q)
    alpha = LEARNER_VALUES["alpha"]
    for i, a in enumerate(np.asarray(actions)):
        others = [k for k in range(NUM_ACTIONS) if k != a]
        np.testing.assert_array_equal(new_Q[i, others], np.asarray(Q, np.float64)[i, others])
        np.testing.assert_allclose(new_Q[i, a], (1 - alpha) * float(Q[i, a]) + alpha * float(U[i, a]), rtol=1e-6)


NEW_RULES = {
    "ewa": "phi = 0.8\nrho = 0.5\ndelta = {dist = \"beta\", a = 2, b = 2}\nbeta = 2.0\neps = 0.05\n",
    "hedge": "eta = 0.4\n",
    "bandit_q": "alpha = {dist = \"beta\", a = 2, b = 5}\nbeta = 3.0\neps = 0.05\n",
}
NEW_TRUTHS = {"ewa": {"delta": 0.5}, "hedge": {}, "bandit_q": {"alpha": 0.3}}


def _spec_text(rule, body):
    truth = NEW_TRUTHS[rule]
    truth_table = "[learner.truth]\n" + "".join(f"{k} = {v}\n" for k, v in truth.items()) if truth else ""
    return (
        "[game]\nagents = 3\nactions = 4\n\n[mechanism]\nfamily = \"congestion\"\n\n[mechanism.truth]\n"
        "c1 = [0.2, 0.1, 0.3, 0.2]\nc2 = [0.1, 0.05, 0.05, 0.1]\ntau = [0.1, 0.0, 0.1, 0.1]\n\n"
        f"[learner]\nrule = \"{rule}\"\n{body}\n{truth_table}"
    )


@pytest.mark.parametrize("rule", sorted(NEW_RULES))
def test_new_rules_are_read_from_specs_and_simulate(tmp_path, rule):
    """``[learner] rule = ...`` names the learner; fixed numbers, priors and truths are read;
    ``simulate`` runs with the spec's truth; the written spec reads back to the same rule."""
    import bayes_diml
    from bayes_diml.likelihood import log_likelihood_per_episode
    from bayes_diml.priors import Prior
    from bayes_diml.simulate import simulate
    from bayes_diml.spec import model_to_toml

    path = tmp_path / "spec.toml"
    path.write_text(_spec_text(rule, NEW_RULES[rule]), encoding="utf-8")
    model, truth = bayes_diml.read_spec(path)
    assert model.learner is LEARNERS[rule]
    assert set(model.learner_priors) == set(NEW_TRUTHS[rule])
    assert all(isinstance(p, Prior) for p in model.learner_priors.values())
    assert {k: float(v) for k, v in truth["learner"].items() if k in NEW_TRUTHS[rule]} == NEW_TRUTHS[rule]
    data = simulate(model, truth, num_episodes=2, num_rounds=7, seed=5)
    assert data.actions.shape == (2, 7, 3)
    params = {"mechanism": {k: jnp.asarray(v, jnp.float32) for k, v in truth["mechanism"].items()},
              "learner": {k: jnp.asarray(v, jnp.float32) for k, v in truth["learner"].items()}}
    ll = np.asarray(log_likelihood_per_episode(model, params, data))
    assert np.all(np.isfinite(ll)) and np.all(ll < 0)
    again = tmp_path / "again.toml"
    again.write_text(model_to_toml(model), encoding="utf-8")
    assert bayes_diml.read_spec(again)[0].learner is LEARNERS[rule]


@pytest.mark.parametrize("rule,edit,name", [
    ("ewa", ("rho = 0.5", "rho = 1.5"), "rho"),
    ("ewa", ("phi = 0.8\n", ""), "phi"),
    ("hedge", ("eta = 0.4", "eta = 0.0"), "eta"),
    ("bandit_q", ("beta = 3.0", "beta = -3.0"), "beta"),
])
def test_new_rules_refuse_bad_parameters_naming_them(tmp_path, rule, edit, name):
    import bayes_diml

    path = tmp_path / "spec.toml"
    path.write_text(_spec_text(rule, NEW_RULES[rule].replace(*edit)), encoding="utf-8")
    with pytest.raises(SpecError, match=f"'{name}'"):
        bayes_diml.read_spec(path)
