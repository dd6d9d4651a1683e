"""A fit that meets NaN stops with a ``FitError`` naming the parameter and the step.

The NaN is provoked deterministically by a tiny mechanism with a *gradient trap*:
where ``theta[1] > threshold`` the payoffs gain ``sqrt(theta[1] - theta[1])`` (value 0,
so the loss stays finite) whose gradient is ``inf - inf = NaN`` for ``theta`` only; a
second site ``other`` keeps a finite gradient, so the message must single ``theta`` out.
All agents always play action 1, so every optimiser pushes ``theta[1]`` up through the
threshold. The step reported is checked against runs that stop one step earlier
(which must finish with finite values) and that run exactly to it (which must fail there).
"""

from __future__ import annotations

import dataclasses
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bayes_diml as bd
from bayes_diml.cli import main
from bayes_diml.inference.map import run_map
from bayes_diml.inference.numpyro_model import numpyro_model
from bayes_diml.inference.svi import run_svi
from bayes_diml.learners import logit_q
from bayes_diml.mechanisms.base import Mechanism

LEARNER = {"alpha": 0.5, "beta": 2.0, "eps": 0.05}


@dataclasses.dataclass(frozen=True, eq=False)
class Trap(Mechanism):
    """``U[i, k] = theta[k] + 0.1 other[k] (+ the trap where theta[1] > threshold)``.

    ``nan_site``: also record a deterministic site ``spread`` that is always NaN.
    """

    threshold: float = 0.5
    nan_site: bool = False

    family = "trap_test"
    allows_absence = True

    def param_shapes(self):
        return {"theta": (self.num_actions,), "other": (self.num_actions,)}

    def init_params(self, key):
        return {k: jnp.zeros(s) for k, s in self.param_shapes().items()}

    def sample_prior(self, options, fix_gauge):
        import numpyro
        import numpyro.distributions as dist

        prior = dist.Normal(0.0, 1.0).expand((self.num_actions,)).to_event(1)
        theta = numpyro.sample("theta", prior)
        other = numpyro.sample("other", prior)
        if self.nan_site:
            numpyro.deterministic("spread", jnp.sqrt(-1.0 - theta**2))
        return {"theta": theta, "other": other}

    def counterfactual_payoffs(self, params, joint_action, present=None):
        theta, other = params["theta"], params["other"]
        crossed = theta[1] > self.threshold
        # double where: no NaN leaks into the gradient while not crossed
        trap = jnp.where(crossed, jnp.sqrt(jnp.where(crossed, theta[1] - theta[1], 1.0)), 0.0)
        row = theta + 0.1 * other + trap
        return jnp.broadcast_to(row, (self.num_agents, self.num_actions))


def trap_model(**options) -> bd.Model:
    return bd.Model(Trap(num_agents=2, num_actions=3, **options), logit_q, LEARNER)


@pytest.fixture(scope="module")
def data():
    return bd.Trajectories.from_arrays(np.ones((2, 8, 2), np.int32), num_actions=3)


def arrays(model, data):
    from bayes_diml.likelihood import as_arrays

    actions, mask = as_arrays(data)
    return functools.partial(numpyro_model, model), actions, mask


THETA_NAN = re.compile(r"step (\d+) of (\d+).*the gradient of 'mechanism\.theta' is NaN \(loss was finite: [-0-9.e+]+\)")


def reported_step(message: str, stage: str) -> int:
    assert message.startswith(stage), message
    match = THETA_NAN.search(message)
    assert match, message
    assert "other" not in message, message  # 'other' has a finite gradient
    assert "\n" not in message
    return int(match.group(1))


def test_map_names_theta_and_the_first_bad_step(data):
    model = trap_model()
    with pytest.raises(bd.FitError) as caught:
        bd.fit(model, data, method="map", seed=0, steps=200, restarts=1, learning_rate=0.05, progress=False)
    step = reported_step(str(caught.value), "MAP step")
    assert 3 <= step <= 100  # theta[1] starts near 0 and moves ~0.05 per Adam step towards the trap at 0.5

    # the same run through the sampler: one step fewer finishes finite (in the trap),
    # exactly that many fails there
    fn, actions, mask = arrays(model, data)
    key = jax.random.split(jax.random.key(0))[0]  # fit's key for the method
    posterior, _, _ = run_map(fn, actions, mask, key, steps=step - 1, block=1, restarts=1, learning_rate=0.05, progress=False)
    # steps 1 .. step-1 were fine, and their last update lands in the trap, where step `step` evaluates
    assert np.all(np.isfinite(posterior["theta"])) and posterior["theta"][0, 0, 1] > 0.5
    with pytest.raises(bd.FitError) as again:
        run_map(fn, actions, mask, key, steps=step, block=1, restarts=1, learning_rate=0.05, progress=False)
    assert reported_step(str(again.value), "MAP step") == step


def test_svi_names_theta_and_the_first_bad_step(data):
    model = trap_model()
    options = dict(map_steps=0, learning_rate=0.05, num_samples=5, progress=False)
    with pytest.raises(bd.FitError) as caught:
        bd.fit(model, data, method="svi", seed=0, steps=300, **options)
    step = reported_step(str(caught.value), "SVI step")
    assert 3 <= step <= 150

    fn, actions, mask = arrays(model, data)
    key = jax.random.split(jax.random.key(0))[0]
    posterior, _, info = run_svi(fn, actions, mask, key, steps=step - 1, **options)
    assert np.all(np.isfinite(posterior["theta"])) and np.isfinite(info["final_elbo"])
    # the guide's mean has entered the trap (its scale is ~0.02: single draws may fall short)
    assert np.mean(posterior["theta"][0, :, 1]) > 0.5
    with pytest.raises(bd.FitError) as again:
        run_svi(fn, actions, mask, key, steps=step, **options)
    assert reported_step(str(again.value), "SVI step") == step


def test_svi_warm_start_failure_says_so(data):
    with pytest.raises(bd.FitError, match=r"^SVI warm start: MAP step \d+ of 100: the gradient of 'mechanism\.theta'"):
        bd.fit(trap_model(), data, method="svi", seed=0, steps=200, map_learning_rate=0.05, progress=False)


def test_nuts_warm_start_names_theta_and_step(data):
    with pytest.raises(bd.FitError) as caught:
        bd.fit(trap_model(), data, method="nuts", seed=0, num_chains=1, num_warmup=10, num_samples=10, progress=False)
    step = reported_step(str(caught.value), "NUTS warm start (Adam) step")
    assert 3 <= step <= 300


def test_nuts_initial_point_names_the_parameter_with_a_nan_gradient(data):
    # threshold below the start: the gradient of theta is NaN at the initial point itself
    with pytest.raises(bd.FitError) as caught:
        bd.fit(trap_model(threshold=-10.0), data, method="nuts", seed=0, num_chains=1, num_warmup=10, num_samples=10, progress=False)
    message = str(caught.value)
    assert message.startswith("NUTS initial point: the gradient of 'mechanism.theta' is NaN"), message
    assert "other" not in message


@pytest.mark.slow
def test_nuts_nan_draw_names_the_site_and_draw(data):
    # no trap; a deterministic site that is NaN at every draw: the first is draw 0 of chain 0
    model = trap_model(threshold=np.inf, nan_site=True)
    with pytest.raises(bd.FitError, match=r"^NUTS: parameter 'mechanism\.spread' is NaN at draw 0 of chain 0"):
        bd.fit(model, data, method="nuts", seed=0, num_chains=1, num_warmup=10, num_samples=5, progress=False)


def test_cli_reports_a_fit_error_in_one_line(data, tmp_path, capsys, monkeypatch):
    import bayes_diml.inference as inference

    def failing(*args, **kwargs):
        raise bd.FitError("SVI step 37 of 2000: the gradient of 'mechanism.c1' is NaN (loss was finite: -123.4)")

    monkeypatch.setattr(inference, "fit", failing)
    spec = tmp_path / "tiny.toml"
    spec.write_text(
        '[game]\nagents = 2\nactions = 2\n[mechanism]\nfamily = "congestion"\n'
        '[learner]\nrule = "logit_q"\nalpha = 0.3\nbeta = 2.0\neps = 0.05\n',
        encoding="utf-8",
    )
    csv = tmp_path / "d.csv"
    csv.write_text("episode,round,agent,action\n0,0,0,0\n0,0,1,1\n0,1,0,1\n0,1,1,1\n", encoding="utf-8")
    status = main(["fit", str(spec), "--data", str(csv), "--method", "svi", "--out", str(tmp_path / "RUN"), "--no-progress"])
    err = capsys.readouterr().err
    assert status == 2
    assert err.strip().splitlines() == ["error: SVI step 37 of 2000: the gradient of 'mechanism.c1' is NaN (loss was finite: -123.4)"]
    assert not (tmp_path / "RUN").exists()
