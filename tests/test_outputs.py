"""``--out`` and ``--overwrite`` never destroy what a user owns (issue: nothing lost).

Rules (``bayes_diml.inference.storage``): a verb that writes a run folder (``fit``,
``demo``) replaces only a run folder this package wrote, holding nothing else; a verb
that writes one file (``simulate``, ``query``, ``counterfactual``, ``compare``,
``report``, ``reproduce``'s tables) replaces only an existing file, never a folder; both
only with ``--overwrite``. Everything else is refused in one line naming the path (exit
2) and left byte for byte as it was. A property test draws random layouts of existing
files, folders and links, verbs and flags, and checks that no file the package did not
write is deleted or changed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bayes_diml.cli import main

from cli_helpers import CONGESTION_SPEC
from cli_helpers import one_error_line as one_error
from cli_helpers import run_cli as run

SPEC = CONGESTION_SPEC.format(agents=2)

QUERIES = "agent,action,baseline,joint\n0,1,0,0 1\n1,2,0,1 0\n"


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under ``root``: (kind, content hash or link target, mode)."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                state[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                state[rel] = ("dir",)
            else:
                state[rel] = ("file", hashlib.sha256(path.read_bytes()).hexdigest(), stat.S_IMODE(path.stat().st_mode))
    return state


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Spec, data, queries and two small SVI run folders (enough draws for LOO)."""
    root = tmp_path_factory.mktemp("outputs")
    (root / "spec.toml").write_text(SPEC, encoding="utf-8")
    (root / "q.csv").write_text(QUERIES, encoding="utf-8")
    assert main(["simulate", root / "spec.toml", "--episodes", 3, "--rounds", 6, "--out", root / "play.csv"]) == 0
    for name in ("RUN", "RUN2"):
        assert main(["fit", root / "spec.toml", "--data", root / "play.csv", "--method", "svi", "--steps", 20,
                     "--samples", 100, "--out", root / name, "--no-progress"]) == 0
    return root


def fresh_run(work: Path, where: Path) -> Path:
    shutil.copytree(work / "RUN", where)
    return where


# ------------------------------------------------------------------ the cases of the issue
def test_fit_overwrite_refuses_a_file(work, tmp_path, capsys):
    target = tmp_path / "x.csv"
    target.write_text("my results\n")
    status, _, err = run(capsys, "fit", work / "spec.toml", "--data", work / "play.csv", "--method", "map",
                         "--steps", 5, "--out", target, "--overwrite", "--no-progress")
    one_error(status, err, str(target), "is a file")
    assert target.read_text() == "my results\n"


def test_fit_overwrite_refuses_a_folder_it_did_not_write(work, tmp_path, capsys):
    project = tmp_path / "myproject"
    project.mkdir()
    (project / "notes.txt").write_text("do not lose me\n")
    before = snapshot(tmp_path)
    status, _, err = run(capsys, "fit", work / "spec.toml", "--data", work / "play.csv", "--method", "map",
                         "--steps", 5, "--out", project, "--overwrite", "--no-progress")
    one_error(status, err, str(project), "did not write")
    assert snapshot(tmp_path) == before


def test_fit_overwrite_refuses_a_run_folder_holding_a_user_file(work, tmp_path, capsys):
    folder = fresh_run(work, tmp_path / "RUN")
    (folder / "notes.txt").write_text("mine\n")
    before = snapshot(tmp_path)
    status, _, err = run(capsys, "fit", work / "spec.toml", "--data", work / "play.csv", "--method", "map",
                         "--steps", 5, "--out", folder, "--overwrite", "--no-progress")
    one_error(status, err, "notes.txt", "did not write")
    assert snapshot(tmp_path) == before


def test_fit_overwrite_replaces_its_own_run_folder_with_the_umask_mode(work, tmp_path, capsys):
    folder = fresh_run(work, tmp_path / "RUN")
    old = (folder / "fit.json").read_text()
    mask = os.umask(0o027)
    try:
        status, _, err = run(capsys, "fit", work / "spec.toml", "--data", work / "play.csv", "--method", "map",
                             "--steps", 5, "--out", folder, "--overwrite", "--no-progress")
    finally:
        os.umask(mask)
    assert status == 0, err
    assert (folder / "fit.json").read_text() != old  # a MAP run replaced the SVI run
    assert stat.S_IMODE(folder.stat().st_mode) == 0o750  # not mkdtemp's 0700
    assert stat.S_IMODE((folder / "fit.json").stat().st_mode) == 0o640


@pytest.mark.parametrize("verb", ["simulate", "query", "counterfactual", "compare", "report"])
def test_one_file_verbs_never_replace_a_folder(verb, work, tmp_path, capsys):
    folder = tmp_path / ("report.html" if verb == "report" else "out.csv")
    if verb == "report":
        run_dir = fresh_run(work, tmp_path / "R")
        folder = run_dir / "report.html"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine\n")
    before = snapshot(tmp_path)
    args = {
        "simulate": ["simulate", work / "spec.toml", "--episodes", 2, "--rounds", 3, "--out", folder],
        "query": ["query", work / "RUN", "--queries", work / "q.csv", "--out", folder],
        "counterfactual": ["counterfactual", work / "RUN", "--episodes", 2, "--rounds", 3, "--out", folder],
        "compare": ["compare", work / "RUN", work / "RUN2", "--out", folder],
        "report": ["report", tmp_path / "R"],
    }[verb]
    status, _, err = run(capsys, *args, "--overwrite")
    one_error(status, err, str(folder), "is a folder")
    assert snapshot(tmp_path) == before


def test_counterfactual_refuses_an_existing_figure_beside_its_csv(work, tmp_path, capsys):
    (tmp_path / "cf.png").write_bytes(b"my picture")
    status, _, err = run(capsys, "counterfactual", work / "RUN", "--episodes", 2, "--rounds", 3, "--out", tmp_path / "cf.csv")
    one_error(status, err, "cf.png", "--overwrite")
    assert (tmp_path / "cf.png").read_bytes() == b"my picture" and not (tmp_path / "cf.csv").exists()


def test_report_replaces_its_own_page_only_with_overwrite(work, tmp_path, capsys):
    folder = fresh_run(work, tmp_path / "R")
    assert run(capsys, "report", folder)[0] == 0
    status, _, err = run(capsys, "report", folder)
    one_error(status, err, "report.html", "--overwrite")
    assert run(capsys, "report", folder, "--overwrite")[0] == 0


def test_demo_refuses_a_folder_it_did_not_write_before_fitting(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("mine\n")
    before = snapshot(tmp_path)
    status, _, err = run(capsys, "demo", "--out", tmp_path, "--overwrite", "--no-progress")
    one_error(status, err, str(tmp_path), "did not write")
    assert snapshot(tmp_path) == before


def test_reproduce_refuses_a_folder_in_place_of_its_table(tmp_path, capsys):
    (tmp_path / "paper_quick.json").mkdir()
    (tmp_path / "paper_quick.json" / "mine.txt").write_text("mine\n")
    before = snapshot(tmp_path)
    status, _, err = run(capsys, "reproduce", "E2", "--quick", "--seeds", 1, "--out", tmp_path, "--overwrite", "--no-cache")
    one_error(status, err, "paper_quick.json", "is a folder")
    assert snapshot(tmp_path) == before


def test_reproduce_refuses_an_existing_table_without_overwrite(tmp_path, capsys):
    (tmp_path / "paper_quick.md").write_text("my table\n")
    status, _, err = run(capsys, "reproduce", "E2", "--quick", "--seeds", 1, "--out", tmp_path, "--no-cache")
    one_error(status, err, "paper_quick.md", "--overwrite")
    assert (tmp_path / "paper_quick.md").read_text() == "my table\n"


# ------------------------------------------------------------------ the property
LAYOUTS = ["absent", "file", "empty folder", "folder with a file", "run folder", "run folder with a file",
           "link to a file", "link to a folder"]
VERBS = ["fit", "simulate", "query", "counterfactual", "compare"]


def make_layout(work: Path, path: Path, layout: str, outside: Path) -> None:
    """Put ``layout`` at ``path``; links point into ``outside`` (user files too)."""
    if layout == "file":
        path.write_text("user file\n")
    elif layout == "empty folder":
        path.mkdir()
    elif layout == "folder with a file":
        path.mkdir()
        (path / "notes.txt").write_text("user notes\n")
    elif layout.startswith("run folder"):
        fresh_run(work, path)
        if layout.endswith("a file"):
            (path / "notes.txt").write_text("user notes\n")
    elif layout == "link to a file":
        (outside / "target.txt").write_text("link target\n")
        path.symlink_to(outside / "target.txt")
    elif layout == "link to a folder":
        (outside / "dir").mkdir()
        (outside / "dir" / "inner.txt").write_text("inner\n")
        path.symlink_to(outside / "dir")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(verb=st.sampled_from(VERBS), layout=st.sampled_from(LAYOUTS), overwrite=st.booleans(),
       neighbour=st.booleans())
def test_out_never_deletes_or_changes_a_file_the_package_did_not_write(
    verb, layout, overwrite, neighbour, work, tmp_path_factory, capsys
):
    root = tmp_path_factory.mktemp("case")
    space, outside = root / "space", root / "outside"
    space.mkdir()
    outside.mkdir()
    out = space / ("RUN" if verb == "fit" else "out.csv")
    make_layout(work, out, layout, outside)
    if neighbour:  # a user file beside the output, and one named like the counterfactual's figure
        (space / "neighbour.txt").write_text("neighbour\n")
        (space / "out.png").write_text("not a picture\n")
    before = snapshot(root)
    args = {
        "fit": ["fit", work / "spec.toml", "--data", work / "play.csv", "--method", "map", "--steps", 5,
                "--no-progress"],
        "simulate": ["simulate", work / "spec.toml", "--episodes", 2, "--rounds", 3],
        "query": ["query", work / "RUN", "--queries", work / "q.csv"],
        "counterfactual": ["counterfactual", work / "RUN", "--episodes", 2, "--rounds", 3, "--max-draws", 5],
        "compare": ["compare", work / "RUN", work / "RUN2"],
    }[verb]
    status, _, err = run(capsys, *args, "--out", out, *(["--overwrite"] if overwrite else []))
    after = snapshot(root)

    # what the package may have written: the output itself (a one-file output replaces
    # only an existing plain file; a run folder only one of its own) and the figure
    may_change = set()
    if status == 0:
        rel = str(out.relative_to(root))
        may_change |= {rel} | {p for p in after if p.startswith(rel + "/")} | {p for p in before if p.startswith(rel + "/")}
        if verb == "counterfactual":
            may_change.add(str(out.with_suffix(".png").relative_to(root)))
    for path, state in before.items():
        if path in may_change:
            continue
        assert after.get(path) == state, f"{verb} {layout} overwrite={overwrite}: {path} changed ({err})"
    # and what was replaced was only ever allowed to be replaced
    if status == 0 and layout != "absent":
        assert overwrite, f"{verb} replaced an existing {layout} without --overwrite"
        allowed = {"run folder"} if verb == "fit" else {"file"}
        assert layout in allowed, f"{verb} --overwrite replaced a {layout}"
    if status != 0:
        one_error(status, err)
        assert after == before, f"a refused {verb} changed something: {set(after.items()) ^ set(before.items())}"


# ------------------------------------------------------------------ one line, never a traceback
def test_compare_of_a_map_run_names_it_and_the_fix(work, tmp_path, capsys):
    run_map = tmp_path / "MAP"
    assert run(capsys, "fit", work / "spec.toml", "--data", work / "play.csv", "--method", "map", "--steps", 5,
               "--out", run_map, "--no-progress")[0] == 0
    status, _, err = run(capsys, "compare", run_map, work / "RUN", "--out", tmp_path / "c.csv")
    one_error(status, err, "'MAP' is a map fit with 1 posterior draw", "--method nuts or svi")


def test_the_same_set_key_twice_is_refused(work, tmp_path, capsys):
    status, _, err = run(capsys, "counterfactual", work / "RUN", "--set", "learner.beta=2", "--set", "learner.beta=3",
                         "--episodes", 2, "--rounds", 3, "--out", tmp_path / "cf.csv")
    one_error(status, err, "learner.beta", "twice")


def test_method_default_is_shown_in_help(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    assert "default auto" in capsys.readouterr().out


@pytest.mark.parametrize("options,name", [({"num_chains": 0}, "num_chains"), ({"num_samples": -1}, "num_samples"),
                                          ({"target_accept": 1.5}, "target_accept"), ({"num_chains": 2.5}, "num_chains")])
def test_fit_refuses_sampler_options_out_of_range(options, name, work):
    import bayes_diml as bd

    model, _ = bd.read_spec(work / "spec.toml")
    with pytest.raises(bd.DataError, match=rf"{name} = .*expected"):
        bd.fit(model, bd.load_data(work / "play.csv", model), method="nuts", seed=0, **options)


def test_an_unexpected_error_is_one_line_naming_a_log_with_the_traceback(work, capsys, monkeypatch):
    import bayes_diml.inference as inference

    def broken(*args, **kwargs):
        raise IndexError("list index out of range")

    monkeypatch.setattr(inference, "load_fit", broken)  # a bug deep inside a verb
    status, _, err = run(capsys, "query", work / "RUN", "--queries", work / "q.csv", "--out", work / "answers.csv")
    lines = err.strip().splitlines()
    assert status == 1 and len(lines) == 1 and "Traceback" not in err, err
    assert "unexpected IndexError: list index out of range" in lines[0]
    log = Path(lines[0].split("traceback is in ")[1].split(" ")[0])
    text = log.read_text(encoding="utf-8")
    assert "Traceback (most recent call last)" in text and "IndexError" in text and "bayes-diml query" in text
    assert not (work / "answers.csv").exists()
    log.unlink()


TABULAR_SPEC = SPEC.replace('family = "congestion"', 'family = "tabular"').split("[mechanism.truth]")[0] + """
[learner]
rule = "logit_q"
alpha = 0.3
beta = 3.0
eps = 0.05
"""


def test_a_tabular_nuts_fit_prints_no_runtime_warning(work, tmp_path, capsys):
    # gauge-pinned payoffs are constant over the draws: ArviZ divides 0 by 0 for their
    # R-hat and ESS, which the summary shows as "fixed" instead of printing NumPy's warning
    import warnings

    spec = tmp_path / "tab.toml"
    spec.write_text(TABULAR_SPEC, encoding="utf-8")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        status, _, err = run(capsys, "fit", spec, "--data", work / "play.csv", "--method", "nuts", "--chains", 2,
                             "--warmup", 30, "--samples", 30, "--out", tmp_path / "RUN", "--no-progress")
    assert status == 0, err
    runtime = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert not runtime, [str(w.message) for w in runtime]
    assert "Warning" not in err


def test_a_fit_whose_rounds_all_miss_an_agent_still_writes_its_run_folder(work, tmp_path, capsys):
    # count-based families allow absent agents; with no round in which all played there
    # is no joint-action context for the default difference table, which must not lose
    # the fit at the very end
    rows = ["episode,round,agent,action"] + [f"{e},{t},{i},{(e + t + i) % 3}" for e in range(3) for t in range(6)
                                             for i in range(2) if i != t % 2]
    (tmp_path / "gaps.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    status, _, err = run(capsys, "fit", work / "spec.toml", "--data", tmp_path / "gaps.csv", "--method", "map",
                         "--steps", 5, "--out", tmp_path / "RUN", "--no-progress")
    assert status == 0, err
    assert (tmp_path / "RUN" / "payoff_differences.csv").read_text().startswith("agent,action,baseline,joint")
