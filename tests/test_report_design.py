"""The Design section of the run report (issue 18, point 6): every design recorded by
``bayes-diml design RUN ...`` in ``RUN/designs/`` gets its settings, a table of the
recommended / status-quo / plug-in lever values with the objective under each, the paired
differences, a figure, and a warning when the data do not show the recommendation wins.

One run folder (a known-tau congestion model, a short MAP + Laplace fit) and one design
recorded through the CLI are built once; the expected numbers are read from the design's
JSON file with ``json``, not from the report code, and rounded as the page rounds them
(four significant digits, integers without a decimal point).
"""

from __future__ import annotations

import html
import json
import shutil

import numpy as np
import pytest
from test_report import assert_valid_self_contained, section_text

import bayes_diml as bd
from bayes_diml.cli import main
from bayes_diml.learners import LEARNERS
from bayes_diml.mechanisms import Congestion
from bayes_diml.model import Model
from bayes_diml.plots import plot_design
from bayes_diml.report import write_report

N, A = 3, 3
TAU = [0.05, 0.15, 0.10]
LEARNER = {"alpha": 0.25, "beta": 3.0, "eps": 0.06}
TRUTH = {"mechanism": {"c1": np.array([0.20, 0.30, 0.15]), "c2": np.array([0.10, 0.06, 0.12]), "tau": np.array(TAU)},
         "learner": dict(LEARNER)}
NOT_SHOWN = "the data do not show the recommendation beats the status quo"
HOSTILE_NAME = "<b onmouseover=alert(1)>"
HOSTILE_COMMAND = "bayes-diml design <script>alert('x')</script> & <img src=http://example.com/a.png>"


def shown(value: float) -> str:
    """A number as the page writes it: four significant digits, integers bare."""
    value = float(value)
    return str(int(value)) if value.is_integer() and abs(value) < 1e6 else f"{value:.4g}"


@pytest.fixture(scope="module")
def designed(tmp_path_factory):
    """A fitted run folder (tau known), one design recorded by the CLI, and the report."""
    root = tmp_path_factory.mktemp("report_design")
    model = Model(Congestion(num_agents=N, num_actions=A), LEARNERS["logit_q"], learner_params=dict(LEARNER),
                  mechanism_known={"tau": np.array(TAU)})
    data = bd.simulate(model, TRUTH, num_episodes=16, num_rounds=10, seed=1)
    fit = bd.fit(model, data, method="map", seed=0, steps=120, restarts=1, progress=False, laplace=True,
                 num_samples=60, posterior_predictive_draws=1, ppc=False)
    folder = root / "RUN"
    fit.save(folder)
    status = main([str(a) for a in (
        "design", folder, "--lever", "tau", "--lower", "0", "--upper", "[0.4, 0.3, 0.4]", "--objective",
        "net_welfare", "--episodes", 2, "--rounds", 6, "--seed", 1, "--max-draws", 6, "--candidates", 4,
        "--refinements", 1, "--out", root / "toll.json", "--no-progress",
    )])
    assert status == 0
    assert main(["report", str(folder)]) == 0
    record = json.loads((folder / "designs" / "toll.json").read_text(encoding="utf-8"))
    return {"root": root, "folder": folder, "report": folder / "report.html", "record": record}


def _report(folder) -> str:
    return write_report(folder, overwrite=True).read_text(encoding="utf-8")


def _copy(designed, tmp_path):
    folder = tmp_path / "RUN"
    shutil.copytree(designed["folder"], folder)
    return folder


def _write(folder, stem: str, record: dict) -> None:
    (folder / "designs" / f"{stem}.json").write_text(json.dumps(record), encoding="utf-8")


# ------------------------------------------------------------------ the page
def test_design_section_is_valid_self_contained_html_with_one_figure(designed):
    page = designed["report"].read_text(encoding="utf-8")
    checker = assert_valid_self_contained(page)
    assert '<section id="design">\n<h2>Design</h2>' in page and '<a href="#design">Design</a>' in page
    section = page.split('<section id="design">', 1)[1].split("</section>", 1)[0]
    assert section.count("<img ") == 1 and section.count("<h3>toll</h3>") == 1
    assert len(checker.images) == 1  # a bare Fit.save folder: the design's figure is the only one
    assert "could not be built" not in page and "not a design record" not in page


def test_design_section_shows_the_recorded_numbers(designed):
    record = designed["record"]
    text = section_text(designed["report"].read_text(encoding="utf-8"), "design")
    settings, objective = record["settings"], record["objective"]
    assert record["command"] in text and record["command"].startswith("bayes-diml design ")
    assert "Lever tau" in text and "Bounds lower [0, 0, 0], upper [0.4, 0.3, 0.4]" in text
    assert "Objective net_welfare" in text and "Risk posterior mean of the objective" in text
    assert f"Seed {settings['seed']}" in text
    assert (f"{settings['num_draws']} posterior draws (at most 6) × 2 episodes × 6 rounds per candidate; "
            f"{settings['candidates_evaluated']} candidates evaluated") in text
    for name, label in (("recommended", "recommended"), ("status_quo", "status quo"), ("plug_in", "plug-in")):
        entry = objective[name]
        row = " ".join([label, *(shown(v) for v in record[name]["tau"]), shown(entry["mean"]), shown(entry["q05"]),
                        shown(entry["q95"])])
        assert row in text, row
    assert [shown(v) for v in record["status_quo"]["tau"]] == [shown(v) for v in TAU]  # the known value
    for label, key in (("recommended − status quo", "difference"), ("recommended − plug-in", "versus_plug_in")):
        d = objective[key]
        row = " ".join([label, shown(d["mean"]), shown(d["q05"]), shown(d["q95"]), shown(d["p_better"])])
        assert row in text, row
    difference = objective["difference"]
    expected = difference["p_better"] < 0.5 or difference["q05"] <= 0 <= difference["q95"]
    assert (NOT_SHOWN in text) == expected


def test_warning_follows_p_better_and_the_band(designed, tmp_path):
    folder = _copy(designed, tmp_path)
    record = designed["record"]
    cases = {
        "clear": {"mean": 0.5, "q05": 0.1, "q95": 0.9, "p_better": 0.97},
        "straddles": {"mean": 0.2, "q05": -0.1, "q95": 0.6, "p_better": 0.8},
        "worse": {"mean": 0.1, "q05": 0.05, "q95": 0.2, "p_better": 0.4},
    }
    (folder / "designs" / "toll.json").unlink()
    for stem, difference in cases.items():
        _write(folder, stem, {**record, "objective": {**record["objective"], "difference": difference}})
    page = _report(folder)
    assert_valid_self_contained(page)
    text = section_text(page, "design")
    assert text.index("clear") < text.index("straddles") < text.index("worse")  # sorted by name
    blocks = {stem: text.split(f" {stem} ", 1)[1] for stem in cases}
    assert NOT_SHOWN not in blocks["clear"].split(" straddles ")[0]
    assert NOT_SHOWN in blocks["straddles"].split(" worse ")[0]
    assert NOT_SHOWN in blocks["worse"]
    assert "3 designs searched on this fit" in text


def test_hostile_name_and_command_are_escaped(designed, tmp_path):
    folder = _copy(designed, tmp_path)
    _write(folder, HOSTILE_NAME, {**designed["record"], "name": HOSTILE_NAME, "command": HOSTILE_COMMAND})
    page = _report(folder)
    assert_valid_self_contained(page)  # no <script>, no external src
    assert HOSTILE_NAME not in page and HOSTILE_COMMAND not in page
    text = section_text(page, "design")
    assert HOSTILE_NAME in text and HOSTILE_COMMAND in text


def test_no_designs_and_a_broken_record_become_sentences(designed, tmp_path):
    folder = _copy(designed, tmp_path)
    shutil.rmtree(folder / "designs")
    page = _report(folder)
    assert_valid_self_contained(page)
    assert "No design has been run on this run folder" in section_text(page, "design")
    (folder / "designs").mkdir()
    (folder / "designs" / "a.json").write_text("{not json", encoding="utf-8")
    _write(folder, "b", {"lever": "tau"})
    page = _report(folder)
    assert_valid_self_contained(page)
    text = section_text(page, "design")
    assert "a.json could not be read" in text and "b.json is not a design record" in text
    assert "could not be built" not in html.unescape(page)


def test_plot_design_draws_the_recorded_bands(designed):
    """The bars span each design's recorded band and the dots sit at its mean; ``ax`` is drawn on."""
    from matplotlib.figure import Figure

    record = designed["record"]
    ax = Figure().subplots()
    assert plot_design(record, ax=ax) is ax.figure
    spans = sorted(tuple(np.round(seg[:, 0], 9)) for coll in ax.collections if hasattr(coll, "get_segments")
                   for seg in coll.get_segments())
    dots = sorted(float(np.round(coll.get_offsets()[0][0], 9)) for coll in ax.collections if hasattr(coll, "get_offsets")
                  and not hasattr(coll, "get_segments"))
    objective = record["objective"]
    names = ("recommended", "status_quo", "plug_in")
    assert spans == sorted(tuple(np.round([objective[n]["q05"], objective[n]["q95"]], 9)) for n in names)
    assert dots == sorted(float(np.round(objective[n]["mean"], 9)) for n in names)
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert sorted(labels) == sorted(["recommended", "status quo", "plug-in"])
