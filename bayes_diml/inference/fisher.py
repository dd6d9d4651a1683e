"""The Fisher-information half of the identifiability report (``identifiability.py``):
what the likelihood alone can and cannot move.

The observed Fisher information at the posterior mode (the draw of highest
likelihood), over the family's natural coordinates::

    I(theta) = -d^2/dtheta^2 log p(actions | theta)

Directions ``v`` with ``v' I v ~ 0`` are *flat*: no data set of this design can move
the likelihood along them. They are named in readable form from a sparse basis of the
null space (its reduced row echelon form), e.g. ``c1[0] + tau[0]`` in the congestion
family, where ``payoff = (tau - c1) L - c2 L^2``. Nothing here knows any family: the
flat directions are found from the Hessian alone (``preconditioning.hessian``, the
package's one Hessian).

Layering: array functions (``rref``, ``combination_name``, ``direction_name``,
``fisher_directions``; plain NumPy), then the ``Fit`` layer (``observed_information``,
``fisher_notes``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .preconditioning import hessian

__all__ = [
    "FisherDirections",
    "fisher_directions",
    "sparse_basis",
    "rref",
    "combination_name",
    "direction_name",
    "entry_labels",
    "observed_information",
    "fisher_notes",
    "FLAT_TOL",
    "NUM_IDENTIFIED",
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


# ===================================================================== arrays
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


def entry_labels(name: str, shape: tuple[int, ...], fit=None) -> list[str]:
    """``c1[0]``, ``payoffs[3, 1]``, or ``scale`` for a scalar (C order, as ``reshape(-1)``);
    with a ``fit``, the data's labels as in its summary (``payoffs[high low, bob]``)."""
    if fit is not None:
        return fit.entry_labels(name, shape)
    if not shape:
        return [name]
    return [f"{name}[{', '.join(map(str, index))}]" for index in np.ndindex(*shape)]


# ============================================================ the Fit layer
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


def observed_information(fit, shapes, free) -> tuple[np.ndarray, list[str], dict]:
    """``-H`` of the total log-likelihood at the mode over the free natural coordinates.

    The natural coordinates are flattened in the order of ``shapes`` (mechanism
    arrays, then learner parameters with a prior); coordinates without prior
    spread (pinned by the gauge) stay at their value. The Hessian is the package's
    one (``preconditioning.hessian``: forward-over-reverse, ``HESSIAN_CHUNK`` columns
    at a time).
    """
    from ..likelihood import log_likelihood

    model = fit.model
    params, mode = _mode_params(fit)
    mechanism_names = list(model.mechanism.param_shapes())
    values = {**params["mechanism"], **{k: params["learner"][k] for k in shapes if k not in mechanism_names}}
    # the active default float: float32, or float64 under ``--x64`` / ``jax.enable_x64``
    dtype = jax.dtypes.canonicalize_dtype(jnp.float64)
    flat0 = jnp.concatenate([jnp.ravel(jnp.asarray(values[name], dtype)) for name in shapes])
    labels = [label for name in shapes for label in entry_labels(name, shapes[name], fit)]
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

    H = np.asarray(jax.jit(lambda x: hessian(total, x))(flat0[index]), np.float64)
    return -H, [labels[i] for i in np.flatnonzero(keep)], mode


def fisher_notes(fisher: FisherDirections, mode: dict, num_pinned: int) -> list[str]:
    """Plain-words remarks on the Fisher analysis: where it was computed, the coordinates
    left out, a flat/identified split that is not sharp, negative curvature."""
    notes = [
        f"Fisher information computed at the draw of highest log-likelihood (draw {mode['draw']}, "
        f"log-likelihood {mode['log_likelihood']:.2f}), in the family's natural coordinates."
    ]
    if num_pinned:
        notes.append(
            f"{num_pinned} coordinate(s) with no prior spread (fixed by the gauge, or known) are left out of the "
            "Fisher analysis."
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
