"""Diagnostics of a ``Fit``, as functions of it: the summary table, convergence in plain
words (R-hat, ESS, divergences, E-BFMI; ArviZ 1.x) and prior sensitivity."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .laplace_grid import approximation_warning
from .results import CREDIBLE_LEVEL, ESS_MIN, FIXED, RHAT_MAX

__all__ = ["diagnose", "summary", "sensitivity", "collapsed_learner_parameters", "EBFMI_MIN", "COLLAPSE_CORRELATION"]

EBFMI_MIN = 0.3
"""E-BFMI below this suggests the sampler explores the energy distribution poorly (Betancourt 2016)."""

COLLAPSE_CORRELATION = 0.95
"""|posterior correlation| between two learner parameters above this is reported: the
data inform (nearly) only a combination of the two."""

EDGE_WEIGHT_MAX = 0.01
"""``method="laplace_grid"``: posterior weight of an outermost grid point above which the
grid is said to cut the payoff scale's posterior short (``laplace_grid.GRID_DROP`` makes
it about 0.001 when the grid walked far enough)."""


def collapsed_learner_parameters(fit, threshold: float = COLLAPSE_CORRELATION) -> list[tuple[str, str, float]]:
    """Pairs of unknown scalar learner parameters whose posterior correlation exceeds
    ``threshold`` in absolute value: ``[(name_a, name_b, correlation), ...]``.

    Learning rules can have parameters that act on play only through a combination.
    In EWA (Camerer & Ho 1999, §2) the attractions follow
    ``A_t = (phi N_{t-1} A_{t-1} + w_t U_t) / N_t`` with ``N_t = rho N_{t-1} + 1``;
    once ``N_t`` has settled at ``1 / (1 - rho)``, the update is ``A_t = phi A_{t-1} + (1 - rho) w_t U_t``: ``rho``
    then only rescales the payoffs, trading against ``lambda`` (beta) and the
    foregone-payoff weight ``delta``, and long episodes pin only the products.
    Detected generically from the draws, for any learner.
    """
    names = [n for n in fit.model.learner_priors if n not in fit.model.per_agent]
    names += [f"{n}_mean" for n in fit.model.per_agent]
    draws = {}
    for name in names:
        values = np.asarray(fit.posterior.get(name, np.empty(0)), float)
        if values.ndim == 2 and values.size > 2 and np.std(values) > 0:
            draws[name] = values.ravel()
    out = []
    keys = list(draws)
    for a in range(len(keys)):
        for b in range(a + 1, len(keys)):
            r = float(np.corrcoef(draws[keys[a]], draws[keys[b]])[0, 1])
            if abs(r) > threshold:
                out.append((keys[a], keys[b], r))
    return out


def _collapse_warnings(fit) -> list[str]:
    return [
        f"Learner parameters '{a}' and '{b}' move together in the posterior (correlation {r:+.2f}): "
        f"the data inform mainly a combination of the two, not each one; fix one of them to a number, "
        f"or read only their combination."
        for a, b, r in collapsed_learner_parameters(fit)
    ]


def _extreme(dataset, reducer) -> float:
    values = [np.asarray(v.values, float).ravel() for v in dataset.data_vars.values()]
    values = np.concatenate(values) if values else np.array([np.nan])
    values = values[np.isfinite(values)]
    return float(reducer(values)) if values.size else float("nan")


def diagnose(fit) -> dict:
    """Diagnostics of a ``Fit`` as a dict with a ``warnings`` list of sentences.

    MCMC: max R-hat (rank-normalised), min bulk and tail ESS over the natural
    parameters, the number of divergences, E-BFMI per chain. SVI and MAP have
    no MCMC diagnostics; their optimisation summary is returned instead. For
    every method, pairs of learner parameters that collapse onto each other
    (``collapsed_learner_parameters``) are reported in plain words, and which method
    ran and why (``method_requested``, ``method_reason``), with the fit's
    ``calibration_warning`` (``inference.auto``) among the warnings when it gave one, and the
    conditional posterior predictive checks the fit recorded (``"ppc"``: ``{"tables",
    "misfit", ...}``, ``inference.ppc``), with a warning naming the failing tables.
    """
    out: dict = {"method": fit.method, "warnings": []}
    out.update({k: fit.info[k] for k in ("method_requested", "method_reason") if k in fit.info})
    if fit.info.get("calibration_warning"):
        out["calibration_warning"] = fit.info["calibration_warning"]
        out["warnings"].append(fit.info["calibration_warning"])
    out["warnings"].extend(_collapse_warnings(fit))
    if isinstance(fit.info.get("ppc"), dict):  # conditional posterior predictive checks (inference.ppc)
        out["ppc"] = fit.info["ppc"]
        if out["ppc"].get("misfit"):
            from .ppc import misfit_message

            out["warnings"].append(misfit_message(out["ppc"]))
    if fit.method != "nuts":
        return _approximation_diagnostics(fit, out)

    import arviz as az

    tree = fit.to_arviz()
    known = getattr(fit.model, "mechanism_known", {}) or {}  # [mechanism.known]: data, constant over draws
    names = [n for n in fit.summary_variables() if n not in known]
    with np.errstate(invalid="ignore", divide="ignore"):  # coordinates pinned by the gauge are constant: NaN, skipped
        out["max_rhat"] = _extreme(az.rhat(tree, var_names=names), np.max) if fit.num_chains > 1 else float("nan")
        out["min_ess_bulk"] = _extreme(az.ess(tree, var_names=names, method="bulk"), np.min)
        out["min_ess_tail"] = _extreme(az.ess(tree, var_names=names, method="tail"), np.min)
    out["divergences"] = int(np.sum(fit.sample_stats["diverging"]))
    ebfmi = np.asarray(az.bfmi(tree)["energy"].values if hasattr(az.bfmi(tree), "data_vars") else az.bfmi(tree), float)
    out["ebfmi"] = [float(x) for x in np.ravel(ebfmi)]
    out["mean_leapfrog_steps"] = float(np.mean(fit.sample_stats["n_steps"]))
    w = out["warnings"]
    collapse = list(w)
    if fit.num_chains < 2:
        w.append("Only one chain: R-hat cannot be computed; run at least 4 chains (--chains 4; num_chains=4 in Python) to check convergence.")
    elif out["max_rhat"] > RHAT_MAX:
        w.append(
            f"R-hat reaches {out['max_rhat']:.3f} (> {RHAT_MAX}): the chains disagree; run a longer warmup or more samples "
            "(--warmup, --samples; num_warmup=, num_samples= in Python)."
        )
    if out["min_ess_bulk"] < ESS_MIN or out["min_ess_tail"] < ESS_MIN:
        w.append(
            f"Effective sample size is low (bulk {out['min_ess_bulk']:.0f}, tail {out['min_ess_tail']:.0f}; "
            f"want >= {ESS_MIN}): intervals are noisy; draw more samples (--samples; num_samples= in Python)."
        )
    if out["divergences"] > 0:
        w.append(
            f"{out['divergences']} divergent transitions: the posterior has regions the sampler cannot follow; "
            "tighten the priors in the spec, or raise target_accept (e.g. 0.95; an option of fit() in Python)."
        )
    if any(x < EBFMI_MIN for x in out["ebfmi"]):
        w.append(f"E-BFMI below {EBFMI_MIN} in some chain: the sampler explores the energy poorly.")
    out["ok"] = not [x for x in w if x not in collapse]
    return out


def _approximation_diagnostics(fit, out: dict) -> dict:
    """``out`` with what SVI, MAP and the Laplace grid report instead of MCMC diagnostics:
    the optimisation summary, the grid (its edge weight) and the grid's Pareto ``k``
    (``laplace_grid.approximation_warning``, once); without a check of their own, a
    sentence that says so."""
    info, w = fit.info, out["warnings"]
    out.update({k: info.get(k) for k in ("final_elbo", "optimum_spread", "restarts") if k in info})
    if fit.method != "laplace_grid" or "pareto_k" not in info:
        w.append(
            f"{fit.method.upper()} gives an approximation without MCMC convergence diagnostics; "
            "check key results with NUTS (bayes-diml fit --method nuts; method='nuts' in Python) where the model is small enough."
        )
    elif (unchecked := approximation_warning(fit.method, info)) is not None and unchecked not in w:
        w.append(unchecked)
    if fit.method == "laplace_grid":
        out.update({k: info[k] for k in ("grid", "edge_weight", "pareto_k", "pareto_k_draws") if k in info})
        if info.get("edge_weight", 0.0) > EDGE_WEIGHT_MAX:
            w.append(
                f"The Laplace grid's outermost payoff scale carries {info['edge_weight']:.1%} of the posterior "
                "weight: the scale's posterior reaches past the grid, so the intervals may be too narrow."
            )
    if fit.method == "map" and info.get("optimum_spread", 0.0) > 1.0:
        w.append(
            f"The MAP restarts ended {info['optimum_spread']:.2f} log-density units apart: "
            "the objective has several optima; more steps (--steps) or restarts (restarts= in Python) may find a better one."
        )
    return out


def summary(fit, var_names=None, mark_fixed: bool = False):
    """ArviZ summary of the natural parameters with ``CREDIBLE_LEVEL`` equal-tailed
    intervals (columns ``eti90_lb``, ``eti90_ub``).

    Numbers, not strings; entries that do not vary over the draws (pinned at 0 by
    the gauge, or known in ``[mechanism.known]``) have no ESS, R-hat or MCSE: NaN there, or the word ``FIXED``
    ("fixed") with ``mark_fixed`` (as in a run folder's ``summary.csv``).
    """
    import arviz as az

    with np.errstate(invalid="ignore", divide="ignore"):  # gauge-pinned entries are constant: 0 / 0, marked below
        table = az.summary(
            fit.to_arviz(), var_names=var_names or fit.summary_variables(), round_to="none",
            ci_prob=CREDIBLE_LEVEL, ci_kind="eti",
        )
    table = pd.DataFrame(table)
    fixed = np.zeros(len(table), bool)
    # constant over the draws, up to float rounding of the sd; one MAP draw: nothing is "fixed"
    if {"sd", "mean"} <= set(table.columns) and fit.num_total_draws > 1:
        fixed = table["sd"].to_numpy(float) <= 1e-9 * np.abs(table["mean"].to_numpy(float))
    known = getattr(fit.model, "mechanism_known", {}) or {}  # [mechanism.known]: data, held at their values
    fixed = fixed | np.array([str(i).split("[")[0] in known for i in table.index], bool)
    if fixed.any():
        columns = [c for c in ("ess_bulk", "ess_tail", "r_hat", "mcse_mean", "mcse_sd") if c in table.columns]
        if mark_fixed:
            table[columns] = table[columns].astype(object)
        table.loc[fixed, columns] = FIXED if mark_fixed else np.nan
    return table


def sensitivity(fit, var_names=None, threshold: float = 0.05):
    """Which quantities the prior dominates: power-scaling sensitivity.

    Power-scales the prior and the likelihood, ``p(theta)^a`` and ``p(y | theta)^a``
    for ``a`` near 1, and measures how far each posterior marginal moves (the
    cumulative Jensen-Shannon distance per unit of ``log a``), by importance
    weighting the draws without refitting (Kallioinen, Paananen, Bürkner &
    Vehtari 2024, Stat Comput 34:57; ArviZ ``psense_summary``).

    Args:
        var_names: posterior variables (default ``summary_variables()``).
        threshold: sensitivity above which a component counts as influential.

    Returns:
        DataFrame indexed by variable with columns ``prior``, ``likelihood``
        (sensitivities), ``diagnosis`` (ArviZ's) and ``meaning`` (plain words):
        a prior sensitivity above ``threshold`` with a weak likelihood sensitivity
        means the prior, not the data, determines that quantity.
    """
    import logging

    import arviz_stats

    tree = fit.to_arviz()
    if "log_prior" not in tree.children or "log_likelihood" not in tree.children:
        raise ValueError("sensitivity needs the log_prior and log_likelihood groups (a fit with unknowns)")
    names = var_names or fit.summary_variables()
    logger = logging.getLogger("arviz_stats")
    level = logger.level
    logger.setLevel(logging.ERROR)  # the plain-words column below replaces ArviZ's generic warning
    try:
        table = arviz_stats.psense_summary(tree, var_names=names, threshold=threshold, round_to=6)
    finally:
        logger.setLevel(level)

    def meaning(row) -> str:
        if row["prior"] >= threshold and row["likelihood"] >= threshold:
            return "prior and data disagree: the prior pulls against the data"
        if row["prior"] >= threshold:
            return "the prior dominates: the data say little about this quantity"
        if row["likelihood"] >= threshold:
            return "the data dominate"
        return "neither scaling moves it noticeably"

    table["meaning"] = table.apply(meaning, axis=1)
    return table
