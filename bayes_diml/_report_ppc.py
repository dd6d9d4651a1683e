"""The run report's conditional posterior predictive checks (``inference.ppc``): a paragraph
per table, a verdict, and the plot (``plots.plot_conditional_checks``), drawn from the
``"ppc"`` entry of the run folder's ``diagnostics.json`` (nothing is simulated here)."""

from __future__ import annotations

from pathlib import Path

from ._report_html import escape, figure_image, missing_note, num, read_json
from .inference.results import CREDIBLE_LEVEL, interval_columns

__all__ = ["conditional_checks_html"]


def conditional_checks_html(run: Path) -> str:
    """HTML of the conditional checks of the run folder ``run`` (a sentence when it has none)."""
    diagnostics, problem = read_json(run / "diagnostics.json")
    checks = diagnostics.get("ppc") if isinstance(diagnostics, dict) and not problem else None
    parts = ["<h3>Conditional checks: stay / switch, opponent, outcome</h3>"]
    if not isinstance(checks, dict) or not isinstance(checks.get("tables"), dict):
        parts.append(missing_note(
            "diagnostics.json holds no conditional posterior predictive checks (a fit run with ppc=False, or an older "
            "run folder); bayes_diml.ppc(fit) computes them."
        ))
        return "\n".join(parts)
    parts.append(
        f"<p>Each table counts choices given the agent's own previous choice, the opponent's previous choice, or the "
        f"previous payoff, pooled over agents and episodes, against {checks.get('replicates')} data sets simulated from "
        f"{checks.get('draws')} posterior draw(s) on the observed episodes. p: share of simulated tables at least as far "
        f"(chi-square distance given row totals) from the predictive shares as the observed one; misfit when a table's "
        f"p is below {num(checks.get('threshold'), '.2g')} ({checks.get('alpha')} over the tables, Bonferroni).</p>"
    )
    low, high = interval_columns()
    rows = []
    for name, table in checks["tables"].items():
        stay = table.get("stay") or {}
        stay_text = (f"; stay share {num(stay.get('observed'), '.2f')}, {CREDIBLE_LEVEL:.0%} band "
                     f"[{num(stay.get(low), '.2f')}, {num(stay.get(high), '.2f')}]") if stay else ""
        rows.append(f"<li><b>{escape(name)}</b> ({escape(table.get('title', ''))}): p = {num(table.get('p'), '.2g')}"
                    f"{'  (fails)' if table.get('misfit') else ''}{escape(stay_text)}</li>")
    parts.append("<ul>" + "".join(rows) + "</ul>")
    if checks.get("misfit"):
        failing = ", ".join(str(f) for f in checks.get("failing", []))
        parts.append(f'<p class="verdict bad">Misfit: the fitted model does not reproduce {escape(failing)}. The '
                     "inferred mechanism may absorb what the learning model cannot express (e.g. choice stickiness); "
                     "read it with care and try another learner.</p>")
    else:
        parts.append('<p class="verdict ok">No table fails: the fitted model reproduces these sequential patterns.</p>')
    parts.append(_figure(checks))
    return "\n".join(parts)


def _figure(checks: dict) -> str:
    """The plot as an embedded PNG (a sentence when the tables cannot be drawn)."""
    from .plots import plot_conditional_checks

    return figure_image(lambda: plot_conditional_checks(checks), "conditional posterior predictive checks",
                        "The conditional checks in diagnostics.json cannot be drawn")
