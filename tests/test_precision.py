"""Floating-point precision: the Fisher information follows ``--x64``, and the
log-likelihood's sums over many float32 terms stay accurate (issue 16, point 9).

The references are float64 NumPy evaluations, never the code's own output.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import bayes_diml as bd
import bayes_diml.likelihood as likelihood_module
from bayes_diml.learners import LEARNERS
from bayes_diml.mechanisms import FAMILIES
from bayes_diml.model import Model

LEARNER_PARAMS = {"alpha": 0.25, "beta": 3.0, "eps": 0.06}
TRUTH = {
    "mechanism": {
        "c1": np.array([0.20, 0.30, 0.15]),
        "c2": np.array([0.10, 0.06, 0.12]),
        "tau": np.array([0.05, 0.15, 0.10]),
    },
    "learner": dict(LEARNER_PARAMS),
}


# ----------------------------------------------- identifiability under --x64
def test_identifiability_hessian_uses_float64_under_x64(monkeypatch):
    """Under ``jax.enable_x64`` the observed information is computed in float64: every
    parameter the likelihood sees while the Hessian is built is float64 (it was float32)."""
    seen = []
    original = likelihood_module.log_likelihood

    def spy(model, params, data, *args, **kwargs):
        seen.extend(jnp.result_type(v) for v in jax.tree.leaves(params["mechanism"]))
        return original(model, params, data, *args, **kwargs)

    with jax.enable_x64(True):
        mechanism = FAMILIES["congestion"](num_agents=3, num_actions=3)
        model = Model(mechanism, LEARNERS["logit_q"], learner_params=dict(LEARNER_PARAMS))
        data = bd.simulate(model, TRUTH, num_episodes=4, num_rounds=10, seed=1)
        fit = bd.fit(model, data, method="map", seed=0, steps=40, progress=False,
                     laplace=True, num_samples=50, posterior_predictive_draws=1)
        monkeypatch.setattr(likelihood_module, "log_likelihood", spy)
        report = fit.identifiability(seed=0)
    assert seen, "the Fisher information did not evaluate the likelihood"
    assert set(seen) == {jnp.dtype(jnp.float64)}, set(seen)
    assert report.eigenvalues.size > 0


# ------------------------------------ accumulation of the log-likelihood's sums
def _small_congestion():
    mechanism = FAMILIES["congestion"](num_agents=3, num_actions=3)
    model = Model(mechanism, LEARNERS["logit_q"], learner_params=dict(LEARNER_PARAMS))
    data = bd.simulate(model, TRUTH, num_episodes=6, num_rounds=40, seed=2)
    return model, data


def test_float32_log_likelihood_is_within_an_ulp_of_float64():
    """Default float32: each episode's sum and the total are within 2 float32 ulps of the
    float64 evaluation (the measured error is about one ulp, see
    ``benchmarks/likelihood_precision.py``): rounding cannot move a LOO comparison."""
    model, data = _small_congestion()
    params32 = jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), TRUTH)
    per32 = np.asarray(bd.log_likelihood_per_episode(model, params32, data, shard=False), np.float64)
    total32 = float(bd.log_likelihood(model, params32, data, shard=False))
    with jax.enable_x64(True):
        params64 = jax.tree.map(lambda v: jnp.asarray(np.asarray(v), jnp.float64), TRUTH)
        per64 = np.asarray(bd.log_likelihood_per_episode(model, params64, data, shard=False))
        total64 = float(bd.log_likelihood(model, params64, data, shard=False))
    ulp = np.abs(np.spacing(per64.astype(np.float32))).astype(np.float64)
    # per-term float32 rounding of log pi adds ~sqrt(terms) * 1e-7 on top of the summation
    slack = np.sqrt(data.actions[0].size) * 4e-7
    assert np.all(np.abs(per32 - per64) <= 2 * ulp + slack), (per32 - per64, ulp)
    assert abs(total32 - total64) <= 2 * abs(np.spacing(np.float32(total64))) + 6 * slack


def test_sums_accumulate_in_float64_under_x64():
    """With x64 on, float32 log-probabilities are added up in float64: the per-episode sum
    equals the exact sum of its float32 terms, which a float32 accumulator cannot hold."""
    rng = np.random.default_rng(0)
    log_pi = np.log(rng.dirichlet(np.ones(4), size=(1, 3000, 50))).astype(np.float32)  # (E, T, n, A)
    actions = rng.integers(0, 4, size=(1, 3000, 50))
    present = rng.random((1, 3000, 50)) > 0.1
    played = np.take_along_axis(log_pi, actions[..., None], axis=-1)[..., 0].astype(np.float64)
    exact = np.sum(np.where(present, played, 0.0))  # float64 pairwise sum of float32 values
    with jax.enable_x64(True):
        value = jax.jit(jax.vmap(likelihood_module._played))(jnp.asarray(log_pi), jnp.asarray(actions), jnp.asarray(present))
        assert value.dtype == jnp.float64
        total = likelihood_module.accumulator_dtype(jnp.float32)
    assert total == np.float64
    assert abs(float(value[0]) - exact) <= 1e-9 * abs(exact), (float(value[0]) - exact, exact)
    assert likelihood_module.accumulator_dtype(jnp.float32) == np.float32  # x64 off again
