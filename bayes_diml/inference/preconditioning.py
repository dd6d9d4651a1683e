"""Preconditioning from the curvature at the mode: the package's one Hessian helper
(``hessian``; also behind the observed Fisher information of ``fisher.py``), its one
inverse-Hessian helper (``inverse_hessian``), the Laplace frame
NUTS runs in above ``nuts.ADAPTED_DENSE_MAX_DIM`` coordinates (0: at every size, measured),
and the inverse Hessian that starts NumPyro's dense adaptation below it (and is MAP's
Laplace covariance).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .potential import _potential, _potential_and_grad

__all__ = ["hessian", "inverse_hessian", "HESSIAN_CHUNK", "EIGEN_FLOOR"]


HESSIAN_CHUNK = 32
"""Hessian columns computed together (``hessian``): bounds its memory to that
many gradients' worth of the likelihood's intermediates."""


def hessian(f, flat, chunk: int = HESSIAN_CHUNK):
    """Hessian of the scalar ``f`` at the flat vector ``flat``, column by column as
    forward-over-reverse Hessian-vector products ``H e_j = d/dt grad f(flat + t e_j)``
    (as ``jax.hessian`` does), ``chunk`` columns at a time. Traceable (call it under
    ``jax.jit``)."""
    grad = jax.grad(f)
    column = lambda e: jax.jvp(grad, (flat,), (e,))[1]  # noqa: E731
    eye = jnp.eye(flat.size, dtype=flat.dtype)
    return jax.lax.map(column, eye, batch_size=min(chunk, flat.size))


def inverse_hessian(matrix):
    """``(H^-1, eigenvalues, eigenvectors)`` of the symmetrised ``H = (M + M^T) / 2``
    from its eigendecomposition ``H = V diag(lambda) V^T`` (float64 NumPy):
    ``H^-1 = V diag(1 / lambda) V^T``. ``H^-1`` is ``None`` when ``H`` is not finite or
    not positive definite (the point is not a strict local mode); then so are the
    eigenvalues and eigenvectors when ``H`` is not finite."""
    matrix = np.asarray(matrix, np.float64)
    if not np.all(np.isfinite(matrix)):
        return None, None, None
    eigenvalues, vectors = np.linalg.eigh(0.5 * (matrix + matrix.T))
    if eigenvalues.min() <= 0:
        return None, eigenvalues, vectors
    return (vectors / eigenvalues) @ vectors.T, eigenvalues, vectors


@functools.partial(jax.jit, static_argnames=("fn",))
def _potential_hessian(fn, z, actions, mask, payoff=None):
    """Hessian of the negative log joint at unconstrained ``z`` (flattened as ``ravel_pytree``;
    ``hessian``)."""
    flat, unravel = jax.flatten_util.ravel_pytree(z)
    return hessian(lambda f: _potential(fn, unravel(f), jax.random.key(0), actions, mask, payoff), flat)


class _Frame(NamedTuple):
    """Affine coordinates ``z = center + basis @ w`` of the unconstrained space.

    ``basis = V diag(|lambda|^(-1/2))`` from the eigendecomposition ``H = V diag(lambda) V^T``
    of the Hessian of the negative log joint at ``center`` (eigenvalues floored at
    ``EIGEN_FLOOR`` times the largest): where the posterior is close to its Laplace
    approximation ``N(center, H^-1)``, ``w`` is close to standard normal.
    """

    center: Any  # (d,)
    basis: Any  # (d, d)
    unravel: Any  # flat (d,) -> the latent PyTree


EIGEN_FLOOR = 1e-8
"""Eigenvalues of the Hessian below this fraction of the largest (in absolute value) are raised to it."""


def _hessian_eigen(fn, z, args):
    """``(eigenvalues, eigenvectors, flat z, unravel)`` of the (symmetrised) Hessian of the
    negative log joint at ``z``, or ``None`` when that Hessian is not finite."""
    flat, unravel = jax.flatten_util.ravel_pytree(z)
    _, eigenvalues, vectors = inverse_hessian(_potential_hessian(fn, z, *args))
    if eigenvalues is None:
        return None
    return eigenvalues, vectors, flat, unravel


def _laplace_frame(fn, z, args) -> _Frame | None:
    """The Laplace frame at ``z`` (``_Frame``), or ``None`` when the Hessian there is not finite.

    Eigenvalues are taken in absolute value: at a saddle (e.g. a network whose weights
    all start at 0), a direction of negative curvature keeps its length scale and the
    adaptation in the frame sets its variance.
    """
    eigen = _hessian_eigen(fn, z, args)
    if eigen is None:
        return None
    eigenvalues, vectors, flat, unravel = eigen
    magnitude = np.abs(eigenvalues)
    if magnitude.max() <= 0:
        return None
    magnitude = np.maximum(magnitude, EIGEN_FLOOR * magnitude.max())
    return _Frame(flat, jnp.asarray(vectors / np.sqrt(magnitude), flat.dtype), unravel)


def _inverse_hessian(fn, z, args):
    """The inverse Hessian of the negative log joint at ``z`` (NumPyro's initial inverse
    mass matrix for its dense adaptation), or ``None`` when it is not finite or not
    positive definite (``z`` is not near a mode)."""
    flat, _ = jax.flatten_util.ravel_pytree(z)
    inverse, _, _ = inverse_hessian(_potential_hessian(fn, z, *args))
    return None if inverse is None else jnp.asarray(inverse, flat.dtype)


def _frame_potential(fn, frame: _Frame, args):
    """``w -> `` the negative log joint at ``frame.center + frame.basis @ w`` (the affine
    map's constant log-Jacobian is left out: it does not change the posterior)."""
    key = jax.random.key(0)

    def potential(w):
        return _potential(fn, frame.unravel(frame.center + frame.basis @ w), key, *args)

    return potential


def _frame_starts(fn, frame: _Frame, key, num_chains: int, args):
    """Starting points in the frame, one per chain: standard normal draws (draws of the
    Laplace approximation), each halved up to 4 times until the potential and its
    gradient are finite there, else the centre. Dispersed starts let R-hat see chains
    that do not meet."""
    draws = np.asarray(jax.random.normal(key, (num_chains, frame.center.size), frame.center.dtype))
    starts = np.zeros_like(draws)
    for chain, draw in enumerate(draws):
        for shrink in (1.0, 0.5, 0.25, 0.125, 0.0625):
            z = frame.unravel(frame.center + frame.basis @ jnp.asarray(shrink * draw))
            value, grad = _potential_and_grad(fn, z, *args)
            if np.isfinite(float(value)) and all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree.leaves(grad)):
                starts[chain] = shrink * draw
                break
    return jnp.asarray(starts)
