"""The run report (``bayes-diml report RUN``): a self-contained, valid HTML page that a
headless browser renders without errors, built from the files of a run folder.

One small SVI run folder (3 agents, 3 actions, 4 episodes x 10 rounds, with a shorter
episode and an absent agent) is built once; the expected numbers are counted from the
data file and the run's own CSV / JSON files, not from the report code.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bayes_diml as bd
from bayes_diml.cli import main
from bayes_diml.report import save_counterfactual, write_report
from bayes_diml.run_folder import save_run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HEADINGS = (
    "Data",
    "Diagnostics",
    "Payoff differences",
    "Identifiability",
    "Posterior predictive check",
    "Counterfactuals",
    "Design",
    "Provenance",
)
VOID_TAGS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
BROWSER_TIMEOUT_S = 120
CONSOLE_PROBLEM = re.compile(r":CONSOLE[:(]|Uncaught|net::ERR_")
"""What Chromium's ``--enable-logging=stderr`` prints for a console message (any level: the
page has no script, so any console line is a fault), an uncaught exception or a failed load."""

from test_cli import TINY_SPEC as SPEC  # noqa: E402  (one tiny congestion spec for the CLI tests)

NUM_EPISODES, NUM_ROUNDS, NUM_AGENTS = 4, 10, 3


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run folder fitted with SVI (with the truth), one counterfactual recorded through the
    CLI, and its report; plus the data file and the in-memory fit."""
    root = tmp_path_factory.mktemp("report")
    spec = root / "tiny.toml"
    spec.write_text(SPEC, encoding="utf-8")
    model, truth = bd.read_spec(spec)
    full = root / "full.csv"
    bd.simulate(model, truth, num_episodes=NUM_EPISODES, num_rounds=NUM_ROUNDS, seed=3).to_csv(full)
    frame = pd.read_csv(full)
    shorter = (frame["episode"] == frame["episode"].max()) & (frame["round"] >= 7)  # last episode: 7 rounds
    absent = (frame["episode"] == 0) & (frame["round"] == 4) & (frame["agent"] == 1)  # one absence
    frame = frame[~(shorter | absent)]
    data_path = root / "D.csv"
    frame.to_csv(data_path, index=False)
    data = bd.load_data(data_path, model)
    fit = bd.fit(model, data, method="svi", seed=0, steps=60, num_samples=40, progress=False)
    folder = root / "RUN"
    save_run(fit, folder, data_path=data_path, truth=truth["mechanism"], argv=["bayes-diml", "fit", "tiny.toml"])
    status = main([
        "counterfactual", str(folder), "--set", "mechanism.tau=[0.5,0,0]", "--set", "learner.beta=*1.4",
        "--episodes", "3", "--rounds", "6", "--seed", "2", "--out", str(root / "toll.csv"),
    ])
    assert status == 0
    report = write_report(folder)
    return {"root": root, "folder": folder, "report": report, "rows": frame, "fit": fit}


class _Checker(HTMLParser):
    """Records tags, nesting errors, attributes and text of an HTML page."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.errors, self.counts, self.urls, self.images, self.text = [], [], {}, [], [], []

    def handle_starttag(self, tag, attrs):
        self.counts[tag] = self.counts.get(tag, 0) + 1
        attrs = dict(attrs)
        for name in ("src", "href", "action", "srcset", "poster", "data"):
            if name in attrs:
                self.urls.append((tag, name, attrs[name] or ""))
        if tag == "img":
            self.images.append(attrs.get("src") or "")
        if tag not in VOID_TAGS:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        if tag not in VOID_TAGS:
            self.errors.append(f"self-closed <{tag}/>")
        self.handle_starttag(tag, attrs)
        if tag not in VOID_TAGS:
            self.stack.pop()

    def handle_endtag(self, tag):
        if tag in VOID_TAGS:
            self.errors.append(f"end tag for void <{tag}>")
        elif not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else 'nothing'}>")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def parse(page: str) -> _Checker:
    checker = _Checker()
    checker.feed(page)
    checker.close()
    return checker


def section_text(page: str, anchor: str) -> str:
    """Plain text of ``<section id=anchor>``."""
    match = re.search(rf'<section id="{anchor}">(.*?)</section>', page, flags=re.S)
    assert match, f"no section {anchor!r}"
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", match.group(1))).split())


def assert_valid_self_contained(page: str) -> _Checker:
    checker = parse(page)
    assert page.startswith("<!DOCTYPE html>")
    assert not checker.errors, checker.errors[:5]
    assert not checker.stack, f"unclosed tags: {checker.stack}"
    for tag in ("html", "head", "title", "body"):
        assert checker.counts.get(tag) == 1, f"{checker.counts.get(tag, 0)} <{tag}> elements"
    assert "script" not in checker.counts and "link" not in checker.counts and "iframe" not in checker.counts
    assert "url(" not in page and "@import" not in page  # no resource loaded from CSS
    for tag, name, url in checker.urls:
        assert url.startswith("#") or url.startswith("data:image/png;base64,"), f"<{tag} {name}={url[:60]!r}>"
    for src in checker.images:
        assert src.startswith("data:image/png;base64,"), src[:60]
        assert base64.b64decode(src.split(",", 1)[1], validate=True)[:8] == PNG_SIGNATURE
    return checker


# ------------------------------------------------------------------ the page
def test_report_is_valid_self_contained_html(run):
    page = run["report"].read_text(encoding="utf-8")
    assert run["report"] == run["folder"] / "report.html"
    checker = assert_valid_self_contained(page)
    # forest plot, posterior predictive check, the conditional checks, one counterfactual (no rank plot for SVI)
    assert len(checker.images) == 4
    text = " ".join(checker.text)
    for heading in HEADINGS:
        assert f"<h2>{heading}</h2>" in page and heading in text
    assert "could not be built" not in page and "holds no" not in page  # every piece was found


def test_data_summary_counts_the_rows_of_the_data(run):
    rows = run["rows"]
    text = section_text(run["report"].read_text(encoding="utf-8"), "data")
    total = NUM_EPISODES * NUM_ROUNDS * NUM_AGENTS
    missing = total - len(rows)
    assert missing == 3 * NUM_AGENTS + 1
    lengths = rows.groupby("episode")["round"].max() + 1
    assert f"Episodes {rows['episode'].nunique()}" in text
    assert f"episode lengths {lengths.min()}–{lengths.max()}" in text
    assert f"Agents {rows['agent'].nunique()} Actions 3" in text
    assert f"Entries played {len(rows)} of {total}" in text
    assert f"Missing entries {missing} ({missing / total:.1%}): {3 * NUM_AGENTS} after the end of shorter episodes, 1 where an agent sat out" in text
    assert "Agent labels 0, 1, 2 Action labels 0, 1, 2 Episode labels 0, 1, 2, 3" in text


def test_sections_report_the_run_files(run):
    folder = run["folder"]
    page = run["report"].read_text(encoding="utf-8")
    diagnostics = json.loads((folder / "diagnostics.json").read_text(encoding="utf-8"))
    text = section_text(page, "diagnostics")
    assert "No MCMC convergence diagnostics" in text and "SVI fit" in text
    for warning in diagnostics["warnings"]:
        assert warning in text
    assert "final_elbo" in text

    differences = pd.read_csv(folder / "payoff_differences.csv")
    text = section_text(page, "differences")
    assert "Red crosses mark the true values" in text
    covered = int(differences["covered"].sum())
    assert f"cover the truth for {covered} of {len(differences)} differences" in text

    table = pd.read_csv(folder / "identifiability.csv")
    text = section_text(page, "identifiability")
    for kind in ("parameter", "difference"):
        for verdict, count in table.loc[table["kind"] == kind, "verdict"].value_counts().items():
            assert f"{count} {verdict}" in text

    provenance = json.loads((folder / "provenance.json").read_text(encoding="utf-8"))
    text = section_text(page, "provenance")
    assert "Command bayes-diml fit tiny.toml" in text and "Seed 0" in text
    assert provenance["data_sha256"] in text and provenance["versions"]["jax"] in text


def test_posterior_predictive_coverage_matches_the_fit(run):
    """The share of observed frequencies inside the 90% band, counted from the in-memory fit."""
    fit = run["fit"]
    simulated = fit.posterior_predictive["action_frequency"]
    simulated = simulated.reshape(-1, *simulated.shape[2:])
    observed = fit.observed_frequencies()
    inside = cells = 0
    for t in range(observed.shape[0]):
        for k in range(observed.shape[1]):
            values = np.sort(simulated[:, t, k])
            lo, hi = np.quantile(values, 0.05), np.quantile(values, 0.95)
            cells += 1
            inside += bool(lo - 1e-12 <= observed[t, k] <= hi + 1e-12)
    text = section_text(run["report"].read_text(encoding="utf-8"), "predictive")
    assert f"inside the band in {inside} of {cells} round × action cells" in text


def test_counterfactual_cli_records_its_result_in_the_run_folder(run, capsys):
    root, folder = run["root"], run["folder"]
    record = folder / "counterfactuals"
    assert (record / "toll.csv").read_bytes() == (root / "toll.csv").read_bytes()
    assert (record / "toll.png").read_bytes()[:8] == PNG_SIGNATURE
    meta = json.loads((record / "toll.json").read_text(encoding="utf-8"))
    assert meta["command"].startswith("bayes-diml counterfactual ") and "--set 'learner.beta=*1.4'" in meta["command"]
    assert meta["intervention"]["learner"] == {"beta": "*1.4"} and meta["intervention"]["seed"] == 2
    text = section_text(run["report"].read_text(encoding="utf-8"), "counterfactuals")
    assert "1 counterfactual run on this fit" in text and meta["command"] in text
    assert "tau = [0.5, 0.0, 0.0]" in text and "beta *1.4" in text
    final = pd.read_csv(record / "toll.csv").query("round == 5")
    assert len(final) == 4  # 3 actions + welfare
    for value in final["mean"]:
        assert f"{value:.4g}" in text


def test_a_second_record_of_the_same_name_gets_a_new_name(run, tmp_path):
    folder = tmp_path / "RUN"
    shutil.copytree(run["folder"], folder)
    result = run["fit"].counterfactual(num_episodes=2, num_rounds=3, seed=0)
    first = save_counterfactual(folder, result, "toll", command=["bayes-diml", "x"])
    assert first.name == "toll-2.csv"
    again = save_counterfactual(folder, result, "toll", command="bayes-diml y", overwrite=True)
    assert again.name == "toll.csv"
    assert json.loads((folder / "counterfactuals" / "toll.json").read_text(encoding="utf-8"))["command"] == "bayes-diml y"
    page = write_report(folder, overwrite=True).read_text(encoding="utf-8")
    assert "2 counterfactuals run on this fit" in section_text(page, "counterfactuals")


def test_nuts_diagnostics_in_plain_words_and_text_is_escaped(run, tmp_path):
    folder = tmp_path / "RUN"
    shutil.copytree(run["folder"], folder)
    good = {"method": "nuts", "warnings": [], "max_rhat": 1.004, "min_ess_bulk": 1800.0, "min_ess_tail": 950.0,
            "divergences": 0, "ebfmi": [0.9, 1.1], "mean_leapfrog_steps": 14.2, "ok": True}
    (folder / "diagnostics.json").write_text(json.dumps(good), encoding="utf-8")
    text = section_text(write_report(folder, overwrite=True).read_text(encoding="utf-8"), "diagnostics")
    assert "The sampler converged" in text and "R-hat is at most 1.004" in text
    assert "1800 (bulk) and 950 (tail)" in text and "0 divergent transitions" in text

    hostile = "3 divergent transitions <script>alert('x')</script> & <img src=http://example.com/a.png>"
    bad = {**good, "divergences": 3, "warnings": [hostile], "ok": False}
    (folder / "diagnostics.json").write_text(json.dumps(bad), encoding="utf-8")
    page = write_report(folder, overwrite=True).read_text(encoding="utf-8")
    assert_valid_self_contained(page)  # no <script>, no external src: the warning was escaped
    text = section_text(page, "diagnostics")
    assert "Check these before trusting the results" in text and hostile in text


def test_missing_pieces_become_sentences(run, tmp_path):
    folder = tmp_path / "old_run"
    shutil.copytree(run["folder"], folder)
    for name in ("summary.csv", "identifiability.csv", "payoff_differences.png", "posterior_predictive.png",
                 "provenance.json", "report.html"):
        (folder / name).unlink()
    shutil.rmtree(folder / "counterfactuals")
    (folder / "diagnostics.json").write_text("{not json", encoding="utf-8")
    page = write_report(folder, overwrite=True).read_text(encoding="utf-8")
    assert_valid_self_contained(page)
    for fragment in (
        "holds no summary.csv", "holds no identifiability.csv", "holds no payoff_differences.png",
        "holds no posterior_predictive.png", "holds no provenance.json", "diagnostics.json could not be read",
        "No counterfactual has been run",
    ):
        assert fragment in html.unescape(page), fragment


def test_a_bare_fit_folder_gets_a_report(run, tmp_path):
    """``Fit.save`` writes only the fit: the report says where the rest comes from."""
    folder = tmp_path / "bare"
    run["fit"].save(folder)
    page = write_report(folder, overwrite=True).read_text(encoding="utf-8")
    assert_valid_self_contained(page)
    assert "holds only the fit" in page and "holds no diagnostics.json" in page
    assert f"Episodes {NUM_EPISODES}" in section_text(page, "data")


def test_cli_report_verb(run, tmp_path, capsys):
    status = main(["report", str(run["folder"]), "--overwrite"])
    out, err = capsys.readouterr()
    assert status == 0, err
    assert out.strip() == f"wrote {run['folder'] / 'report.html'}"
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.csv").write_text("x\n", encoding="utf-8")
    for target, fragment in (("nowhere", "no such run folder"), ("empty", "not a run folder"), ("file.csv", "not a run folder")):
        status = main(["report", str(tmp_path / target)])
        out, err = capsys.readouterr()
        assert status == 2
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], err
    assert not (tmp_path / "empty" / "report.html").exists()


# ------------------------------------------------------------------ the browser
@pytest.fixture(scope="module")
def chromium():
    """Path of a Chromium binary: a skip where none is found, a failure when ``CI`` is set."""
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI"):
        pytest.fail("CI is set but no chromium binary is on PATH; .ci/run installs Debian's chromium package")
    pytest.skip("no chromium binary on PATH (apt-get install chromium); this test never skips when CI is set")


def browse(chromium: str, page: Path, tmp_path: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--enable-logging=stderr", "--v=0", f"--user-data-dir={tmp_path / 'profile'}", *flags, page.as_uri()],
        capture_output=True, text=True, timeout=BROWSER_TIMEOUT_S,
    )


def test_headless_chromium_renders_the_report(run, chromium, tmp_path):
    dom = browse(chromium, run["report"], tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    for heading in HEADINGS:
        assert f"<h2>{heading}</h2>" in dom.stdout, heading
    problems = [line for line in dom.stderr.splitlines() if CONSOLE_PROBLEM.search(line)]
    assert not problems, problems

    shot = tmp_path / "shot.png"
    result = browse(chromium, run["report"], tmp_path, f"--screenshot={shot}", "--window-size=1200,1600")
    assert result.returncode == 0, result.stderr[-2000:]
    assert not [line for line in result.stderr.splitlines() if CONSOLE_PROBLEM.search(line)]
    assert shot.read_bytes()[:8] == PNG_SIGNATURE
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (1600, 1200)
    assert pixels.std() > 10 and (pixels < 128).mean() > 0.005  # text and figures, not a blank page


def test_console_check_catches_a_script_error(chromium, tmp_path):
    """The stderr check above can fail: a page with a script error is caught."""
    page = tmp_path / "bad.html"
    page.write_text(
        "<!DOCTYPE html><html><head><title>bad</title></head><body><p>x</p>"
        "<script>undefinedFunction();</script></body></html>",
        encoding="utf-8",
    )
    result = browse(chromium, page, tmp_path, "--dump-dom")
    assert result.returncode == 0
    assert [line for line in result.stderr.splitlines() if CONSOLE_PROBLEM.search(line)]
