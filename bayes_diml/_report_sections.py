"""The sections of the run report (``report.py``), one function each.

Each takes the run folder and returns the HTML of its section's body, built from the
files the folder holds; a missing or unreadable piece becomes a sentence, not an error.
``SECTION_BUILDERS`` maps each anchor of ``report.SECTIONS`` to its function.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pandas as pd

from ._report_design import design_section
from ._report_html import (
    as_float,
    bullet_list,
    escape,
    facts_table,
    html_table,
    label_list,
    missing_note,
    mtime,
    now,
    num,
    png_image,
    read_csv,
    read_json,
)
from ._report_ppc import conditional_checks_html
from .errors import DataError
from .inference.results import CREDIBLE_LEVEL, interval_columns

COUNTERFACTUALS_DIR = "counterfactuals"
"""Sub-folder of a run folder where ``bayes-diml counterfactual`` records its results."""

PREDICTIVE_BAND = CREDIBLE_LEVEL
"""Mass of the posterior predictive band (the one ``plots.plot_posterior_predictive`` draws): ``CREDIBLE_LEVEL``."""

PREDICTIVE_MIN_DRAWS = 20
"""Fewer simulated draws than this (a MAP fit has one) give no coverage sentence."""


# ------------------------------------------------------------------ sections
def _data_section(run: Path) -> str:
    from .loading import load_data
    from .spec import read_spec

    path = run / "data.csv"
    if not path.is_file():
        return missing_note("The run folder holds no data.csv, so the data cannot be summarised.")
    model = None
    if (run / "spec.toml").is_file():
        try:
            model = read_spec(run / "spec.toml")[0]
        except DataError:
            model = None
    try:
        data = load_data(path, model)
    except DataError as err:
        return missing_note(f"data.csv could not be read: {err}")
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
        ("Agent labels", label_list(data.agent_labels)),
        ("Action labels", label_list(data.action_labels)),
        ("Episode labels", label_list(data.episode_labels)),
        ("Realised payoffs", "present (column payoff)" if data.payoff is not None else "not in the data"),
    ]
    note = "" if model is not None else missing_note("spec.toml is missing or unreadable: the data were read without the model.")
    return facts_table(rows) + note


def _diagnostics_section(run: Path) -> str:
    parts = []
    diagnostics, problem = read_json(run / "diagnostics.json")
    if problem:
        parts.append(missing_note(problem + " No convergence verdict can be given."))
    elif not isinstance(diagnostics, dict):
        parts.append(missing_note("diagnostics.json does not hold a diagnostics record."))
    else:
        warnings = [str(w) for w in diagnostics.get("warnings", [])]
        method = str(diagnostics.get("method", "?"))
        if method == "nuts":
            parts.extend(_nuts_verdict(diagnostics, warnings))
        else:
            parts.extend(_approximation_verdict(diagnostics, warnings, method))
    if isinstance(diagnostics, dict) and diagnostics.get("method") not in (None, "nuts"):
        parts.append(missing_note("Trace and rank plots are MCMC diagnostics: they say nothing about this fit."))
    else:
        parts.append(
            "<details><summary>Trace and rank plots (well-mixed chains give flat rank histograms)</summary>"
            + png_image(run / "rank_trace.png", "trace and rank histograms per chain") + "</details>"
        )
    parts.append("<h3>Parameter summary</h3>")
    summary, problem = read_csv(run / "summary.csv", index_col=0)
    if problem:
        parts.append(missing_note(problem))
    else:
        summary.index.name = "parameter"
        parts.append(html_table(summary.reset_index(), note="summary.csv"))
    return "\n".join(parts)



def _nuts_verdict(diagnostics: dict, warnings: list[str]) -> list[str]:
    """The convergence verdict of a NUTS fit, and its diagnostics table."""
    from .inference.diagnostics import EBFMI_MIN
    from .inference.results import ESS_MIN, RHAT_MAX

    parts = []
    rhat = as_float(diagnostics.get("max_rhat"))
    ess_bulk, ess_tail = as_float(diagnostics.get("min_ess_bulk")), as_float(diagnostics.get("min_ess_tail"))
    divergences = diagnostics.get("divergences")
    ebfmi = [as_float(x) for x in diagnostics.get("ebfmi", [])]
    words = (
        f"R-hat is at most {num(rhat)} (the chains agree when it is at most {RHAT_MAX}); the smallest "
        f"effective sample sizes are {num(ess_bulk, '.0f')} (bulk) and {num(ess_tail, '.0f')} (tail), "
        f"against the {ESS_MIN} wanted for stable {CREDIBLE_LEVEL:.0%} intervals; the sampler met {divergences} divergent "
        f"transition{'s' if divergences != 1 else ''}"
        + (f"; E-BFMI is at least {num(min(ebfmi))} (wanted: {EBFMI_MIN} or more)." if ebfmi else ".")
    )
    if not warnings:
        parts.append(f'<div class="verdict ok"><strong>The sampler converged.</strong> {escape(words)}</div>')
    else:
        parts.append(
            '<div class="verdict bad"><strong>Check these before trusting the results:</strong>'
            + bullet_list(warnings) + f"<p>{escape(words)}</p></div>"
        )
    rows = [
        ("max R-hat", num(rhat), f"≤ {RHAT_MAX}"),
        ("min bulk ESS", num(ess_bulk, ".0f"), f"≥ {ESS_MIN}"),
        ("min tail ESS", num(ess_tail, ".0f"), f"≥ {ESS_MIN}"),
        ("divergent transitions", str(divergences), "0"),
        ("E-BFMI per chain", ", ".join(num(x) for x in ebfmi) or "–", f"≥ {EBFMI_MIN}"),
        ("mean leapfrog steps per draw", num(as_float(diagnostics.get("mean_leapfrog_steps")), ".0f"), ""),
    ]
    parts.append(html_table(pd.DataFrame(rows, columns=["diagnostic", "value", "wanted"])))
    return parts


def _approximation_verdict(diagnostics: dict, warnings: list[str], method: str) -> list[str]:
    """What an SVI or MAP fit has instead of convergence diagnostics."""
    parts = [
        f'<div class="verdict warn"><strong>No MCMC convergence diagnostics:</strong> this is a '
        f"{escape(method.upper())} fit, an approximation whose R-hat, ESS and divergences do not exist."
        + bullet_list(warnings) + "</div>"
    ]
    rows = [(k, num(as_float(v)) if not isinstance(v, int) else str(v))
            for k, v in diagnostics.items() if k in ("final_elbo", "optimum_spread", "restarts")]
    if rows:
        parts.append(html_table(pd.DataFrame(rows, columns=["optimisation", "value"])))
    return parts


def _differences_section(run: Path) -> str:
    from .run_folder import FOREST_ROWS

    table, problem = read_csv(run / "payoff_differences.csv")
    parts = [
        "<p>Payoff differences Δ = M(action, a₋ᵢ)ᵢ − M(baseline, a₋ᵢ)ᵢ: how much more agent i is paid "
        "for playing <em>action</em> instead of <em>baseline</em> while the others play as in "
        "<em>joint</em>. Under full-information learners these, not payoff levels, are what the data "
        f"identify. Bars are {CREDIBLE_LEVEL:.0%} posterior intervals; grey rows are contexts never seen in the data.</p>"
    ]
    if problem:
        parts.append(missing_note(problem))
    else:
        if "truth" in table.columns:
            sentence = "Red crosses mark the true values of this simulated run."
            if "covered" in table.columns and len(table):
                covered = table["covered"].astype(str).str.lower().isin(("true", "1")).to_numpy()
                sentence += (
                    f" The {CREDIBLE_LEVEL:.0%} intervals cover the truth for {int(covered.sum())} of {len(table)} differences "
                    f"({covered.mean():.0%})."
                )
            parts.append(f"<p>{escape(sentence)}</p>")
        else:
            parts.append("<p>No true parameters are known for this run: the plot shows the posterior only.</p>")
        if len(table) > FOREST_ROWS:
            parts.append(f'<p class="note">The plot shows the first {FOREST_ROWS} of {len(table)} rows.</p>')
    parts.append(png_image(run / "payoff_differences.png", "forest plot of payoff differences"))
    if not problem:
        parts.append(html_table(table, note="payoff_differences.csv"))
    return "\n".join(parts)


def _identifiability_section(run: Path) -> str:
    from .inference.identifiability import IDENTIFIED_BELOW, WEAKLY_IDENTIFIED_BELOW

    frame, problem = read_csv(run / "identifiability.csv")
    if problem:
        return missing_note(problem)
    if "kind" not in frame.columns or "verdict" not in frame.columns:
        return missing_note("identifiability.csv lacks its kind / verdict columns.")
    parts = [
        f"<p>Contraction = posterior sd / prior sd: below {IDENTIFIED_BELOW} the data pin a quantity down "
        f"(identified), up to {WEAKLY_IDENTIFIED_BELOW} they inform it (weakly identified), above that its "
        "posterior is its prior (prior-driven). <em>Not identified on its own</em>: the coordinate lies along "
        "a flat direction of the likelihood; only combinations of it with others are identified. "
        "<code>bayes-diml fit</code> names those directions when it finishes "
        "(in Python: <code>fit.identifiability(seed=0).verdict()</code>).</p>"
    ]
    for kind, heading, columns in (
        ("parameter", "Parameters", ["name", "entry", "prior_sd", "posterior_sd", "contraction", "flat_loading", "verdict"]),
        ("difference", "Payoff differences", ["entry", "in_support", "prior_sd", "posterior_sd", "contraction", "verdict"]),
    ):
        rows = frame[frame["kind"] == kind]
        if not len(rows):
            continue
        counts = rows["verdict"].value_counts()
        parts.append(f"<h3>{escape(heading)}</h3>")
        parts.append(
            f"<p>{len(rows)} {'entries' if kind == 'parameter' else 'queried differences'}: "
            + escape(", ".join(f"{int(c)} {v}" for v, c in counts.items())) + ".</p>"
        )
        parts.append(html_table(rows[[c for c in columns if c in rows.columns]], note="identifiability.csv"))
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
    parts.append(png_image(run / "posterior_predictive.png", "posterior predictive check of action frequencies per round"))
    parts.append(conditional_checks_html(run))
    return "\n".join(parts)


def _counterfactuals_section(run: Path) -> str:
    folder = run / COUNTERFACTUALS_DIR
    stems = sorted({p.stem for p in folder.glob("*") if p.suffix in (".csv", ".png", ".json")}) if folder.is_dir() else []
    if not stems:
        return missing_note(
            "No counterfactual has been run on this run folder. `bayes-diml counterfactual RUN --set ... "
            "--episodes E --rounds T --out cf.csv` records each one here."
        )
    records = []
    for stem in stems:
        meta, problem = read_json(folder / f"{stem}.json")
        date = meta.get("date", "") if isinstance(meta, dict) else ""
        records.append((str(date), stem, meta if isinstance(meta, dict) else {}, problem))
    parts = [f"<p>{len(records)} counterfactual{'s' if len(records) != 1 else ''} run on this fit, oldest first.</p>"]
    for date, stem, meta, problem in sorted(records):
        parts.append(f"<h3>{escape(stem)}</h3>")
        if problem:
            parts.append(missing_note(problem))
        if meta.get("command"):
            parts.append(f"<pre>{escape(str(meta['command']))}</pre>")
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
            parts.append(facts_table(facts))
            if intervention.get("identified") is False:
                names = ", ".join(str(n) for n in intervention.get("unidentified", []))
                parts.append(
                    f"<p><strong>warning:</strong> not identified: this play depends on {escape(names)}, which the "
                    "data do not identify (each draw's value comes from the prior), so its bands are prior-driven. "
                    "Declare the lever known in [mechanism.known], or change it relative to each draw "
                    "(<code>--set 'mechanism.NAME+=...'</code>).</p>"
                )
            if intervention.get("welfare_identified") is False:
                parts.append("<p>Welfare: not identified (payoff levels are fixed by the gauge, not the data).</p>")
        result, problem = read_csv(folder / f"{stem}.csv")
        if problem:
            parts.append(missing_note(problem))
        elif {"quantity", "round", "mean", *interval_columns()} <= set(result.columns) and len(result):
            last = result[result["round"] == result["round"].max()]
            parts.append(f"<p>Final round ({escape(str(result['round'].max()))}), posterior mean and {CREDIBLE_LEVEL:.0%} interval:</p>")
            parts.append(html_table(last[[c for c in ("quantity", "action", "mean", *interval_columns()) if c in last.columns]]))
        parts.append(png_image(folder / f"{stem}.png", f"counterfactual {stem}"))
    return "\n".join(parts)


def _provenance_section(run: Path) -> str:
    provenance, problem = read_json(run / "provenance.json")
    fit_meta, _ = read_json(run / "fit.json")
    info = fit_meta.get("info", {}) if isinstance(fit_meta, dict) else {}
    rows = []
    parts = []
    if problem:
        parts.append(missing_note(problem + " Versions, command line and data hash are unknown."))
        provenance = {}
    elif not isinstance(provenance, dict):
        parts.append(missing_note("provenance.json does not hold a provenance record."))
        provenance = {}
    command = provenance.get("command_line")
    if isinstance(command, list) and command:
        first = Path(str(command[0])).name
        shown = (["bayes-diml"] if first in ("__main__.py", "bayes-diml") else [str(command[0])]) + [str(c) for c in command[1:]]
        rows.append(("Command", shlex.join(shown)))
    rows.append(("Method", str(provenance.get("method") or (fit_meta or {}).get("method", "?"))))
    seed = provenance.get("seed", info.get("seed"))
    rows.append(("Seed", str(seed)))
    written = mtime(run / "posterior.nc") or mtime(run / "fit.json")
    if written:
        rows.append(("Fitted (run folder written)", written))
    if "wall_seconds" in info:
        rows.append(("Fit wall time", f"{as_float(info['wall_seconds']):.1f} s"))
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
    rows.append(("Report written", now()))
    parts.insert(0, facts_table(rows))
    versions = provenance.get("versions")
    if isinstance(versions, dict) and versions:
        parts.append("<h3>Package versions of the fit</h3>")
        parts.append(html_table(pd.DataFrame(
            [(k, v if v is not None else "not installed") for k, v in versions.items()], columns=["package", "version"]
        )))
    return "\n".join(parts)


# ------------------------------------------------------------------ helpers
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


SECTION_BUILDERS = {
    "data": _data_section,
    "diagnostics": _diagnostics_section,
    "differences": _differences_section,
    "identifiability": _identifiability_section,
    "predictive": _predictive_section,
    "counterfactuals": _counterfactuals_section,
    "design": design_section,
    "provenance": _provenance_section,
}
"""Anchor of each section -> the function that builds its body from the run folder."""
