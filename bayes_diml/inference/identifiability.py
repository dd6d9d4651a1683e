"""Identifiability diagnostics: what the data pin down, and what only the prior does.

Two views, both in the family's *natural* coordinates (the arrays of
``mechanism.param_shapes()``, plus the learner parameters that carry a prior),
whatever parameterisation the sampler used (docs/design.md §3):

* **Posterior contraction**, per coordinate and per queried payoff difference::

      contraction = sd_posterior / sd_prior

  near 0: the data pin the quantity down; near 1: its posterior is its prior.

* **Observed Fisher information at the posterior mode** and its flat directions
  (``fisher.py``: the likelihood's curvature and the linear algebra that names
  what it cannot move, e.g. ``c1[0] + tau[0]`` in the congestion family).

This module computes the contraction (prior draws against posterior draws) and
assembles both views into an ``IdentifiabilityReport`` (``identifiability_report``,
``Fit.identifiability``): its tables, plain-words notes and terminal summary.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from .._random import as_key
from .fisher import FLAT_TOL, entry_labels, fisher_directions, fisher_notes, observed_information

__all__ = [
    "IdentifiabilityReport",
    "identifiability_report",
    "contraction_verdict",
    "MAX_FISHER_DIM",
    "IDENTIFIED_BELOW",
    "WEAKLY_IDENTIFIED_BELOW",
]

MAX_FISHER_DIM = 2000
"""The Hessian is skipped (with a note) above this many free coordinates."""

MAX_ENTRIES_PER_ARRAY = 500
"""Arrays with more entries are summarised in one row (root-mean-square sds)."""

PRIOR_DRAWS = 1000
"""Prior draws used for prior sds (fewer for very large models, see ``PRIOR_FLOATS``)."""

PRIOR_FLOATS = 20_000_000
"""Memory bound: prior draws x natural coordinates stays below this (at least 200 draws)."""

IDENTIFIED_BELOW = 0.5
"""Contraction below this: "identified"."""

WEAKLY_IDENTIFIED_BELOW = 0.9
"""Contraction in ``[IDENTIFIED_BELOW, this)``: "weakly identified"; at or above: "prior-driven"."""

FLAT_LOADING_MIN = 0.1
"""A coordinate whose unit vector has at least this norm in the flat subspace is
"not identified on its own" (only combinations of it with others are)."""

_SHOWN_DIRECTIONS = 10  # lines per list in ``verdict()``


def contraction_verdict(contraction: float) -> str:
    """Plain words for a contraction ``sd_posterior / sd_prior``.

    ``< 0.5`` identified, ``0.5 .. 0.9`` weakly identified, ``>= 0.9`` prior-driven;
    ``nan`` (no posterior spread to compare) is "not assessed (one draw)".
    """
    if not np.isfinite(contraction):
        return "not assessed (one draw)"
    if contraction < IDENTIFIED_BELOW:
        return "identified"
    if contraction < WEAKLY_IDENTIFIED_BELOW:
        return "weakly identified"
    return "prior-driven"


# ============================================================ the Fit layer
@dataclasses.dataclass(eq=False)
class IdentifiabilityReport:
    """What the data identify in a fit (``Fit.identifiability``).

    Attributes:
        parameters: one row per natural coordinate (arrays of more than
            ``MAX_ENTRIES_PER_ARRAY`` entries: one root-mean-square row):
            ``name, entry, prior_sd, posterior_sd, contraction, flat_loading,
            verdict``. Verdicts: "identified" (contraction < 0.5), "weakly
            identified" (0.5-0.9), "prior-driven" (>= 0.9); "not identified on its
            own" when the coordinate lies partly along a flat direction of the
            likelihood (``flat_loading >= 0.1``) yet its posterior is narrower than
            its prior (only combinations of it are identified; what is left of its
            spread comes from the prior along the flat direction); "fixed by the
            gauge" (no prior spread); "not assessed (one draw)" (MAP).
        differences: the queried payoff differences with ``prior_sd,
            posterior_sd, contraction, in_support, verdict``.
        eigenvalues: observed information at the posterior mode, descending
            (empty when skipped).
        flat_directions: names of a sparse basis of the flat subspace
            (``c1[0] + tau[0]``).
        identified_directions: names of the top eigenvectors, best identified first.
        notes: plain-words remarks.
        identified_combinations: names of a sparse basis of the identified
            subspace (``tau[0] - c1[0]``, ``c2[0]``).
        coordinates: names of the Fisher coordinates (rows of ``eigenvectors``,
            columns of the bases).
        eigenvectors: ``(d, d)``; flat_basis: ``(k, d)``; identified_basis: ``(d - k, d)``.
        mode: ``{"draw": flat draw index, "log_likelihood": value}`` of the point
            where the information was computed.
        title: what was fitted, for ``verdict()``.
    """

    parameters: pd.DataFrame
    differences: pd.DataFrame
    eigenvalues: np.ndarray
    flat_directions: list[str]
    identified_directions: list[str]
    notes: list[str]
    identified_combinations: list[str] = dataclasses.field(default_factory=list)
    coordinates: list[str] = dataclasses.field(default_factory=list)
    eigenvectors: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 0)))
    flat_basis: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 0)))
    identified_basis: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 0)))
    mode: dict = dataclasses.field(default_factory=dict)
    title: str = ""

    def verdict(self) -> str:
        """A short multi-line summary in plain words, for terminals."""
        lines = [f"Identifiability: {self.title}" if self.title else "Identifiability"]
        counts = self.parameters["verdict"].value_counts()
        lines.append(
            f"Parameters ({len(self.parameters)} rows): " + ", ".join(f"{int(c)} {v}" for v, c in counts.items())
        )
        if len(self.differences):
            d = self.differences
            median = np.nanmedian(d["contraction"]) if np.isfinite(d["contraction"]).any() else np.nan
            lines.append(
                f"Payoff differences ({len(d)} queries, {int(d['in_support'].sum())} in support): "
                + ", ".join(f"{int(c)} {v}" for v, c in d["verdict"].value_counts().items())
                + (f"; median contraction {median:.2f}" if np.isfinite(median) else "")
            )
        if self.eigenvalues.size:
            num_flat = len(self.flat_directions)
            lines.append(
                f"Fisher information at the posterior mode ({len(self.coordinates)} coordinates): "
                f"{num_flat} flat direction(s) (eigenvalue <= {FLAT_TOL:g} x largest), "
                f"{self.eigenvalues.size - num_flat} identified"
            )
            if not num_flat:
                lines.append("  no flat direction: every coordinate is locally identified by the likelihood")
            sections = (
                ("flat (no data can move these)", self.flat_directions),
                ("identified combinations (a sparse basis)", self.identified_combinations if num_flat else []),
                ("best identified (top eigenvectors)", self.identified_directions),
            )
            for label, items in sections:
                if items:
                    lines.append(f"  {label}:")
                    lines += [f"    {item}" for item in items[:_SHOWN_DIRECTIONS]]
                    if len(items) > _SHOWN_DIRECTIONS:
                        lines.append(f"    ... and {len(items) - _SHOWN_DIRECTIONS} more")
        if self.notes:
            lines.append("Notes:")
            lines += [f"  - {note}" for note in self.notes]
        return "\n".join(lines)

    def to_frame(self) -> pd.DataFrame:
        """Parameters and differences in one table (column ``kind``), for ``identifiability.csv``."""
        params = self.parameters.assign(kind="parameter")
        diffs = self.differences.copy()
        if len(diffs):
            diffs["name"] = "difference"
            diffs["entry"] = [
                f"agent {r.agent}: {r.action} vs {r.baseline} | {r.joint}" for r in diffs.itertuples(index=False)
            ]
        diffs = diffs.assign(kind="difference")
        frame = pd.concat([params, diffs], ignore_index=True, sort=False)
        first = ["kind", "name", "entry", "prior_sd", "posterior_sd", "contraction", "verdict"]
        return frame[first + [c for c in frame.columns if c not in first]]


def identifiability_report(fit, queries=None, *, seed) -> IdentifiabilityReport:
    """Posterior contraction and Fisher-information directions of a fit (docs/design.md §3).

    Args:
        fit: a ``Fit`` (NUTS, SVI or MAP).
        queries: payoff-difference queries (``agent, action, baseline, joint``; see
            ``queries.parse_queries``); default 20 random in-support ones
            (``sample_queries(fit.data, 20, seed=seed)``; a JAX key seeds them by
            its key data).
        seed: an int or a JAX key (required): the prior draws and the default queries.

    Returns:
        An ``IdentifiabilityReport``.
    """
    from ..differences import sample_queries

    model = fit.model
    key = as_key(seed)
    if queries is None:
        numpy_seed = seed if isinstance(seed, (int, np.integer)) else np.asarray(jax.random.key_data(key)).tolist()
        queries = sample_queries(fit.data, 20, seed=numpy_seed)
    shapes = _natural_shapes(model)
    prior = _prior_draws(fit, key, shapes)
    prior_sd = {name: _entry_sd(prior[name]) for name in shapes}
    posterior_sd = {
        name: _entry_sd(np.asarray(fit.posterior[name]).reshape(fit.num_total_draws, *shapes[name])) for name in shapes
    }
    notes: list[str] = []

    # Fisher information at the mode, over the coordinates the prior lets move.
    fisher, coordinates, mode = None, [], {}
    free = {name: prior_sd[name] > 0 for name in shapes}
    num_free = int(sum(v.sum() for v in free.values()))
    num_pinned = int(sum(v.size - v.sum() for v in free.values()))
    if num_free > MAX_FISHER_DIM:
        notes.append(
            f"Fisher information skipped: {num_free} free coordinates exceed MAX_FISHER_DIM = {MAX_FISHER_DIM}; "
            "judge identifiability by the contraction columns and the payoff differences."
        )
    elif num_free > 0:
        information, coordinates, mode = observed_information(fit, shapes, free)
        fisher = fisher_directions(information, coordinates)
        notes += fisher_notes(fisher, mode, num_pinned)
    loading = dict(zip(coordinates, fisher.flat_loading)) if fisher is not None else {}

    parameters = _parameter_table(shapes, prior_sd, posterior_sd, loading, fit)
    differences = _difference_table(fit, prior, queries)
    notes = _model_notes(fit, parameters, differences) + notes
    d = len(coordinates)
    return IdentifiabilityReport(
        parameters=parameters,
        differences=differences,
        eigenvalues=fisher.eigenvalues if fisher is not None else np.zeros(0),
        flat_directions=fisher.flat_directions if fisher is not None else [],
        identified_directions=fisher.identified_directions if fisher is not None else [],
        notes=notes,
        identified_combinations=fisher.identified_combinations if fisher is not None else [],
        coordinates=coordinates,
        eigenvectors=fisher.eigenvectors if fisher is not None else np.zeros((0, 0)),
        flat_basis=fisher.flat_basis if fisher is not None else np.zeros((0, d)),
        identified_basis=fisher.identified_basis if fisher is not None else np.zeros((0, d)),
        mode=mode,
        title=(
            f"{model.mechanism.family} mechanism, {model.learner.name} learner "
            f"({fit.method} fit, {fit.num_total_draws} draw{'s' if fit.num_total_draws != 1 else ''})"
        ),
    )


def _difference_table(fit, prior: dict, queries) -> pd.DataFrame:
    """Prior and posterior sd of each queried payoff difference, with support and verdict."""
    from ..differences import draw_differences, in_support, support_contexts
    from .queries import difference_draws, parse_queries

    mechanism = fit.model.mechanism
    if len(queries) == 0:  # no round in which every agent played (save_run): nothing to ask about
        return pd.DataFrame(columns=["agent", "action", "baseline", "joint", "prior_sd", "posterior_sd", "contraction",
                                     "in_support", "verdict"])
    frame, codes = parse_queries(queries, fit.data)
    prior_mechanism = {name: jnp.asarray(prior[name]) for name in mechanism.param_shapes()}
    prior_draws = draw_differences(mechanism, prior_mechanism, codes)
    posterior_draws = difference_draws(fit, codes)
    contexts = support_contexts(fit.data, mechanism.counts_context, mechanism.num_actions)
    out = frame.copy()
    out["prior_sd"] = _entry_sd(prior_draws)
    out["posterior_sd"] = _entry_sd(posterior_draws)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["contraction"] = np.where(out["prior_sd"] > 0, out["posterior_sd"] / out["prior_sd"], np.nan)
    out["in_support"] = in_support(codes, contexts, mechanism.counts_context, mechanism.num_actions)
    out["verdict"] = [
        "fixed (no prior spread)" if p == 0 else contraction_verdict(c)
        for p, c in zip(out["prior_sd"], out["contraction"])
    ]
    return out


def _natural_shapes(model) -> dict[str, tuple[int, ...]]:
    """Mechanism arrays (family order), then learner parameters that carry a prior."""
    shapes = {name: tuple(shape) for name, shape in model.mechanism.param_shapes().items()}
    for name in model.learner_priors:
        shapes[name] = ()
    return shapes


def _entry_sd(draws: np.ndarray) -> np.ndarray:
    """Per-entry sd over the leading draw axis (``nan`` for a single draw)."""
    draws = np.asarray(draws, np.float64)
    if draws.shape[0] < 2:
        return np.full(draws.shape[1:], np.nan)
    return draws.std(axis=0, ddof=1)


def _prior_draws(fit, key, shapes) -> dict[str, np.ndarray]:
    """Prior draws of the natural coordinates, ``name -> (num_prior_draws, *shape)``.

    ``Predictive`` runs the NumPyro model itself (the same priors and
    deterministic sites the sampler saw); under ``jit`` the unused likelihood
    factor is pruned, so prior draws cost no likelihood evaluations.
    """
    from numpyro.infer import Predictive

    from ..likelihood import as_arrays
    from .numpyro_model import numpyro_model, observed_payoffs

    size = max(1, sum(int(np.prod(s)) for s in shapes.values()))
    num = int(np.clip(PRIOR_FLOATS // size, 200, PRIOR_DRAWS))
    actions, mask = as_arrays(fit.data)
    payoff = observed_payoffs(fit.data)  # observed payoffs or outcomes lift the gauge, as in the fit
    predictive = Predictive(functools.partial(numpyro_model, fit.model), num_samples=num, return_sites=list(shapes))
    draws = jax.jit(lambda k: predictive(k, actions, mask, payoff))(key)
    return {name: np.asarray(draws[name]).reshape(num, *shapes[name]) for name in shapes}


def _parameter_table(shapes, prior_sd, posterior_sd, loading, fit=None) -> pd.DataFrame:
    rows = []
    for name, shape in shapes.items():
        labels = entry_labels(name, shape, fit)
        p, q = np.ravel(prior_sd[name]), np.ravel(posterior_sd[name])
        f = np.array([loading.get(label, np.nan) for label in labels])
        if len(labels) > MAX_ENTRIES_PER_ARRAY:
            moving = p > 0
            rms = lambda x: float(np.sqrt(np.mean(x[moving] ** 2))) if moving.any() else 0.0  # noqa: E731
            entry = f"{name}[*] (root-mean-square over {int(moving.sum())} of {len(labels)} entries)"
            known = moving.any() and np.isfinite(f[moving]).all()
            rows.append(_parameter_row(name, entry, rms(p), rms(q), rms(f) if known else np.nan))
        else:
            rows += [_parameter_row(name, label, p[j], q[j], f[j]) for j, label in enumerate(labels)]
    known = getattr(getattr(fit, "model", None), "mechanism_known", None) or {}
    for row in rows:  # [mechanism.known]: data, not a gauge convention
        if row["name"] in known and row["prior_sd"] == 0:
            row["verdict"] = "known (data)"
    columns = ["name", "entry", "prior_sd", "posterior_sd", "contraction", "flat_loading", "verdict"]
    return pd.DataFrame(rows, columns=columns)


def _parameter_row(name, entry, prior_sd, posterior_sd, flat_loading) -> dict:
    prior_sd, posterior_sd = float(prior_sd), float(posterior_sd)
    contraction = posterior_sd / prior_sd if prior_sd > 0 else np.nan
    if prior_sd == 0:
        verdict = "fixed by the gauge"
    elif np.isfinite(contraction) and contraction >= WEAKLY_IDENTIFIED_BELOW:
        verdict = "prior-driven"
    elif np.isfinite(flat_loading) and flat_loading >= FLAT_LOADING_MIN:
        verdict = "not identified on its own"
    else:
        verdict = contraction_verdict(contraction)
    return {
        "name": name,
        "entry": entry,
        "prior_sd": prior_sd,
        "posterior_sd": posterior_sd,
        "contraction": contraction,
        "flat_loading": float(flat_loading),
        "verdict": verdict,
    }


def _model_notes(fit, parameters: pd.DataFrame, differences: pd.DataFrame) -> list[str]:
    """Plain-words remarks from the model's structure and the tables (docs/design.md §3)."""
    model = fit.model
    notes = []
    if model.mechanism_known:
        notes.append(
            f"Known ([mechanism.known]): {', '.join(sorted(model.mechanism_known))}: held at their values as data, "
            "not sampled, and left out of the Fisher analysis."
        )
    from .numpyro_model import fix_gauge, observed_payoffs

    if fix_gauge(model, observed_payoffs(fit.data) is not None):
        notes.append("Payoff levels are not identified under a full-information learner; report differences.")
    if "beta" in model.learner.param_names:
        if "beta" in model.learner_priors:
            notes.append(
                "beta multiplies every payoff: with beta unknown only beta x (payoff differences) is identified; "
                "a flat direction mixing beta with the payoff parameters is this scale ridge unless observed "
                "payoffs pin the scale."
            )
        else:
            notes.append(
                f"beta multiplies every payoff: it is fixed at {model.fixed_learner_params['beta']}, so payoff "
                "differences are identified in the units this value implies (another beta rescales them all)."
            )
    if fit.num_total_draws < 2:
        notes.append(
            "One draw (MAP): there is no posterior spread, so contraction is not assessed; rely on the Fisher "
            "directions, or refit with NUTS (bayes-diml fit --method nuts; method='nuts' in Python) or, in Python, "
            "a Laplace approximation (method='map', laplace=True)."
        )
    confounded = parameters.loc[
        (parameters["verdict"] == "not identified on its own") & np.isfinite(parameters["contraction"]), "name"
    ].unique().tolist()
    flat_named = parameters.loc[parameters["flat_loading"] >= FLAT_LOADING_MIN, "name"].unique().tolist()
    if flat_named:
        notes.append(
            f"{', '.join(flat_named)} move along flat directions of the likelihood: the data identify only "
            "combinations of them (see the identified combinations), not each entry alone"
            + (
                f"; what spread is left in {', '.join(confounded)} comes from the prior along those directions, "
                "not from the data."
                if confounded
                else "."
            )
        )
    off = ~differences["in_support"].to_numpy(bool)
    if off.any():
        prior_driven = int((differences["verdict"][off] == "prior-driven").sum())
        notes.append(
            f"{int(off.sum())} of {len(differences)} queried differences are off support (their opponent context "
            f"never occurs in the data): {model.mechanism.off_support_note} ({prior_driven} prior-driven here)."
        )
    return notes
