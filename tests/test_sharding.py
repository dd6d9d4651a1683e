"""Episode sharding over several devices equals the single-device computation.

Runs in a subprocess with 4 simulated CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=4``): the device count is fixed
when JAX starts, so it cannot change inside the test process. The episode count (7)
is not a multiple of 4: the sharded path pads with fully masked episodes. Several
processes (hosts) joined by ``jax.distributed``: ``tests/test_distributed.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

NUM_DEVICES = 4
NUM_EPISODES = 7  # not a multiple of NUM_DEVICES
# float32 sums over episodes in another order (per device, then across devices) differ by
# a few ulps of a sum of ~250 terms (~1e-6 relative); the short SVI fit stays within 1e-5.
RTOL = 1e-5
ATOL = 1e-6

SCRIPT = textwrap.dedent(
    """
    import json
    import jax, jax.numpy as jnp, numpy as np
    import bayes_diml as bd
    from bayes_diml.learners import logit_q
    from bayes_diml.likelihood import log_likelihood, log_likelihood_per_episode
    from bayes_diml.mechanisms import Congestion
    from bayes_diml.model import Model
    from bayes_diml.sharding import shard_episodes

    learner = {"alpha": 0.3, "beta": 3.0, "eps": 0.05}
    truth = {"c1": [0.2, 0.3, 0.1], "c2": [0.1, 0.05, 0.12], "tau": [0.1, 0.0, 0.2]}
    model = Model(Congestion(num_agents=3, num_actions=3), logit_q, learner)
    params = {"mechanism": {k: jnp.asarray(v, jnp.float32) for k, v in truth.items()},
              "learner": {k: jnp.float32(v) for k, v in learner.items()}}
    data = bd.simulate(model, params, num_episodes=NUM_EPISODES, num_rounds=12, seed=5)
    actions, mask = np.asarray(data.actions), np.asarray(data.mask).copy()
    mask[2, 7:] = True        # a shorter episode
    mask[4, 3, 1] = True      # an absent agent
    pair = (actions, mask)

    out = {"devices": jax.device_count()}
    a, m = shard_episodes(actions, mask)
    out["padded_shape"] = list(a.shape)
    out["padding_masked"] = bool(np.asarray(m)[NUM_EPISODES:].all())
    out["padding_actions"] = np.asarray(a)[NUM_EPISODES:].tolist()
    out["shard_rows"] = sorted(s.data.shape[0] for s in a.addressable_shards)
    out["data_equal"] = bool((np.asarray(a)[:NUM_EPISODES] == actions).all() and (np.asarray(m)[:NUM_EPISODES] == mask).all())

    for shard in (False, True):
        tag = "sharded" if shard else "single"
        out[tag + "_per_episode"] = np.asarray(log_likelihood_per_episode(model, params, pair, shard=shard)).tolist()
        value, grad = jax.value_and_grad(lambda p: log_likelihood(model, p, pair, shard=shard))(params)
        out[tag + "_total"] = float(value)
        out[tag + "_grad"] = {k: np.asarray(v).tolist() for k, v in grad["mechanism"].items()}
        result = bd.fit(model, data, method="svi",
                        seed=11, shard=shard, steps=60, map_steps=30, num_samples=40, progress=False,
                        posterior_predictive_draws=4)
        out[tag + "_fit_sharded_flag"] = result.info["sharded"]
        out[tag + "_svi"] = {k: np.asarray(v).tolist() for k, v in result.posterior.items()}
        out[tag + "_fit_loglik_shape"] = list(np.shape(result.log_likelihood))
        out[tag + "_fit_loglik"] = np.asarray(result.log_likelihood).tolist()
        # a per-episode initial state Q_0 (padded with the episodes) and observed payoffs
        initial = jnp.asarray(np.random.default_rng(1).normal(size=(NUM_EPISODES, 3, 3)), jnp.float32)
        out[tag + "_initial_per_episode"] = np.asarray(
            log_likelihood_per_episode(model, dict(params, initial=initial), pair, shard=shard)).tolist()
        observed = bd.simulate(model, params, num_episodes=NUM_EPISODES, num_rounds=12, seed=6,
                               payoff_fraction=0.5, payoff_noise=0.1)
        payoff_fit = bd.fit(model, observed, method="svi", seed=3, shard=shard, steps=20, map_steps=10,
                            num_samples=10, progress=False, posterior_predictive_draws=2)
        out[tag + "_payoff_svi"] = {k: np.asarray(v).tolist() for k, v in payoff_fit.posterior.items()}
        out[tag + "_payoff_loglik"] = np.asarray(payoff_fit.log_likelihood).tolist()
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def run() -> dict:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={NUM_DEVICES}", JAX_PLATFORMS="cpu")
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    code = f"NUM_EPISODES = {NUM_EPISODES}\n" + SCRIPT
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_episodes_are_padded_with_masked_dummies_and_split(run):
    assert run["devices"] == NUM_DEVICES
    assert run["padded_shape"][0] == 8
    assert run["shard_rows"] == [2, 2, 2, 2]
    assert run["padding_masked"]
    assert run["data_equal"]


def test_sharded_likelihood_equals_single_device(run):
    single, sharded = np.asarray(run["single_per_episode"]), np.asarray(run["sharded_per_episode"])
    assert single.shape == sharded.shape == (NUM_EPISODES,)
    assert np.all(single < 0)
    np.testing.assert_allclose(sharded, single, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(run["sharded_total"], run["single_total"], rtol=RTOL)
    np.testing.assert_allclose(run["single_total"], single.sum(), rtol=RTOL)


def test_sharded_gradient_equals_single_device(run):
    for name, value in run["single_grad"].items():
        assert np.any(np.asarray(value) != 0), name
        np.testing.assert_allclose(run["sharded_grad"][name], value, rtol=RTOL, atol=ATOL, err_msg=name)


def test_sharded_svi_fit_equals_unsharded_fit(run):
    assert run["sharded_fit_sharded_flag"] and not run["single_fit_sharded_flag"]
    assert run["single_svi"].keys() == run["sharded_svi"].keys()
    for name, value in run["single_svi"].items():
        np.testing.assert_allclose(run["sharded_svi"][name], value, rtol=RTOL, atol=ATOL, err_msg=name)
    assert run["sharded_fit_loglik_shape"] == [1, 40, NUM_EPISODES]
    np.testing.assert_allclose(run["sharded_fit_loglik"], run["single_fit_loglik"], rtol=RTOL, atol=ATOL)


def test_sharded_per_episode_initial_equals_single_device(run):
    single, sharded = np.asarray(run["single_initial_per_episode"]), np.asarray(run["sharded_initial_per_episode"])
    assert single.shape == (NUM_EPISODES,)
    assert not np.allclose(single, run["single_per_episode"])  # Q_0 really enters
    np.testing.assert_allclose(sharded, single, rtol=RTOL, atol=ATOL)


def test_sharded_fit_with_observed_payoffs_equals_unsharded_fit(run):
    assert "payoff_sigma" in run["single_payoff_svi"]
    for name, value in run["single_payoff_svi"].items():
        np.testing.assert_allclose(run["sharded_payoff_svi"][name], value, rtol=RTOL, atol=ATOL, err_msg=name)
    assert np.shape(run["sharded_payoff_loglik"]) == (1, 10, NUM_EPISODES)
    np.testing.assert_allclose(run["sharded_payoff_loglik"], run["single_payoff_loglik"], rtol=RTOL, atol=ATOL)
