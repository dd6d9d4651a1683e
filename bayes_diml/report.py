"""The run report: one self-contained HTML page per run folder (``bayes-diml report RUN``).

    RUN/report.html

Sections, in order: data, diagnostics, payoff differences, identifiability,
posterior predictive check, counterfactuals, provenance. Everything is read from
the files the run folder already holds (see ``run_folder.py``): the tables from
its CSV and JSON files, the figures from its PNGs, embedded as base64 ``data:``
URIs. Nothing is refitted or recomputed; the one number derived here is the share
of observed action frequencies inside the stored posterior predictive band. The
page loads no external resource and runs no script. A piece that is missing or
unreadable (an older run folder, a bare ``Fit.save``) becomes one sentence in its
section instead of an error.

Counterfactuals run by ``bayes-diml counterfactual RUN ...`` are recorded in the
run folder by ``save_counterfactual``::

    RUN/counterfactuals/NAME.csv   the result (CounterfactualResult.to_frame)
    RUN/counterfactuals/NAME.png   its plot
    RUN/counterfactuals/NAME.json  the command line, the intervention, the date
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import re
import shlex
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from ._io import atomic_write, write_text_atomic
from ._json import dumps
from .errors import DataError
from .inference.results import CREDIBLE_LEVEL, interval_columns
from .inference.storage import check_output_file

__all__ = ["write_report", "save_counterfactual", "REPORT_NAME", "COUNTERFACTUALS_DIR", "SECTIONS"]

REPORT_NAME = "report.html"
"""File name of the report inside the run folder."""

COUNTERFACTUALS_DIR = "counterfactuals"
"""Sub-folder of a run folder where ``bayes-diml counterfactual`` records its results."""

SECTIONS = (
    ("data", "Data"),
    ("diagnostics", "Diagnostics"),
    ("differences", "Payoff differences"),
    ("identifiability", "Identifiability"),
    ("predictive", "Posterior predictive check"),
    ("counterfactuals", "Counterfactuals"),
    ("provenance", "Provenance"),
)
"""(anchor, heading) of each section of the page, in order."""

TABLE_ROWS = 30
"""Rows shown per table (the CSV in the run folder has them all)."""

PREDICTIVE_BAND = CREDIBLE_LEVEL
"""Mass of the posterior predictive band (the one ``plots.plot_posterior_predictive`` draws): ``CREDIBLE_LEVEL``."""

PREDICTIVE_MIN_DRAWS = 20
"""Fewer simulated draws than this (a MAP fit has one) give no coverage sentence."""

_RUN_MARKERS = ("fit.json", "posterior.nc")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d232a;
       max-width: 1100px; margin: 0 auto; padding: 1.5em 2em 4em; line-height: 1.45; background: #fff; }
h1 { font-size: 1.7em; margin-bottom: 0.1em; }
h2 { font-size: 1.3em; border-bottom: 2px solid #d0d7de; padding-bottom: 0.2em; margin-top: 2em; }
h3 { font-size: 1.05em; margin-top: 1.5em; }
p.subtitle { color: #57606a; margin-top: 0; }
nav { background: #f6f8fa; border: 1px solid #d0d7de; border-radius: 6px; padding: 0.5em 1em; }
nav a { margin-right: 1.2em; color: #0969da; text-decoration: none; }
table { border-collapse: collapse; margin: 0.6em 0 1em; font-size: 0.88em; }
th, td { border: 1px solid #d0d7de; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.facts th { width: 14em; }
img { max-width: 100%; height: auto; border: 1px solid #eaeef2; margin: 0.4em 0; }
pre, code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.9em; }
pre { background: #f6f8fa; padding: 0.5em 0.8em; border-radius: 6px; white-space: pre-wrap; word-break: break-all; }
.verdict { padding: 0.6em 1em; border-radius: 6px; margin: 0.8em 0; }
.ok { background: #dafbe1; border: 1px solid #4ac26b; }
.warn { background: #fff8c5; border: 1px solid #d4a72c; }
.bad { background: #ffebe9; border: 1px solid #ff8182; }
p.missing { color: #57606a; font-style: italic; }
p.note { color: #57606a; font-size: 0.9em; }
details { margin: 0.8em 0; }
summary { cursor: pointer; color: #0969da; }
footer { margin-top: 3em; color: #57606a; font-size: 0.85em; }
"""


# ------------------------------------------------------------------ entry points
def write_report(run_dir, *, overwrite: bool = False) -> Path:
    """Write ``RUN/report.html``: one self-contained page summarising a run folder.

    Args:
        run_dir: a run folder written by ``bayes-diml fit`` / ``demo``
            (``run_folder.save_run``) or by ``Fit.save``.
        overwrite: replace an existing ``report.html`` (a file; anything else of that
            name is never replaced).

    Returns:
        The path of the report.

    Raises:
        DataError: when ``run_dir`` is not a folder, or holds neither ``fit.json``
            nor ``posterior.nc``. Missing or unreadable pieces inside a run folder
            are reported on the page, not raised.
    """
    run = Path(run_dir)
    if not run.exists():
        raise DataError(f"{run}: no such run folder")
    if not run.is_dir():
        raise DataError(f"{run}: not a run folder (it is a file)")
    if not any((run / name).is_file() for name in _RUN_MARKERS):
        raise DataError(f"{run}: not a run folder (neither {' nor '.join(_RUN_MARKERS)} is in it)")
    out = run / REPORT_NAME
    check_output_file(out, overwrite)
    write_text_atomic(out, _page(run))
    return out


def save_counterfactual(run_dir, result, name: str, command=None, overwrite: bool = False) -> Path:
    """Record a counterfactual in ``RUN/counterfactuals/`` so the report shows it.

    Writes ``NAME.csv`` (``result.to_frame()``), ``NAME.png`` (``result.plot()``) and
    ``NAME.json`` (the command line, ``result.intervention`` and the date, UTC), each
    to a temporary file renamed into place, the JSON last.

    Args:
        run_dir: the run folder the counterfactual was computed from.
        result: a ``CounterfactualResult``.
        name: record name (characters outside ``A-Za-z0-9._-`` become ``_``).
        command: the command line (a list of arguments, or a string), if any.
        overwrite: replace a record of the same name; otherwise a free name
            ``NAME-2``, ``NAME-3``, ... is used.

    Returns:
        The path of the record's CSV.
    """
    folder = Path(run_dir) / COUNTERFACTUALS_DIR
    folder.mkdir(exist_ok=True)
    base = _SAFE_NAME.sub("_", str(name)).strip("._") or "counterfactual"
    stem, k = base, 1
    while not overwrite and any((folder / f"{stem}{ext}").exists() for ext in (".csv", ".png", ".json")):
        k += 1
        stem = f"{base}-{k}"
    write_text_atomic(folder / f"{stem}.csv", result.to_frame().to_csv(index=False))
    figure = result.plot()
    atomic_write(folder / f"{stem}.png", lambda handle: figure.savefig(handle, format="png", dpi=110), binary=True)
    if command is not None and not isinstance(command, str):
        command = shlex.join(str(part) for part in command)
    record = {
        "name": stem,
        "command": command,
        "intervention": result.intervention,
        "date": _now(),
    }
    write_text_atomic(folder / f"{stem}.json", dumps(record))
    return folder / f"{stem}.csv"


# ------------------------------------------------------------------ the page
def _page(run: Path) -> str:
    fit_meta, fit_problem = _read_json(run / "fit.json")
    info = fit_meta.get("info", {}) if isinstance(fit_meta, dict) else {}
    method = fit_meta.get("method") if isinstance(fit_meta, dict) else None
    spec_text = _spec_line(run)
    title = f"Run report: {run.resolve().name}"
    subtitle = " · ".join(x for x in (spec_text, _method_line(method, info)) if x)
    body = [
        f"<h1>{_e(title)}</h1>",
        f'<p class="subtitle">{_e(subtitle)}</p>' if subtitle else "",
        "<nav>" + "".join(f'<a href="#{anchor}">{_e(heading)}</a>' for anchor, heading in SECTIONS) + "</nav>",
    ]
    builders = {
        "data": _data_section,
        "diagnostics": _diagnostics_section,
        "differences": _differences_section,
        "identifiability": _identifiability_section,
        "predictive": _predictive_section,
        "counterfactuals": _counterfactuals_section,
        "provenance": _provenance_section,
    }
    for anchor, heading in SECTIONS:
        try:
            content = builders[anchor](run)
        except Exception as err:  # a report never fails on one bad piece  # noqa: BLE001
            content = _missing(f"This section could not be built: {type(err).__name__}: {err}")
        body.append(f'<section id="{anchor}">\n<h2>{_e(heading)}</h2>\n{content}\n</section>')
    if fit_problem:
        body.insert(2, _missing(fit_problem))
    if not any((run / name).exists() for name in ("diagnostics.json", "provenance.json", "summary.csv")):
        body.insert(2, _missing(
            "This folder holds only the fit (as Fit.save writes it): the diagnostics, tables and plots come with "
            "run folders written by `bayes-diml fit` or bayes_diml.run_folder.save_run."
        ))
    body.append(
        f"<footer>Written by bayes_diml {_e(_version('bayes_diml') or '?')} on {_e(_now())} "
        f"from the files in {_e(str(run.resolve()))}.</footer>"
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(part for part in body if part)
        + "\n</body>\n</html>\n"
    )


# ------------------------------------------------------------------ sections
def _data_section(run: Path) -> str:
    from .loading import load_data
    from .spec import read_spec

    path = run / "data.csv"
    if not path.is_file():
        return _missing("The run folder holds no data.csv, so the data cannot be summarised.")
    model = None
    if (run / "spec.toml").is_file():
        try:
            model = read_spec(run / "spec.toml")[0]
        except DataError:
            model = None
    try:
        data = load_data(path, model)
    except DataError as err:
        return _missing(f"data.csv could not be read: {err}")
    E, T, n = data.actions.shape
    mask = np.asarray(data.mask, bool)
    played_rounds = (~mask).any(axis=2)  # (E, T)
    lengths = np.where(played_rounds.any(axis=1), T - np.argmax(played_rounds[:, ::-1], axis=1), 0)
    after_end = int(n * (T - lengths).sum())
    missing = int(mask.sum())
    total = E * T * n
    within = missing - after_end
    rows = [
        ("Episodes", f"{E}"),
        ("Rounds", f"{T} (rounds {data.first_round}–{data.first_round + T - 1}); episode lengths "
         + (f"{lengths.min()}–{lengths.max()}" if lengths.min() != lengths.max() else f"all {lengths.min()}")),
        ("Agents", f"{n}"),
        ("Actions", f"{data.num_actions}"),
        ("Entries played", f"{total - missing} of {total} (episode × round × agent)"),
        ("Missing entries", f"{missing} ({missing / total:.1%}): {after_end} after the end of shorter episodes, "
         f"{within} where an agent sat out a round within an episode"),
        ("Agent labels", _labels(data.agent_labels)),
        ("Action labels", _labels(data.action_labels)),
        ("Episode labels", _labels(data.episode_labels)),
        ("Realised payoffs", "present (column payoff)" if data.payoff is not None else "not in the data"),
    ]
    note = "" if model is not None else _missing("spec.toml is missing or unreadable: the data were read without the model.")
    return _facts(rows) + note


def _diagnostics_section(run: Path) -> str:
    from .inference.diagnostics import EBFMI_MIN
    from .inference.results import ESS_MIN, RHAT_MAX

    parts = []
    diagnostics, problem = _read_json(run / "diagnostics.json")
    if problem:
        parts.append(_missing(problem + " No convergence verdict can be given."))
    elif not isinstance(diagnostics, dict):
        parts.append(_missing("diagnostics.json does not hold a diagnostics record."))
    else:
        warnings = [str(w) for w in diagnostics.get("warnings", [])]
        method = str(diagnostics.get("method", "?"))
        if method == "nuts":
            rhat = _float(diagnostics.get("max_rhat"))
            ess_bulk, ess_tail = _float(diagnostics.get("min_ess_bulk")), _float(diagnostics.get("min_ess_tail"))
            divergences = diagnostics.get("divergences")
            ebfmi = [_float(x) for x in diagnostics.get("ebfmi", [])]
            words = (
                f"R-hat is at most {_num(rhat)} (the chains agree when it is at most {RHAT_MAX}); the smallest "
                f"effective sample sizes are {_num(ess_bulk, '.0f')} (bulk) and {_num(ess_tail, '.0f')} (tail), "
                f"against the {ESS_MIN} wanted for stable {CREDIBLE_LEVEL:.0%} intervals; the sampler met {divergences} divergent "
                f"transition{'s' if divergences != 1 else ''}"
                + (f"; E-BFMI is at least {_num(min(ebfmi))} (wanted: {EBFMI_MIN} or more)." if ebfmi else ".")
            )
            if not warnings:
                parts.append(f'<div class="verdict ok"><strong>The sampler converged.</strong> {_e(words)}</div>')
            else:
                parts.append(
                    '<div class="verdict bad"><strong>Check these before trusting the results:</strong>'
                    + _list(warnings) + f"<p>{_e(words)}</p></div>"
                )
            rows = [
                ("max R-hat", _num(rhat), f"≤ {RHAT_MAX}"),
                ("min bulk ESS", _num(ess_bulk, ".0f"), f"≥ {ESS_MIN}"),
                ("min tail ESS", _num(ess_tail, ".0f"), f"≥ {ESS_MIN}"),
                ("divergent transitions", str(divergences), "0"),
                ("E-BFMI per chain", ", ".join(_num(x) for x in ebfmi) or "–", f"≥ {EBFMI_MIN}"),
                ("mean leapfrog steps per draw", _num(_float(diagnostics.get("mean_leapfrog_steps")), ".0f"), ""),
            ]
            parts.append(_table(pd.DataFrame(rows, columns=["diagnostic", "value", "wanted"])))
        else:
            parts.append(
                f'<div class="verdict warn"><strong>No MCMC convergence diagnostics:</strong> this is a '
                f"{_e(method.upper())} fit, an approximation whose R-hat, ESS and divergences do not exist."
                + _list(warnings) + "</div>"
            )
            rows = [(k, _num(_float(v)) if not isinstance(v, int) else str(v))
                    for k, v in diagnostics.items() if k in ("final_elbo", "optimum_spread", "restarts")]
            if rows:
                parts.append(_table(pd.DataFrame(rows, columns=["optimisation", "value"])))
    if isinstance(diagnostics, dict) and diagnostics.get("method") not in (None, "nuts"):
        parts.append(_missing("Trace and rank plots are MCMC diagnostics: they say nothing about this fit."))
    else:
        parts.append(
            "<details><summary>Trace and rank plots (well-mixed chains give flat rank histograms)</summary>"
            + _image(run / "rank_trace.png", "trace and rank histograms per chain") + "</details>"
        )
    parts.append("<h3>Parameter summary</h3>")
    summary, problem = _read_csv(run / "summary.csv", index_col=0)
    if problem:
        parts.append(_missing(problem))
    else:
        summary.index.name = "parameter"
        parts.append(_table(summary.reset_index(), note="summary.csv"))
    return "\n".join(parts)


def _differences_section(run: Path) -> str:
    from .run_folder import FOREST_ROWS

    table, problem = _read_csv(run / "payoff_differences.csv")
    parts = [
        "<p>Payoff differences Δ = M(action, a₋ᵢ)ᵢ − M(baseline, a₋ᵢ)ᵢ: how much more agent i is paid "
        "for playing <em>action</em> instead of <em>baseline</em> while the others play as in "
        "<em>joint</em>. Under full-information learners these, not payoff levels, are what the data "
        f"identify. Bars are {CREDIBLE_LEVEL:.0%} posterior intervals; grey rows are contexts never seen in the data.</p>"
    ]
    if problem:
        parts.append(_missing(problem))
    else:
        if "truth" in table.columns:
            sentence = "Red crosses mark the true values of this simulated run."
            if "covered" in table.columns and len(table):
                covered = table["covered"].astype(str).str.lower().isin(("true", "1")).to_numpy()
                sentence += (
                    f" The {CREDIBLE_LEVEL:.0%} intervals cover the truth for {int(covered.sum())} of {len(table)} differences "
                    f"({covered.mean():.0%})."
                )
            parts.append(f"<p>{_e(sentence)}</p>")
        else:
            parts.append("<p>No true parameters are known for this run: the plot shows the posterior only.</p>")
        if len(table) > FOREST_ROWS:
            parts.append(f'<p class="note">The plot shows the first {FOREST_ROWS} of {len(table)} rows.</p>')
    parts.append(_image(run / "payoff_differences.png", "forest plot of payoff differences"))
    if not problem:
        parts.append(_table(table, note="payoff_differences.csv"))
    return "\n".join(parts)


def _identifiability_section(run: Path) -> str:
    from .inference.identifiability import IDENTIFIED_BELOW, WEAKLY_IDENTIFIED_BELOW

    frame, problem = _read_csv(run / "identifiability.csv")
    if problem:
        return _missing(problem)
    if "kind" not in frame.columns or "verdict" not in frame.columns:
        return _missing("identifiability.csv lacks its kind / verdict columns.")
    parts = [
        f"<p>Contraction = posterior sd / prior sd: below {IDENTIFIED_BELOW} the data pin a quantity down "
        f"(identified), up to {WEAKLY_IDENTIFIED_BELOW} they inform it (weakly identified), above that its "
        "posterior is its prior (prior-driven). <em>Not identified on its own</em>: the coordinate lies along "
        "a flat direction of the likelihood; only combinations of it with others are identified. "
        "<code>bayes-diml fit</code> names those directions when it finishes "
        "(in Python: <code>fit.identifiability().verdict()</code>).</p>"
    ]
    for kind, heading, columns in (
        ("parameter", "Parameters", ["name", "entry", "prior_sd", "posterior_sd", "contraction", "flat_loading", "verdict"]),
        ("difference", "Payoff differences", ["entry", "in_support", "prior_sd", "posterior_sd", "contraction", "verdict"]),
    ):
        rows = frame[frame["kind"] == kind]
        if not len(rows):
            continue
        counts = rows["verdict"].value_counts()
        parts.append(f"<h3>{_e(heading)}</h3>")
        parts.append(
            f"<p>{len(rows)} {'entries' if kind == 'parameter' else 'queried differences'}: "
            + _e(", ".join(f"{int(c)} {v}" for v, c in counts.items())) + ".</p>"
        )
        parts.append(_table(rows[[c for c in columns if c in rows.columns]], note="identifiability.csv"))
    return "\n".join(parts)


def _predictive_section(run: Path) -> str:
    parts = [
        "<p>Observed share of agents playing each action in each round (black) against the "
        f"{PREDICTIVE_BAND:.0%} posterior predictive band (blue): play simulated from posterior draws, "
        "with as many episodes and rounds as the data.</p>"
    ]
    share = _predictive_coverage(run / "posterior.nc")
    if share is not None and share[2] < PREDICTIVE_MIN_DRAWS:
        parts.append(
            f"<p>The band comes from {share[2]} posterior draw{'s' if share[2] != 1 else ''}: too few to judge "
            "whether the observed frequencies fall inside it.</p>"
        )
    elif share is not None:
        inside, cells, _ = share
        parts.append(
            f"<p>The observed frequency lies inside the band in {inside} of {cells} round × action cells "
            f"({inside / cells:.0%}; about {PREDICTIVE_BAND:.0%} or more is expected when the model fits).</p>"
        )
    parts.append(_image(run / "posterior_predictive.png", "posterior predictive check of action frequencies per round"))
    return "\n".join(parts)


def _counterfactuals_section(run: Path) -> str:
    folder = run / COUNTERFACTUALS_DIR
    stems = sorted({p.stem for p in folder.glob("*") if p.suffix in (".csv", ".png", ".json")}) if folder.is_dir() else []
    if not stems:
        return _missing(
            "No counterfactual has been run on this run folder. `bayes-diml counterfactual RUN --set ... "
            "--episodes E --rounds T --out cf.csv` records each one here."
        )
    records = []
    for stem in stems:
        meta, problem = _read_json(folder / f"{stem}.json")
        date = meta.get("date", "") if isinstance(meta, dict) else ""
        records.append((str(date), stem, meta if isinstance(meta, dict) else {}, problem))
    parts = [f"<p>{len(records)} counterfactual{'s' if len(records) != 1 else ''} run on this fit, oldest first.</p>"]
    for date, stem, meta, problem in sorted(records):
        parts.append(f"<h3>{_e(stem)}</h3>")
        if problem:
            parts.append(_missing(problem))
        if meta.get("command"):
            parts.append(f"<pre>{_e(str(meta['command']))}</pre>")
        intervention = meta.get("intervention")
        if isinstance(intervention, dict):
            facts = [
                ("Mechanism", _describe(intervention.get("mechanism")) or "unchanged"),
                ("Learner", _describe(intervention.get("learner")) or "unchanged"),
                ("Simulated", f"{intervention.get('num_episodes')} episodes × {intervention.get('num_rounds')} rounds "
                 f"per posterior draw; posterior draws: {intervention.get('num_draws')}; seed {intervention.get('seed')}"),
            ]
            if date:
                facts.append(("Run on", date))
            parts.append(_facts(facts))
        result, problem = _read_csv(folder / f"{stem}.csv")
        if problem:
            parts.append(_missing(problem))
        elif {"quantity", "round", "mean", *interval_columns()} <= set(result.columns) and len(result):
            last = result[result["round"] == result["round"].max()]
            parts.append(f"<p>Final round ({_e(str(result['round'].max()))}), posterior mean and {CREDIBLE_LEVEL:.0%} interval:</p>")
            parts.append(_table(last[[c for c in ("quantity", "action", "mean", *interval_columns()) if c in last.columns]]))
        parts.append(_image(folder / f"{stem}.png", f"counterfactual {stem}"))
    return "\n".join(parts)


def _provenance_section(run: Path) -> str:
    provenance, problem = _read_json(run / "provenance.json")
    fit_meta, _ = _read_json(run / "fit.json")
    info = fit_meta.get("info", {}) if isinstance(fit_meta, dict) else {}
    rows = []
    parts = []
    if problem:
        parts.append(_missing(problem + " Versions, command line and data hash are unknown."))
        provenance = {}
    elif not isinstance(provenance, dict):
        parts.append(_missing("provenance.json does not hold a provenance record."))
        provenance = {}
    command = provenance.get("command_line")
    if isinstance(command, list) and command:
        first = Path(str(command[0])).name
        shown = (["bayes-diml"] if first in ("__main__.py", "bayes-diml") else [str(command[0])]) + [str(c) for c in command[1:]]
        rows.append(("Command", shlex.join(shown)))
    rows.append(("Method", str(provenance.get("method") or (fit_meta or {}).get("method", "?"))))
    seed = provenance.get("seed", info.get("seed"))
    rows.append(("Seed", str(seed)))
    written = _mtime(run / "posterior.nc") or _mtime(run / "fit.json")
    if written:
        rows.append(("Fitted (run folder written)", written))
    if "wall_seconds" in info:
        rows.append(("Fit wall time", f"{_float(info['wall_seconds']):.1f} s"))
    if provenance.get("data_file"):
        rows.append(("Data file", str(provenance["data_file"])))
    if provenance.get("data_sha256"):
        rows.append(("Data SHA-256", str(provenance["data_sha256"])))
    if provenance.get("python"):
        rows.append(("Python", str(provenance["python"])))
    machine = provenance.get("machine")
    if isinstance(machine, dict):
        rows.append(("Machine", f"{machine.get('platform')}, {machine.get('cpu_count')} CPUs, "
                     f"JAX devices {', '.join(map(str, machine.get('jax_devices', [])))}"))
    rows.append(("Report written", _now()))
    parts.insert(0, _facts(rows))
    versions = provenance.get("versions")
    if isinstance(versions, dict) and versions:
        parts.append("<h3>Package versions of the fit</h3>")
        parts.append(_table(pd.DataFrame(
            [(k, v if v is not None else "not installed") for k, v in versions.items()], columns=["package", "version"]
        )))
    return "\n".join(parts)


# ------------------------------------------------------------------ readers
def _read_json(path: Path):
    """``(value, None)``, or ``(None, sentence)`` when the file is missing or unreadable."""
    if not path.is_file():
        return None, f"The run folder holds no {path.name}."
    try:
        return json.loads(path.read_text(encoding="utf-8")), None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return None, f"{path.name} could not be read ({err})."


def _read_csv(path: Path, **options):
    """``(DataFrame, None)``, or ``(None, sentence)`` when the file is missing or unreadable."""
    if not path.is_file():
        return None, f"The run folder holds no {path.name}."
    try:
        return pd.read_csv(path, **options), None
    except (OSError, UnicodeDecodeError, ValueError, pd.errors.ParserError) as err:
        return None, f"{path.name} could not be read ({err})."


def _predictive_coverage(path: Path):
    """``(cells inside the band, cells, draws)`` from the stored posterior predictive, or ``None``."""
    if not path.is_file():
        return None
    try:
        import xarray as xr

        with xr.open_datatree(path, engine="h5netcdf") as tree:
            if "posterior_predictive" not in tree.children or "observed_data" not in tree.children:
                return None
            simulated = np.asarray(tree["posterior_predictive"]["action_frequency"].values, float)
            observed = np.asarray(tree["observed_data"]["action_frequency"].values, float)
    except Exception:  # an unreadable posterior only loses this sentence  # noqa: BLE001
        return None
    simulated = simulated.reshape(-1, *simulated.shape[2:])  # (draws, round, action)
    if simulated.shape[1:] != observed.shape:
        return None
    tail = (1 - PREDICTIVE_BAND) / 2
    lo, hi = np.quantile(simulated, [tail, 1 - tail], axis=0)
    seen = np.isfinite(observed)
    inside = seen & (observed >= lo - 1e-12) & (observed <= hi + 1e-12)
    cells = int(seen.sum())
    return (int(inside.sum()), cells, simulated.shape[0]) if cells else None


def _spec_line(run: Path) -> str:
    try:
        import tomllib

        table = tomllib.loads((run / "spec.toml").read_text(encoding="utf-8"))
        game, mech, learner = table.get("game", {}), table.get("mechanism", {}), table.get("learner", {})
        return (
            f"{mech.get('family', '?')} mechanism, {learner.get('rule', '?')} learners, "
            f"{game.get('agents', '?')} agents × {game.get('actions', '?')} actions"
        )
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return ""


def _method_line(method, info: dict) -> str:
    if method == "nuts":
        return f"NUTS fit, {info.get('num_chains', '?')} chains × ({info.get('num_warmup', '?')} warmup + {info.get('num_samples', '?')} draws)"
    if method == "svi":
        return f"SVI fit, {info.get('steps', '?')} steps, {info.get('num_samples', '?')} draws from the guide"
    if method == "map":
        return f"MAP fit, {info.get('steps', '?')} steps × {info.get('restarts', '?')} restarts"
    return f"{method} fit" if method else ""


# ------------------------------------------------------------------ HTML pieces
def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _missing(sentence: str) -> str:
    return f'<p class="missing">{_e(sentence)}</p>'


def _list(items) -> str:
    return "<ul>" + "".join(f"<li>{_e(item)}</li>" for item in items) + "</ul>" if items else ""


def _facts(rows) -> str:
    return '<table class="facts">' + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows) + "</table>"


def _image(path: Path, alt: str) -> str:
    if not path.is_file():
        return _missing(f"The run folder holds no {path.name}.")
    payload = path.read_bytes()
    if not payload.startswith(_PNG_SIGNATURE):
        return _missing(f"{path.name} is not a PNG image.")
    encoded = base64.b64encode(payload).decode("ascii")
    return f'<img src="data:image/png;base64,{encoded}" alt="{_e(alt)}">'


def _table(frame: pd.DataFrame, note: str | None = None, max_rows: int = TABLE_ROWS) -> str:
    shown = frame.head(max_rows)
    head = "".join(f"<th>{_e(c)}</th>" for c in shown.columns)
    body = []
    for row in shown.itertuples(index=False):
        cells = []
        for value in row:
            if isinstance(value, (float, np.floating)) or (isinstance(value, (int, np.integer)) and not isinstance(value, bool)):
                cells.append(f'<td class="num">{_e(_num(float(value)))}</td>')
            else:
                cells.append(f"<td>{_e('–' if _is_missing(value) else value)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    out = f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    if len(frame) > max_rows:
        out += f'<p class="note">First {max_rows} of {len(frame)} rows{f"; {_e(note)} has them all" if note else ""}.</p>'
    return out


def _num(value, spec: str = ".4g") -> str:
    if value is None or not np.isfinite(value):
        return "–"
    if spec == ".4g" and float(value).is_integer() and abs(value) < 1e6:
        return f"{int(value)}"
    return format(value, spec)


def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _is_missing(value) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _labels(labels, shown: int = 12) -> str:
    labels = [str(x) for x in labels]
    text = ", ".join(labels[:shown])
    return text + (f", … ({len(labels)} in all)" if len(labels) > shown else "")


def _describe(change) -> str:
    """Plain words for the ``mechanism`` / ``learner`` entry of a counterfactual's intervention."""
    if not change:
        return ""
    if isinstance(change, dict) and isinstance(change.get("set"), dict):
        change = change["set"]
    elif isinstance(change, dict) and "family" in change:
        return f"replaced by a {change['family']} mechanism"
    if isinstance(change, dict):
        words = []
        for name, value in change.items():
            if isinstance(value, dict) and "op" in value:
                words.append(f"{name} {value['op']}= {json.dumps(value.get('value'))}")
            elif isinstance(value, str):
                words.append(f"{name} {value}")
            else:
                words.append(f"{name} = {json.dumps(value)}")
        return "; ".join(words)
    return json.dumps(change)


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _mtime(path: Path) -> str | None:
    if not path.is_file():
        return None
    return _dt.datetime.fromtimestamp(path.stat().st_mtime, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
