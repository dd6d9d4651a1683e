"""``fit(method="auto")`` (the default, in Python and on the command line): the method it
picks per family and size (``inference.auto.choose_method``), what the fit records about
the choice, and the warning for SVI intervals measured too narrow (``UncalibratedWarning``,
``warning: ...`` on the command line), silenced by ``accept_uncalibrated``.

The rule is tested directly on tiny models (nothing is fitted); one tiny tabular game is
fitted end to end with ``auto``; the warnings are checked up to the point where the fit
would start (the runner replaced by a stop), and through the command line on a tiny neural
game (SVI, a few steps).
"""

from __future__ import annotations

import importlib
import inspect
import json
import types
import warnings

import numpy as np
import pytest

import bayes_diml as bd
from bayes_diml.cli import build_parser
from bayes_diml.errors import DataError, UncalibratedWarning
from bayes_diml.inference import auto
from bayes_diml.learners import logit_q
from bayes_diml.mechanisms import Anonymous, AnonymousFunction, Congestion, Linear, Neural, PublicGoods, Tabular
from bayes_diml.mechanisms.neural_function import NeuralFunction
from bayes_diml.model import Model
from bayes_diml.resources import MEMORY_LIMIT_ENV, fit_memory

from cli_helpers import run_cli

LEARNER = {"alpha": 0.3, "beta": 3.0, "eps": 0.05}
E2_SPEC = "models/e2_congestion.toml"

NEURAL_SPEC = """\
[game]
agents = 2
actions = 3

[mechanism]
family = "neural"
hidden = [4]
embed_dim = 3

[learner]
rule = "logit_q"
alpha = 0.3
beta = 3.0
eps = 0.05
"""


def model_of(mechanism) -> Model:
    return Model(mechanism, logit_q, dict(LEARNER))


def sizes(num_episodes: int = 4, num_rounds: int = 10):
    """What the rule reads of the data: their sizes, and no observed payoffs."""
    return types.SimpleNamespace(num_episodes=num_episodes, num_rounds=num_rounds, payoff=None)


def tiny_neural() -> Model:
    return model_of(Neural(num_agents=2, num_actions=3, hidden=(4,), embed_dim=3))


def tiny_anonymous() -> Model:
    return model_of(Anonymous(num_agents=3, num_actions=3, hidden=(8, 6), embed_dim=3))


def tabular_play(num_episodes: int = 4, num_rounds: int = 10, seed: int = 3):
    """Play of a 2-agent x 3-action tabular game (any play is valid data for a 2 x 3 spec)."""
    model = model_of(Tabular(2, 3))
    payoffs = np.random.default_rng(seed).normal(size=(9, 2))
    return bd.simulate(model, {"mechanism": {"payoffs": payoffs}, "learner": LEARNER}, num_episodes=num_episodes,
                       num_rounds=num_rounds, seed=seed)


# ------------------------------------------------------------------ the rule, per family
RULE_CASES = {  # name -> (model, expected method, expected options)
    "tabular": (lambda: model_of(Tabular(2, 3)), "nuts", {}),
    "congestion (E2 spec)": (lambda: bd.read_spec(E2_SPEC)[0], "nuts", {}),
    "public goods, no network": (lambda: model_of(PublicGoods(3, 4, subsidy_hidden=None)), "nuts", {}),
    "public goods, subsidy network": (
        lambda: model_of(PublicGoods(3, 4, subsidy_hidden=(5,))), "nuts",
        {"num_chains": 2, "num_warmup": 200, "num_samples": 400, "max_tree_depth": 8},  # E3's measured settings
    ),
    "linear": (lambda: model_of(Linear(num_agents=3, num_actions=3, own=np.eye(3))), "nuts", {}),
    "neural, weight space": (tiny_neural, "svi", {"guide": "lowrank"}),
    "anonymous": (tiny_anonymous, "svi", {"guide": "lowrank"}),
    "neural, function space": (
        lambda: model_of(NeuralFunction(num_agents=2, num_actions=3, hidden=(4,), embed_dim=3)), "nuts",
        {"num_chains": 2, "num_warmup": 300, "num_samples": 300},  # the settings measured calibrated (issue 17)
    ),
    "tabular above the NUTS limit": (lambda: model_of(Tabular(4, 6)), "svi", {"guide": "lowrank"}),
    "anonymous, function space": (lambda: model_of(AnonymousFunction(num_agents=30, num_actions=4)), "laplace_grid", {}),
}


@pytest.mark.parametrize("case", list(RULE_CASES))
def test_auto_picks_the_documented_method_per_family(case, monkeypatch):
    monkeypatch.delenv(MEMORY_LIMIT_ENV, raising=False)
    build, method, options = RULE_CASES[case]
    choice = auto.choose_method(build(), sizes())
    assert choice.method == method, choice
    assert options.items() <= choice.options.items(), choice
    assert choice.reason and "\n" not in choice.reason and choice.reason.startswith(("NUTS", "low-rank SVI", "the Laplace grid"))
    if method == "svi":
        assert choice.options["rank"] >= 1 and "batch_episodes" not in choice.options  # small data: no minibatches


def test_the_nuts_limit_is_on_latent_coordinates():
    """E2's tabular table (4 agents x 5 actions): 2,000 free differences, NUTS; 4 x 6: 4,320, SVI."""
    assert auto.latent_dim(model_of(Tabular(4, 5)), 1) == 2000 <= auto.NUTS_MAX_DIM
    assert auto.latent_dim(model_of(Tabular(4, 6)), 1) == 4320 > auto.NUTS_MAX_DIM
    assert auto.choose_method(model_of(Tabular(4, 5)), sizes()).method == "nuts"


def test_auto_minibatches_svi_when_the_data_are_large(monkeypatch):
    """The batch is the largest number of episodes whose SVI fit needs at most half the
    memory available; with room for the whole data, no minibatches."""
    model, episodes, rounds = tiny_anonymous(), 400, 50
    options = {"guide": "lowrank", "rank": auto.choose_method(model, sizes()).options["rank"]}
    whole = fit_memory(model, episodes, rounds, "svi", options)[0]
    one = fit_memory(model, episodes, rounds, "svi", {**options, "batch_episodes": 1})[0]
    limit = int((whole + one) / 2 / auto.MINIBATCH_MEMORY_SHARE)  # room for about half the episodes
    monkeypatch.setenv(MEMORY_LIMIT_ENV, str(limit))
    choice = auto.choose_method(model, sizes(episodes, rounds))
    batch = choice.options["batch_episodes"]
    assert 1 <= batch < episodes
    assert f"minibatches of {batch} of the {episodes} episodes" in choice.reason
    budget = auto.MINIBATCH_MEMORY_SHARE * limit
    assert fit_memory(model, episodes, rounds, "svi", {**options, "batch_episodes": batch})[0] <= budget
    # the largest such batch: one more episode per batch would not fit
    assert fit_memory(model, episodes, rounds, "svi", {**options, "batch_episodes": batch + 1})[0] > budget
    monkeypatch.setenv(MEMORY_LIMIT_ENV, str(4 * whole))
    assert "batch_episodes" not in auto.choose_method(model, sizes(episodes, rounds)).options


def test_auto_is_the_default_in_python_and_on_the_command_line():
    assert inspect.signature(bd.fit).parameters["method"].default == "auto"
    args = build_parser().parse_args(["fit", "spec.toml", "--data", "d.csv", "--out", "run"])
    assert args.method == "auto" and args.accept_uncalibrated is False


def test_auto_refuses_options_no_method_takes():
    with pytest.raises(DataError, match=r"unknown option\(s\) \['num_chain'\]"):
        bd.fit(model_of(Tabular(2, 3)), tabular_play(), seed=0, num_chain=2)


# ------------------------------------------------------------------ one auto fit, end to end
@pytest.fixture(scope="module")
def auto_fit():
    with warnings.catch_warnings():
        warnings.simplefilter("error", UncalibratedWarning)  # tabular NUTS: no calibration warning
        return bd.fit(
            model_of(Tabular(2, 3)), tabular_play(), seed=0, num_chains=2, num_warmup=30, num_samples=30,
            steps=50, progress=False, posterior_predictive_draws=2,
        )


def test_auto_fit_of_a_tabular_game_runs_nuts_and_says_why(auto_fit):
    info = auto_fit.info
    assert auto_fit.method == info["method"] == "nuts"
    assert info["method_requested"] == "auto"
    assert info["method_reason"].startswith("NUTS: the tabular family with 12 latent coordinates")
    assert info["options_ignored"] == ["steps"]  # an SVI / MAP option: not NUTS's
    assert info["num_chains"] == 2 and "calibration_warning" not in info
    diagnostics = auto_fit.diagnostics()
    assert diagnostics["method"] == "nuts" and diagnostics["method_requested"] == "auto"
    assert diagnostics["method_reason"] == info["method_reason"]


# ------------------------------------------------------------------ the warning, in Python
class Reached(Exception):
    """The runner was called: everything before the fit itself has happened."""


@pytest.fixture
def stop_at_the_runner(monkeypatch):
    seen = {}

    def stop(method, fn, observed, key, options):
        seen.update(method=method, options=options)
        raise Reached

    monkeypatch.setattr(importlib.import_module("bayes_diml.inference.fit"), "_dispatch", stop)
    return seen


def caught(model, data, **kwargs) -> list[warnings.WarningMessage]:
    with warnings.catch_warnings(record=True) as record, pytest.raises(Reached):
        warnings.simplefilter("always")
        bd.fit(model, data, seed=0, progress=False, **kwargs)
    return [w for w in record if issubclass(w.category, UncalibratedWarning)]


@pytest.mark.parametrize("guide", ["normal", "lowrank"])
def test_neural_svi_warns_that_its_intervals_were_measured_too_narrow(guide, stop_at_the_runner):
    (warning,) = caught(tiny_neural(), tabular_play(), method="svi", guide=guide, steps=5)
    text = str(warning.message)
    assert "0.33" in text and "0.71" in text and "too narrow" in text
    assert 'space = "function"' in text and "accept_uncalibrated=True" in text
    assert warning.filename == __file__  # attributed to the caller of fit
    assert stop_at_the_runner["method"] == "svi"


def test_the_warning_is_silenced_by_accept_uncalibrated(stop_at_the_runner):
    assert caught(tiny_neural(), tabular_play(), method="svi", steps=5, accept_uncalibrated=True) == []


def test_auto_on_neural_and_anonymous_falls_back_to_svi_with_the_warning(stop_at_the_runner):
    (warning,) = caught(tiny_neural(), tabular_play())
    assert "0.33" in str(warning.message) and stop_at_the_runner["options"]["guide"] == "lowrank"
    anonymous_play = bd.simulate(
        model_of(Congestion(3, 3)),
        {"mechanism": {"c1": np.full(3, 0.2), "c2": np.full(3, 0.1), "tau": np.zeros(3)}, "learner": LEARNER},
        num_episodes=3, num_rounds=8, seed=1,
    )
    (warning,) = caught(tiny_anonymous(), anonymous_play)
    assert "anonymous" in str(warning.message) and stop_at_the_runner["method"] == "svi"
    assert caught(tiny_anonymous(), anonymous_play, accept_uncalibrated=True) == []


def test_no_warning_for_tabular_svi_nor_for_map_on_neural(stop_at_the_runner):
    assert caught(model_of(Tabular(2, 3)), tabular_play(), method="svi", steps=5) == []
    assert caught(tiny_neural(), tabular_play(), method="map", steps=5) == []


# ------------------------------------------------------------------ the command line
@pytest.fixture(scope="module")
def neural_work(tmp_path_factory):
    root = tmp_path_factory.mktemp("auto_cli")
    (root / "neural.toml").write_text(NEURAL_SPEC, encoding="utf-8")
    tabular_play(num_episodes=3, num_rounds=8).to_csv(root / "D.csv")
    return root


def fit_cli(capsys, root, out, *extra):
    return run_cli(
        capsys, "fit", root / "neural.toml", "--data", root / "D.csv", "--steps", 6, "--samples", 20,
        "--out", root / out, "--no-progress", *extra,
    )


def test_cli_warns_for_neural_svi(neural_work, capsys):
    status, out, err = fit_cli(capsys, neural_work, "RUN_SVI", "--method", "svi")
    assert status == 0, err
    lines = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(lines) == 1 and "0.33" in lines[0] and "--accept-uncalibrated" in lines[0], err
    assert "method: svi (as requested with --method)" in out
    diagnostics = json.loads((neural_work / "RUN_SVI" / "diagnostics.json").read_text())
    assert diagnostics["calibration_warning"] == lines[0].removeprefix("warning: ")
    assert diagnostics["method_requested"] == "svi"
    meta = json.loads((neural_work / "RUN_SVI" / "fit.json").read_text())
    assert meta["info"]["calibration_warning"] == diagnostics["calibration_warning"]


def test_cli_auto_says_which_method_ran_and_accept_uncalibrated_silences_the_warning(neural_work, capsys):
    status, out, err = fit_cli(capsys, neural_work, "RUN_AUTO", "--accept-uncalibrated")  # --method auto: the default
    assert status == 0, err
    assert not [line for line in err.splitlines() if line.startswith("warning:")], err
    assert "method: svi (chosen by --method auto: low-rank SVI for the neural family with a prior over network weights" in out
    diagnostics = json.loads((neural_work / "RUN_AUTO" / "diagnostics.json").read_text())
    assert diagnostics["method"] == "svi" and diagnostics["method_requested"] == "auto"
    assert diagnostics["method_reason"].startswith("low-rank SVI") and "calibration_warning" not in diagnostics
    meta = json.loads((neural_work / "RUN_AUTO" / "fit.json").read_text())
    assert meta["info"]["steps"] == 6 and meta["info"]["guide"] == "lowrank" and meta["info"]["num_samples"] == 20


def test_the_function_space_mechanism_gets_nuts():
    """The real function-space mechanism (``[mechanism.prior] space = "function"``), where it exists."""
    model = model_of(NeuralFunction(num_agents=2, num_actions=3, hidden=(4,), embed_dim=3))
    choice = auto.choose_method(model, sizes())
    assert choice.method == "nuts" and "function-space prior" in choice.reason
    assert auto.calibration_warning(model, "svi") is None


def test_auto_takes_laplace_grid_hessians_from_a_minibatch_on_large_data():
    """Above ``HESSIAN_MAX_PLAYS`` plays the Hessians come from the most episodes within it
    (counted here by hand: 10,000 agents x 25 rounds = 250,000 plays per episode, so one
    episode of four; 300 agents x 25 rounds x 12 episodes = 90,000 plays: all)."""
    from bayes_diml.inference.laplace_grid import HESSIAN_MAX_PLAYS

    assert HESSIAN_MAX_PLAYS == 262_144
    large = auto.choose_method(model_of(AnonymousFunction(num_agents=10_000, num_actions=4)), sizes(4, 25))
    assert large.method == "laplace_grid" and large.options == {"batch_episodes": 1}
    assert "Hessians from 1 of the 4 episodes" in large.reason and "\n" not in large.reason
    middle = auto.choose_method(model_of(AnonymousFunction(num_agents=1_000, num_actions=4)), sizes(40, 25))
    assert middle.options == {"batch_episodes": 10}  # 10 x 25 x 1,000 = 250,000 <= 262,144 < 11 x 25,000
    assert auto.choose_method(model_of(AnonymousFunction(num_agents=300, num_actions=4)), sizes(12, 25)).options == {}
