"""NUTS in the Laplace frame (``nuts.run_nuts`` with a dense mass matrix).

References are independent of the sampler: a closed-form Gaussian posterior (mean and
covariance known), and central finite differences of the gradient for the Hessian.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import bayes_diml as bd
from bayes_diml.inference import nuts, potential, preconditioning
from bayes_diml.learners import logit_q
from bayes_diml.mechanisms import Congestion
from bayes_diml.model import Model

# A badly scaled, strongly correlated Gaussian (condition number ~1e5) and a log-normal
# scale: the posterior is the prior (the toy model has no likelihood), known in closed form.
MEAN = np.array([1.0, -2.0, 0.5, 3.0])
_ROTATION = np.linalg.qr(np.random.default_rng(7).normal(size=(4, 4)))[0]
COV = _ROTATION @ np.diag([100.0, 1.0, 0.01, 0.001]) @ _ROTATION.T


def gaussian_model(actions, mask, payoff=None, priors_only=False):
    numpyro.sample("x", dist.MultivariateNormal(jnp.asarray(MEAN, jnp.float32), covariance_matrix=jnp.asarray(COV, jnp.float32)))
    numpyro.sample("s", dist.LogNormal(0.5, 0.3))


DUMMY = (jnp.zeros((1, 2, 3), jnp.int32), jnp.zeros((1, 2, 3), bool))


@pytest.fixture(scope="module")
def gaussian_runs():
    runs = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(nuts, "ADAPTED_DENSE_MAX_DIM", 0)  # the frame at any size (the default, measured)
        for dense in (True, False):
            runs[dense] = nuts.run_nuts(
                gaussian_model, *DUMMY, jax.random.key(0), num_chains=2, num_warmup=300, num_samples=1000,
                dense_mass=dense, progress=False,
            )
    return runs


@pytest.mark.slow
def test_frame_recovers_closed_form_gaussian(gaussian_runs):
    posterior, stats, info = gaussian_runs[True]
    assert info["dense_mass"] and posterior["x"].shape == (2, 1000, 4) and posterior["s"].shape == (2, 1000)
    x = posterior["x"].reshape(-1, 4)
    sd = np.sqrt(np.diag(COV))
    # 2000 draws with ESS well above 500 in the frame (w is exactly standard normal here):
    # the Monte Carlo sd of a mean is < sd / sqrt(500) = 0.045 sd; 0.15 sd is > 3 of them.
    np.testing.assert_array_less(np.abs(x.mean(axis=0) - MEAN), 0.15 * sd)
    correlation = np.corrcoef(x.T)
    truth = COV / np.outer(sd, sd)
    np.testing.assert_allclose(correlation, truth, atol=0.06)  # MC sd of a correlation <= 1/sqrt(500) = 0.045
    np.testing.assert_allclose(x.std(axis=0), sd, rtol=0.1)
    log_s = np.log(posterior["s"]).ravel()
    assert abs(log_s.mean() - 0.5) < 0.15 * 0.3 and abs(log_s.std() - 0.3) < 0.1 * 0.3
    assert stats["diverging"].sum() == 0


@pytest.mark.slow
def test_frame_needs_short_trajectories(gaussian_runs):
    """In the Laplace frame the Gaussian is standard normal: a few leapfrog steps per
    draw; the diagonal mass matrix cannot undo the rotation (condition ~1e5) and needs
    long trajectories."""
    dense, diagonal = gaussian_runs[True][2], gaussian_runs[False][2]
    assert not diagonal["dense_mass"]
    assert dense["mean_leapfrog_steps"] < 10  # measured 5.9
    assert diagonal["mean_leapfrog_steps"] > 4 * dense["mean_leapfrog_steps"]  # measured 409


def test_hessian_matches_finite_differences():
    model = Model(Congestion(num_agents=3, num_actions=3), logit_q, {"alpha": 0.3, "beta": 3.0, "eps": 0.05})
    data = bd.simulate(model, {"mechanism": {"c1": np.array([0.2, 0.3, 0.1]), "c2": np.array([0.1, 0.05, 0.12]),
                                             "tau": np.array([0.1, 0.0, 0.2])}, "learner": model.fixed_learner_params},
                       num_episodes=4, num_rounds=10, seed=3)
    from bayes_diml.inference.numpyro_model import model_function
    from bayes_diml.likelihood import as_arrays

    fn = model_function(model)
    args = (*as_arrays(data), None)
    z = {k: v[0] for k, v in potential._prior_starts(fn, jax.random.split(jax.random.key(1), 1), *args).items()}
    flat, unravel = jax.flatten_util.ravel_pytree(z)
    hessian = np.asarray(preconditioning._potential_hessian(fn, z, *args))
    grad = lambda f: np.asarray(jax.flatten_util.ravel_pytree(potential._potential_and_grad(fn, unravel(f), *args)[1])[0], np.float64)  # noqa: E731
    h = 1e-2
    reference = np.stack([(grad(flat + h * e) - grad(flat - h * e)) / (2 * h) for e in np.eye(flat.size, dtype=np.float32)], axis=1)
    # float32 gradients (~1e-6 relative) over 2h = 0.02 and O(h^2) truncation: 1% of the largest entry
    np.testing.assert_allclose(hessian, reference, atol=1e-2 * np.abs(reference).max())


def test_fit_passes_dense_mass(monkeypatch):
    model = Model(Congestion(num_agents=3, num_actions=3), logit_q, {"alpha": 0.3, "beta": 3.0, "eps": 0.05})
    data = bd.simulate(model, {"mechanism": {"c1": np.array([0.2, 0.3, 0.1]), "c2": np.array([0.1, 0.05, 0.12]),
                                             "tau": np.array([0.1, 0.0, 0.2])}, "learner": model.fixed_learner_params},
                       num_episodes=3, num_rounds=8, seed=3)
    seen = []
    real = numpyro.infer.NUTS.__init__

    def spy(self, model=None, potential_fn=None, **kwargs):
        seen.append((model is None, kwargs.get("dense_mass", False)))
        real(self, model, potential_fn=potential_fn, **kwargs)

    monkeypatch.setattr(numpyro.infer.NUTS, "__init__", spy)
    for dense, adapted_max, mass in ((True, 200, "adapted dense"), (True, 0, "laplace frame"), (False, 0, "adapted diagonal")):
        monkeypatch.setattr(nuts, "ADAPTED_DENSE_MAX_DIM", adapted_max)
        result = bd.fit(model, data, method="nuts", seed=0, num_chains=1, num_warmup=5, num_samples=5, dense_mass=dense,
                        progress=False, posterior_predictive_draws=2)
        assert result.info["dense_mass"] is dense and result.info["mass_matrix"] == mass
        assert result.posterior["tau"].shape == (1, 5, 3)
    # small dense: NumPyro's dense adaptation on the model; above the threshold: a potential
    # in the Laplace frame (no model) with a diagonal mass adapted there; no dense: diagonal
    assert seen == [(False, True), (True, False), (False, False)]
