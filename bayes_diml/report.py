"""The run report: one self-contained HTML page per run folder (``bayes-diml report RUN``).

    RUN/report.html

Sections, in order: data, diagnostics, payoff differences, identifiability,
posterior predictive check, counterfactuals, design, provenance. Everything is read from
the files the run folder already holds (see ``run_folder.py``): the tables from
its CSV and JSON files, the figures from its PNGs, embedded as base64 ``data:``
URIs. Nothing is refitted or recomputed; the one number derived here is the share
of observed action frequencies inside the stored posterior predictive band (the
conditional checks of ``inference.ppc`` are drawn from the tables ``diagnostics.json``
holds under ``"ppc"``, ``_report_ppc.py``). The
page loads no external resource and runs no script. A piece that is missing or
unreadable (an older run folder, a bare ``Fit.save``) becomes one sentence in its
section instead of an error.

Counterfactuals run by ``bayes-diml counterfactual RUN ...`` are recorded in the
run folder by ``save_counterfactual``::

    RUN/counterfactuals/NAME.csv   the result (CounterfactualResult.to_frame)
    RUN/counterfactuals/NAME.png   its plot
    RUN/counterfactuals/NAME.json  the command line, the intervention, the date

Designs run by ``bayes-diml design RUN ...`` are recorded as ``RUN/designs/NAME.json``
(``inference.design.save_design``); ``_report_design.py`` builds their section.

The page is assembled here; ``_report_sections.py`` builds each section's body, from
the HTML pieces and file readers of ``_report_html.py``.
"""

from __future__ import annotations

import re
import shlex
from importlib import metadata
from pathlib import Path

from ._io import atomic_write, write_text_atomic
from ._json import dumps
from ._report_html import TABLE_ROWS as TABLE_ROWS  # re-exported
from ._report_html import escape, missing_note, now, read_json
from ._report_sections import COUNTERFACTUALS_DIR, SECTION_BUILDERS
from ._report_sections import PREDICTIVE_BAND as PREDICTIVE_BAND  # re-exported
from ._report_sections import PREDICTIVE_MIN_DRAWS as PREDICTIVE_MIN_DRAWS  # re-exported
from .errors import DataError
from .inference.storage import check_output_file

__all__ = ["write_report", "save_counterfactual", "REPORT_NAME", "COUNTERFACTUALS_DIR", "SECTIONS"]

REPORT_NAME = "report.html"
"""File name of the report inside the run folder."""

SECTIONS = (
    ("data", "Data"),
    ("diagnostics", "Diagnostics"),
    ("differences", "Payoff differences"),
    ("identifiability", "Identifiability"),
    ("predictive", "Posterior predictive check"),
    ("counterfactuals", "Counterfactuals"),
    ("design", "Design"),
    ("provenance", "Provenance"),
)
"""(anchor, heading) of each section of the page, in order."""

_RUN_MARKERS = ("fit.json", "posterior.nc")
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
        "identified": result.identified,
        "unidentified": result.unidentified,
        "welfare_identified": result.welfare_identified,
        "date": now(),
    }
    write_text_atomic(folder / f"{stem}.json", dumps(record))
    return folder / f"{stem}.csv"


# ------------------------------------------------------------------ the page
def _page(run: Path) -> str:
    fit_meta, fit_problem = read_json(run / "fit.json")
    info = fit_meta.get("info", {}) if isinstance(fit_meta, dict) else {}
    method = fit_meta.get("method") if isinstance(fit_meta, dict) else None
    spec_text = _spec_line(run)
    title = f"Run report: {run.resolve().name}"
    subtitle = " · ".join(x for x in (spec_text, _method_line(method, info)) if x)
    body = [
        f"<h1>{escape(title)}</h1>",
        f'<p class="subtitle">{escape(subtitle)}</p>' if subtitle else "",
        "<nav>" + "".join(f'<a href="#{anchor}">{escape(heading)}</a>' for anchor, heading in SECTIONS) + "</nav>",
    ]
    for anchor, heading in SECTIONS:
        try:
            content = SECTION_BUILDERS[anchor](run)
        except Exception as err:  # a report never fails on one bad piece  # noqa: BLE001
            content = missing_note(f"This section could not be built: {type(err).__name__}: {err}")
        body.append(f'<section id="{anchor}">\n<h2>{escape(heading)}</h2>\n{content}\n</section>')
    if fit_problem:
        body.insert(2, missing_note(fit_problem))
    if not any((run / name).exists() for name in ("diagnostics.json", "provenance.json", "summary.csv")):
        body.insert(2, missing_note(
            "This folder holds only the fit (as Fit.save writes it): the diagnostics, tables and plots come with "
            "run folders written by `bayes-diml fit` or bayes_diml.run_folder.save_run."
        ))
    body.append(
        f"<footer>Written by bayes_diml {escape(_version('bayes_diml') or '?')} on {escape(now())} "
        f"from the files in {escape(str(run.resolve()))}.</footer>"
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(part for part in body if part)
        + "\n</body>\n</html>\n"
    )


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
    if method == "laplace_grid":
        return f"Laplace grid fit, {len(info.get('grid', []))} payoff scales, {info.get('num_samples', '?')} draws"
    return f"{method} fit" if method else ""


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
