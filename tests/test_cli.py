"""The ``bayes-diml`` command line, end to end on a tiny congestion game.

The main flows run the real entry point (``python -m bayes_diml``) in a subprocess;
the refusals run ``bayes_diml.cli.main`` in-process (no JAX import per call), and a few
of them also through the subprocess, to see what a user sees on stderr.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bayes_diml.cli import main

from cli_helpers import CONGESTION_SPEC
from cli_helpers import run_cli as in_process

SUBPROCESS_TIMEOUT_S = 300

TINY_SPEC = CONGESTION_SPEC.format(agents=3)

QUERIES = """\
agent,action,baseline,joint
0,1,0,0 1 2
1,2,0,1 0 0
2,0,1,2 2 2
0,2,1,0 0 0
"""

RUN_FILES = (
    "posterior.nc",
    "summary.csv",
    "diagnostics.json",
    "identifiability.csv",
    "payoff_differences.csv",
    "spec.toml",
    "data.csv",
    "fit.json",
    "provenance.json",
    "rank_trace.png",
    "payoff_differences.png",
    "posterior_predictive.png",
)
QUERY_ANSWER_COLUMNS = ["agent", "action", "baseline", "joint", "mean", "sd", "q05", "q95", "in_support"]
E2_SPEC = Path(__file__).resolve().parents[1] / "models" / "e2_congestion.toml"


def cli(*args, cwd) -> subprocess.CompletedProcess:
    """``python -m bayes_diml ARGS`` in ``cwd``."""
    return subprocess.run(
        [sys.executable, "-m", "bayes_diml", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=SUBPROCESS_TIMEOUT_S,
    )


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "Traceback" not in result.stderr
    return result


def assert_one_error_line(status: int, err: str, *fragments: str, usage: bool = False) -> str:
    """Exit status 2, no traceback, exactly one line starting 'error:' (after argparse's usage)."""
    assert status == 2, f"exit {status}; stderr:\n{err}"
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    if usage:  # argparse: "usage: ..." lines, then "bayes-diml VERB: error: ..."
        assert lines and lines[0].startswith("usage:"), err
        last = lines[-1]
        assert "error:" in last and not any("error:" in line for line in lines[:-1]), err
    else:
        assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
        last = lines[0]
        assert last.startswith("error: "), err
    for fragment in fragments:
        assert fragment in last, f"{fragment!r} not in {last!r}"
    return last


# ------------------------------------------------------------------ workspace


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A folder with the tiny spec, simulated data D.csv, and a MAP run folder RUN.

    simulate and fit run through the real entry point; their results are kept for the tests.
    """
    root = tmp_path_factory.mktemp("cli")
    (root / "tiny.toml").write_text(TINY_SPEC, encoding="utf-8")
    (root / "Q.csv").write_text(QUERIES, encoding="utf-8")
    simulated = ok(cli("simulate", "tiny.toml", "--episodes", 4, "--rounds", 10, "--seed", 3, "--out", "D.csv", cwd=root))
    fitted = ok(
        cli(
            "fit", "tiny.toml", "--data", "D.csv", "--method", "map", "--steps", 100,
            "--seed", 11, "--out", "RUN", "--no-progress", cwd=root,
        )
    )
    return {"root": root, "simulate": simulated, "fit": fitted}


# ------------------------------------------------------------------ simulate, check


def test_simulate_writes_the_data_it_reports(work):
    root = work["root"]
    assert "4 episodes x 10 rounds x 3 agents" in work["simulate"].stdout
    frame = pd.read_csv(root / "D.csv")
    assert list(frame.columns) == ["episode", "round", "agent", "action"]
    assert len(frame) == 4 * 10 * 3
    assert frame["episode"].nunique() == 4 and frame["round"].nunique() == 10
    assert set(frame["action"]) <= {0, 1, 2}


def test_check_with_and_without_spec(work, capsys):
    root = work["root"]
    with_spec = ok(cli("check", "D.csv", "--spec", "tiny.toml", cwd=root)).stdout
    status, without_spec, err = in_process(capsys, "check", root / "D.csv")
    assert status == 0, err
    for out, checked in ((with_spec, True), (without_spec, False)):
        for fragment in ("D.csv: OK", "num_episodes: 4", "num_rounds: 10", "num_agents: 3", "num_actions: 3"):
            assert fragment in out, out
        assert ("consistent with tiny.toml" in out) == checked


def test_simulate_refuses_an_existing_output_unless_overwrite(work, tmp_path, capsys):
    root = work["root"]
    result = cli("simulate", "tiny.toml", "--episodes", 2, "--rounds", 3, "--out", "D.csv", cwd=root)
    assert_one_error_line(result.returncode, result.stderr, "D.csv", "--overwrite")
    assert len(pd.read_csv(root / "D.csv")) == 4 * 10 * 3  # untouched

    # --overwrite replaces it (in-process, on a copy, so the shared data stay as they are)
    spec, out = root / "tiny.toml", tmp_path / "D.csv"
    shutil.copy(root / "D.csv", out)
    status, stdout, err = in_process(
        capsys, "simulate", spec, "--episodes", 2, "--rounds", 3, "--out", out, "--overwrite"
    )
    assert status == 0, err
    assert len(pd.read_csv(out)) == 2 * 3 * 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_simulate_is_reproducible_from_its_seed(work, tmp_path, capsys):
    spec = work["root"] / "tiny.toml"
    for name in ("a.csv", "b.csv"):
        status, _, err = in_process(capsys, "simulate", spec, "--episodes", 4, "--rounds", 10, "--seed", 3, "--out", tmp_path / name)
        assert status == 0, err
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes() == (work["root"] / "D.csv").read_bytes()


def test_simulate_parquet_output_checks(work, tmp_path, capsys):
    spec = work["root"] / "tiny.toml"
    out = tmp_path / "D.parquet"
    status, _, err = in_process(capsys, "simulate", spec, "--episodes", 2, "--rounds", 4, "--out", out)
    assert status == 0, err
    status, stdout, err = in_process(capsys, "check", out, "--spec", spec)
    assert status == 0, err
    assert "num_episodes: 2" in stdout and "num_rounds: 4" in stdout


# ------------------------------------------------------------------ fit


def test_fit_writes_a_complete_run_folder(work):
    root = work["root"]
    run = root / "RUN"
    assert "wrote RUN/" in work["fit"].stdout
    missing = [name for name in RUN_FILES if not (run / name).is_file()]
    assert not missing, f"missing from the run folder: {missing}"
    for png in ("rank_trace.png", "payoff_differences.png", "posterior_predictive.png"):
        assert (run / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    provenance = json.loads((run / "provenance.json").read_text(encoding="utf-8"))
    assert provenance["data_sha256"] == hashlib.sha256((root / "D.csv").read_bytes()).hexdigest()
    assert provenance["seed"] == 11
    assert provenance["method"] == "map"
    meta = json.loads((run / "fit.json").read_text(encoding="utf-8"))
    assert meta["method"] == "map" and meta["info"]["seed"] == 11
    assert json.loads((run / "diagnostics.json").read_text(encoding="utf-8"))
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_second_fit_into_a_run_folder_is_refused_without_overwrite(work, capsys):
    root = work["root"]
    before = (root / "RUN" / "fit.json").read_bytes()
    status, _, err = in_process(
        capsys, "fit", root / "tiny.toml", "--data", root / "D.csv", "--method", "map", "--steps", 5, "--out", root / "RUN"
    )
    assert_one_error_line(status, err, "RUN", "--overwrite")
    assert (root / "RUN" / "fit.json").read_bytes() == before


def test_nuts_fit_through_the_cli_overwrites_a_run_folder(work, tmp_path, capsys):
    # in-process (saves a JAX import); --overwrite replaces a copy of the MAP run folder
    root = work["root"]
    run = tmp_path / "RUN"
    shutil.copytree(root / "RUN", run)
    status, out, err = in_process(
        capsys, "fit", root / "tiny.toml", "--data", root / "D.csv", "--method", "nuts",
        "--chains", 2, "--warmup", 30, "--samples", 30, "--seed", 5, "--out", run, "--overwrite", "--no-progress",
    )
    assert status == 0, err
    assert "Traceback" not in err
    assert "nuts" in out and "diagnostics" in out
    meta = json.loads((run / "fit.json").read_text(encoding="utf-8"))
    assert meta["method"] == "nuts"
    assert meta["info"]["num_chains"] == 2 and meta["info"]["num_samples"] == 30
    assert all((run / name).is_file() for name in RUN_FILES)
    assert json.loads((run / "provenance.json").read_text(encoding="utf-8"))["seed"] == 5
    summary = pd.read_csv(run / "summary.csv", index_col=0)
    assert any(str(i).startswith("tau") for i in summary.index)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


# ------------------------------------------------------------------ query, counterfactual


def test_query_answers_one_row_per_query(work):
    root = work["root"]
    result = ok(cli("query", "RUN", "--queries", "Q.csv", "--out", "A.csv", cwd=root))
    assert "A.csv" in result.stdout
    answers = pd.read_csv(root / "A.csv")
    assert list(answers.columns) == QUERY_ANSWER_COLUMNS
    queries = pd.read_csv(root / "Q.csv")
    assert len(answers) == len(queries)
    pd.testing.assert_frame_equal(answers[list(queries.columns)], queries)
    assert np.all(np.isfinite(answers[["mean", "sd", "q05", "q95"]].to_numpy()))
    assert (answers["q05"] <= answers["mean"] + 1e-9).all() and (answers["mean"] <= answers["q95"] + 1e-9).all()
    assert answers["in_support"].dtype == bool


def test_query_refuses_an_existing_answer_file(work, capsys):
    root = work["root"]
    out = root / "exists.csv"
    out.write_text("keep\n", encoding="utf-8")
    status, _, err = in_process(capsys, "query", root / "RUN", "--queries", root / "Q.csv", "--out", out)
    assert_one_error_line(status, err, "exists.csv", "--overwrite")
    assert out.read_text(encoding="utf-8") == "keep\n"
    status, _, err = in_process(capsys, "query", root / "RUN", "--queries", root / "Q.csv", "--out", out, "--overwrite")
    assert status == 0, err
    assert len(pd.read_csv(out)) == 4


def test_counterfactual_with_mechanism_and_learner_overrides(work):
    root = work["root"]
    result = ok(
        cli(
            "counterfactual", "RUN", "--set", "mechanism.tau=[0.5,0,0]", "--set", "learner.beta=4.2",
            "--episodes", 5, "--rounds", 8, "--out", "CF.csv", cwd=root,
        )
    )
    assert "CF.csv" in result.stdout
    frame = pd.read_csv(root / "CF.csv")
    assert len(frame) > 0
    assert {"mean", "q05", "q95"} <= set(frame.columns)
    assert (root / "CF.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_counterfactual_scales_a_learner_parameter(work, tmp_path, capsys):
    root = work["root"]
    out = tmp_path / "CF.csv"
    # the argument as the shell passes `--set 'learner.alpha="*0.6"'`
    status, _, err = in_process(
        capsys, "counterfactual", root / "RUN", "--set", 'learner.alpha="*0.6"',
        "--episodes", 3, "--rounds", 6, "--out", out,
    )
    assert status == 0, err
    assert out.is_file() and out.with_suffix(".png").is_file()
    # a JSON list of numbers is a literal too
    status, _, err = in_process(
        capsys, "counterfactual", root / "RUN", "--set", "mechanism.c2=[0.1, 0.1, 0.1]",
        "--episodes", 3, "--rounds", 6, "--out", tmp_path / "CF2.csv",
    )
    assert status == 0, err


# ------------------------------------------------------------------ refusals


def test_refusals_through_the_real_entry_point(work):
    """What a user sees: exit 2 and one line on stderr, no traceback (one DataError, one
    argparse error; the in-process cases below cover the rest)."""
    root = work["root"]
    result = cli("counterfactual", "RUN", "--set", "foo.x=1", "--episodes", 2, "--rounds", 2, "--out", "x.csv", cwd=root)
    assert_one_error_line(result.returncode, result.stderr, "foo.x=1")
    result = cli("simulate", "tiny.toml", "--episodes", -5, "--rounds", 3, "--out", "neg.csv", cwd=root)
    assert_one_error_line(result.returncode, result.stderr, "--episodes", usage=True)
    assert not (root / "neg.csv").exists() and not (root / "x.csv").exists()


def _bad_files(root: Path) -> None:
    lines = (root / "D.csv").read_text(encoding="utf-8").splitlines()
    lines[1] = ",".join(lines[1].split(",")[:3] + ["1.5"])
    (root / "float_action.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "empty_dir").mkdir(exist_ok=True)
    (root / "no_truth.toml").write_text(TINY_SPEC.split("[mechanism.truth]")[0] + TINY_SPEC[TINY_SPEC.index("[learner]"):])
    (root / "bad_spec.toml").write_text(TINY_SPEC.replace('family = "congestion"', 'family = "congestoin"'))
    (root / "bad_queries.csv").write_text("agent,action,baseline\n0,1,0\n", encoding="utf-8")
    (root / "data.txt").write_text("episode,round,agent,action\n", encoding="utf-8")


# case id -> (argv with {root} placeholders, fragments of the error line, argparse usage error?)
REFUSALS: dict[str, tuple[list[str], tuple[str, ...], bool]] = {
    "check_missing_data": (["check", "{root}/missing.csv"], ("missing.csv", "not found"), False),
    "check_unknown_format": (["check", "{root}/data.txt"], ("data.txt", ".txt"), False),
    "check_float_action": (["check", "{root}/float_action.csv"], ("float_action.csv", "line 2", "'action'", "1.5"), False),
    "check_agent_mismatch": (["check", "{root}/D.csv", "--spec", str(E2_SPEC)], ("D.csv", "3 agents", "4"), False),
    "check_missing_spec": (["check", "{root}/D.csv", "--spec", "{root}/nope.toml"], ("nope.toml",), False),
    "check_bad_spec": (["check", "{root}/D.csv", "--spec", "{root}/bad_spec.toml"], ("bad_spec.toml", "congestoin"), False),
    "fit_agent_mismatch": (
        ["fit", str(E2_SPEC), "--data", "{root}/D.csv", "--method", "map", "--out", "{root}/RUN_E2"],
        ("D.csv", "agents"),
        False,
    ),
    "fit_missing_data": (
        ["fit", "{root}/tiny.toml", "--data", "{root}/none.csv", "--method", "map", "--out", "{root}/RUN_X"],
        ("none.csv",),
        False,
    ),
    "fit_unknown_method": (["fit", "{root}/tiny.toml", "--data", "{root}/D.csv", "--method", "mcmc", "--out", "{root}/R"], ("--method",), True),
    "fit_zero_chains": (["fit", "{root}/tiny.toml", "--data", "{root}/D.csv", "--chains", "0", "--out", "{root}/R"], ("--chains",), True),
    "simulate_without_truth": (
        ["simulate", "{root}/no_truth.toml", "--episodes", "2", "--rounds", "2", "--out", "{root}/nt.csv"],
        ("no_truth.toml", "truth"),
        False,
    ),
    "simulate_negative_episodes": (
        ["simulate", "{root}/tiny.toml", "--episodes", "-1", "--rounds", "2", "--out", "{root}/n.csv"],
        ("--episodes",),
        True,
    ),
    "simulate_non_integer_rounds": (
        ["simulate", "{root}/tiny.toml", "--episodes", "2", "--rounds", "2.5", "--out", "{root}/n.csv"],
        ("--rounds",),
        True,
    ),
    "simulate_negative_seed": (
        ["simulate", "{root}/tiny.toml", "--episodes", "2", "--rounds", "2", "--seed", "-1", "--out", "{root}/n.csv"],
        ("--seed",),
        True,
    ),
    "unknown_verb": (["estimate", "{root}/tiny.toml"], (), True),
    "query_not_a_run_folder": (
        ["query", "{root}/empty_dir", "--queries", "{root}/Q.csv", "--out", "{root}/a.csv"],
        ("empty_dir", "not a run folder"),
        False,
    ),
    "query_missing_queries": (
        ["query", "{root}/RUN", "--queries", "{root}/none.csv", "--out", "{root}/a.csv"],
        ("none.csv",),
        False,
    ),
    "query_missing_column": (
        ["query", "{root}/RUN", "--queries", "{root}/bad_queries.csv", "--out", "{root}/a.csv"],
        ("bad_queries.csv", "joint"),
        False,
    ),
    "counterfactual_not_a_run_folder": (
        ["counterfactual", "{root}/empty_dir", "--episodes", "2", "--rounds", "2", "--out", "{root}/c.csv"],
        ("empty_dir", "not a run folder"),
        False,
    ),
    "set_without_equals": (
        ["counterfactual", "{root}/RUN", "--set", "mechanism.tau", "--episodes", "2", "--rounds", "2", "--out", "{root}/c.csv"],
        ("mechanism.tau", "KEY=VALUE"),
        False,
    ),
    "set_unknown_scope": (
        ["counterfactual", "{root}/RUN", "--set", "foo.x=1", "--episodes", "2", "--rounds", "2", "--out", "{root}/c.csv"],
        ("foo.x=1",),
        False,
    ),
    "set_no_name": (
        ["counterfactual", "{root}/RUN", "--set", "learner=1", "--episodes", "2", "--rounds", "2", "--out", "{root}/c.csv"],
        ("learner=1",),
        False,
    ),
    "set_not_a_literal": (
        ["counterfactual", "{root}/RUN", "--set", "learner.beta=abc", "--episodes", "2", "--rounds", "2", "--out", "{root}/c.csv"],
        ("learner.beta=abc", "literal"),
        False,
    ),
    "set_code_is_not_run": (
        ["counterfactual", "{root}/RUN", "--set", "learner.beta=__import__('os').getcwd()", "--episodes", "2",
         "--rounds", "2", "--out", "{root}/c.csv"],
        ("learner.beta",),
        False,
    ),
    "set_unknown_learner_parameter": (
        ["counterfactual", "{root}/RUN", "--set", "learner.gamma=1", "--episodes", "2", "--rounds", "2", "--out", "{root}/c.csv"],
        ("'gamma'",),
        False,
    ),
    "set_unknown_mechanism_parameter": (
        ["counterfactual", "{root}/RUN", "--set", "mechanism.toll=[1,2,3]", "--episodes", "2", "--rounds", "2", "--out", "{root}/c.csv"],
        ("'toll'",),
        False,
    ),
    "set_wrong_length_tau": (
        ["counterfactual", "{root}/RUN", "--set", "mechanism.tau=[0.5,0]", "--episodes", "2", "--rounds", "2", "--out", "{root}/c.csv"],
        ("'tau'", "(3,)", "(2,)"),
        False,
    ),
    "set_beta_out_of_domain": (
        ["counterfactual", "{root}/RUN", "--set", "learner.beta=0", "--episodes", "2", "--rounds", "2", "--out", "{root}/c.csv"],
        ("'beta'",),
        False,
    ),
    "set_bad_factor": (
        ["counterfactual", "{root}/RUN", "--set", 'learner.alpha="*x"', "--episodes", "2", "--rounds", "2", "--out", "{root}/c.csv"],
        ("alpha",),
        False,
    ),
    "set_nan": (
        ["counterfactual", "{root}/RUN", "--set", "mechanism.tau=[nan,0,0]", "--episodes", "2", "--rounds", "2", "--out", "{root}/c.csv"],
        ("'tau'", "finite"),
        False,
    ),
    "counterfactual_negative_episodes": (
        ["counterfactual", "{root}/RUN", "--episodes", "-3", "--rounds", "2", "--out", "{root}/c.csv"],
        ("--episodes",),
        True,
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refusal_is_one_error_line_with_exit_status_2(work, capsys, case):
    root = work["root"]
    _bad_files(root)
    argv, fragments, usage = REFUSALS[case]
    status, out, err = in_process(capsys, *(a.replace("{root}", str(root)) for a in argv))
    assert_one_error_line(status, err, *fragments, usage=usage)
    for name in ("RUN_E2", "RUN_X", "R", "nt.csv", "n.csv", "a.csv", "c.csv"):
        assert not (root / name).exists(), f"{name} was written by a refused command"


# ------------------------------------------------------------------ known CLI bugs
# Inputs that give a traceback (exit 1) or are silently coerced, where docs/design.md §9 and the
# cli.py docstring promise one error line and exit status 2 (and one documented form
# that is refused). Found by the test-writing pass and fixed; kept as regression tests.
FIXED_BUGS: dict[str, tuple[list[str], tuple[str, ...], str]] = {
    "simulate_into_missing_folder": (
        ["simulate", "{root}/tiny.toml", "--episodes", "2", "--rounds", "2", "--out", "{root}/no_dir/x.csv"],
        ("no_dir",),
        "cli.cmd_simulate -> Trajectories.to_csv -> trajectories._write_atomic: --out no_dir/x.csv (folder absent) "
        "raises FileNotFoundError (traceback, exit 1); expected exit 2 and 'error: ... no_dir ...'",
    ),
    "query_into_missing_folder": (
        ["query", "{root}/RUN", "--queries", "{root}/Q.csv", "--out", "{root}/no_dir/a.csv"],
        ("no_dir",),
        "cli.cmd_query -> inference/storage.write_text_atomic: --out no_dir/a.csv raises FileNotFoundError "
        "from tempfile.mkstemp (traceback, exit 1) after the whole query ran; expected exit 2 before any work",
    ),
    "counterfactual_into_missing_folder": (
        ["counterfactual", "{root}/RUN", "--episodes", "2", "--rounds", "2", "--out", "{root}/no_dir/c.csv"],
        ("no_dir",),
        "cli.cmd_counterfactual -> inference/storage.write_text_atomic: --out no_dir/c.csv raises "
        "FileNotFoundError (traceback, exit 1) after the simulation ran; expected exit 2 before any work",
    ),
    "data_path_is_a_folder": (
        ["check", "{root}/folder.csv"],
        ("folder.csv",),
        "loading.load_data checks path.exists() only; a folder named folder.csv reaches "
        "Trajectories.from_csv's open() and raises IsADirectoryError (traceback, exit 1); expected exit 2",
    ),
    "run_folder_with_corrupt_posterior": (
        ["query", "{root}/RUN_corrupt_nc", "--queries", "{root}/Q.csv", "--out", "{root}/a.csv"],
        ("posterior.nc",),
        "inference/storage.load_fit: a posterior.nc that is not netCDF/HDF5 makes xr.open_datatree raise "
        "OSError ('file signature not found'; traceback, exit 1); expected exit 2 naming posterior.nc",
    ),
    "run_folder_with_corrupt_fit_json": (
        ["query", "{root}/RUN_corrupt_json", "--queries", "{root}/Q.csv", "--out", "{root}/a.csv"],
        ("fit.json",),
        "inference/storage.load_fit: json.loads of a malformed fit.json raises JSONDecodeError (traceback, "
        "exit 1); expected exit 2 naming fit.json",
    ),
    "set_list_of_booleans_is_coerced": (
        ["counterfactual", "{root}/RUN", "--set", "mechanism.tau=[true,false,true]", "--episodes", "2",
         "--rounds", "2", "--out", "{root}/bool.csv"],
        ("'tau'",),
        "inference/counterfactual._finite_array refuses a bool scalar but np.asarray([True, False, True], "
        "float64) turns --set mechanism.tau=[true,false,true] into [1, 0, 1] and the command succeeds "
        "(docs/design.md §9: nothing coerced); expected exit 2 naming 'tau'",
    ),
    "set_factor_as_typed_in_a_shell": (
        ["counterfactual", "{root}/RUN", "--set", "learner.alpha=*0.6", "--episodes", "2", "--rounds", "2",
         "--out", "{root}/factor.csv"],
        (),
        "cli._parse_set: the help says `\"*0.6\" to scale`, but a shell strips those quotes, so "
        "`--set learner.alpha=\"*0.6\"` typed in bash arrives as learner.alpha=*0.6 and is refused "
        "('not a TOML/JSON literal'); only 'learner.alpha=\"*0.6\"' (quotes inside single quotes) works. "
        "Expected: a bare *FACTOR accepted (or the help to show the shell quoting). This case expects success",
    ),
}


def _corrupt_runs(root: Path) -> None:
    (root / "folder.csv").mkdir(exist_ok=True)
    for name, file, text in (("RUN_corrupt_nc", "posterior.nc", "not netcdf\n"), ("RUN_corrupt_json", "fit.json", "{oops\n")):
        if not (root / name).exists():
            shutil.copytree(root / "RUN", root / name)
            (root / name / file).write_text(text, encoding="utf-8")


@pytest.mark.parametrize(
    "case",
    sorted(FIXED_BUGS),
)
def test_cli_refusals_known_to_be_missing(work, capsys, case):
    root = work["root"]
    _corrupt_runs(root)
    argv, fragments, _ = FIXED_BUGS[case]
    status, _, err = in_process(capsys, *(a.replace("{root}", str(root)) for a in argv))
    if case == "set_factor_as_typed_in_a_shell":
        assert status == 0, err
    else:
        assert_one_error_line(status, err, *fragments)


def test_x64_switch_computes_in_float64(tmp_path):
    """``bayes-diml --x64 VERB`` runs the verb in JAX's x64 mode (and only that call)."""
    import jax
    import xarray as xr

    spec = tmp_path / "tiny.toml"
    spec.write_text(
        "[game]\nagents = 2\nactions = 3\n[mechanism]\nfamily = \"congestion\"\n[mechanism.truth]\n"
        "c1 = [0.2, 0.3, 0.1]\nc2 = [0.1, 0.05, 0.12]\ntau = [0.1, 0.0, 0.2]\n"
        "[learner]\nrule = \"logit_q\"\nalpha = 0.3\nbeta = 3.0\neps = 0.05\n"
    )
    data = tmp_path / "d.csv"
    assert main(["simulate", str(spec), "--episodes", "2", "--rounds", "5", "--out", str(data)]) == 0
    for flag, dtype in ((["--x64"], "float64"), ([], "float32")):
        run = tmp_path / f"run{len(flag)}"
        argv = [*flag, "fit", str(spec), "--data", str(data), "--method", "map", "--steps", "20", "--out", str(run), "--no-progress"]
        assert main(argv) == 0
        with xr.open_datatree(run / "posterior.nc", engine="h5netcdf") as tree:
            assert str(tree["posterior"]["c2"].dtype) == dtype
    assert not jax.config.jax_enable_x64  # the switch does not leak out of the command


def test_bench_passes_its_arguments_to_the_speed_benchmark(tmp_path, capsys):
    """``bayes-diml bench ARGS`` is ``benchmarks/speed.py ARGS``: a tiny run writes its JSON
    with the machine named and a positive time per epoch; ``--help`` reaches speed.py."""
    out = tmp_path / "speed.json"
    status = main(["bench", "--quick", "--settings", "E2", "--sequential-for", "--repeats", "1", "--max-seconds", "1", "--out", str(out)])
    assert status == 0
    report = json.loads(out.read_text())
    assert report["host"]["cpu_count"] >= 1
    results = [r for r in report["results"] if r.get("setting") == "E2"]
    assert results and {r["method"] for r in results} <= {"associative", "sequential"}
    assert all(r["seconds_per_epoch"] > 0 and r["compile_seconds"] > 0 for r in results)
    assert subprocess.run(
        [sys.executable, "-m", "bayes_diml", "bench", "--help"], capture_output=True, text=True, timeout=60
    ).stdout.startswith("usage: speed.py")
