"""NUTS (Hoffman & Gelman 2014) behind ``bayes_diml.fit(method="nuts")``, with NumPyro,
preconditioned at the posterior mode (``preconditioning``).

``run_nuts`` takes the NumPyro model (closed over the ``Model``), the data arrays and a
key, and returns a ``SamplerResult`` whose ``posterior`` maps every latent and
deterministic site to an array with leading ``(chain, draw)`` axes.

The Laplace frame against NumPyro's own adaptation (``run_nuts``), measured on the shared
2-core AMD EPYC (load 3-6), 48 x 60 training episodes, 2 chains x (400 + 400): E1 data
with the tabular family (540 free payoff differences, a log-concave posterior): 15
leapfrog steps per iteration, 70-115 s per fit, no divergences, 90% coverage of true
differences 0.91-0.92 over 3 truth draws; with NumPyro's diagonal adaptation it had not
finished after 360 s. (E2 congestion, 15 coordinates, forced into the frame: 7 leapfrog
steps per iteration against 14 with NumPyro's dense adaptation, 22 s against 49 s, the
same posterior; the frame is now used at every size: ``ADAPTED_DENSE_MAX_DIM``.) Not a
cure for every geometry: E3's 64-unit tanh subsidy network has a curvature that changes
across its posterior (largest Hessian eigenvalue 9e3 at the warm start, 5e4 at the true
parameters), and NUTS still needs hundreds of leapfrog steps per iteration there.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.infer import MCMC, NUTS, init_to_median

from .adam import _adam_blocks
from .potential import SamplerResult, _check_start, _constrain, _prior_starts
from .preconditioning import (
    _frame_potential,
    _frame_starts,
    _inverse_hessian,
    _laplace_frame,
)
from .watch import _check_draws

__all__ = ["run_nuts", "nuts_chain_method", "DENSE_MASS_MAX_DIM", "ADAPTED_DENSE_MAX_DIM"]


DENSE_MASS_MAX_DIM = 1000
"""Models with at most this many unconstrained coordinates get a dense mass matrix by default
(its Hessian costs ``d`` Hessian-vector products and its ``d x d`` matrix-vector product
per leapfrog step is small next to the likelihood's gradient)."""


ADAPTED_DENSE_MAX_DIM = 0
"""Up to this many coordinates a dense mass matrix is NumPyro's own windowed adaptation
(started from the inverse Hessian at the warm start); above it NUTS runs in the Laplace
frame (``_laplace_frame``). 0: the frame at every size, because it was faster at every
size measured (``benchmarks/mass_matrix.py``, ``benchmarks/results/mass_matrix.json``;
48 x 60 logit-Q play, 2 chains x (150 + 150), shared 2-core Intel Xeon with other test
runs): congestion E2 (15 coordinates) 31 s against 134 s (7 against 52 leapfrog steps per
iteration, smallest bulk ESS 348 against 77); tabular 12 differences 18 s against 54 s;
40: 25 s against 168 s; 54: 13 s against 171 s (12 against 239 leapfrog steps); 112:
40 s against more than 600 s (stopped); 144: 36 s (the adapted path was not run after
stopping at 112; issue 16 reported about 3 s per warmup iteration there). A larger value
brings NumPyro's adaptation back below it (the benchmark does, to compare)."""


_NUTS_FIELDS = ("diverging", "num_steps", "accept_prob", "energy", "potential_energy", "adapt_state.step_size")


_STAT_NAMES = {
    "diverging": "diverging",
    "num_steps": "n_steps",
    "accept_prob": "acceptance_rate",
    "energy": "energy",
    "potential_energy": "lp",
    "adapt_state.step_size": "step_size",
}


def nuts_chain_method(num_chains: int, chain_method: str | None = None) -> str:
    """``chain_method`` for NumPyro's MCMC; ``None`` chooses: ``"parallel"`` (one chain per
    device) when there are at least as many local devices as chains, else ``"vectorized"``
    for several chains (all chains step together, on the data split over the devices when
    there are several), ``"sequential"`` for one chain.

    Vectorised chains wait for the deepest tree of each step, but a batched gradient of
    small models costs little more than one: E2 NUTS, 4 chains x 600 iterations on a
    2-core CPU, 0.027 s vs 0.129 s of sampling per chain-iteration, one compilation
    instead of one per chain (``benchmarks/inference.py``, shared machine)."""
    if chain_method is not None:
        return chain_method
    devices = jax.local_device_count()
    if devices >= num_chains > 1:
        return "parallel"
    return "vectorized" if num_chains > 1 else "sequential"


def _warm_start(fn, z0, args, steps: int = 300):
    """``steps`` Adam steps (learning rate 0.05) from ``z0`` towards the mode of the
    posterior; a non-finite loss or gradient on the way raises ``FitError``."""
    z, _ = _adam_blocks(
        fn, jax.tree.map(lambda v: v[None], z0), jax.random.key(0), args, 0.05, steps, steps, "NUTS warm start (Adam)"
    )
    return jax.tree.map(lambda v: v[0], z)


def _median_start(fn, key, args):
    """The prior medians in unconstrained coordinates (``init_to_median``), refused
    (``FitError``) where the log density or its gradient is not finite."""
    z0 = jax.tree.map(lambda v: v[0], _prior_starts(fn, jax.random.split(key, 1), *args, init_strategy=init_to_median))
    _check_start(fn, z0, args, "NUTS")
    return z0


def run_nuts(
    fn,
    actions,
    mask,
    key,
    *,
    num_chains: int = 4,
    num_warmup: int = 500,
    num_samples: int = 500,
    target_accept: float = 0.8,
    dense_mass: bool | None = None,
    max_tree_depth: int = 10,
    progress: bool = True,
    chain_method: str | None = None,
    payoff=None,
    warm_start_steps: int = 300,
) -> SamplerResult:
    """NUTS (Hoffman & Gelman 2014) with NumPyro, preconditioned at the posterior mode.

    Warmup starts from a short MAP run (``warm_start_steps`` Adam steps, ``_warm_start``). With ``dense_mass``
    (default: when the model has at most ``DENSE_MASS_MAX_DIM`` unconstrained
    coordinates; above ``ADAPTED_DENSE_MAX_DIM``, which is 0, measured) NUTS runs in the Laplace frame ``z = z_map + V diag(|lambda|^-1/2) w``
    of the Hessian ``H = V diag(lambda) V^T`` of the negative log joint at the warm
    start (``_laplace_frame``), with a diagonal mass matrix adapted in ``w`` by
    NumPyro's windowed schedule (Stan's). The effective mass matrix in ``z`` is dense,
    ``V diag(|lambda|^1/2) M_w diag(|lambda|^1/2) V^T``; where the posterior is near
    Gaussian, ``w`` is near standard normal and trajectories stay short, and where it
    is not, the per-direction variances along the Hessian's eigenvectors are still
    learned, where NumPyro's dense adaptation (a sample covariance of a few hundred
    warmup draws) would be singular or noisy. Chains then start at dispersed draws of
    the Laplace approximation (``_frame_starts``).

    Measurements: the module docstring.

    Without ``dense_mass`` (or where the Hessian is not finite) NUTS samples the model's
    unconstrained coordinates with a diagonal mass matrix, all chains from the warm start.
    """
    args = (actions, mask, payoff)
    k_init, k_run = jax.random.split(key)
    z0 = _median_start(fn, k_init, args)
    dim = int(jax.flatten_util.ravel_pytree(z0)[0].size)
    if dense_mass is None:
        dense_mass = dim <= DENSE_MASS_MAX_DIM
    chain_method = nuts_chain_method(num_chains, chain_method)
    z_start = _warm_start(fn, z0, args, warm_start_steps) if warm_start_steps > 0 else z0
    frame = _laplace_frame(fn, z_start, args) if dense_mass and dim > ADAPTED_DENSE_MAX_DIM else None
    nuts = {"target_accept_prob": target_accept, "max_tree_depth": max_tree_depth}
    if frame is not None:
        kernel, init_params, run_args = _frame_kernel(fn, frame, jax.random.fold_in(k_init, 1), num_chains, args, nuts)
    else:
        kernel, init_params, run_args = _unconstrained_kernel(fn, z_start, bool(dense_mass), num_chains, args, nuts)
    mcmc = MCMC(
        kernel, num_warmup=num_warmup, num_samples=num_samples, num_chains=num_chains, chain_method=chain_method, progress_bar=progress
    )
    seconds = _run_mcmc(mcmc, k_run, run_args, init_params)
    posterior = _posterior(mcmc, fn, frame, args)
    stats = _sample_stats(mcmc, posterior, fn, args, list(z0))
    info = {
        "num_chains": num_chains,
        "num_warmup": num_warmup,
        "num_samples": num_samples,
        "target_accept": target_accept,
        "max_tree_depth": max_tree_depth,
        "dense_mass": bool(dense_mass),
        "mass_matrix": "laplace frame" if frame is not None else ("adapted dense" if dense_mass else "adapted diagonal"),
        "chain_method": chain_method,
        "latent_dim": dim,
        "warm_start_steps": warm_start_steps,
        "seconds": seconds,
        "mean_leapfrog_steps": float(np.mean(stats["n_steps"])),
        "divergences": int(np.sum(stats["diverging"])),
    }
    return SamplerResult(posterior, stats, info)


def _run_mcmc(mcmc, key, run_args, init_params) -> float:
    """Warm up and sample (with ``_NUTS_FIELDS``); returns the seconds it took."""
    # NumPyro's sampling loop (``fori_collect``) wraps its body in a fresh ``jax.jit`` on every
    # run, so each NUTS fit compiles that loop once; the warm start compiles once per shape.
    start = time.perf_counter()
    mcmc.run(key, *run_args, extra_fields=_NUTS_FIELDS, init_params=init_params)
    jax.block_until_ready((mcmc.get_samples(), mcmc.get_extra_fields()))  # JAX dispatches asynchronously
    return time.perf_counter() - start


def _frame_kernel(fn, frame, key, num_chains: int, args, nuts: dict):
    """NUTS on the potential in the Laplace frame's coordinates ``w`` (diagonal mass matrix
    adapted in ``w``), chains started at dispersed draws of the Laplace approximation.
    Returns ``(kernel, init_params, run_args)``."""
    kernel = NUTS(potential_fn=_frame_potential(fn, frame, args), **nuts)
    init_params = _frame_starts(fn, frame, key, num_chains, args)
    return kernel, init_params if num_chains > 1 else init_params[0], ()


def _unconstrained_kernel(fn, z_start, dense_mass: bool, num_chains: int, args, nuts: dict):
    """NUTS on the model's unconstrained coordinates, every chain from ``z_start``; a dense
    mass matrix (NumPyro's adaptation, started from the inverse Hessian at ``z_start``) or
    a diagonal one. Returns ``(kernel, init_params, run_args)``."""
    kernel = NUTS(fn, dense_mass=dense_mass, inverse_mass_matrix=_inverse_hessian(fn, z_start, args) if dense_mass else None, **nuts)
    init_params = jax.tree.map(lambda v: jnp.broadcast_to(v, (num_chains, *v.shape)), z_start) if num_chains > 1 else z_start
    return kernel, init_params, args


def _posterior(mcmc, fn, frame, args) -> dict:
    """Every latent and deterministic site of the draws, leading ``(chain, draw)`` axes; draws
    in the Laplace frame (``frame`` not ``None``) are mapped back to the model's coordinates."""
    samples = mcmc.get_samples(group_by_chain=True)
    if frame is None:
        return {k: np.asarray(v) for k, v in samples.items()}
    num_chains, num_samples = np.shape(samples)[:2]
    w = jnp.asarray(samples).reshape(num_chains * num_samples, -1)
    zs = jax.vmap(frame.unravel)(frame.center + w @ frame.basis.T)
    return {k: np.asarray(v).reshape(num_chains, num_samples, *np.shape(v)[1:]) for k, v in _constrain(fn, zs, *args).items()}


def _sample_stats(mcmc, posterior: dict, fn, args, sites: list) -> dict:
    """NUTS's sample statistics under the package's names (``_STAT_NAMES``), after the draws
    are checked to be finite (``watch._check_draws``); ``lp`` is the log joint."""
    fields = mcmc.get_extra_fields(group_by_chain=True)
    stats = {_STAT_NAMES[k]: np.asarray(v) for k, v in fields.items()}
    _check_draws("NUTS", posterior, stats["lp"], fn, args, sites)
    stats["lp"] = -stats["lp"]
    stats["tree_depth"] = np.floor(np.log2(stats["n_steps"])).astype(int) + 1
    return stats
