"""Design under uncertainty (``bd.design``, ``bayes-diml design``; issue 18, point 4).

Each check compares with an independent reference, never with the code's own output:
the objective of a candidate against a NumPy loop over the play that the counterfactual
path simulates with the same keys; the search against the true mechanism's play (the
toll that brings a share to its target, found on a grid of the truth); the summaries
against the per-draw values; the refusals against their one-line messages.
"""

from __future__ import annotations

import json
import math

import jax
import numpy as np
import pytest

import bayes_diml as bd
from bayes_diml.errors import DataError
from bayes_diml.inference._design_search import Score, evaluate
from bayes_diml.learners import LEARNERS
from bayes_diml.mechanisms import Congestion, PublicGoods, Tabular
from bayes_diml.model import Model
from bayes_diml.simulate import simulate_arrays

from cli_helpers import run_cli

N, A = 3, 3
TAU = np.array([0.05, 0.15, 0.10])
LEARNER = {"alpha": 0.25, "beta": 3.0, "eps": 0.06}
TRUTH = {"mechanism": {"c1": np.array([0.20, 0.30, 0.15]), "c2": np.array([0.10, 0.06, 0.12]), "tau": TAU}, "learner": dict(LEARNER)}
SMALL = {"num_episodes": 3, "num_rounds": 8, "max_draws": 12, "num_candidates": 6, "refinements": 1}
KEYS = {"lever", "bounds", "recommended", "status_quo", "plug_in", "objective", "per_draw", "settings"}


def make_model(known=None) -> Model:
    return Model(Congestion(num_agents=N, num_actions=A), LEARNERS["logit_q"], learner_params=dict(LEARNER), mechanism_known=known or {})


@pytest.fixture(scope="module")
def data():
    return bd.simulate(make_model(), TRUTH, num_episodes=40, num_rounds=20, seed=1)


def _laplace(model, data, steps=300):
    return bd.fit(
        model, data, method="map", seed=0, steps=steps, restarts=1, progress=False, laplace=True, num_samples=200, posterior_predictive_draws=1
    )


@pytest.fixture(scope="module")
def known_fit(data):
    return _laplace(make_model({"tau": TAU}), data)


@pytest.fixture(scope="module")
def free_fit(data):
    """tau unknown (only refusals and a small identified design use it: a short fit)."""
    return _laplace(make_model(), data, steps=100)


@pytest.fixture(scope="module")
def net_design(known_fit):
    return bd.design(known_fit, lever="tau", bounds=(0.0, 0.4), objective="net_welfare", seed=3, **SMALL)


# ------------------------------------------------------------------ references
def _numpy_objective(actions: np.ndarray, mech: dict, kind: str, action: int = 0) -> np.ndarray:
    """Per draw, by loops over draws, episodes and rounds: the objective of ``actions (S, E, T, n)``
    under congestion parameters ``mech`` (arrays ``(S, A)``)."""
    S, E, T, n = actions.shape
    out = np.zeros(S)
    for s in range(S):
        if kind == "share":
            last = math.ceil(T / 4)
            out[s] = np.mean(actions[s, :, T - last :, :] == action)
            continue
        total = 0.0
        for e in range(E):
            for t in range(T):
                load = np.bincount(actions[s, e, t], minlength=A)
                for i in range(n):
                    k, L = actions[s, e, t, i], load[actions[s, e, t, i]]
                    cost = mech["c1"][s, k] * L + mech["c2"][s, k] * L**2
                    total += -cost if kind == "net_welfare" else -cost + mech["tau"][s, k] * L
        out[s] = total / (E * T)
    return out


@pytest.mark.parametrize("kind", ["welfare", "net_welfare", "share"])
def test_per_draw_objective_matches_a_numpy_loop_over_counterfactual_play(known_fit, net_design, kind):
    """The design's final scores use the counterfactual's keys: the status quo's per-draw objective
    is the NumPy objective of the play ``counterfactual`` simulates (another code path)."""
    result = (
        net_design
        if kind == "net_welfare"
        else bd.design(known_fit, lever="tau", bounds=(0.0, 0.4), objective="share:1" if kind == "share" else kind, seed=3, **SMALL)
    )
    cf = bd.counterfactual(
        known_fit,
        mechanism={"tau": result["status_quo"]["tau"]},
        seed=3,
        return_actions=True,
        **{k: SMALL[k] for k in ("num_episodes", "num_rounds", "max_draws")},
    )
    mech = known_fit.params_draws(cf.draws["draw"])["mechanism"]
    mech = {k: np.broadcast_to(np.asarray(v, np.float64), (len(cf.draws["draw"]), A)) for k, v in mech.items()}
    reference = _numpy_objective(np.asarray(cf.draws["actions"]), mech, kind, action=1)
    assert result["per_draw"]["draw"] == cf.draws["draw"].tolist()
    np.testing.assert_allclose(result["per_draw"]["status_quo"], reference, rtol=1e-4, atol=1e-5)


def test_candidates_share_random_numbers_and_do_not_interact(known_fit):
    """Common random numbers: a candidate's scores do not depend on the other candidates of its
    batch, two equal candidates score alike, and each matches the NumPy objective of the play
    ``simulate_arrays`` gives for that candidate alone with the draw's key."""
    index = known_fit.thinned_index(5)
    params = known_fit.params_draws(index)
    params = {"mechanism": params["mechanism"], "learner": params["learner"]}
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(jax.random.key(7), np.asarray(index, np.uint32))
    x, y = np.array([0.3, 0.0, 0.1]), np.array([0.0, 0.2, 0.0])
    score = Score("net_welfare")
    both = evaluate(known_fit.model, params, "tau", np.stack([x, y, x]), keys, score, 4, 6)
    alone = evaluate(known_fit.model, params, "tau", x[None], keys, score, 4, 6)
    np.testing.assert_allclose(both[0], alone[0], rtol=1e-6)
    np.testing.assert_array_equal(both[0], both[2])
    assert not np.allclose(both[0], both[1])
    actions = np.stack(
        [
            np.asarray(
                simulate_arrays(
                    known_fit.model,
                    {
                        "mechanism": {**jax.tree.map(lambda v: v[s], params["mechanism"]), "tau": y},
                        "learner": jax.tree.map(lambda v: v[s], params["learner"]),
                    },
                    keys[s],
                    4,
                    6,
                )
            )
            for s in range(len(index))
        ]
    )
    mech = {k: np.asarray(v, np.float64) for k, v in params["mechanism"].items()}
    np.testing.assert_allclose(both[1], _numpy_objective(actions, mech, "net_welfare"), rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------ the search
def _true_share(tau0: float, episodes: int = 3000) -> float:
    """Share of plays on action 0 over the last quarter of 20 rounds under the TRUE mechanism."""
    model = make_model()
    params = {"mechanism": {**TRUTH["mechanism"], "tau": np.array([tau0, TAU[1], TAU[2]])}, "learner": {k: np.float32(v) for k, v in LEARNER.items()}}
    actions = np.asarray(simulate_arrays(model, params, jax.random.key(11), episodes, 20))
    return float(np.mean(actions[:, -5:, :] == 0))


def test_search_brings_a_share_to_its_target_under_the_true_mechanism(known_fit):
    """``share:0 --target 0.5`` with only tau[0] free: the recommended toll gives a true share near
    0.5, close to the best toll of a grid on the truth; the status quo's share is far from it."""
    lower, upper = [-0.3, TAU[1], TAU[2]], [1.0, TAU[1], TAU[2]]
    result = bd.design(
        known_fit,
        lever="tau",
        bounds=(lower, upper),
        objective="share:0",
        target=0.5,
        seed=0,
        num_episodes=8,
        num_rounds=20,
        max_draws=40,
        num_candidates=8,
        refinements=3,
    )
    tau0 = result["recommended"]["tau"][0]
    assert result["recommended"]["tau"][1:] == pytest.approx(TAU[1:].tolist())
    grid = np.linspace(-0.3, 1.0, 14)
    oracle = grid[int(np.argmin([abs(_true_share(t, 1000) - 0.5) for t in grid]))]
    assert abs(_true_share(tau0) - 0.5) < 0.08, (tau0, oracle)
    assert abs(tau0 - oracle) < 0.2, (tau0, oracle)
    assert abs(_true_share(TAU[0]) - 0.5) > 0.15
    assert result["objective"]["difference"]["p_better"] > 0.8


# ------------------------------------------------------------------ summaries
def test_summaries_are_those_of_the_paired_draws(net_design):
    per_draw = {k: np.asarray(v) for k, v in net_design["per_draw"].items()}
    diff = per_draw["recommended"] - per_draw["status_quo"]
    d = net_design["objective"]["difference"]
    assert 0.0 <= d["p_better"] <= 1.0
    assert d["p_better"] == pytest.approx(np.mean(diff > 0))
    assert d["mean"] == pytest.approx(diff.mean())
    assert (d["q05"], d["q95"]) == pytest.approx((np.quantile(diff, 0.05), np.quantile(diff, 0.95)))
    for name in ("recommended", "status_quo", "plug_in"):
        entry = net_design["objective"][name]
        assert entry["mean"] == pytest.approx(per_draw[name].mean())
        assert entry["q05"] <= entry["mean"] <= entry["q95"]
        assert entry["score"] == pytest.approx(entry["mean"])  # risk "mean"
    assert set(net_design) == KEYS
    assert np.all((np.asarray(net_design["recommended"]["tau"]) >= 0) & (np.asarray(net_design["recommended"]["tau"]) <= 0.4))
    settings = net_design["settings"]
    assert settings["num_draws"] == 12 and settings["candidates_evaluated"] == 2 * 6 * 2


def test_status_quo_is_the_known_value_or_the_posterior_mean(known_fit, net_design):
    assert net_design["status_quo"]["tau"] == pytest.approx(TAU.tolist())
    result = bd.design(known_fit, lever="c2", bounds=(0.0, 0.3), objective="share:2", seed=0, **SMALL)
    index = known_fit.thinned_index(SMALL["max_draws"])
    c2 = np.asarray(known_fit.posterior["c2"]).reshape(-1, A)[index].mean(axis=0)
    assert result["status_quo"]["c2"] == pytest.approx(c2.tolist(), rel=1e-6)


def test_cvar_is_at_most_the_mean(known_fit):
    result = bd.design(known_fit, lever="tau", bounds=(0.0, 0.4), objective="net_welfare", risk="cvar:0.25", seed=3, **SMALL)
    for name in ("recommended", "status_quo", "plug_in"):
        entry = result["objective"][name]
        worst = np.sort(result["per_draw"][name])[: math.ceil(0.25 * 12)].mean()
        assert entry["score"] == pytest.approx(worst)
        assert entry["score"] <= entry["mean"] + 1e-12


# ------------------------------------------------------------------ transfers
def test_congestion_net_payoff_is_minus_the_congestion_cost():
    mech = Congestion(num_agents=4, num_actions=3)
    params = {k: np.array(v) for k, v in {"c1": [0.2, 0.3, 0.1], "c2": [0.1, 0.05, 0.2], "tau": [0.4, -0.1, 0.2]}.items()}
    for joint in ([0, 0, 1, 2], [2, 2, 2, 2], [1, 0, 1, 0]):
        a = np.array(joint)
        load = np.bincount(a, minlength=3)[a]
        net = np.asarray(mech.payoffs(params, a) - mech.lever_transfers(params, a))
        np.testing.assert_allclose(net, -(params["c1"][a] * load + params["c2"][a] * load**2), rtol=1e-6)
    present = np.array([True, True, False, True])
    transfers = np.asarray(mech.lever_transfers(params, np.array([0, 0, 0, 1]), present))
    np.testing.assert_allclose(transfers, [0.8, 0.8, 0.0, -0.1], rtol=1e-6)


def test_public_goods_net_payoff_leaves_out_the_subsidy():
    mech = PublicGoods(num_agents=3, num_actions=4, subsidy_hidden=(5,))
    params = mech.init_params(jax.random.key(0))
    a = np.array([0, 3, 2])
    level = a / 3.0
    expected = params["scale"] * (1 - np.exp(-params["k"] * level.sum())) - params["cost"] * level**2
    np.testing.assert_allclose(mech.payoffs(params, a) - mech.lever_transfers(params, a), expected, rtol=1e-5)
    plain = PublicGoods(num_agents=3, num_actions=4, subsidy_hidden=None)
    np.testing.assert_array_equal(plain.lever_transfers(plain.init_params(jax.random.key(0)), a), np.zeros(3))


def test_families_without_transfers_refuse_net_welfare_in_one_line():
    mech = Tabular(num_agents=2, num_actions=2)
    with pytest.raises(DataError) as err:
        mech.lever_transfers(mech.init_params(jax.random.key(0)), np.array([0, 1]))
    assert "\n" not in str(err.value) and "net_welfare" in str(err.value) and "tabular" in str(err.value)


# ------------------------------------------------------------------ refusals
def test_refuses_tau_when_it_is_not_known(free_fit):
    with pytest.raises(DataError) as err:
        bd.design(free_fit, lever="tau", bounds=(0.0, 0.4), seed=0, **SMALL)
    message = str(err.value)
    assert "\n" not in message and "c1" in message and "declare tau known in [mechanism.known]" in message
    bd.design(free_fit, lever="c2", bounds=(0.0, 0.3), objective="net_welfare", seed=0, **SMALL)  # identified


@pytest.mark.parametrize(
    "changes, fragment",
    [
        ({"lever": "taus"}, "did you mean 'tau'"),
        ({"bounds": (0.4, 0.0)}, "lower > upper for tau[0]"),
        ({"bounds": ([0.0, 0.1], 0.4)}, "lower has 2 values"),
        ({"bounds": (0.0, [0.4, float("nan"), 0.4])}, "upper"),
        ({"bounds": 0.4}, "bounds must be (lower, upper)"),
        ({"objective": "profit"}, "unknown objective 'profit'"),
        ({"objective": "share:7"}, "unknown action '7'"),
        ({"objective": "welfare", "target": 0.5}, "target is for objective 'share:ACTION'"),
        ({"objective": "share:0", "target": 1.5}, "target must be a share in [0, 1]"),
        ({"risk": "cvar:2"}, "risk must be 'mean' or 'cvar:q'"),
        ({"risk": "worst"}, "risk must be"),
        ({"num_episodes": 0}, "num_episodes"),
    ],
)
def test_bad_inputs_are_refused_in_one_line(known_fit, changes, fragment):
    kwargs = {"lever": "tau", "bounds": (0.0, 0.4), "objective": "welfare", "seed": 0, **SMALL, **changes}
    with pytest.raises(DataError) as err:
        bd.design(known_fit, **kwargs)
    assert "\n" not in str(err.value) and fragment in str(err.value), str(err.value)
    assert str(err.value).startswith("design")


# ------------------------------------------------------------------ CLI
@pytest.fixture(scope="module")
def runs(known_fit, free_fit, tmp_path_factory):
    root = tmp_path_factory.mktemp("design")
    known_fit.save(root / "KNOWN")
    free_fit.save(root / "FREE")
    return root


def _design_args(root, run, out, *extra):
    return [
        "design",
        root / run,
        "--lever",
        "tau",
        "--lower",
        "0",
        "--upper",
        "[0.4, 0.3, 0.4]",
        "--episodes",
        3,
        "--rounds",
        8,
        "--seed",
        1,
        "--max-draws",
        8,
        "--candidates",
        4,
        "--refinements",
        1,
        "--out",
        out,
        "--no-progress",
        *extra,
    ]


def test_cli_writes_design_json_and_records_it(runs, capsys):
    out = runs / "toll.json"
    status, stdout, err = run_cli(capsys, *_design_args(runs, "KNOWN", out, "--objective", "net_welfare"))
    assert status == 0, err
    written = json.loads(out.read_text(encoding="utf-8"))
    assert set(written) == KEYS
    assert set(written["objective"]) == {"recommended", "status_quo", "plug_in", "difference", "versus_plug_in"}
    assert set(written["objective"]["difference"]) == {"mean", "q05", "q95", "p_better"}
    assert written["bounds"] == {"lower": [0.0, 0.0, 0.0], "upper": [0.4, 0.3, 0.4]}
    assert written["status_quo"]["tau"] == pytest.approx(TAU.tolist())
    record = json.loads((runs / "KNOWN" / "designs" / "toll.json").read_text(encoding="utf-8"))
    assert {k: record[k] for k in KEYS} == written and "bayes-diml design" in record["command"]
    assert "recommended" in stdout and "status quo" in stdout and "plug-in" in stdout and "P(better)" in stdout


@pytest.mark.parametrize(
    "run, extra, fragment",
    [
        ("FREE", [], "declare tau known in [mechanism.known]"),
        ("KNOWN", ["--objective", "share:x"], "unknown action 'x'"),
        ("KNOWN", ["--risk", "cvar:0"], "risk"),
    ],
)
def test_cli_refuses_in_one_line_and_writes_nothing(runs, capsys, run, extra, fragment):
    out = runs / f"bad_{run}.json"
    before = sorted(p.name for p in (runs / run).rglob("*"))
    status, _, err = run_cli(capsys, *_design_args(runs, run, out, *extra))
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], err
    assert not out.exists() and sorted(p.name for p in (runs / run).rglob("*")) == before


def test_cli_refuses_bounds_that_are_not_numbers(runs, capsys):
    args = _design_args(runs, "KNOWN", runs / "b.json")
    args[args.index("--lower") + 1] = "low"
    status, _, err = run_cli(capsys, *args)
    assert status == 2 and "--lower 'low'" in err and len(err.strip().splitlines()) == 1
    assert not (runs / "b.json").exists()


def test_unmodelled_agents_replay_their_observed_play_as_in_a_counterfactual(known_fit):
    """With ``[game] modelled`` naming agents 0 and 1, agent 2 replays observed episodes: the
    design's per-draw welfare is that of the counterfactual (which replays them) under the same seed."""
    import dataclasses

    fit = dataclasses.replace(known_fit, model=dataclasses.replace(known_fit.model, modelled=(0, 1)))
    result = bd.design(fit, lever="tau", bounds=(0.0, 0.4), objective="welfare", seed=5, **SMALL)
    assert result["settings"]["replayed"]["agents"] == [2]
    cf = bd.counterfactual(fit, mechanism={"tau": TAU}, seed=5, **{k: SMALL[k] for k in ("num_episodes", "num_rounds", "max_draws")})
    np.testing.assert_allclose(result["per_draw"]["status_quo"], cf.draws["welfare"].mean(axis=1), rtol=1e-5, atol=1e-6)
