"""Minibatch SVI (``fit(..., method="svi", batch_episodes=B)``).

The minibatch log-likelihood is ``(E / B) * sum_{e in S} loglik_e`` for a uniformly drawn
set ``S`` of ``B`` of the ``E`` episodes; averaged over all ``C(E, B)`` sets it is the
full-data log-likelihood, and so is the ELBO gradient (the guide's draw held fixed).
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro import handlers
from numpyro.infer import Trace_ELBO
from numpyro.infer.autoguide import AutoNormal
from numpyro.infer.util import log_density

import bayes_diml as bd
from bayes_diml.inference.numpyro_model import numpyro_model, sample_params
from bayes_diml.learners import logit_q
from bayes_diml.likelihood import log_likelihood_per_episode
from bayes_diml.mechanisms import Congestion
from bayes_diml.model import Model

LEARNER = {"alpha": 0.3, "beta": 3.0, "eps": 0.05}
TRUTH = {k: np.array(v) for k, v in {"c1": [0.2, 0.3, 0.1], "c2": [0.1, 0.05, 0.12], "tau": [0.1, 0.0, 0.2]}.items()}
NUM_EPISODES, BATCH = 5, 2  # C(5, 2) = 10 minibatches, enumerated exactly
# float32: each minibatch gradient sums ~10 scaled terms of size ~10-100; the mean of 10 of them
# against the full sum agrees to ~1e-6 relative; 1e-4 leaves room for reduction order.
RTOL, ATOL = 1e-4, 1e-4


@pytest.fixture(scope="module")
def setup():
    model = Model(Congestion(num_agents=3, num_actions=3), logit_q, LEARNER)
    data = bd.simulate(model, {"mechanism": TRUTH, "learner": LEARNER}, num_episodes=NUM_EPISODES, num_rounds=8, seed=7)
    actions, mask = jnp.asarray(data.actions), jnp.asarray(data.mask)
    return model, data, actions, mask


def subsets():
    return [jnp.asarray(s) for s in itertools.combinations(range(NUM_EPISODES), BATCH)]


def batched(model, index):
    """The minibatch model with its episode subsample fixed to ``index``."""
    fn = lambda a, m: numpyro_model(model, a, m, batch_episodes=BATCH)  # noqa: E731
    return handlers.substitute(fn, data={"episode": index})


def test_minibatch_log_likelihood_is_scaled_sum_of_episode_terms(setup):
    """Against the per-episode likelihood: log joint - log prior = (E / B) sum_{e in S} loglik_e."""
    model, _, actions, mask = setup
    prior_model = lambda: sample_params(model)  # noqa: E731
    values = {k: jnp.asarray(v, jnp.float32) for k, v in TRUTH.items()}
    values["d"] = values["tau"] - values["c1"]
    latents = {k: values[k] for k in handlers.trace(handlers.seed(prior_model, 0)).get_trace() if k in ("c1", "c2", "d")}
    log_prior, _ = log_density(prior_model, (), {}, latents)
    per_episode = np.asarray(
        log_likelihood_per_episode(model, {"mechanism": {k: values[k] for k in ("c1", "c2", "tau")}, "learner": LEARNER}, (actions, mask))
    )
    for index in subsets():
        joint, _ = log_density(batched(model, index), (actions, mask), {}, latents)
        expected = NUM_EPISODES / BATCH * per_episode[np.asarray(index)].sum()
        np.testing.assert_allclose(float(joint - log_prior), expected, rtol=1e-5)


def test_minibatch_elbo_gradient_is_unbiased(setup):
    """Mean over all 10 minibatches of the ELBO gradient = the full-data ELBO gradient."""
    model, _, actions, mask = setup
    full = lambda a, m: numpyro_model(model, a, m)  # noqa: E731
    guide = AutoNormal(full, init_scale=0.1)
    elbo = Trace_ELBO()
    key = jax.random.key(3)
    params = {
        name: value + 0.05 * jax.random.normal(jax.random.fold_in(key, i), jnp.shape(value))
        for i, (name, value) in enumerate(guide_params(guide, actions, mask).items())
    }

    def gradient(fn):
        return jax.grad(lambda p: elbo.loss(key, p, fn, guide, actions, mask))(params)

    reference = gradient(full)
    per_batch = [gradient(batched(model, index)) for index in subsets()]
    mean = jax.tree.map(lambda *g: jnp.mean(jnp.stack(g), axis=0), *per_batch)
    spread = jax.tree.map(lambda *g: jnp.std(jnp.stack(g), axis=0), *per_batch)
    # the minibatches really differ (c1 enters only through the prior: tau = d + c1 is the gauge)
    assert float(jnp.max(spread["c2_auto_loc"])) > 1.0 and float(jnp.max(spread["d_auto_loc"])) > 1.0
    for name in reference:
        np.testing.assert_allclose(mean[name], reference[name], rtol=RTOL, atol=ATOL, err_msg=name)


def guide_params(guide, actions, mask) -> dict:
    """Unconstrained guide parameters (locs and log-scales: the space SVI optimises)."""
    trace = handlers.trace(handlers.seed(guide, 0)).get_trace(actions, mask)
    return {n: jnp.asarray(s["value"]) for n, s in trace.items() if s["type"] == "param" and n.endswith("_loc")}


def test_fit_with_minibatches_runs_and_scores_every_episode(setup):
    model, data, _, _ = setup
    result = bd.fit(
        model, data, method="svi", seed=0, batch_episodes=BATCH, steps=100, num_samples=20, progress=False,
        posterior_predictive_draws=4,
    )
    assert result.info["batch_episodes"] == BATCH
    assert np.shape(result.log_likelihood) == (1, 20, NUM_EPISODES)
    assert all(np.all(np.isfinite(v)) for v in result.posterior.values())


def test_bad_batch_size_is_refused(setup):
    model, data, _, _ = setup
    with pytest.raises(ValueError, match="batch_episodes"):
        bd.fit(model, data, method="svi", seed=0, batch_episodes=NUM_EPISODES + 1, steps=10, progress=False)


def compiled_step_memory(model, num_episodes: int, batch_episodes: int | None) -> int:
    """XLA working memory (temp buffers, bytes) of one compiled block of SVI steps."""
    from bayes_diml.inference import svi as svi_module
    from bayes_diml.inference.numpyro_model import model_function

    actions = jnp.zeros((num_episodes, 8, 3), jnp.int32)
    mask = jnp.zeros((num_episodes, 8, 3), bool)
    fn = model_function(model)
    if batch_episodes is not None:
        fn = svi_module._subsampled(fn, batch_episodes)
    svi = svi_module._svi_program_for(fn, "normal", None, 1, (actions, mask, None))
    # unconstrained; guide parameters do not depend on E
    params = svi.optim.get_params(svi.init(jax.random.key(0), actions[:64], mask[:64]).optim_state)
    optimizer = svi_module._adam(0.002)
    args = (svi, optimizer, 2, params, optimizer.init(params), jax.random.key(1), 2, actions, mask)
    compiled = svi_module._svi_block.lower(*args).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def test_minibatch_step_memory_does_not_grow_with_the_data(setup):
    """10x the episodes: the minibatch step's working memory stays put (only the O(E) index
    permutation of the subsample grows: 4 bytes per episode), the full-data step's grows ~10x.
    (Measured: 1.04 MB at both 10,000 and 100,000 episodes with B = 256, vs 44 MB -> 444 MB
    for full data; a 100,000-episode minibatch fit peaked at 0.88 GB RSS, docs/scaling.md.)"""
    model = setup[0]
    small, large = 2_000, 20_000
    minibatch = [compiled_step_memory(model, e, 32) for e in (small, large)]
    full = [compiled_step_memory(model, e, None) for e in (small, large)]
    assert minibatch[1] <= minibatch[0] + 8 * (large - small), minibatch
    assert full[1] > 5 * full[0], full  # the measurement does see data-sized buffers


def test_minibatch_subsamples_observed_payoffs_with_their_episodes(setup):
    """With an observed ``payoff`` column, a minibatch scores the payoff rows of the same
    episodes as their actions: log joint - log prior = (E / B) sum_{e in S} (loglik_e + payoff_e),
    ``payoff_e`` from a NumPy normal log density at the realised payoffs."""
    import dataclasses

    model = dataclasses.replace(setup[0], payoff_sigma=0.5)
    _, _, actions, mask = setup
    rng = np.random.default_rng(0)
    payoff = rng.normal(size=actions.shape)
    payoff[rng.random(actions.shape) < 0.3] = np.nan  # unobserved entries
    payoff[1] += 3.0  # episode 1 fits badly: minibatches with and without it differ
    prior_model = lambda: sample_params(model, num_episodes=NUM_EPISODES, observed=True)  # noqa: E731
    names = [n for n, s in handlers.trace(handlers.seed(prior_model, 0)).get_trace().items() if s["type"] == "sample"]
    mechanism = {k: jnp.asarray(v, jnp.float32) for k, v in TRUTH.items()}
    values = dict(mechanism, d=mechanism["tau"] - mechanism["c1"])
    latents = {n: values[n] for n in names}
    log_prior, _ = log_density(prior_model, (), {}, latents)
    params = {"mechanism": mechanism, "learner": LEARNER}
    per_episode = np.asarray(log_likelihood_per_episode(model, params, (actions, mask)), np.float64)
    realised = np.asarray(
        jax.vmap(jax.vmap(lambda a, p: model.mechanism.payoffs(mechanism, a, p)))(actions, ~mask), np.float64
    )
    seen = np.isfinite(payoff) & ~np.asarray(mask)
    density = -0.5 * ((payoff - realised) / 0.5) ** 2 - np.log(0.5 * np.sqrt(2 * np.pi))
    per_episode = per_episode + np.where(seen, density, 0.0).sum(axis=(1, 2))
    fn = lambda a, m, p: numpyro_model(model, a, m, p, batch_episodes=BATCH)  # noqa: E731
    for index in subsets():
        joint, _ = log_density(handlers.substitute(fn, data={"episode": index}), (actions, mask, jnp.asarray(payoff)), {}, latents)
        expected = NUM_EPISODES / BATCH * per_episode[np.asarray(index)].sum()
        np.testing.assert_allclose(float(joint - log_prior), expected, rtol=1e-5)


def test_minibatch_with_per_episode_initial_is_refused(setup):
    import dataclasses

    model = dataclasses.replace(setup[0], initial="per_episode")
    with pytest.raises(bd.DataError, match=r"batch_episodes.*initial = 'per_episode'"):
        bd.fit(model, setup[1], method="svi", seed=0, batch_episodes=BATCH, steps=10, progress=False)
