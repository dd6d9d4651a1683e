"""Figures for run folders and notebooks (matplotlib ``Figure`` objects, no pyplot state)."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from .inference.results import CREDIBLE_LEVEL, interval_columns

__all__ = ["plot_rank_trace", "plot_payoff_differences", "plot_posterior_predictive", "plot_conditional_checks", "plot_design"]


def _entries(fit, names, max_entries):
    """``(label, draws (chain, draw))`` of up to ``max_entries`` entries, labelled as in the
    summary (``payoffs[high low, bob]``); entries fixed by the gauge (constant over the
    draws) are left out unless nothing varies (a MAP fit)."""
    out, fixed = [], []
    for name in names:
        values = np.asarray(fit.posterior[name])
        flat = values.reshape(values.shape[0], values.shape[1], -1)
        labels = fit.entry_labels(name, values.shape[2:])
        for j in range(flat.shape[2]):
            (out if np.ptp(flat[:, :, j]) > 0 else fixed).append((labels[j], flat[:, :, j]))
            if len(out) >= max_entries:
                return out
    return out or fixed[:max_entries]


def plot_rank_trace(fit, var_names=None, max_entries: int = 12) -> Figure:
    """Trace (left) and rank histograms per chain (right) of up to ``max_entries`` entries.

    Rank plots (Vehtari et al. 2021): with well-mixed chains each chain's ranks
    of the pooled draws are uniform.
    """
    entries = _entries(fit, var_names or fit.summary_variables(), max_entries)
    fig = Figure(figsize=(10, 1.6 * len(entries) + 0.6), layout="constrained")
    axes = fig.subplots(len(entries), 2, squeeze=False)
    for (label, draws), (ax_trace, ax_rank) in zip(entries, axes):
        chains, num = draws.shape
        ranks = np.argsort(np.argsort(draws.ravel())).reshape(chains, num)
        bins = np.linspace(0, chains * num, 21)
        for c in range(chains):
            ax_trace.plot(draws[c], lw=0.5, alpha=0.8)
            ax_rank.hist(ranks[c], bins=bins, histtype="step", lw=1.2)
        ax_rank.axhline(num / 20, color="k", ls=":", lw=0.8)
        ax_trace.set_ylabel(label, fontsize=8)
        ax_rank.set_yticks([])
    axes[0, 0].set_title("trace")
    axes[0, 1].set_title("rank histogram per chain (uniform = well mixed)")
    return fig


def plot_payoff_differences(table, title: str = f"payoff differences ({CREDIBLE_LEVEL:.0%} intervals)") -> Figure:
    """Forest plot of a ``payoff_differences`` table; truths as crosses when present."""
    n = len(table)
    fig = Figure(figsize=(7, 0.32 * n + 1.2), layout="constrained")
    ax = fig.subplots()
    y = np.arange(n)[::-1]
    low, high = interval_columns()
    lo, hi = table[low].to_numpy(), table[high].to_numpy()
    colors = np.where(table["in_support"].to_numpy(), "C0", "C7")
    ax.hlines(y, lo, hi, colors=colors, lw=2)
    ax.scatter(table["mean"], y, color=colors, s=14, zorder=3, label="posterior mean")
    if "truth" in table:
        ax.scatter(table["truth"], y, marker="x", color="C3", s=24, zorder=4, label="truth")
    labels = [
        f"agent {r.agent}: {r.action} vs {r.baseline} | {r.joint}" for r in table[["agent", "action", "baseline", "joint"]].itertuples()
    ]
    ax.set_yticks(y, labels, fontsize=7)
    ax.axvline(0, color="k", lw=0.6)
    ax.set_xlabel("Δ = M(action, a₋ᵢ)ᵢ − M(baseline, a₋ᵢ)ᵢ   (grey: context not in the data)")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="best")
    return fig


def plot_posterior_predictive(fit) -> Figure:
    """Observed action frequency per round against the posterior predictive ``CREDIBLE_LEVEL`` (90%) band."""
    pp = fit.posterior_predictive["action_frequency"]
    pp = pp.reshape(-1, *pp.shape[2:])  # (draws, T, A)
    observed = fit.observed_frequencies()
    rounds = np.arange(fit.data.first_round, fit.data.first_round + fit.data.num_rounds)
    A = fit.model.num_actions
    cols = min(A, 4)
    rows = int(np.ceil(A / cols))
    fig = Figure(figsize=(3.2 * cols, 2.4 * rows + 0.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for k in range(A):
        ax = axes[k]
        tail = (1 - CREDIBLE_LEVEL) / 2
        lo, mid, hi = np.quantile(pp[:, :, k], [tail, 0.5, 1 - tail], axis=0)
        ax.fill_between(rounds, lo, hi, color="C0", alpha=0.3, label=f"posterior predictive {CREDIBLE_LEVEL:.0%}")
        ax.plot(rounds, mid, color="C0", lw=1)
        ax.plot(rounds, observed[:, k], color="k", lw=1, label="observed")
        ax.set_title(f"action {fit.data.action_labels[k]}", fontsize=9)
        ax.set_ylim(0, max(0.05, float(np.nanmax([hi.max(), np.nanmax(observed[:, k])])) * 1.1))
    for ax in axes[A:]:
        ax.set_visible(False)
    axes[0].legend(fontsize=7)
    fig.supxlabel("round")
    fig.supylabel("share of agents")
    return fig


def plot_conditional_checks(result: dict) -> Figure:
    """The conditional posterior predictive checks (``inference.ppc``; ``bd.ppc(fit)``, or the
    ``"ppc"`` entry of a run folder's ``diagnostics.json``): one panel per table, the observed
    share of each action given the conditioning value (black) against its ``CREDIBLE_LEVEL``
    (90%) posterior predictive band (blue bar, tick at the predictive share); a failing
    table's title in red."""
    low, high = interval_columns()
    tables = result["tables"]
    fig = Figure(figsize=(4.2 * max(1, len(tables)), 3.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, max(1, len(tables)), squeeze=False)).ravel()
    for ax, (name, table) in zip(axes, tables.items()):
        observed = np.asarray(table["observed_share"], float)
        predicted = np.asarray(table["predictive_share"], float)
        lo, hi = np.asarray(table[low], float), np.asarray(table[high], float)
        rows, columns = table["rows"], table["columns"]
        width = len(columns) + 1
        x = np.arange(len(rows))[:, None] * width + np.arange(len(columns))[None, :]
        ax.vlines(x.ravel(), lo.ravel(), hi.ravel(), color="C0", lw=5, alpha=0.35,
                  label=f"posterior predictive {CREDIBLE_LEVEL:.0%}")
        reached = np.isfinite(lo.ravel())  # rows no replicate reached have no band and no predictive tick
        ax.scatter(x.ravel()[reached], predicted.ravel()[reached], marker="_", color="C0", s=60)
        ax.scatter(x.ravel(), observed.ravel(), color="k", s=14, zorder=3, label="observed")
        ax.set_xticks(x.ravel(), [str(c) for c in columns] * len(rows), fontsize=7)
        for r, label in enumerate(rows):
            ax.text(x[r].mean(), 0.98, f"after {label}", ha="center", va="top", fontsize=7, color="0.3")
        stay = table.get("stay")
        extra = f", stay {stay['observed']:.2f} vs [{stay[low]:.2f}, {stay[high]:.2f}]" if stay else ""
        ax.set_title(f"{table['title']}\np = {table['p']:.2g}{extra}", fontsize=8,
                     color="C3" if table.get("misfit") else "k")
        ax.set_xlabel(f"action, grouped by {table['row_name']}", fontsize=8)
        ax.set_ylim(0, 1.05)
    axes[0].set_ylabel("share of choices")
    axes[0].legend(fontsize=7, loc="center right")
    return fig


def plot_design(result: dict, ax=None) -> Figure:
    """The objective under the recommended, status-quo and plug-in designs of a design result
    (``bd.design``, or a run folder's ``designs/NAME.json``): posterior mean (dot) and equal-tailed
    band (bar) of its per-draw values, the status quo's mean as a dotted line. Draws on ``ax``
    when given; returns its figure."""
    settings = result.get("settings", {})
    level = float(settings.get("interval", CREDIBLE_LEVEL))
    low, high = interval_columns(level)
    names = [n for n in ("recommended", "status_quo", "plug_in") if n in result["objective"]]
    entries = [result["objective"][n] for n in names]
    if ax is None:
        fig = Figure(figsize=(5.2, 3.0), layout="constrained")
        ax = fig.subplots()
    mean = np.array([float(e["mean"]) for e in entries])
    lo, hi = np.array([float(e[low]) for e in entries]), np.array([float(e[high]) for e in entries])
    y = np.arange(len(names))[::-1]
    for j, name in enumerate(names):
        color = {"recommended": "C0", "status_quo": "C7", "plug_in": "C1"}[name]
        ax.hlines(y[j], lo[j], hi[j], color=color, lw=3, alpha=0.6)
        ax.scatter(mean[j], y[j], color=color, s=28, zorder=3)
    if "status_quo" in names:
        ax.axvline(mean[names.index("status_quo")], color="C7", ls=":", lw=0.8)
    ax.set_yticks(y, [n.replace("_", " ").replace("plug in", "plug-in") for n in names])
    ax.set_ylim(-0.6, len(names) - 0.4)
    target = f" (target {float(settings['target']):g})" if settings.get("target") is not None else ""
    ax.set_xlabel(f"objective {settings.get('objective', '?')}{target}: posterior mean, {level:.0%} band")
    ax.set_title(f"design of {result.get('lever', '?')}, risk {settings.get('risk', '?')}", fontsize=9)
    return ax.figure
