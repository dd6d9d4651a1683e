"""Inference layer: fit (NUTS/SVI/MAP), ArviZ output, storage, payoff-difference queries."""

from __future__ import annotations

import arviz as az
import numpy as np
import pandas as pd
import pytest

import bayes_diml as bd
from bayes_diml.inference.queries import in_support, parse_queries, sample_queries, support_contexts
from bayes_diml.learners import logit_q
from bayes_diml.mechanisms import Congestion, Tabular
from bayes_diml.model import Model
from bayes_diml.priors import Prior

LEARNER = {"alpha": 0.3, "beta": 3.0, "eps": 0.05}
TRUTH = {"c1": np.array([0.2, 0.3, 0.1]), "c2": np.array([0.1, 0.05, 0.12]), "tau": np.array([0.1, 0.0, 0.2])}


def congestion_model(**learner):
    return Model(Congestion(num_agents=3, num_actions=3), logit_q, {**LEARNER, **learner})


@pytest.fixture(scope="module")
def congestion_data():
    model = congestion_model()
    return bd.simulate(model, {"mechanism": TRUTH, "learner": LEARNER}, num_episodes=6, num_rounds=15, seed=3)


@pytest.fixture(scope="module")
def nuts_fit(congestion_data):
    return bd.fit(
        congestion_model(), congestion_data, method="nuts", seed=1, num_chains=2, num_warmup=60, num_samples=60,
        progress=False, posterior_predictive_draws=20,
    )


def numpy_congestion_difference(c1, c2, tau, agent, action, baseline, joint):
    """Independent reference: Δ from the congestion formula with explicit loads."""
    def payoff(k):
        others = [a for j, a in enumerate(joint) if j != agent]
        load = 1 + sum(1 for a in others if a == k)
        return -(c1[..., k] * load + c2[..., k] * load**2) + tau[..., k] * load

    return payoff(action) - payoff(baseline)


def test_payoff_differences_match_numpy_formula(nuts_fit):
    queries = pd.DataFrame(
        {"agent": [0, 2, 1], "action": [1, 2, 0], "baseline": [0, 0, 2], "joint": ["0 1 1", "2 2 2", "1 0 1"]}
    )
    answer = nuts_fit.payoff_differences(queries)
    c1, c2, tau = (nuts_fit.posterior[k].reshape(-1, 3) for k in ("c1", "c2", "tau"))
    for row, q in answer.iterrows():
        joint = [int(x) for x in q.joint.split()]
        draws = numpy_congestion_difference(c1, c2, tau, q.agent, q.action, q.baseline, joint)
        np.testing.assert_allclose(q["mean"], draws.mean(), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(q["q05"], np.quantile(draws, 0.05), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(q["q95"], np.quantile(draws, 0.95), rtol=1e-4, atol=1e-6)
    truth = nuts_fit.payoff_differences(queries, truth=TRUTH)
    expected = [numpy_congestion_difference(TRUTH["c1"], TRUTH["c2"], TRUTH["tau"], q.agent, q.action, q.baseline,
                                            [int(x) for x in q.joint.split()]) for q in queries.itertuples()]
    np.testing.assert_allclose(truth["truth"], expected, rtol=1e-5)


def test_tau_is_d_plus_c1_and_gauge_free(nuts_fit):
    np.testing.assert_allclose(nuts_fit.posterior["tau"], nuts_fit.posterior["d"] + nuts_fit.posterior["c1"], rtol=1e-5)


def test_datatree_is_accepted_by_arviz(nuts_fit, tmp_path):
    tree = nuts_fit.to_arviz()
    for group in ("posterior", "sample_stats", "log_likelihood", "posterior_predictive", "observed_data", "constant_data"):
        assert group in tree.children, group
    assert tree["log_likelihood"]["actions"].dims == ("chain", "draw", "episode")
    assert tree["observed_data"]["actions"].dims == ("episode", "round", "agent")
    assert tree["posterior_predictive"]["action_frequency"].dims[2:] == ("round", "action")
    summary = az.summary(tree, var_names=["c2"], round_to="none")
    assert summary["mean"].dtype.kind == "f"
    assert np.all(np.isfinite(az.rhat(tree, var_names=["c2"])["c2"].values))
    loo = az.loo(tree)
    assert np.isfinite(loo.elpd)
    # the per-episode log-likelihoods add up to the total of the likelihood module
    first = nuts_fit.params_draws(index=[0])
    one = {"mechanism": {k: v[0] for k, v in first["mechanism"].items()}, "learner": {k: v[0] for k, v in first["learner"].items()}}
    total = float(bd.log_likelihood(nuts_fit.model, one, nuts_fit.data))
    np.testing.assert_allclose(nuts_fit.log_likelihood[0, 0].sum(), total, rtol=1e-5)
    tree.to_netcdf(tmp_path / "t.nc", engine="h5netcdf")


def test_summary_and_diagnostics_are_numbers(nuts_fit):
    summary = nuts_fit.summary()
    assert {"c1[0]", "c2[2]", "tau[1]"} <= set(summary.index)
    assert all(summary[c].dtype.kind == "f" for c in ("mean", "sd", "r_hat", "ess_bulk"))
    diagnostics = nuts_fit.diagnostics()
    assert diagnostics["divergences"] == int(np.sum(nuts_fit.sample_stats["diverging"]))
    # 120 draws in all are far below the ESS target, so a plain-words warning must appear
    assert any("Effective sample size" in w for w in diagnostics["warnings"])


def test_save_load_round_trip(nuts_fit, tmp_path):
    path = nuts_fit.save(tmp_path / "run")
    again = bd.load_fit(path)
    assert again.method == "nuts" and again.data == nuts_fit.data
    for name, values in nuts_fit.posterior.items():
        np.testing.assert_array_equal(again.posterior[name], values)
    np.testing.assert_array_equal(again.log_likelihood, nuts_fit.log_likelihood)
    assert again.model.mechanism.family == "congestion"
    assert again.model.fixed_learner_params == nuts_fit.model.fixed_learner_params
    with pytest.raises(bd.DataError, match="exists"):
        nuts_fit.save(tmp_path / "run")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_in_support_against_enumeration(congestion_data):
    data = congestion_data
    contexts = support_contexts(data, counts_context=False, num_actions=3)
    observed = {tuple(r) for r in data.actions.reshape(-1, 3).tolist()}
    frame = pd.DataFrame({"agent": [0, 1], "action": [1, 1], "baseline": [0, 0], "joint": ["0 0 0", "2 2 2"]})
    _, codes = parse_queries(frame, data)
    got = in_support(codes, contexts, False, 3)
    # brute force: some observed joint action agrees with the query on every other agent
    for q, row in enumerate(codes):
        agent, joint = row[0], row[3:]
        expected = any(all(o[j] == joint[j] for j in range(3) if j != agent) for o in observed)
        assert got[q] == expected


def test_query_errors_name_row_and_column(nuts_fit):
    bad = pd.DataFrame({"agent": [0, 7], "action": [1, 1], "baseline": [0, 0], "joint": ["0 1 1", "0 1 1"]})
    with pytest.raises(bd.DataError, match=r"row 1, column 'agent'"):
        nuts_fit.payoff_differences(bad)
    bad = pd.DataFrame({"agent": [0], "action": [1], "baseline": [0], "joint": ["0 1"]})
    with pytest.raises(bd.DataError, match=r"row 0, column 'joint'"):
        nuts_fit.payoff_differences(bad)


def test_map_and_svi_return_the_same_result_type(congestion_data):
    model = congestion_model()
    fit_map = bd.fit(model, congestion_data, method="map", seed=0, steps=200, restarts=3, progress=False)
    assert fit_map.num_chains == 1 and fit_map.num_draws == 1
    assert len(fit_map.info["neg_log_joint"]) == 3 and fit_map.info["optimum_spread"] >= 0
    fit_laplace = bd.fit(model, congestion_data, method="map", seed=0, steps=200, restarts=2, laplace=True,
                         num_samples=50, progress=False)
    assert fit_laplace.num_draws == 50 and np.std(fit_laplace.posterior["c2"][0, :, 0]) > 0
    fit_svi = bd.fit(model, congestion_data, method="svi", seed=0, steps=300, num_samples=40, progress=False)
    assert fit_svi.posterior["c2"].shape == (1, 40, 3)
    for f in (fit_map, fit_laplace, fit_svi):
        assert f.log_likelihood.shape[-1] == congestion_data.num_episodes
        assert "action_frequency" in f.to_arviz()["posterior_predictive"]


def test_same_seed_same_draws(congestion_data):
    model = congestion_model()
    a = bd.fit(model, congestion_data, method="svi", seed=5, steps=100, num_samples=10, progress=False)
    b = bd.fit(model, congestion_data, method="svi", seed=5, steps=100, num_samples=10, progress=False)
    np.testing.assert_array_equal(a.posterior["c1"], b.posterior["c1"])


def test_tabular_gauge_pins_baseline_entries():
    model = Model(Tabular(num_agents=2, num_actions=3), logit_q, LEARNER)
    truth = {"payoffs": np.random.default_rng(0).normal(size=(9, 2))}
    data = bd.simulate(model, {"mechanism": truth, "learner": LEARNER}, num_episodes=3, num_rounds=10, seed=0)
    result = bd.fit(model, data, method="map", seed=0, steps=50, restarts=1, progress=False)
    table = result.posterior["payoffs"][0, 0]
    own = (np.arange(9)[:, None] // 3 ** np.arange(2)[None, :]) % 3
    assert np.all(table[own == 0] == 0.0) and np.all(table[own != 0] != 0.0)


def test_beta_prior_without_pinned_scale_is_refused(congestion_data):
    model = Model(Congestion(num_agents=3, num_actions=3), logit_q,
                  {**LEARNER, "beta": Prior.parse({"dist": "lognormal", "loc": 1.0, "scale": 0.5}, "beta")})
    with pytest.raises(bd.SpecError, match="beta carries a prior"):
        bd.fit(model, congestion_data, method="map", seed=0, steps=10, progress=False)


def test_unknown_prior_option_is_refused(congestion_data):
    model = Model(Congestion(num_agents=3, num_actions=3), logit_q, LEARNER, mechanism_prior={"tau": {"dist": "normal", "loc": 0, "scale": 1}})
    with pytest.raises(bd.SpecError, match="unknown key 'tau'"):
        bd.fit(model, congestion_data, method="map", seed=0, steps=10, progress=False)


def test_learner_prior_is_sampled(congestion_data):
    model = Model(Congestion(num_agents=3, num_actions=3), logit_q,
                  {**LEARNER, "alpha": Prior.parse({"dist": "beta", "a": 2, "b": 5}, "alpha")})
    result = bd.fit(model, congestion_data, method="svi", seed=0, steps=200, num_samples=30, progress=False)
    alpha = result.posterior["alpha"]
    assert alpha.shape == (1, 30) and np.all((alpha > 0) & (alpha < 1))
    assert "alpha" in result.summary().index


def test_sample_queries_are_in_support(congestion_data):
    queries = sample_queries(congestion_data, 15, seed=2)
    assert len(queries) == 15 and (queries["action"] != queries["baseline"]).all()
    _, codes = parse_queries(queries, congestion_data)
    contexts = support_contexts(congestion_data, True, 3)
    assert in_support(codes, contexts, True, 3).all()


# ------------------------------------------------------------------ the runners (inference/{nuts,svi,map}.py)
def double_well(actions, mask, payoff=None, priors_only=False):
    """``x ~ N(0, 1)`` times ``exp(-10 (x^2 - 1)^2)``: the negative log joint
    ``10 (x^2 - 1)^2 + x^2 / 2`` has second derivative ``120 x^2 - 39 < 0`` for ``|x| < 0.57``
    (a local maximum of the potential at 0, between the two modes at ``x ~ +-1``)."""
    import numpyro
    import numpyro.distributions as dist

    x = numpyro.sample("x", dist.Normal(0.0, 1.0))
    if not priors_only:
        numpyro.factor("well", -10.0 * (x**2 - 1.0) ** 2)


def _runner_arrays(data):
    from bayes_diml.likelihood import as_arrays

    return as_arrays(data)


def test_runners_return_a_typed_result_and_map_runs_the_steps_asked(congestion_data):
    """``run_map(steps=150, block=100)`` runs 150 Adam steps (not two whole blocks: 200);
    its loss trace has one entry per step (``steps // 200 = 0``: no thinning)."""
    import jax

    from bayes_diml.inference.map import run_map
    from bayes_diml.inference.numpyro_model import model_function
    from bayes_diml.inference.potential import SamplerResult

    fn = model_function(congestion_model())
    actions, mask = _runner_arrays(congestion_data)
    result = run_map(fn, actions, mask, jax.random.key(0), steps=150, block=100, restarts=2, progress=False)
    assert isinstance(result, SamplerResult) and result.stats is None
    assert result.info["steps"] == 150 and len(result.info["loss_trace"]) == 150
    assert result.posterior["c2"].shape == (1, 1, 3)
    # the 150 steps are those of a run asked for 150 steps in one block: the same optimum
    one_block = run_map(fn, actions, mask, jax.random.key(0), steps=150, block=150, restarts=2, progress=False)
    np.testing.assert_allclose(result.posterior["c2"], one_block.posterior["c2"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.info["loss_trace"], one_block.info["loss_trace"], rtol=1e-5)


def test_map_laplace_at_an_indefinite_hessian_is_a_fit_error():
    """One tiny Adam step from near 0 leaves MAP where the Hessian is negative: the
    Laplace step says so in a ``FitError`` (not NumPy's ``LinAlgError`` from a Cholesky)."""
    import jax
    import jax.numpy as jnp

    from bayes_diml.inference.map import run_map

    dummy = (jnp.zeros((1, 2, 3), jnp.int32), jnp.zeros((1, 2, 3), bool))
    with pytest.raises(bd.FitError, match="not positive definite"):
        run_map(double_well, *dummy, jax.random.key(0), steps=1, learning_rate=1e-4, restarts=1, laplace=True,
                num_samples=10, progress=False)
    # after enough steps MAP is at a mode (x ~ +-1, H ~ 81): the Laplace draws have sd ~ 1/9
    result = run_map(double_well, *dummy, jax.random.key(0), steps=500, learning_rate=0.05, restarts=1, laplace=True,
                     num_samples=2000, progress=False)
    x = result.posterior["x"].ravel()
    assert abs(abs(x.mean()) - 1.0) < 0.05 and 0.09 < x.std() < 0.13


def test_svi_guide_is_not_reused_across_observed_payoffs():
    """One model fitted with and without an observed payoff column on the same number of
    episodes: with payoffs the tabular gauge is not fixed (every payoff entry free) and
    ``payoff_sigma`` is sampled; without, neither. Each run gets the guide of its own sites."""
    import jax
    import jax.numpy as jnp

    from bayes_diml.inference.numpyro_model import model_function
    from bayes_diml.inference.svi import run_svi

    model = Model(Tabular(num_agents=2, num_actions=2), logit_q, LEARNER)
    params = {"mechanism": {"payoffs": np.array([[0.0, 0.0], [0.5, 0.1], [0.3, 0.4], [-0.2, 0.2]])}, "learner": LEARNER}
    data = bd.simulate(model, params, num_episodes=3, num_rounds=6, seed=0)
    actions, mask = _runner_arrays(data)
    payoff = jnp.asarray(np.random.default_rng(0).normal(size=actions.shape), jnp.float32)
    fn = model_function(model)
    options = dict(steps=20, map_steps=10, num_samples=5, progress=False)
    sizes = {}
    for observed in (True, False, True):
        result = run_svi(fn, actions, mask, jax.random.key(0), payoff=payoff if observed else None, **options)
        assert ("payoff_sigma" in result.posterior) is observed, (observed, sorted(result.posterior))
        sizes.setdefault(observed, {k: v.shape for k, v in result.posterior.items()})
        assert {k: v.shape for k, v in result.posterior.items()} == sizes[observed]
        assert all(np.all(np.isfinite(v)) for v in result.posterior.values())
    free = [k for k in sizes[True] if k in sizes[False] and sizes[True][k] != sizes[False][k]]
    assert free, (sizes[True], sizes[False])  # the gauge changes a site's shape
