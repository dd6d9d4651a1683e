"""One compilation per shape: a second fit on same-shape data and further SVI steps
compile nothing that evaluates the likelihood or its gradient.

Compilations are counted with ``jax.monitoring``: XLA reports every backend compile
as the duration event ``/jax/core/compile/backend_compile_duration`` with the jitted
function's name (``fun_name``).
"""

from __future__ import annotations

import collections

import jax
import numpy as np
import pytest

import bayes_diml as bd
from bayes_diml.learners import logit_q
from bayes_diml.likelihood import log_likelihood
from bayes_diml.mechanisms import Congestion
from bayes_diml.model import Model

COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
# Compiled again per fit by code outside the inference runners: nothing (the posterior
# predictive simulator ``results._frequencies`` is jitted once per model and shape, and
# models compare by value).
OUTSIDE_THE_LIKELIHOOD: set[str] = set()

LEARNER = {"alpha": 0.3, "beta": 3.0, "eps": 0.05}
TRUTH = {k: np.array(v) for k, v in {"c1": [0.2, 0.3, 0.1], "c2": [0.1, 0.05, 0.12], "tau": [0.1, 0.0, 0.2]}.items()}
SHAPE = dict(num_episodes=5, num_rounds=10)
SVI_OPTIONS = dict(num_samples=30, progress=False, posterior_predictive_draws=4)


class CompileLog:
    """Names of the functions XLA compiled while the log is open."""

    def __init__(self):
        self.names: list[str] = []

    def __call__(self, event, duration, **kwargs):
        if event == COMPILE_EVENT:
            self.names.append(kwargs.get("fun_name", "?"))

    def __enter__(self):
        jax.monitoring.register_event_duration_secs_listener(self)
        return self

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self)

    def counts(self) -> collections.Counter:
        return collections.Counter(self.names)


@pytest.fixture(scope="module")
def model():
    return Model(Congestion(num_agents=3, num_actions=3), logit_q, LEARNER)


def simulate(model, seed):
    return bd.simulate(model, {"mechanism": TRUTH, "learner": LEARNER}, seed=seed, **SHAPE)


@pytest.fixture(scope="module")
def svi_logs(model):
    """Two SVI fits on different data of the same shape, with different seeds and step counts
    (100 steps = one block; 250 steps = two full blocks and a masked partial one)."""
    with CompileLog() as first:
        bd.fit(model, simulate(model, 1), method="svi", seed=1, steps=100, **SVI_OPTIONS)
    with CompileLog() as second:
        result = bd.fit(model, simulate(model, 2), method="svi", seed=2, steps=250, **SVI_OPTIONS)
    return first, second, result


def test_first_fit_compiles_each_training_function_once(svi_logs):
    first, _, _ = svi_logs
    counts = first.counts()
    assert counts["jit(_svi_block)"] == 1, counts
    assert counts["jit(_map_block)"] == 1, counts  # the MAP warm start


def test_second_fit_on_same_shape_compiles_nothing_of_the_likelihood(svi_logs):
    _, second, result = svi_logs
    assert set(second.names) <= OUTSIDE_THE_LIKELIHOOD, second.counts()
    # the second fit really ran 250 steps (three blocks, the last one masked to 50 steps)
    assert result.info["steps"] == 250 and len(result.info["elbo_trace"]) == 250


def test_ragged_last_block_runs_only_the_requested_steps(model):
    """A masked partial block leaves the state untouched after the last requested step:
    150 steps in blocks of 100 (one full, one half masked) equal 150 steps in blocks of 50."""
    data = simulate(model, 3)
    options = dict(SVI_OPTIONS, steps=150, map_steps=0)
    blocks_100 = bd.fit(model, data, method="svi", seed=4, block=100, **options)
    with CompileLog() as log:
        blocks_50 = bd.fit(model, data, method="svi", seed=4, block=50, **options)
    assert log.counts()["jit(_svi_block)"] == 1  # a new block length is a new shape
    for name, value in blocks_100.posterior.items():
        np.testing.assert_allclose(blocks_50.posterior[name], value, rtol=1e-5, atol=1e-6, err_msg=name)


def test_likelihood_and_gradient_compile_once_per_shape(model):
    params = {"mechanism": {k: np.asarray(v, np.float32) for k, v in TRUTH.items()}, "learner": LEARNER}
    value_and_grad = jax.value_and_grad(lambda p, data: log_likelihood(model, p, data))
    value_and_grad(params, simulate(model, 5))
    with CompileLog() as log:
        value_and_grad(params, simulate(model, 6))
    assert not [n for n in log.names if "per_episode" in n], log.counts()
