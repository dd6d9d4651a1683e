"""Identifiability diagnostics: what the data pin down, and what only the prior does.

Two views, both in the family's *natural* coordinates (the arrays of
``mechanism.param_shapes()``, plus the learner parameters that carry a prior),
whatever parameterisation the sampler used (docs/design.md §3):

* **Posterior contraction**, per coordinate and per queried payoff difference::

      contraction = sd_posterior / sd_prior

  near 0: the data pin the quantity down; near 1: its posterior is its prior.

* **Observed Fisher information at the posterior mode** (the draw of highest
  likelihood)::

      I(theta) = -d^2/dtheta^2 log p(actions | theta)

  Directions ``v`` with ``v' I v ~ 0`` are *flat*: no data set of this design can
  move the likelihood along them. They are named in readable form from a sparse
  basis of the null space (its reduced row echelon form), e.g. ``c1[0] + tau[0]``
  in the congestion family, where ``payoff = (tau - c1) L - c2 L^2``. Nothing
  here knows any family: the flat directions are found from the Hessian alone.

Layering: array functions (``rref``, ``combination_name``, ``direction_name``,
``fisher_directions``), then the ``Fit`` layer (``identifiability_report``).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from .._random import as_key

__all__ = [
    "IdentifiabilityReport",
    "identifiability_report",
    "FisherDirections",
    "fisher_directions",
    "sparse_basis",
    "rref",
    "combination_name",
    "direction_name",
    "contraction_verdict",
    "FLAT_TOL",
    "MAX_FISHER_DIM",
    "IDENTIFIED_BELOW",
    "WEAKLY_IDENTIFIED_BELOW",
]

FLAT_TOL = 1e-6
"""An eigenvalue of the observed information is *flat* when ``|lambda| <= FLAT_TOL *
lambda_max``.

The Hessian is computed in the default float (float32; float64 under ``--x64``).
Measured on the E2 congestion fit (4 agents, 5 actions, 48 x 60), the float32
Hessian differs from the float64 one by ``5e-8 * lambda_max`` in spectral norm,
which bounds the error of every computed eigenvalue: the five exact null directions
(``c1[k] + tau[k]``) came out at ``|lambda| < 1e-16 * lambda_max``, while the
weakest genuinely identified direction (a near-common shift of all resources, seen
only through load variation) sat at ``1.2e-4 * lambda_max``. ``1e-6`` lies 20x above
the float32 noise and 100x below that weakest direction; the commonly used ``1e-4``
would call it flat. A direction at ``1e-6 * lambda_max`` has a Cramer-Rao sd 1000x
that of the best-identified one, so calling it flat loses nothing practical.
"""

MAX_FISHER_DIM = 2000
"""The Hessian is skipped (with a note) above this many free coordinates."""

MAX_ENTRIES_PER_ARRAY = 500
"""Arrays with more entries are summarised in one row (root-mean-square sds)."""

PRIOR_DRAWS = 1000
"""Prior draws used for prior sds (fewer for very large models, see ``PRIOR_FLOATS``)."""

PRIOR_FLOATS = 20_000_000
"""Memory bound: prior draws x natural coordinates stays below this (at least 200 draws)."""

HESSIAN_BATCH = 64
"""Hessian-vector products computed at once (bounds memory for large models)."""

IDENTIFIED_BELOW = 0.5
"""Contraction below this: "identified"."""

WEAKLY_IDENTIFIED_BELOW = 0.9
"""Contraction in ``[IDENTIFIED_BELOW, this)``: "weakly identified"; at or above: "prior-driven"."""

FLAT_LOADING_MIN = 0.1
"""A coordinate whose unit vector has at least this norm in the flat subspace is
"not identified on its own" (only combinations of it with others are)."""

RREF_TOL = 1e-3
"""Entries of the (orthonormal) null-space basis below this are treated as zero
in the row reduction: well above float32 noise in the eigenvectors, well below
any loading worth naming."""

COEFFICIENT_DIGITS = 2
"""Decimal digits of the coefficients in direction names."""

LOADING_MIN = 0.25
"""Identified directions name the coordinates with at least this loading
(relative to the largest)."""

MAX_TERMS = 6
"""At most this many terms per named identified direction (then ``+ ...``)."""

NUM_IDENTIFIED = 5
"""Number of best-identified directions named."""

SHARP_GAP = 100.0
"""Below this ratio between the smallest identified and the largest flat
eigenvalue, a note says the flat/identified split is not sharp."""

_SHOWN_DIRECTIONS = 10  # lines per list in ``verdict()``


# ===================================================================== arrays
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


def rref(matrix: np.ndarray, tol: float = RREF_TOL) -> tuple[np.ndarray, list[int]]:
    """Reduced row echelon form by Gauss-Jordan elimination with partial pivoting.

    Args:
        matrix: ``(k, d)``, e.g. a basis of a subspace as rows.
        tol: entries with ``|x| <= tol * max|matrix|`` count as zero.

    Returns:
        ``(R, pivots)``: ``R`` spans the same row space; each nonzero row has a 1 in
        its pivot column and 0 in every other pivot column; zero rows come last.
    """
    R = np.array(matrix, dtype=np.float64, copy=True)
    k, d = R.shape
    scale = np.max(np.abs(R)) if R.size else 0.0
    if scale == 0.0:
        return np.zeros_like(R), []
    cutoff = tol * scale
    pivots: list[int] = []
    row = 0
    for col in range(d):
        if row == k:
            break
        best = row + int(np.argmax(np.abs(R[row:, col])))
        if abs(R[best, col]) <= cutoff:
            R[row:, col] = 0.0
            continue
        R[[row, best]] = R[[best, row]]
        R[row] /= R[row, col]
        others = np.arange(k) != row
        R[others] -= np.outer(R[others, col], R[row])
        pivots.append(col)
        row += 1
    R[np.abs(R) <= cutoff] = 0.0
    return R, pivots


def _format_coefficient(value: float) -> str:
    return f"{value:g}"


def combination_name(
    coefficients, names, order=None, digits: int = COEFFICIENT_DIGITS, truncated: bool = False
) -> str:
    """A linear combination in readable form, e.g. ``c1[0] + tau[0]``, ``x - 2*y``.

    Args:
        coefficients: ``(d,)``; rounded to ``digits`` decimals, zeros dropped.
        names: ``d`` coordinate names.
        order: indices of the terms to print, in print order (default: all, in
            coordinate order).
        truncated: append ``+ ...`` (terms were left out).
    """
    values = np.round(np.asarray(coefficients, np.float64), digits)
    order = range(len(values)) if order is None else order
    parts = []
    for index in order:
        value = values[index]
        if value == 0:
            continue
        magnitude = abs(value)
        term = names[index] if magnitude == 1 else f"{_format_coefficient(magnitude)}*{names[index]}"
        if not parts:
            parts.append(("-" if value < 0 else "") + term)
        else:
            parts.append(("- " if value < 0 else "+ ") + term)
    if not parts:
        return "0"
    if truncated:
        parts.append("+ ...")
    return " ".join(parts)


def direction_name(vector, names, loading_min: float = LOADING_MIN, max_terms: int = MAX_TERMS) -> str:
    """Name a direction by its largest loadings, e.g. ``tau[2] - c1[2] + 0.4*c2[2]``.

    The vector is scaled so its largest loading is +1 (ties within the rounding go
    to the coordinate listed last, so ``tau - c1`` rather than ``c1 - tau``); terms
    with ``|loading| >= loading_min`` are printed, largest first, at most
    ``max_terms`` of them (more when equal loadings straddle the cut), then ``+ ...``.
    """
    v = np.asarray(vector, np.float64)
    top = np.max(np.abs(v))
    if top == 0:
        return "0"
    v = np.round(v / top, COEFFICIENT_DIGITS)
    keep = [i for i in range(v.size) if abs(v[i]) >= loading_min]
    keep.sort(key=lambda i: (-abs(v[i]), -i))
    v = v * np.sign(v[keep[0]])
    cut = min(max_terms, len(keep))
    while cut < len(keep) and abs(v[keep[cut]]) == abs(v[keep[cut - 1]]):
        cut += 1  # never split equal loadings (``tau - c1`` stays whole)
    return combination_name(v, names, order=keep[:cut], truncated=cut < len(keep))


class FisherDirections(NamedTuple):
    """Eigen-analysis of an observed information matrix.

    Attributes:
        eigenvalues: ``(d,)`` descending.
        eigenvectors: ``(d, d)``, column ``j`` belongs to ``eigenvalues[j]``.
        flat: ``(d,)`` bool, which eigenvalues are flat.
        flat_basis: ``(k, d)`` reduced row echelon basis of the flat subspace.
        identified_basis: ``(d - k, d)`` reduced row echelon basis of its
            orthogonal complement: ``w . theta`` is identified exactly when ``w``
            lies in this span.
        flat_loading: ``(d,)`` norm of each coordinate's unit vector in the flat
            subspace (0: fully visible to the likelihood; 1: entirely flat).
        flat_directions: names of the rows of ``flat_basis``.
        identified_combinations: names of the rows of ``identified_basis``.
        identified_directions: names of the top non-flat eigenvectors (largest
            loadings), best identified first.
    """

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    flat: np.ndarray
    flat_basis: np.ndarray
    identified_basis: np.ndarray
    flat_loading: np.ndarray
    flat_directions: list[str]
    identified_combinations: list[str]
    identified_directions: list[str]


def sparse_basis(vectors: np.ndarray) -> np.ndarray:
    """A sparse basis of the span of orthonormal columns ``(d, k)``: the nonzero rows
    of their reduced row echelon form, ``(k, d)``."""
    basis, _ = rref(np.asarray(vectors).T)
    return basis[np.any(basis != 0, axis=1)]


def fisher_directions(
    information, names, flat_tol: float = FLAT_TOL, num_identified: int = NUM_IDENTIFIED
) -> FisherDirections:
    """Flat and identified directions of an information matrix (float64 NumPy).

    The flat subspace is spanned by the eigenvectors with ``|lambda| <= flat_tol *
    lambda_max``; it and its orthogonal complement (what the data identify) are
    each rotated to a sparse basis (reduced row echelon form) and named: flat rows
    in coordinate order with the pivot coefficient 1 (``c1[0] + tau[0]``),
    identified rows largest loading first (``tau[0] - c1[0]``, ``c2[0]``).

    Args:
        information: ``(d, d)`` observed information ``-H`` (symmetrised here).
        names: ``d`` coordinate names.
        flat_tol: relative eigenvalue threshold (see ``FLAT_TOL``).
        num_identified: how many top eigenvectors to name.
    """
    info = np.asarray(information, np.float64)
    info = 0.5 * (info + info.T)
    values, vectors = np.linalg.eigh(info)
    values, vectors = values[::-1], vectors[:, ::-1]
    largest = values[0] if values.size and values[0] > 0 else (np.max(np.abs(values)) if values.size else 0.0)
    flat = np.abs(values) <= flat_tol * largest
    flat_basis = sparse_basis(vectors[:, flat])
    identified_basis = sparse_basis(vectors[:, ~flat]) if flat.any() else np.eye(values.size)
    loading = np.sqrt(np.sum(vectors[:, flat] ** 2, axis=1))
    chosen = [j for j in range(values.size) if not flat[j] and values[j] > 0][:num_identified]
    return FisherDirections(
        eigenvalues=values,
        eigenvectors=vectors,
        flat=flat,
        flat_basis=flat_basis,
        identified_basis=identified_basis,
        flat_loading=loading,
        flat_directions=[combination_name(row, names) for row in flat_basis],
        identified_combinations=[
            direction_name(row, names, loading_min=0.0, max_terms=len(names)) for row in identified_basis
        ],
        identified_directions=[direction_name(vectors[:, j], names) for j in chosen],
    )


def _entry_labels(name: str, shape: tuple[int, ...], fit=None) -> list[str]:
    """``c1[0]``, ``payoffs[3, 1]``, or ``scale`` for a scalar (C order, as ``reshape(-1)``);
    with a ``fit``, the data's labels as in its summary (``payoffs[high low, bob]``)."""
    if fit is not None:
        return fit.entry_labels(name, shape)
    if not shape:
        return [name]
    return [f"{name}[{', '.join(map(str, index))}]" for index in np.ndindex(*shape)]


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


def identifiability_report(fit, queries=None, seed=0) -> IdentifiabilityReport:
    """Posterior contraction and Fisher-information directions of a fit (docs/design.md §3).

    Args:
        fit: a ``Fit`` (NUTS, SVI or MAP).
        queries: payoff-difference queries (``agent, action, baseline, joint``; see
            ``queries.parse_queries``); default 20 random in-support ones
            (``sample_queries(fit.data, 20, seed=0)``).
        seed: int or key for the prior draws.

    Returns:
        An ``IdentifiabilityReport``.
    """
    model = fit.model
    shapes = _natural_shapes(model)
    prior = _prior_draws(fit, as_key(seed), shapes)
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
        information, coordinates, mode = _observed_information(fit, shapes, free)
        fisher = fisher_directions(information, coordinates)
        notes += _fisher_notes(fisher, mode, num_pinned)
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
    from ..differences import draw_differences, in_support, sample_queries, support_contexts
    from .queries import difference_draws, parse_queries

    mechanism = fit.model.mechanism
    queries = sample_queries(fit.data, 20, seed=0) if queries is None else queries
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
    from .numpyro_model import numpyro_model

    size = max(1, sum(int(np.prod(s)) for s in shapes.values()))
    num = int(np.clip(PRIOR_FLOATS // size, 200, PRIOR_DRAWS))
    actions, mask = as_arrays(fit.data)
    predictive = Predictive(functools.partial(numpyro_model, fit.model), num_samples=num, return_sites=list(shapes))
    draws = jax.jit(lambda k: predictive(k, actions, mask))(key)
    return {name: np.asarray(draws[name]).reshape(num, *shapes[name]) for name in shapes}


def _mode_params(fit) -> tuple[dict, dict]:
    """Natural params of the draw of highest total log-likelihood, and where it is."""
    if fit.log_likelihood is not None:
        total = np.asarray(fit.log_likelihood).reshape(fit.num_total_draws, -1).sum(axis=1)
    else:
        from ..likelihood import as_arrays
        from .numpyro_model import draws_log_likelihoods

        actions, mask = as_arrays(fit.data)
        total = np.asarray(draws_log_likelihoods(fit.model, fit.params_draws(), actions, mask)).sum(axis=1)
    best = int(np.nanargmax(total))
    params = jax.tree.map(lambda v: v[0], fit.params_draws([best]))
    return params, {"draw": best, "log_likelihood": float(total[best])}


def _observed_information(fit, shapes, free) -> tuple[np.ndarray, list[str], dict]:
    """``-H`` of the total log-likelihood at the mode over the free natural coordinates.

    The natural coordinates are flattened in the order of ``shapes`` (mechanism
    arrays, then learner parameters with a prior); coordinates without prior
    spread (pinned by the gauge) stay at their value. The Hessian is
    forward-over-reverse (as ``jax.hessian``), ``HESSIAN_BATCH`` columns at a time.
    """
    from ..likelihood import log_likelihood

    model = fit.model
    params, mode = _mode_params(fit)
    mechanism_names = list(model.mechanism.param_shapes())
    values = {**params["mechanism"], **{k: params["learner"][k] for k in shapes if k not in mechanism_names}}
    # the active default float: float32, or float64 under ``--x64`` / ``jax.enable_x64``
    dtype = jax.dtypes.canonicalize_dtype(jnp.float64)
    flat0 = jnp.concatenate([jnp.ravel(jnp.asarray(values[name], dtype)) for name in shapes])
    labels = [label for name in shapes for label in _entry_labels(name, shapes[name], fit)]
    keep = np.concatenate([np.ravel(free[name]) for name in shapes])
    index = jnp.asarray(np.flatnonzero(keep))
    sizes = [int(np.prod(shapes[name])) for name in shapes]
    splits = np.cumsum(sizes)[:-1].tolist()
    fixed_learner = {k: v for k, v in params["learner"].items() if k not in shapes}

    def total(x):
        flat = flat0.at[index].set(x)
        parts = dict(zip(shapes, jnp.split(flat, splits)))
        parts = {name: parts[name].reshape(shapes[name]) for name in shapes}
        theta = {
            "mechanism": {name: parts[name] for name in mechanism_names},
            "learner": {**fixed_learner, **{k: parts[k] for k in shapes if k not in mechanism_names}},
        }
        return log_likelihood(model, theta, fit.data)

    @jax.jit
    def hessian(x):
        grad = jax.grad(total)
        column = lambda v: jax.jvp(grad, (x,), (v,))[1]  # noqa: E731
        return jax.lax.map(column, jnp.eye(x.size, dtype=x.dtype), batch_size=HESSIAN_BATCH)

    H = np.asarray(hessian(flat0[index]), np.float64)
    return -H, [labels[i] for i in np.flatnonzero(keep)], mode


def _parameter_table(shapes, prior_sd, posterior_sd, loading, fit=None) -> pd.DataFrame:
    rows = []
    for name, shape in shapes.items():
        labels = _entry_labels(name, shape, fit)
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


def _fisher_notes(fisher: FisherDirections, mode: dict, num_pinned: int) -> list[str]:
    notes = [
        f"Fisher information computed at the draw of highest log-likelihood (draw {mode['draw']}, "
        f"log-likelihood {mode['log_likelihood']:.2f}), in the family's natural coordinates."
    ]
    if num_pinned:
        notes.append(
            f"{num_pinned} coordinate(s) fixed by the gauge (no prior spread) are left out of the Fisher analysis."
        )
    values, flat = fisher.eigenvalues, fisher.flat
    if flat.any() and (~flat).any():
        smallest_identified = np.min(np.abs(values[~flat]))
        largest_flat = np.max(np.abs(values[flat]))
        gap = smallest_identified / largest_flat if largest_flat > 0 else np.inf
        if gap < SHARP_GAP:
            notes.append(
                f"The split between flat and identified directions is not sharp (eigenvalue gap {gap:.0f}x): "
                "directions near the threshold are weakly identified at best."
            )
    negative = int(np.sum((values < 0) & ~flat))
    if negative:
        notes.append(
            f"The information has {negative} clearly negative eigenvalue(s): the chosen draw is not a likelihood "
            "maximum in those directions (common for neural families); treat the named directions as indicative."
        )
    return notes


def _model_notes(fit, parameters: pd.DataFrame, differences: pd.DataFrame) -> list[str]:
    """Plain-words remarks from the model's structure and the tables (docs/design.md §3)."""
    model = fit.model
    notes = []
    if model.learner.shift_invariant:
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
            "never occurs in the data): the data inform them only through the family's structure, so they are "
            f"prior-driven unless that structure ties them to visited contexts ({prior_driven} prior-driven here)."
        )
    return notes
