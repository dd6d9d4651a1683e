"""Joint-action labels, tabular truths and one credible level (issue 15, points 5 and 7).

The tabular table's row order is checked against an independent brute-force
enumeration of ``j = sum_i a_i * A**i`` (``itertools.product``), never against the
package's own helper. The fits here are fake ``Fit`` objects (draws written by hand),
so no sampler runs.
"""

from __future__ import annotations

import itertools
import textwrap
import types

import numpy as np
import pandas as pd
import pytest

import bayes_diml as bd
from bayes_diml.errors import SpecError
from bayes_diml.inference.results import Fit
from bayes_diml.learners import logit_q
from bayes_diml.mechanisms import Tabular
from bayes_diml.model import Model
from bayes_diml.spec import parse_spec

from cli_helpers import run_cli

ACTIONS = ("low", "high")
AGENTS = ("alice", "bob")
LEARNER = {"alpha": 0.3, "beta": 3.0, "eps": 0.05}


def brute_force_rows(num_agents: int, labels) -> dict[tuple, int]:
    """Joint action (labels, agent order) -> table row, by enumerating sum_i a_i * A**i."""
    A = len(labels)
    rows = {}
    for codes in itertools.product(range(A), repeat=num_agents):
        rows[tuple(labels[c] for c in codes)] = sum(c * A**i for i, c in enumerate(codes))
    return rows


def spec_table(truth: str, family: str = "tabular", game: str = "") -> dict:
    import tomllib

    text = textwrap.dedent(
        f"""
        [game]
        agents = 2
        actions = 2
        action_labels = ["low", "high"]
        agent_labels = ["alice", "bob"]
        {game}

        [mechanism]
        family = "{family}"

        {truth}

        [learner]
        rule = "logit_q"
        alpha = 0.3
        beta = 3.0
        eps = 0.05
        """
    )
    return tomllib.loads(text)


# Prisoner's dilemma, low = cooperate: (alice's payoff, bob's payoff) per joint action.
PD = {("low", "low"): (3.0, 3.0), ("low", "high"): (0.0, 5.0), ("high", "low"): (5.0, 0.0), ("high", "high"): (1.0, 1.0)}
PD_KEYED = """
[mechanism.truth.payoffs]
"low low"   = [3.0, 3.0]
"low high"  = [0.0, 5.0]
"high low"  = [5.0, 0.0]
"high high" = [1.0, 1.0]
"""


# ------------------------------------------------------------------ the row order
@pytest.mark.parametrize("num_agents,num_actions", [(2, 2), (3, 2), (2, 3), (3, 4)])
def test_joint_labels_follow_the_documented_row_order(num_agents, num_actions):
    from bayes_diml.mechanisms.tabular import joint_labels

    labels = [f"x{k}" for k in range(num_actions)]
    want = {row: " ".join(joint) for joint, row in brute_force_rows(num_agents, labels).items()}
    assert joint_labels(num_agents, num_actions, labels) == [want[j] for j in range(num_actions**num_agents)]
    # and the mechanism reads row j for that joint action
    mechanism = Tabular(num_agents=num_agents, num_actions=num_actions)
    table = np.arange(num_actions**num_agents * num_agents, dtype=float).reshape(-1, num_agents)
    for joint, row in brute_force_rows(num_agents, list(range(num_actions))).items():
        got = np.asarray(mechanism.payoffs({"payoffs": table}, np.asarray(joint)))
        np.testing.assert_array_equal(got, table[row])


# ------------------------------------------------------------------ keyed truths
def test_keyed_truth_table_gives_the_rows_of_the_flat_form():
    _, truth = parse_spec(spec_table(PD_KEYED))
    rows = brute_force_rows(2, ACTIONS)
    want = np.zeros((4, 2))
    for joint, payoff in PD.items():
        want[rows[joint]] = payoff
    np.testing.assert_array_equal(truth["mechanism"]["payoffs"], want)
    # the flat form, written in table-row order, is still accepted and means the same
    flat = "[mechanism.truth]\npayoffs = " + str(want.tolist())
    np.testing.assert_array_equal(parse_spec(spec_table(flat))[1]["mechanism"]["payoffs"], want)


def test_keyed_truth_accepts_integer_codes_and_any_order():
    keyed = """
    [mechanism.truth.payoffs]
    "1 1" = [1.0, 1.0]
    "0 1" = [0.0, 5.0]
    "1 0" = [5.0, 0.0]
    "0 0" = [3.0, 3.0]
    """
    got = parse_spec(spec_table(textwrap.dedent(keyed)))[1]["mechanism"]["payoffs"]
    np.testing.assert_array_equal(got, parse_spec(spec_table(PD_KEYED))[1]["mechanism"]["payoffs"])


@pytest.mark.parametrize(
    "change,fragments",
    [
        (('"high high" = [1.0, 1.0]', ""), ("1 of 4 joint actions have no payoffs", "'high high'")),
        (('"high high" = [1.0, 1.0]', '"high high" = [1.0, 1.0]\n"0 0" = [9.0, 9.0]'), ("'low low' and '0 0'", "same joint action")),
        (('"high high"', '"high mid"'), ("unknown joint action 'high mid'",)),
        (('"high high"', '"high"'), ("unknown joint action 'high'",)),
        (('"high high" = [1.0, 1.0]', '"high high" = [1.0]'), ("'high high'", "one payoff per agent")),
    ],
    ids=["missing", "duplicate", "unknown_label", "too_few_actions", "one_value"],
)
def test_keyed_truth_refusals_are_one_line(change, fragments):
    with pytest.raises(SpecError) as err:
        parse_spec(spec_table(PD_KEYED.replace(*change)), source="pd.toml")
    message = str(err.value)
    assert "\n" not in message and message.startswith("pd.toml [mechanism.truth.payoffs]")
    for fragment in fragments:
        assert fragment in message, message


def test_a_keyed_truth_table_is_refused_for_families_without_one():
    truth = "[mechanism.truth.tau]\n\"low\" = 1.0"
    with pytest.raises(SpecError, match="'tau' must be a number or a list"):
        parse_spec(spec_table(truth, family="congestion"))


# ------------------------------------------------------------------ check --spec
def _write_spec(tmp_path, truth: str, learner_beta: str = "3.0", actions: int = 2, labels='["low", "high"]') -> str:
    text = textwrap.dedent(
        f"""
        [game]
        agents = 2
        actions = {actions}
        action_labels = {labels}
        agent_labels = ["alice", "bob"]

        [mechanism]
        family = "tabular"

        {truth}

        [learner]
        rule = "logit_q"
        alpha = 0.3
        beta = {learner_beta}
        eps = 0.05
        """
    )
    path = tmp_path / "spec.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def _write_data(tmp_path, actions=ACTIONS, first_round: int = 0) -> str:
    rows = [
        {"episode": e, "round": first_round + t, "agent": agent, "action": actions[(e + t + i) % len(actions)]}
        for e in range(2) for t in range(4) for i, agent in enumerate(AGENTS)
    ]
    path = tmp_path / "data.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


def test_check_prints_the_first_rows_of_a_tabular_truth_with_joint_labels(tmp_path, capsys):
    labels = ("low", "mid", "high")
    payoffs = np.arange(18, dtype=float).reshape(9, 2)
    spec = _write_spec(tmp_path, "[mechanism.truth]\npayoffs = " + str(payoffs.tolist()), actions=3,
                       labels='["low", "mid", "high"]')
    status, out, err = run_cli(capsys, "check", _write_data(tmp_path, labels), "--spec", spec)
    assert status == 0, err
    assert "joint (alice, bob) | payoffs (alice, bob)" in out
    shown = [line.strip() for line in out.splitlines() if "|" in line and "joint (" not in line]
    assert len(shown) == 8  # the first 8 of 9 rows
    for joint, row in brute_force_rows(2, labels).items():
        if row < 8:
            want = f"{' '.join(joint)} | {payoffs[row, 0]:g}, {payoffs[row, 1]:g}"
            assert " ".join(shown[row].split()) == want, (shown[row], want)


def test_check_refuses_what_fit_refuses(tmp_path, capsys):
    """A prior on beta without observed payoffs: fit refuses it, so check must too."""
    spec = _write_spec(tmp_path, "", learner_beta='{dist = "lognormal", loc = 1.0, scale = 0.5}')
    data = _write_data(tmp_path)
    model, _ = bd.read_spec(spec)
    with pytest.raises(SpecError) as refused:
        bd.fit(model, bd.load_data(data, model), method="map", seed=0, steps=5, progress=False)
    status, out, err = run_cli(capsys, "check", data, "--spec", spec)
    assert status == 2 and "OK" not in out
    assert err.strip().splitlines() == [f"error: {refused.value}"]


# ------------------------------------------------------------------ fake fits
def _tabular_fit(num_chains: int = 2, num_draws: int = 40, method: str = "nuts", seed: int = 0) -> Fit:
    """A 2 x 2 tabular fit whose draws are written by hand: gauge entries (an agent's own
    action 0) are 0 in every draw, the others vary."""
    model = Model(Tabular(num_agents=2, num_actions=2), logit_q, dict(LEARNER), action_labels=ACTIONS, agent_labels=AGENTS)
    truth = {"mechanism": {"payoffs": np.array([[0, 0], [1.0, 0], [0, 2.0], [3.0, 4.0]])}, "learner": dict(LEARNER)}
    data = bd.simulate(model, truth, num_episodes=3, num_rounds=5, seed=seed)
    rng = np.random.default_rng(seed)
    rows, agents = model.mechanism.free_entries(fix_gauge=True)
    free = rng.normal(size=(num_chains, num_draws, rows.size)).astype(np.float32)
    payoffs = np.zeros((num_chains, num_draws, 4, 2), np.float32)
    payoffs[:, :, rows, agents] = free
    stats = {
        "diverging": np.zeros((num_chains, num_draws), bool),
        "n_steps": np.full((num_chains, num_draws), 7),
        "energy": rng.normal(size=(num_chains, num_draws)),
    }
    return Fit(model=model, data=data, method=method, posterior={"free_payoffs": free, "payoffs": payoffs},
               sample_stats=stats if method == "nuts" else None, info={"seed": seed})


@pytest.fixture(scope="module")
def fake_fit():
    return _tabular_fit()


def test_summary_names_table_entries_by_joint_action_labels(fake_fit):
    summary = fake_fit.summary()
    payoffs = fake_fit.posterior["payoffs"]
    for joint, row in brute_force_rows(2, ACTIONS).items():
        for i, agent in enumerate(AGENTS):
            name = f"payoffs[{' '.join(joint)}, {agent}]"
            assert name in summary.index, list(summary.index)
            assert summary.loc[name, "mean"] == pytest.approx(float(payoffs[:, :, row, i].mean()), abs=1e-6)


def test_summary_shows_fixed_instead_of_an_ess_for_gauge_entries(fake_fit):
    summary = fake_fit.summary()
    gauge = [f"payoffs[{' '.join(j)}, {a}]" for j in itertools.product(ACTIONS, repeat=2) for i, a in enumerate(AGENTS)
             if j[i] == "low"]
    free = [name for name in summary.index if name not in gauge]
    assert len(gauge) == 4 and len(free) == 4
    assert summary.loc[gauge, ["ess_bulk", "ess_tail", "r_hat"]].isna().all().all()
    assert np.isfinite(summary.loc[free, "ess_bulk"].to_numpy(float)).all()
    marked = fake_fit.summary(mark_fixed=True)
    assert (marked.loc[gauge, "ess_bulk"] == "fixed").all() and (marked.loc[gauge, "ess_tail"] == "fixed").all()
    assert not (marked.loc[free, "ess_bulk"] == "fixed").any()


def test_summary_uses_the_one_credible_level(fake_fit):
    from bayes_diml.inference import counterfactual, queries
    from bayes_diml.inference.results import CREDIBLE_LEVEL, interval_columns
    from bayes_diml.report import PREDICTIVE_BAND

    summary = fake_fit.summary()
    percent = round(CREDIBLE_LEVEL * 100)
    assert {f"eti{percent}_lb", f"eti{percent}_ub"} <= set(summary.columns), list(summary.columns)
    entry = "payoffs[high low, alice]"
    draws = fake_fit.posterior["payoffs"][:, :, 1, 0].ravel()
    tail = (1 - CREDIBLE_LEVEL) / 2
    assert summary.loc[entry, f"eti{percent}_lb"] == pytest.approx(np.quantile(draws, tail), abs=1e-5)
    assert summary.loc[entry, f"eti{percent}_ub"] == pytest.approx(np.quantile(draws, 1 - tail), abs=1e-5)
    assert interval_columns() == ("q05", "q95") and CREDIBLE_LEVEL == 0.90
    assert counterfactual.INTERVAL == PREDICTIVE_BAND == CREDIBLE_LEVEL
    answers = queries.payoff_differences(fake_fit, [{"agent": "alice", "action": "high", "baseline": "low", "joint": "low high"}])
    assert set(interval_columns()) <= set(answers.columns)


def test_identifiability_tables_name_entries_by_joint_action_labels(fake_fit):
    report = fake_fit.identifiability(seed=0)
    want = {f"payoffs[{' '.join(j)}, {a}]" for j in itertools.product(ACTIONS, repeat=2) for a in AGENTS}
    assert set(report.parameters["entry"]) == want
    gauge = report.parameters.set_index("entry").loc["payoffs[low high, alice]", "verdict"]
    assert gauge == "fixed by the gauge"  # alice plays low (action 0): pinned
    assert set(report.coordinates) <= want and report.coordinates


def test_rank_trace_labels_entries_and_leaves_out_gauge_entries(fake_fit):
    from bayes_diml.plots import _entries

    labels = [label for label, _ in _entries(fake_fit, ["payoffs"], 12)]
    assert labels == ["payoffs[high low, alice]", "payoffs[low high, bob]", "payoffs[high high, alice]",
                      "payoffs[high high, bob]"]


# ------------------------------------------------------------------ default queries
def _distinct_queries(data) -> set:
    """Every distinct (agent, others' actions, unordered action pair), by brute force."""
    out = set()
    actions = data.actions.reshape(-1, data.num_agents)
    present = (~data.mask).reshape(-1, data.num_agents).all(axis=1)
    for joint in actions[present]:
        for i in range(data.num_agents):
            others = tuple(np.delete(joint, i).tolist())
            for a, b in itertools.combinations(range(data.num_actions), 2):
                out.add((i, others, a, b))
    return out


def _query_keys(frame, data) -> list:
    code = {str(label): k for k, label in enumerate(data.action_labels)}
    agent = {str(label): k for k, label in enumerate(data.agent_labels)}
    keys = []
    for row in frame.itertuples(index=False):
        i = agent[str(row.agent)]
        joint = [code[t] for t in row.joint.split()]
        a, b = sorted((code[str(row.action)], code[str(row.baseline)]))
        keys.append((i, tuple(np.delete(joint, i).tolist()), a, b))
    return keys


@pytest.mark.parametrize("num", [5, 20, 200])
def test_default_queries_have_no_duplicate_rows(num):
    from bayes_diml.inference.queries import sample_queries

    model = Model(Tabular(num_agents=2, num_actions=3), logit_q, dict(LEARNER))
    truth = {"mechanism": {"payoffs": np.random.default_rng(1).normal(size=(9, 2))}, "learner": dict(LEARNER)}
    data = bd.simulate(model, truth, num_episodes=2, num_rounds=6, seed=4)
    distinct = _distinct_queries(data)
    frame = sample_queries(data, num, seed=0)
    keys = _query_keys(frame, data)
    assert len(keys) == len(set(keys)), frame
    assert set(keys) <= distinct
    assert len(frame) == min(num, len(distinct))
    assert (frame["action"] != frame["baseline"]).all()


# ------------------------------------------------------------------ CLI wording
def test_diagnostic_advice_names_the_cli_options():
    one_chain = _tabular_fit(num_chains=1, num_draws=30)
    warnings = one_chain.diagnostics()["warnings"]
    assert any("--chains" in w for w in warnings), warnings
    assert any("--samples" in w for w in warnings), warnings
    svi = _tabular_fit(num_chains=1, num_draws=30, method="svi").diagnostics()["warnings"]
    assert any("--method nuts" in w for w in svi), svi


def test_one_draw_note_names_the_cli_form():
    single = _tabular_fit(num_chains=1, num_draws=1, method="map")
    notes = single.identifiability(seed=0).notes
    note = next(n for n in notes if "One draw" in n)
    assert "--method nuts" in note, note


# ------------------------------------------------------------------ evaluate
@pytest.mark.parametrize("first_round", [1, 5])
def test_evaluate_names_the_skipped_round_by_the_datas_own_label(tmp_path, capsys, monkeypatch, first_round):
    from bayes_diml import evaluation, inference

    model = Model(Tabular(num_agents=2, num_actions=2), logit_q, dict(LEARNER), action_labels=ACTIONS, agent_labels=AGENTS)
    monkeypatch.setattr(inference, "load_fit", lambda run: types.SimpleNamespace(model=model))
    monkeypatch.setattr(evaluation, "evaluate_run", lambda *a, **k: {"pp_nll": 0.7, "nll": 0.6, "nll_test": 0.5})
    status, out, err = run_cli(capsys, "evaluate", tmp_path, "--data", _write_data(tmp_path, first_round=first_round))
    assert status == 0, err
    assert f"round {first_round}" in out, out
    assert "from round 1" not in out
    if first_round != 1:
        assert "round 1" not in out
