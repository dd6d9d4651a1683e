"""The result of a counterfactual (``counterfactual.py``): simulated play summarised
over posterior draws (mean and equal-tailed ``INTERVAL`` bands), paired comparisons
of two results, and their plot.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd

from ..errors import DataError
from .results import CREDIBLE_LEVEL, interval_columns

__all__ = ["CounterfactualResult", "INTERVAL", "summarise", "WELFARE_NOT_IDENTIFIED"]

WELFARE_NOT_IDENTIFIED = "not identified (payoff levels are fixed by the gauge, not the data)"
"""What welfare summaries say where welfare sums payoff levels the data do not identify."""

INTERVAL = CREDIBLE_LEVEL
"""Mass of the equal-tailed credible intervals: ``results.CREDIBLE_LEVEL`` (columns
``interval_columns()``, ``q05``, ``q95``)."""

_LOW, _HIGH = interval_columns(INTERVAL)


# ------------------------------------------------------------------ result
@dataclasses.dataclass(eq=False)
class CounterfactualResult:
    """Counterfactual play summarised over posterior draws.

    Attributes:
        frequencies: long DataFrame ``round, action, mean, q05, q95``: the share of
            agents (over episodes and agents) playing ``action`` in ``round``.
        welfare: DataFrame ``round, mean, q05, q95``: expected welfare per round,
            ``mean_e sum_i M'(a_{e,t})_i`` under the (intervened) mechanism.
        draws: raw arrays: ``frequency`` ``(S, T, A)``, ``welfare`` ``(S, T)``,
            ``agent_frequency`` ``(S, T, n, A)`` (only when ``n * A <= PER_AGENT_MAX``),
            ``draw`` ``(S,)`` flat posterior draw indices, ``round`` ``(T,)``, and
            ``actions`` ``(S, E, T, n)`` when asked for (``return_actions``).
        intervention: JSON-able description of the intervention and the settings.
        action_labels, agent_labels: labels of the data.
    """

    frequencies: pd.DataFrame
    welfare: pd.DataFrame
    draws: dict[str, np.ndarray] = dataclasses.field(repr=False)
    intervention: dict[str, Any]
    action_labels: tuple = dataclasses.field(repr=False)
    agent_labels: tuple = dataclasses.field(repr=False)

    @property
    def identified(self) -> bool:
        """Whether the reported play rests only on what the data identify (``counterfactual``)."""
        return bool(self.intervention.get("identified", True))

    @property
    def unidentified(self) -> list[str]:
        """The prior-driven parameters the intervention exposes (empty when identified)."""
        return list(self.intervention.get("unidentified", []))

    @property
    def welfare_identified(self) -> bool:
        """False when welfare sums payoff levels fixed by the gauge, not the data: the welfare
        summaries (``welfare``, ``to_frame``, ``compare``) then carry ``WELFARE_NOT_IDENTIFIED``
        instead of numbers (the raw ``draws["welfare"]`` stay, in the gauge's convention)."""
        return bool(self.intervention.get("welfare_identified", True))

    @property
    def rounds(self) -> np.ndarray:
        """Round labels ``(T,)`` (numbered from the data's first round)."""
        return self.draws["round"]

    def agent_frequencies(self) -> pd.DataFrame:
        """Long DataFrame ``round, agent, action, mean, q05, q95`` of per-agent frequencies.

        Raises ``DataError`` when they were not kept (``n * A > PER_AGENT_MAX``).
        """
        if "agent_frequency" not in self.draws:
            from .counterfactual import PER_AGENT_MAX

            raise DataError(
                f"per-agent frequencies were not kept: num_agents x num_actions > {PER_AGENT_MAX}"
            )
        return _long_frame(
            self.draws["agent_frequency"],
            [("round", self.rounds), ("agent", self.agent_labels), ("action", self.action_labels)],
        )

    def to_frame(self) -> pd.DataFrame:
        """One long, CSV-ready DataFrame ``quantity, round, action, mean, q05, q95``:
        ``"frequency"`` rows carry an action, ``"welfare"`` rows have none."""
        freq = self.frequencies.assign(quantity="frequency")
        welfare = self.welfare.assign(quantity="welfare", action=None)
        columns = ["quantity", "round", "action", "mean", _LOW, _HIGH]
        if not self.welfare_identified:  # a note instead of numbers on the welfare rows
            columns.append("note")
            freq["note"] = ""
        freq["action"] = freq["action"].astype(object)
        return pd.concat([freq[columns], welfare[columns]], ignore_index=True)

    def compare(self, baseline: "CounterfactualResult") -> pd.DataFrame:
        """Paired differences ``self - baseline``, computed per draw, then summarised.

        Rows: ``quantity = "frequency"`` for each action's final-round frequency, and
        ``quantity = "welfare"`` for welfare averaged over all rounds. Columns:
        ``quantity, action, mean, q05, q95`` (of the difference), ``p_positive``
        (posterior share of draws with a positive difference), ``baseline`` and
        ``counterfactual`` (posterior means of each side). ``attrs["common_random_numbers"]``
        says whether both sides used the same seed (the usual, least noisy pairing).

        Raises:
            DataError: when the two results do not cover the same draws, rounds and actions.
        """
        if not isinstance(baseline, CounterfactualResult):
            raise DataError(f"compare: baseline must be a CounterfactualResult, got {type(baseline).__name__}")
        if not np.array_equal(self.draws["draw"], baseline.draws["draw"]):
            raise DataError(
                "compare: the two results use different posterior draws; run both from the same fit "
                "with the same max_draws"
            )
        if not np.array_equal(self.rounds, baseline.rounds):
            raise DataError(
                f"compare: rounds differ ({len(self.rounds)} vs {len(baseline.rounds)} rounds); "
                "use the same num_rounds"
            )
        if tuple(self.action_labels) != tuple(baseline.action_labels):
            raise DataError("compare: the two results have different actions")
        final = self.draws["frequency"][:, -1, :], baseline.draws["frequency"][:, -1, :]  # (S, A)
        welfare = self.draws["welfare"].mean(axis=1), baseline.draws["welfare"].mean(axis=1)  # (S,)
        rows = []
        for k, label in enumerate(self.action_labels):
            rows.append({"quantity": "frequency", "action": label, **_difference(final[0][:, k], final[1][:, k])})
        welfare_row = {"quantity": "welfare", "action": None, **_difference(*welfare)}
        if not (self.welfare_identified and baseline.welfare_identified):
            welfare_row = {**{k: (np.nan if k not in ("quantity", "action") else v) for k, v in welfare_row.items()},
                           "note": WELFARE_NOT_IDENTIFIED}
        rows.append(welfare_row)
        out = pd.DataFrame(rows)
        out["action"] = pd.Series([r["action"] for r in rows], dtype=object)
        out.attrs["final_round"] = int(self.rounds[-1])
        out.attrs["common_random_numbers"] = (
            self.intervention.get("seed") == baseline.intervention.get("seed")
            and self.intervention.get("num_episodes") == baseline.intervention.get("num_episodes")
        )
        return out

    def plot(self, ax=None):
        """Frequency bands per action over rounds, and welfare.

        Args:
            ax: a matplotlib ``Axes`` to draw the frequencies on (welfare then goes on
                a twin y-axis); ``None`` makes a new ``Figure`` with two panels.

        Returns:
            The ``matplotlib.figure.Figure``.
        """
        from matplotlib.figure import Figure

        if ax is None:
            fig = Figure(figsize=(8, 6), layout="constrained")
            ax_freq, ax_welfare = fig.subplots(2, 1, sharex=True, height_ratios=[2, 1])
            welfare_color = "k"
        else:
            fig = ax.figure
            ax_freq, ax_welfare = ax, ax.twinx()
            welfare_color = "0.3"
        rounds = self.rounds
        mean, lo, hi = _summaries(self.draws["frequency"])
        for k, label in enumerate(self.action_labels):
            color = f"C{k % 10}"
            ax_freq.fill_between(rounds, lo[:, k], hi[:, k], color=color, alpha=0.2, lw=0)
            ax_freq.plot(rounds, mean[:, k], color=color, lw=1.5, label=str(label))
        ax_freq.set_ylabel("action frequency")
        ax_freq.set_ylim(0, 1)
        ax_freq.legend(title="action", fontsize=7, ncol=max(1, len(self.action_labels) // 8), loc="best")
        if self.welfare_identified:
            w_mean, w_lo, w_hi = _summaries(self.draws["welfare"])
            ax_welfare.fill_between(rounds, w_lo, w_hi, color=welfare_color, alpha=0.15, lw=0)
            ax_welfare.plot(rounds, w_mean, color=welfare_color, lw=1.5, ls="--" if ax is not None else "-")
        else:
            ax_welfare.text(0.5, 0.5, f"welfare {WELFARE_NOT_IDENTIFIED}", transform=ax_welfare.transAxes,
                            ha="center", va="center", fontsize=8)
        ax_welfare.set_ylabel("expected welfare")
        ax_welfare.set_xlabel("round")
        ax_freq.set_title(
            f"counterfactual play: posterior mean, {INTERVAL:.0%} bands\n{_title(self.intervention)}", fontsize=9
        )
        return fig


def summarise(draws: dict[str, np.ndarray], intervention: dict, action_labels: tuple, agent_labels: tuple) -> CounterfactualResult:
    """The result of simulated ``draws`` (``frequency (S, T, A)``, ``welfare (S, T)``, ...,
    ``draw``, ``round``): its frames of posterior means and intervals."""
    welfare = _long_frame(draws["welfare"], [("round", draws["round"])])
    if intervention.get("welfare_identified") is False:
        welfare[["mean", _LOW, _HIGH]] = np.nan
        welfare["note"] = WELFARE_NOT_IDENTIFIED
    return CounterfactualResult(
        frequencies=_long_frame(draws["frequency"], [("round", draws["round"]), ("action", action_labels)]),
        welfare=welfare,
        draws=draws,
        intervention=intervention,
        action_labels=action_labels,
        agent_labels=agent_labels,
    )


# ------------------------------------------------------------------ helpers
def _summaries(draws: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and equal-tailed ``INTERVAL`` bounds over the leading draw axis."""
    lo, hi = (1 - INTERVAL) / 2, 1 - (1 - INTERVAL) / 2
    return draws.mean(axis=0), np.quantile(draws, lo, axis=0), np.quantile(draws, hi, axis=0)


def _long_frame(draws: np.ndarray, axes: list[tuple[str, Any]]) -> pd.DataFrame:
    """Summaries of ``draws (S, *sizes)`` in long format: one column per axis, then
    ``mean, q05, q95`` (the first axis varies slowest)."""
    mean, lo, hi = _summaries(np.asarray(draws, dtype=np.float64))
    grids = np.meshgrid(*[np.arange(len(values)) for _, values in axes], indexing="ij")
    frame = {}
    for (name, values), grid in zip(axes, grids):
        values = list(values.tolist() if isinstance(values, np.ndarray) else values)
        frame[name] = [values[j] for j in grid.ravel()]
    frame.update({"mean": mean.ravel(), _LOW: lo.ravel(), _HIGH: hi.ravel()})
    return pd.DataFrame(frame)


def _difference(new: np.ndarray, old: np.ndarray) -> dict[str, float]:
    diff = np.asarray(new, np.float64) - np.asarray(old, np.float64)
    mean, lo, hi = _summaries(diff)
    return {
        "mean": float(mean),
        _LOW: float(lo),
        _HIGH: float(hi),
        "p_positive": float(np.mean(diff > 0)),
        "baseline": float(np.mean(old)),
        "counterfactual": float(np.mean(new)),
    }


def _title(intervention: dict) -> str:
    parts = []
    mech = intervention.get("mechanism")
    if isinstance(mech, dict) and "set" in mech:
        changes = (f"{k} changed" if isinstance(v, dict) else f"{k} set" for k, v in mech["set"].items())
        parts.append("mechanism: " + ", ".join(changes))
    elif isinstance(mech, dict) and "family" in mech:
        parts.append(f"mechanism: new {mech['family']}")
    learner = intervention.get("learner")
    if learner:
        changes = (f"{k}{v}" if isinstance(v, str) else f"{k}={v}" for k, v in learner.items())
        parts.append("learner: " + ", ".join(changes))
    if intervention.get("identified") is False:
        parts.append(f"NOT IDENTIFIED: prior-driven {', '.join(intervention.get('unidentified', []))}")
    return "; ".join(parts) or "no intervention"
