"""MAP behind ``bayes_diml.fit(method="map")``: the package's one Adam loop
(``adam._adam_blocks``) on the negative log joint from several restarts, and optionally
draws of the Laplace approximation at the best optimum.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import FitError
from .adam import _adam_blocks
from .potential import SamplerResult, _constrain, _potentials, _prior_starts
from .preconditioning import _potential_hessian, inverse_hessian
from .watch import _site_labeller

__all__ = ["run_map"]


def _map_optimize(fn, args, key, steps, learning_rate, restarts, block, progress):
    """Adam on the negative log joint from ``restarts`` shrunk prior draws, exactly ``steps``
    steps in jitted blocks of ``block`` (a shorter last block is masked).

    Returns ``(z, finals, trace)``: unconstrained optima (leading restart axis), their
    final objective, the loss trace ``(restarts, steps)``.
    """
    k_init, k_steps, k_final = jax.random.split(key, 3)
    z = _prior_starts(fn, jax.random.split(k_init, restarts), *args)
    if steps > 0:
        # blocks of ``block`` steps even when fewer are asked (the rest masked): one compiled
        # block serves every step count, e.g. SVI's warm start of ``steps // 2``
        z, trace = _adam_blocks(fn, z, k_steps, args, learning_rate, steps, block, "MAP", progress, "MAP (Adam)", shrink=False)
    else:
        trace = np.zeros((restarts, 0))
    finals = np.asarray(_potentials(fn, z, k_final, *args))
    return z, finals, trace


def run_map(
    fn,
    actions,
    mask,
    key,
    *,
    steps: int = 2000,
    learning_rate: float = 0.01,
    restarts: int = 4,
    laplace: bool = False,
    num_samples: int = 1000,
    progress: bool = True,
    block: int = 100,
    payoff=None,
) -> SamplerResult:
    """MAP by optax Adam on the negative log joint (prior as penalty), several restarts.

    The paper's estimator is the maximum-likelihood fit through the learning
    dynamics; with a weak prior this is its MAP version. Restarts start from prior
    draws shrunk towards the prior mean (``init_to_shrunk_sample``: a network
    started at full prior scale lands in poor optima, e.g. relative error 74 vs
    0.09 on E1 with unit-scale differences); the best is kept and the spread of
    the optima is reported. With
    ``laplace=True`` the posterior holds draws from the Laplace approximation
    (Gaussian at the mode in the unconstrained space, covariance = inverse Hessian).
    A non-finite loss or gradient stops the fit with ``FitError`` (step and parameter).
    """
    args = (actions, mask, payoff)
    k_opt, k_laplace = jax.random.split(key)
    start = time.perf_counter()
    z, finals, trace = _map_optimize(fn, args, k_opt, steps, learning_rate, restarts, block, progress)
    seconds = time.perf_counter() - start
    best = int(np.nanargmin(finals))
    z_best = jax.tree.map(lambda v: v[best], z)
    if laplace:
        flat, unravel = jax.flatten_util.ravel_pytree(z_best)
        hessian = np.asarray(_potential_hessian(fn, z_best, *args), np.float64)
        if not np.all(np.isfinite(hessian)):
            rows = ~np.all(np.isfinite(hessian), axis=1)
            names = [_site_labeller(fn)(k) for k, v in unravel(jnp.asarray(rows, flat.dtype)).items() if np.any(np.asarray(v))]
            raise FitError(
                f"MAP (Laplace): the Hessian at the mode is not finite for {', '.join(repr(n) for n in names)}; "
                "the fit stopped (use laplace=False, tighter priors, or float64 (--x64))"
            )
        covariance, eigenvalues, vectors = inverse_hessian(hessian)
        if covariance is None:
            raise FitError(
                f"MAP (Laplace): the Hessian at the mode is not positive definite (smallest eigenvalue "
                f"{eigenvalues.min():.3g}): the optimum found is not a strict local maximum of the posterior "
                "(a saddle or a flat direction), so it has no Laplace approximation; the fit stopped "
                "(use more steps, laplace=False, or tighter priors)"
            )
        # draws of N(flat, H^-1): flat + V diag(lambda^-1/2) e, e ~ N(0, I)
        normal = np.asarray(jax.random.normal(k_laplace, (num_samples, flat.size)), np.float64)
        flats = np.asarray(flat)[None] + normal @ (vectors / np.sqrt(eigenvalues)).T
        zs = jax.vmap(unravel)(jnp.asarray(flats, flat.dtype))
    else:
        zs = jax.tree.map(lambda v: v[None], z_best)
    posterior = {k: np.asarray(v)[None] for k, v in _constrain(fn, zs, *args).items()}
    info = {
        "steps": steps,
        "learning_rate": learning_rate,
        "restarts": restarts,
        "seconds": seconds,
        "best_restart": best,
        "neg_log_joint": finals.tolist(),
        "optimum_spread": float(np.nanmax(finals) - np.nanmin(finals)),
        "laplace": laplace,
        "loss_trace": trace[best, ::max(1, steps // 200)].tolist(),
    }
    return SamplerResult(posterior, None, info)
