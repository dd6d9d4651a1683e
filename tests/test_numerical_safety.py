"""Numerical safety at the extremes, and gradient checkpointing over rounds.

Extremes (issue 4, item 4): ``beta = 100``, ``eps = 0``, payoffs of +-1e4 and a horizon
of 2,000 rounds. The log-likelihood and its gradient (mechanism and learner
parameters) must be finite, and right: the float32 value is compared with the float64
NumPy loop of ``tests/reference.py``, and the float64 gradient with central differences
of that loop along a random direction.

Checkpointing: ``round_chunk`` gives the same value and gradient as the unchunked path
(horizons not a multiple of the chunk, masks, a round-dependent learner), and the
compiled gradient at T = 2,000 needs several times less temporary memory
(``Compiled.memory_analysis().temp_size_in_bytes``, XLA's own buffer assignment).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bayes_diml as bd
from bayes_diml.errors import DataError
from bayes_diml.learners import logit_q
from bayes_diml.likelihood import episode_log_likelihoods, log_likelihood, log_likelihood_per_episode
from bayes_diml.mechanisms import Congestion, Tabular
from bayes_diml.model import Model

import reference as ref
from conftest import build_case, make_data

LONG = 2000
EXTREME_LEARNER = {"alpha": 0.3, "beta": 100.0, "eps": 0.0}
PAYOFF = 1e4

# Tolerances.
# float32 value vs the float64 loop: every term is beta * (Q difference) ~ 1e6 with Q
# ~ 1e4 carried in float32 (relative rounding ~ 6e-8 per operation, a few operations per
# round through the recurrence), so each log-probability is off by <~ 1e6 * 1e-6 = 1 at
# worst against terms of ~ 1e6: a relative error of <~ 1e-6 on the total (measured on the
# tabular case: 1.1e-7 unchunked, 7.6e-8 with chunks of 64, CPU).
EXTREME_FLOAT32_RTOL = 1e-6
# simulated congestion play at beta = 100 is nearly deterministic: a total of mostly ~0
# log-probabilities plus a few large ones, so an absolute floor on top
EXTREME_CONGESTION_RTOL, EXTREME_CONGESTION_ATOL = 2e-5, 1e-2
# float64 autodiff vs central differences of the float64 loop: the log-likelihood is
# nearly piecewise linear in the payoffs here (beta |Delta Q| >> 1), so truncation is
# negligible; round-off ~ |f| 1e-16 / h with |f| ~ 1e9, h = 1e-3: ~ 1e-4 against
# directional derivatives of ~ 1e4 and more.
EXTREME_FD_RTOL = 1e-6
FD_STEP = 1e-3
# chunked vs unchunked, float32: the same operations regrouped (a recurrence restarted
# every chunk from the carried state): a few float32 ulps on values of order 10-100
CHUNK_RTOL = 2e-5
CHUNK_GRAD_ATOL = 2e-4


def _to64(tree):
    return jax.tree.map(lambda v: jnp.asarray(np.asarray(v, np.float64)), tree)


def _learner(values):
    return {k: jnp.float32(v) for k, v in values.items()}


@functools.cache
def extreme_tabular():
    """2 agents x 3 actions, table entries +-1e4 (random signs), 1 episode x 2,000 random rounds."""
    rng = np.random.default_rng(20260401)
    model = Model(Tabular(num_agents=2, num_actions=3), logit_q, EXTREME_LEARNER)
    table = PAYOFF * rng.choice([-1.0, 1.0], size=(9, 2)) * rng.uniform(0.5, 1.0, size=(9, 2))
    actions = rng.integers(0, 3, size=(1, LONG, 2)).astype(np.int32)
    return model, table, actions


@functools.cache
def extreme_congestion_reference() -> float:
    model, truth, actions, mask = extreme_congestion()
    return _reference_total("congestion", truth, actions, mask)


@functools.cache
def extreme_congestion():
    """3 agents x 3 resources, tolls of +-1e4, 2 episodes x 2,000 rounds simulated from it."""
    model = Model(Congestion(num_agents=3, num_actions=3), logit_q, EXTREME_LEARNER)
    truth = {"c1": np.array([0.2, 0.3, 0.1]), "c2": np.array([0.1, 0.05, 0.12]), "tau": np.array([PAYOFF, -PAYOFF, 0.5 * PAYOFF])}
    data = bd.simulate(model, {"mechanism": truth, "learner": EXTREME_LEARNER}, num_episodes=2, num_rounds=LONG, seed=4)
    return model, truth, np.asarray(data.actions), np.asarray(data.mask)


def _reference_total(family, mech, actions, mask=None, learner=EXTREME_LEARNER):
    mask = np.zeros(actions.shape, bool) if mask is None else mask
    return sum(
        ref.episode_log_likelihood(family, mech, "logit_q", learner, actions[e], mask[e], num_actions=3)[0]
        for e in range(actions.shape[0])
    )


def _value_and_grad(model, params, actions, mask, round_chunk=None):
    fn = lambda p: jnp.sum(episode_log_likelihoods(model, p, actions, mask, round_chunk=round_chunk))  # noqa: E731
    return jax.jit(jax.value_and_grad(fn))(params)


def _all_finite(tree) -> bool:
    return all(bool(jnp.all(jnp.isfinite(v))) for v in jax.tree.leaves(tree))


# ------------------------------------------------------------------ extremes


@pytest.mark.parametrize("round_chunk", [None, 64])
def test_extreme_tabular_value_is_finite_and_right(round_chunk):
    model, mech, actions = extreme_tabular()
    mask = np.zeros(actions.shape, bool)
    params = {"mechanism": {"payoffs": jnp.asarray(mech, jnp.float32)}, "learner": _learner(EXTREME_LEARNER)}
    mech = {"payoffs": mech}
    value, grad = _value_and_grad(model, params, jnp.asarray(actions), jnp.asarray(mask), round_chunk)
    assert np.isfinite(float(value)) and _all_finite(grad)
    assert value.dtype == jnp.float32
    want = _reference_total("tabular", mech, actions)
    assert want < -1e8  # the extreme regime: log-probabilities of ~ -beta * 1e4 per unlikely action
    np.testing.assert_allclose(float(value), want, rtol=EXTREME_FLOAT32_RTOL)
    # gradients of every learner parameter too, eps at its boundary 0 included
    assert set(grad["learner"]) == {"alpha", "beta", "eps"}
    assert float(jnp.abs(grad["learner"]["beta"])) > 0 and float(jnp.abs(grad["learner"]["alpha"])) > 0


@pytest.mark.slow
@pytest.mark.parametrize("round_chunk", [None, 64])
def test_extreme_congestion_value_is_finite_and_right(round_chunk):
    model, truth, actions, mask = extreme_congestion()
    params = {"mechanism": {k: jnp.asarray(v, jnp.float32) for k, v in truth.items()}, "learner": _learner(EXTREME_LEARNER)}
    value, grad = _value_and_grad(model, params, jnp.asarray(actions), jnp.asarray(mask), round_chunk)
    assert np.isfinite(float(value)) and _all_finite(grad)
    want = extreme_congestion_reference()
    np.testing.assert_allclose(float(value), want, rtol=EXTREME_CONGESTION_RTOL, atol=EXTREME_CONGESTION_ATOL)


def test_extreme_gradient_matches_central_differences_of_the_reference():
    """float64 autodiff (mechanism + learner) vs central differences of the NumPy loop."""
    model, mech, actions = extreme_tabular()
    mask = np.zeros(actions.shape, bool)
    rng = np.random.default_rng(5)
    learner = {"alpha": 0.3, "beta": 100.0, "eps": 0.0}
    with jax.enable_x64(True):
        params = _to64({"mechanism": {"payoffs": mech}, "learner": learner})
        value, grad = _value_and_grad(model, params, jnp.asarray(actions), jnp.asarray(mask), round_chunk=128)
        assert _all_finite(grad)
        direction = rng.normal(size=mech.shape)
        direction /= np.linalg.norm(direction)
        auto = float(np.sum(np.asarray(grad["mechanism"]["payoffs"]) * direction))
        plus = _reference_total("tabular", {"payoffs": mech + FD_STEP * direction}, actions)
        minus = _reference_total("tabular", {"payoffs": mech - FD_STEP * direction}, actions)
        np.testing.assert_allclose(auto, (plus - minus) / (2 * FD_STEP), rtol=EXTREME_FD_RTOL)
        # a learner parameter: beta (the log-likelihood is ~ linear in beta in this regime)
        step = 1e-4
        up = _reference_total("tabular", {"payoffs": mech}, actions, learner={**learner, "beta": 100.0 + step})
        down = _reference_total("tabular", {"payoffs": mech}, actions, learner={**learner, "beta": 100.0 - step})
        np.testing.assert_allclose(float(grad["learner"]["beta"]), (up - down) / (2 * step), rtol=EXTREME_FD_RTOL)


# ------------------------------------------------------------------ checkpointing


@pytest.mark.parametrize(
    "case_id,learner_name,kind,chunks",
    [
        ("congestion", "logit_q_decreasing", "absent", (1, 40)),  # the round index crosses chunks; one padded chunk
        ("tabular", "logit_q", "trailing", (7,)),
        pytest.param("anonymous", "logit_q_decreasing", "absent", (5,), marks=pytest.mark.slow),
    ],
)
def test_chunked_equals_unchunked_value_and_gradient(case_id, learner_name, kind, chunks):
    case = build_case(case_id, learner_name)
    actions, mask = make_data(np.random.default_rng(11), case, 3, 23, kind)  # 23 rounds: no chunk divides it
    actions, mask = jnp.asarray(actions), jnp.asarray(mask)
    value, grad = _value_and_grad(case.model, case.params, actions, mask)
    for chunk in chunks:
        got, got_grad = _value_and_grad(case.model, case.params, actions, mask, chunk)
        np.testing.assert_allclose(float(got), float(value), rtol=CHUNK_RTOL)
        for (path, want_leaf), got_leaf in zip(jax.tree_util.tree_leaves_with_path(grad), jax.tree.leaves(got_grad)):
            np.testing.assert_allclose(got_leaf, want_leaf, rtol=CHUNK_RTOL, atol=CHUNK_GRAD_ATOL, err_msg=f"{chunk} {path}")
    # per episode, through the public functions, against the NumPy loop
    learner = {k: float(v) for k, v in case.params["learner"].items()}
    want = [
        ref.episode_log_likelihood(case.family, case.params["mechanism"], learner_name, learner, np.asarray(actions[e]),
                                   np.asarray(mask[e]), num_actions=case.num_actions, **case.features)[0]
        for e in range(3)
    ]
    got = log_likelihood_per_episode(case.model, case.params, (actions, mask), round_chunk=chunks[-1])
    np.testing.assert_allclose(np.asarray(got), want, rtol=CHUNK_RTOL)
    total = log_likelihood(case.model, case.params, (actions, mask), round_chunk=chunks[-1])
    np.testing.assert_allclose(float(total), sum(want), rtol=CHUNK_RTOL)


def test_round_chunk_must_be_a_positive_integer():
    case = build_case("congestion", "logit_q")
    actions, mask = make_data(np.random.default_rng(1), case, 1, 4, "full")
    for bad in (0, -3, 2.5, True, "8"):
        with pytest.raises(DataError, match="round_chunk"):
            log_likelihood(case.model, case.params, (actions, mask), round_chunk=bad)


def _temp_bytes(model, params, actions, mask, round_chunk):
    fn = lambda p: jnp.sum(episode_log_likelihoods(model, p, actions, mask, round_chunk=round_chunk))  # noqa: E731
    compiled = jax.jit(jax.grad(fn)).lower(params).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def test_checkpointed_gradient_memory_is_bounded_at_2000_rounds():
    """XLA's buffer assignment for the compiled gradient: O(T) without chunks, O(T/c + c) with."""
    model = Model(Congestion(num_agents=4, num_actions=5), logit_q, {"alpha": 0.25, "beta": 3.0, "eps": 0.06})
    params = {
        "mechanism": {k: jnp.full((5,), 0.1, jnp.float32) for k in ("c1", "c2", "tau")},
        "learner": _learner({"alpha": 0.25, "beta": 3.0, "eps": 0.06}),
    }

    def temp(T, chunk):
        actions = jnp.zeros((2, T, 4), jnp.int32)
        return _temp_bytes(model, params, actions, jnp.zeros((2, T, 4), bool), chunk)

    plain, chunked = temp(LONG, None), temp(LONG, 45)  # 45 ~ sqrt(2000)
    assert plain >= 5 * chunked, (plain, chunked)  # measured: 5.6 MB vs 0.16 MB (35x), CPU, jax 0.12
    # and the chunked one grows as T/c + c: at 4x the rounds (chunk sqrt(T)) it still
    # needs less than the unchunked gradient at T
    assert temp(4 * LONG, 90) < plain


def test_fit_threads_round_chunk_into_the_numpyro_model():
    """The log joint of the NumPyro model is the same with and without chunks; fit records it."""
    from numpyro.infer.util import log_density

    from bayes_diml.inference.numpyro_model import numpyro_model

    case = build_case("congestion", "logit_q")
    actions, mask = make_data(np.random.default_rng(2), case, 2, 13, "absent")
    values = {"d": jnp.array([0.1, -0.2, 0.3, 0.0]), "c2": jnp.array([0.1, 0.05, 0.2, 0.1]), "c1": jnp.full((4,), 0.25)}
    plain = log_density(functools.partial(numpyro_model, case.model), (actions, mask), {}, values)[0]
    chunked = log_density(functools.partial(numpyro_model, case.model, round_chunk=4), (actions, mask), {}, values)[0]
    np.testing.assert_allclose(float(chunked), float(plain), rtol=CHUNK_RTOL)
    with pytest.raises(DataError, match="round_chunk"):
        bd.fit(case.model, bd.Trajectories.from_arrays(actions, mask, num_actions=4), method="map", seed=0, round_chunk=0)


@pytest.mark.slow
def test_map_fit_with_round_chunk_equals_the_unchunked_fit():
    case = build_case("congestion", "logit_q")
    actions, mask = make_data(np.random.default_rng(3), case, 3, 17, "full")
    data = bd.Trajectories.from_arrays(actions, mask, num_actions=4)
    options = dict(method="map", seed=2, steps=100, restarts=1, progress=False, posterior_predictive_draws=2)
    plain = bd.fit(case.model, data, **options)
    chunked = bd.fit(case.model, data, round_chunk=5, **options)
    assert chunked.info["round_chunk"] == 5 and plain.info["round_chunk"] is None
    for name in ("d", "c2", "c1"):
        # 100 Adam steps on float32 gradients that agree to ~1e-6: the optima agree to ~1e-4
        np.testing.assert_allclose(chunked.posterior[name], plain.posterior[name], rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(chunked.log_likelihood, plain.log_likelihood, rtol=1e-4)
