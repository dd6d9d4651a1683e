"""The run report's Design section: every design recorded by ``bayes-diml design RUN ...``
(``inference.design.save_design``) in ``RUN/designs/NAME.json``, sorted by name, with
its settings, the recommended / status-quo / plug-in lever values, the objective under
each, the paired differences and a figure (``plots.plot_design``). Everything is read
from the records; nothing is simulated here. A record that cannot be read becomes a
sentence in its place.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ._report_html import escape, facts_table, figure_image, html_table, missing_note, num, read_json
from .inference.design import DESIGNS_DIR
from .inference.results import CREDIBLE_LEVEL, interval_columns

__all__ = ["design_section", "NOT_SHOWN"]

NOT_SHOWN = "the data do not show the recommendation beats the status quo"
"""The sentence shown when P(better) is below 0.5 or the difference's band holds 0."""

_DESIGNS = (("recommended", "recommended"), ("status_quo", "status quo"), ("plug_in", "plug-in"))
_MAX_ENTRIES = 12
"""Lever entries shown as table columns (design.json has them all)."""


def design_section(run: Path) -> str:
    """HTML of the Design section of the run folder ``run`` (a sentence when it holds no design)."""
    folder = run / DESIGNS_DIR
    paths = sorted(folder.glob("*.json")) if folder.is_dir() else []
    if not paths:
        return missing_note(
            "No design has been run on this run folder. `bayes-diml design RUN --lever NAME --lower L --upper U "
            "--episodes E --rounds T --out design.json` records each one here."
        )
    parts = [
        f"<p>{len(paths)} design{'s' if len(paths) != 1 else ''} searched on this fit, by name. Each searched the "
        "lever's values for the best posterior (risk-adjusted) objective of simulated learning play; the three "
        "designs below were then scored afresh on the same posterior draws, with other random numbers than the "
        "search's. <em>Status quo</em>: the lever's known value (else its posterior mean); <em>plug-in</em>: the "
        "design chosen as if the posterior mean were the truth. Higher objective is better; differences are "
        "paired per draw.</p>"
    ]
    for path in paths:
        record, problem = read_json(path)
        parts.append(f"<h3>{escape(path.stem)}</h3>")
        if problem:
            parts.append(missing_note(problem))
            continue
        try:
            parts.append(_one_design(record))
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
            parts.append(missing_note(f"{path.name} is not a design record ({type(err).__name__}: {err})."))
    return "\n".join(parts)


def _one_design(record: dict) -> str:
    settings, objective, lever = record["settings"], record["objective"], str(record["lever"])
    level = float(settings.get("interval", CREDIBLE_LEVEL))
    low, high = interval_columns(level)
    parts = [f"<pre>{escape(str(record['command']))}</pre>"] if record.get("command") else []
    parts.append(facts_table(_facts(record, settings, lever)))
    parts.append(f"<p>Lever values and the objective under each design: posterior mean and {level:.0%} band.</p>")
    parts.append(_designs_table(record, objective, settings, lever, low, high))
    rows = [("recommended − status quo", objective["difference"])]
    if isinstance(objective.get("versus_plug_in"), dict):
        rows.append(("recommended − plug-in", objective["versus_plug_in"]))
    frame = pd.DataFrame(
        [(label, float(d["mean"]), float(d[low]), float(d[high]), float(d["p_better"])) for label, d in rows],
        columns=["paired difference", "mean", low, high, "P(better)"],
    )
    parts.append(html_table(frame))
    difference = objective["difference"]
    if float(difference["p_better"]) < 0.5 or float(difference[low]) <= 0.0 <= float(difference[high]):
        parts.append(
            f"<p><strong>warning:</strong> {escape(NOT_SHOWN)}: P(better) = {escape(num(float(difference['p_better'])))} "
            f"and the {level:.0%} band of the difference is [{escape(num(float(difference[low])))}, "
            f"{escape(num(float(difference[high])))}]. Keep the status quo, or gather more data.</p>"
        )
    parts.append(_figure(record, lever))
    return "\n".join(parts)


def _facts(record: dict, settings: dict, lever: str) -> list[tuple[str, str]]:
    bounds = record.get("bounds", {})
    target = f", target share {num(float(settings['target']))}" if settings.get("target") is not None else ""
    risk = str(settings.get("risk", "?"))
    risk_words = "posterior mean of the objective" if risk == "mean" else (
        f"{risk}: mean of the objective over the worst {risk.partition(':')[2]} share of draws"
    )
    facts = [
        ("Lever", lever),
        ("Bounds", f"lower {_values(bounds.get('lower'))}, upper {_values(bounds.get('upper'))}"),
        ("Objective", f"{settings.get('objective', '?')}{target}"),
        ("Risk", risk_words),
        ("Seed", str(settings.get("seed"))),
        ("Sizes", f"{settings.get('num_draws')} posterior draws (at most {settings.get('max_draws')}) × "
         f"{settings.get('num_episodes')} episodes × {settings.get('num_rounds')} rounds per candidate; "
         f"{settings.get('candidates_evaluated')} candidates evaluated ({settings.get('num_candidates')} per batch, "
         f"{settings.get('refinements')} refinement{'' if settings.get('refinements') == 1 else 's'})"),
    ]
    replayed = settings.get("replayed")
    if isinstance(replayed, dict):
        facts.append(("Replayed agents", f"{replayed.get('agents')} replay their play from "
                      f"{replayed.get('observed_episodes')} observed episodes"))
    if record.get("date"):
        facts.append(("Run on", str(record["date"])))
    return facts


def _designs_table(record: dict, objective: dict, settings: dict, lever: str, low: str, high: str) -> str:
    values = {name: np.asarray(record[name][lever], dtype=float) for name, _ in _DESIGNS}
    shape = values["recommended"].shape
    indices = list(np.ndindex(shape))[:_MAX_ENTRIES]
    columns = [lever if not shape else f"{lever}[{', '.join(map(str, i))}]" for i in indices]
    risk = str(settings.get("risk", "mean"))
    rows = []
    for name, label in _DESIGNS:
        entry = objective[name]
        row = [label, *(float(values[name][i]) for i in indices), float(entry["mean"]), float(entry[low]), float(entry[high])]
        rows.append(row + ([float(entry["score"])] if risk != "mean" else []))
    names = ["design", *columns, "objective mean", low, high] + ([f"objective {risk}"] if risk != "mean" else [])
    out = html_table(pd.DataFrame(rows, columns=names))
    size = values["recommended"].size
    if size > _MAX_ENTRIES:
        out += f'<p class="note">The first {_MAX_ENTRIES} of {size} lever entries are shown; the design record has them all.</p>'
    return out


def _values(values) -> str:
    if values is None:
        return "?"
    flat = np.asarray(values, dtype=float).ravel()
    return num(float(flat[0])) if np.ndim(values) == 0 else "[" + ", ".join(num(float(v)) for v in flat) + "]"


def _figure(record: dict, lever: str) -> str:
    """``plots.plot_design`` as an embedded PNG (a sentence when it cannot be drawn)."""
    from .plots import plot_design

    return figure_image(lambda: plot_design(record), f"objective under each design of {lever}",
                        "This design cannot be drawn")
