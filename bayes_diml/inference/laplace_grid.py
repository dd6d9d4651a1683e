"""Integrated nested Laplace over the payoff scale, behind ``bayes_diml.fit(method="laplace_grid")``.

For the function-space priors (``[mechanism.prior] space = "function"``) the payoffs are
``s * L z``: linear in the coordinates ``z ~ N(0, I)`` for a given payoff scale ``s``, so
the conditional posterior ``p(z | s, data)`` is close to Gaussian (the log-likelihood of
a softmax policy is concave in the payoffs, and the learner recursion is linear in them),
while the one hyperparameter ``h = log s`` is not. Following Rue, Martino & Chopin (2009,
"Approximate Bayesian inference for latent Gaussian models by using integrated nested
Laplace approximations", JRSS B 71, 319-392), on a grid of ``h``:

    x*(h) = argmin_x U(h, x)                       (Newton steps; U = -log joint, h fixed)
    log p(h | data) ~ -U(h, x*) + (d/2) log 2 pi - (1/2) log det H(h)  + const,
    p(x | h, data) ~ N(x*(h), H(h)^-1),            H(h) = d^2 U / dx^2 at x*(h)

and the posterior is the mixture of those Gaussians weighted by ``p(h | data)`` (a
uniform grid in ``h``, so the weights are the normalised evidences). ``U`` is NumPyro's
potential in the unconstrained space, so it includes the prior of ``h`` and its
Jacobian. The grid starts at the joint MAP's ``h`` and walks out in steps of
``GRID_STEP`` until the evidence has dropped by ``GRID_DROP`` on both sides.

Any other latent coordinates (learner parameters with a prior) are part of ``x``:
Newton's method then finds their conditional mode too, and the Gaussian covers them.

Large games (``batch_episodes = B``): the modes ``x*(h)`` use every episode, but the
Hessians come from one fixed random minibatch ``S`` of ``B`` of the ``E`` episodes,

    H(h) ~ H_prior + (E / B) sum_{e in S} H_e(h),

an unbiased estimate of the likelihood's curvature (a sum over episodes) whose cost and
memory are those of ``B`` episodes: every Hessian column is a gradient, and a Hessian
has ``d`` of them. The warm start then runs Adam on random minibatches of ``B``
episodes. In an anonymous game each episode holds one term per agent and round, so with
thousands of agents a few episodes fix the curvature well (the scaling is checked against
the full-data fit, where the two must agree, in tests/test_laplace_grid.py).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import FitError
from .adam import _adam_blocks
from .potential import SamplerResult, _constrain, _potential, _prior_starts
from .preconditioning import HESSIAN_CHUNK, hessian, inverse_hessian
from .svi import _subsampled

__all__ = ["run_laplace_grid", "approximation_warning", "SCALE_SITE", "GRID_STEP", "GRID_DROP", "GRID_MAX_POINTS",
           "PARETO_K_MAX"]

SCALE_SITE = "payoff_scale"
"""The sample site of the payoff scale ``s`` (the function-space priors')."""

GRID_STEP = 0.2
"""Spacing of the grid in ``log s``: a fifth of the prior's sd (``LogNormal(., 1)``)."""

GRID_DROP = 7.0
"""The grid stops on each side once ``log p(h | data)`` is this far below its largest
value (relative weight ``e**-7 = 0.1%``)."""

GRID_MAX_POINTS = 41
"""At most this many grid points in all; mass left at an edge is reported
(``info["edge_weight"]``) and warned about."""

NEWTON_STEPS = 40
"""Line-searched steps with one Hessian as the preconditioner, at most."""

NEWTON_HESSIANS = 3
"""Hessians per grid point at most (the one at the mode included)."""

HESSIAN_BYTES = 4 * 2**30
"""Memory for the Hessian columns computed at once: each is a forward-over-reverse
product, about ``HVP_GRADIENTS`` gradients' temporaries (``hessian_columns``)."""

HESSIAN_MAX_PLAYS = 2**18
"""``fit(method="auto")`` takes the Hessians from a minibatch of episodes when the data hold
more plays (episode x round x agent) than this (``auto.hessian_batch``): 262,144 plays,
e.g. E7's largest setting (300 agents, 12 x 25 training rounds: 90,000) whole, or one
episode of 10,000 agents x 25 rounds."""

HVP_GRADIENTS = 3
"""A Hessian column's temporary memory in units of a gradient's (the tangents double the
gradient's intermediates; one more for what XLA does not free in place)."""

PARETO_K_MAX = 0.7
"""Above this Pareto ``k`` (``_pareto_k``) the fit warns that it cannot vouch for its
intervals (Vehtari et al. 2024: importance sampling is unreliable beyond 0.7). Measured
(docs/results.md): on an 8-agent game with twenty truths drawn from the prior
(tests/test_laplace_grid.py) the ten fits below 0.7 covered 0.97 of the true differences
(0.78-1.0 per truth), the ten above 0.0-1.0 (0.75 on average); on E7 with 40 agents (513
coordinates) every fit was above it (k 1.0-8.4 on four draws) while 90% intervals covered
0.87 pooled over eight (0.68-0.98 per draw): in hundreds of dimensions the joint check
fails where marginal intervals may still hold, so it is a warning, not a refusal."""

PSIS_MIN_DRAWS = 200
"""Draws of the mixture whose importance weights give its Pareto ``k``, at least."""

PSIS_MAX_AT_ONCE = 64
"""Draws whose ``U`` is evaluated together at most (fewer when one evaluation's temporary
memory times the count would pass ``HESSIAN_BYTES``)."""

PSIS_PLAY_DRAWS = 2**28
"""Plays x draws evaluated for the Pareto ``k`` at most (beyond ``PSIS_MIN_DRAWS``): all
1,000 draws up to 268,435 plays, 268 at a million plays (10,000 agents x 100 rounds)."""

NEWTON_TOL = 1e-3
"""Newton stops when half the Newton decrement ``g^T H^-1 g / 2`` (the log density a full
step would gain, Boyd & Vandenberghe 2004, §9.5) is below this: the mode is then within
``sqrt(2 * NEWTON_TOL) = 0.045`` posterior sds in the Hessian's metric. (A step length
criterion never settles in float32, whose rounding of a log density of 10**4 is 10**-3.)"""


def hessian_columns(gradient_bytes: int | None) -> int:
    """Hessian columns computed together when one gradient needs ``gradient_bytes`` of
    temporaries: at most ``preconditioning.HESSIAN_CHUNK``, at least 1, so that
    ``columns x HVP_GRADIENTS x gradient_bytes`` stays within ``HESSIAN_BYTES`` (``None``,
    unknown: one column at a time)."""
    if gradient_bytes is None:
        return 1
    return int(np.clip(HESSIAN_BYTES // max(HVP_GRADIENTS * int(gradient_bytes), 1), 1, HESSIAN_CHUNK))


def _temp_bytes(f, *args) -> int | None:
    """Temporary memory of ``f(*args)`` as XLA compiles it (its memory analysis), or
    ``None`` where the backend does not report it."""
    try:
        return int(jax.jit(f).lower(*args).compile().memory_analysis().temp_size_in_bytes)
    except (AttributeError, NotImplementedError, TypeError):
        return None


def _scale_index(unravel_like, flat_size: int, dtype) -> int:
    """Position of ``SCALE_SITE`` in the flat unconstrained vector, or a ``FitError``."""
    template = unravel_like(jnp.zeros(flat_size, dtype))
    if SCALE_SITE not in template or np.size(template[SCALE_SITE]) != 1:
        raise FitError(
            f"method='laplace_grid' needs a model with a scalar {SCALE_SITE!r} prior (the function-space priors: "
            "[mechanism.prior] space = \"function\"); this model's latent sites are "
            f"{sorted(template)}: use method='nuts' or 'svi'"
        )
    marker = {k: jnp.zeros_like(v) for k, v in template.items()}
    marker[SCALE_SITE] = jnp.ones_like(template[SCALE_SITE])
    return int(np.argmax(np.asarray(jax.flatten_util.ravel_pytree(marker)[0])))


def run_laplace_grid(
    fn,
    actions,
    mask,
    key,
    *,
    num_samples: int = 1000,
    warm_start_steps: int = 500,
    batch_episodes: int | None = None,
    progress: bool = True,
    payoff=None,
) -> SamplerResult:
    """Posterior draws from the integrated nested Laplace approximation (module docstring).

    ``warm_start_steps`` Adam steps of the joint MAP (``_adam_blocks``) give the grid's
    centre and the first Newton start; ``num_samples`` draws are split over the grid
    points in proportion to their weights. ``batch_episodes``: the Hessians (and the
    warm start) from minibatches of that many episodes (module docstring); ``None`` or
    at least the number of episodes: all of them. Stops with ``FitError`` when a
    conditional Hessian is not positive definite (the conditional posterior is not
    unimodal there).
    """
    args = (actions, mask, payoff)
    k_start, k_adam, k_mix, k_draw, k_batch = jax.random.split(key, 5)
    start = time.perf_counter()
    episodes = int(actions.shape[0])
    batch = None if batch_episodes is None or int(batch_episodes) >= episodes else int(batch_episodes)
    curved = fn if batch is None else _subsampled(fn, batch)  # the Hessians' (and the warm start's) model
    z0 = _prior_starts(fn, k_start[None], *args)
    if warm_start_steps > 0:
        z0, _ = _adam_blocks(curved, z0, k_adam, args, 0.01, warm_start_steps, 100, "laplace_grid warm start", progress,
                             "joint MAP (Adam)")
    flat0, unravel = jax.flatten_util.ravel_pytree(jax.tree.map(lambda v: v[0], z0))
    i = _scale_index(unravel, flat0.size, flat0.dtype)
    joined = lambda h, x: unravel(jnp.concatenate([x[:i], jnp.reshape(h, (1,)).astype(x.dtype), x[i:]]))  # noqa: E731
    x_map, h_map = jnp.concatenate([flat0[:i], flat0[i + 1:]]), float(flat0[i])
    programs = _programs(fn, curved, joined, k_batch, args, x_map)

    points: dict[int, dict] = {}

    def solve(step: int, start_point):
        h = h_map + step * GRID_STEP
        previous = None if start_point is None else (start_point["eigenvalues"], start_point["vectors"])
        x, info = _newton(programs, x_map if start_point is None else start_point["x"], h, previous)
        points[step] = {"h": h, "x": x, **info}
        return points[step]

    _walk_grid(solve, points, progress)
    steps = sorted(points)
    log_evidence = np.array([points[s]["log_evidence"] for s in steps])
    weights = np.exp(log_evidence - log_evidence.max())
    weights /= weights.sum()
    flats = _mixture_draws([points[s] for s in steps], weights, i, num_samples, k_mix, k_draw)
    pareto_k, k_draws = _pareto_k(programs, [points[s] for s in steps], weights, flats, i, int(np.prod(actions.shape)))
    zs = jax.vmap(unravel)(jnp.asarray(flats, flat0.dtype))
    posterior = {k: np.asarray(v)[None] for k, v in _constrain(fn, zs, *args).items()}
    grid = [
        {SCALE_SITE: float(np.exp(points[s]["h"])), "log_evidence": float(points[s]["log_evidence"]),
         "weight": float(w), "newton_steps": points[s]["newton_steps"], "max_gradient": points[s]["max_gradient"]}
        for s, w in zip(steps, weights)
    ]
    info = {
        "num_samples": num_samples,
        "warm_start_steps": warm_start_steps,
        "hessian_episodes": batch or episodes,
        "hessian_columns": programs.columns,
        "seconds": time.perf_counter() - start,
        "grid": grid,
        "grid_step": GRID_STEP,
        "edge_weight": float(max(weights[0], weights[-1])) if len(steps) > 1 else 1.0,
        "latent_dim": int(flat0.size),
        "pareto_k": pareto_k,
        "pareto_k_draws": k_draws,
    }
    return SamplerResult(posterior, None, info)


class _Programs(NamedTuple):
    """The compiled functions of ``(x, h)`` Newton's method calls on one grid."""

    value_grad: Callable  # U and its gradient (float32 unless x64 is on)
    curvature: Callable  # the Hessian of U, float64 (of the minibatch's U with batch_episodes)
    energy64: Callable  # U in float64 (the evidence)
    energies64: Callable  # U in float64 at many points (rows of x, entries of h)
    columns: int  # Hessian columns computed together


def _programs(fn, curved, joined, k_batch, args, x) -> _Programs:
    """``_Programs`` for the model ``fn`` (``curved``: the Hessians' model, ``fn`` or its
    minibatch version with the fixed key ``k_batch``) on the data ``args``; ``joined(h, x)``
    is the unconstrained point. The Hessian and the evidence's ``U`` are computed in
    float64 (``_in_float64``): with thousands of agents ``U`` is of order ``10**6`` and the
    curvature's large eigenvalues ``10**5`` or more, so float32 sums would round the
    evidence's differences between grid points and the Hessian's prior-sized eigenvalues
    (measured: a float32 Hessian with an eigenvalue of -0.125 where the prior alone gives 1,
    10,000 agents)."""
    energy = lambda x, h, *data: _potential(fn, joined(h, x), jax.random.key(0), *data)  # noqa: E731
    curved_energy = lambda x, h, *data: _potential(curved, joined(h, x), k_batch, *data)  # noqa: E731
    with jax.enable_x64(True):
        inputs = _float64((x, 0.0, *args))
        columns = hessian_columns(_temp_bytes(jax.grad(curved_energy), *inputs))
        one = _temp_bytes(energy, *inputs)  # U at one point: the Pareto check evaluates it at many
    at_once = PSIS_MAX_AT_ONCE if one is None else int(np.clip(HESSIAN_BYTES // max(one, 1), 1, PSIS_MAX_AT_ONCE))
    return _Programs(
        value_grad=functools.partial(_on_data, jax.jit(jax.value_and_grad(energy)), args),
        curvature=_in_float64(jax.jit(lambda x, h, *data: hessian(lambda y: curved_energy(y, h, *data), x, columns)), args),
        energy64=_in_float64(jax.jit(energy), args),
        energies64=_in_float64(jax.jit(lambda xs, hs, *data: jax.lax.map(
            lambda xh: energy(xh[0], xh[1], *data), (xs, hs), batch_size=at_once)), args),
        columns=columns,
    )


def _on_data(compiled, args, x, h):
    """``compiled(x, h, *args)``: a program of ``(x, h)`` that takes the data as arguments
    (closed over, they would be constants of the program, folded at compile time: seconds
    and a copy of the data on large games)."""
    return compiled(x, h, *args)


def _float64(values: tuple) -> tuple:
    """Floating arrays (and Python floats) as float64, the rest as they are; call with x64 on."""
    def cast(v):
        if v is None or not jnp.issubdtype(jnp.result_type(v), jnp.floating):
            return v
        return jnp.asarray(v, jnp.float64)

    return tuple(cast(v) for v in values)


def _in_float64(compiled, args):
    """``(x, h) -> compiled(x, h, *args)`` run with x64 on and floating inputs in float64,
    the result as float64 NumPy."""
    def run(x, h):
        with jax.enable_x64(True):
            return jax.tree.map(lambda v: np.asarray(v, np.float64), compiled(*_float64((x, h, *args))))

    return run


def _walk_grid(solve, points: dict, progress: bool) -> None:
    """Solve grid step 0, then steps 1, 2, ... and -1, -2, ... (each from its neighbour)
    until ``log p(h | data)`` is ``GRID_DROP`` below the largest so far, or
    ``GRID_MAX_POINTS`` are solved; ``solve(step, neighbour)`` adds to ``points``."""
    from tqdm.auto import tqdm

    with tqdm(desc="laplace_grid (log payoff scale)", unit="point", disable=not progress) as bar:
        centre = solve(0, None)
        bar.update()
        for direction in (1, -1):
            point, step = centre, 0
            while len(points) < GRID_MAX_POINTS:
                step += direction
                point = solve(step, point)
                bar.update()
                top = max(p["log_evidence"] for p in points.values())
                if point["log_evidence"] < top - GRID_DROP:
                    break


def _mixture_draws(points: list[dict], weights: np.ndarray, i: int, num_samples: int, k_mix, k_draw) -> np.ndarray:
    """``num_samples`` flat draws of the mixture: counts per grid point from a multinomial
    of ``weights``, each point's ``N(x*, H^-1)`` draws with its ``log s`` put back at
    position ``i``, shuffled."""
    counts = (np.asarray(jax.random.multinomial(k_mix, num_samples, jnp.asarray(weights)), int) if len(points) > 1
              else np.array([num_samples]))
    flats = []
    for p, count, k in zip(points, counts, jax.random.split(k_draw, len(points))):
        if count == 0:
            continue
        normal = np.asarray(jax.random.normal(k, (int(count), p["x"].size)), np.float64)
        x = np.asarray(p["x"], np.float64)[None] + normal @ (p["vectors"] / np.sqrt(p["eigenvalues"])).T
        flats.append(np.concatenate([x[:, :i], np.full((int(count), 1), p["h"]), x[:, i:]], axis=1))
    return np.concatenate(flats)[np.asarray(jax.random.permutation(k_draw, num_samples))]


def _pareto_k(programs: _Programs, points: list[dict], weights, flats: np.ndarray, i: int, plays: int):
    """Pareto ``k`` of the importance weights of the mixture's draws against the posterior
    it approximates (Vehtari, Simpson, Gelman, Yao & Gabry 2024, "Pareto smoothed
    importance sampling", JMLR 25(72); as a check of an approximate posterior: Yao,
    Vehtari, Simpson & Gelman 2018, "Yes, but did it work?", ICML), and the draws it used.

    A draw ``x`` of grid point ``j`` has the target density ``exp(-U(x, h_j))`` (the grid
    as a quadrature over ``h``) and the mixture density ``w_j N(x; x*_j, H_j^-1)``; the
    log ratio's upper tail is fitted with a generalised Pareto. ``k < 0.7``: the
    Gaussians hold the posterior's bulk and tails; above it their intervals can be too
    narrow. ``U`` is evaluated in float64 on the first ``count`` (shuffled) draws, as many
    as ``PSIS_PLAY_DRAWS`` plays x draws allow but at least ``PSIS_MIN_DRAWS``."""
    from arviz_stats.base import array_stats

    count = int(min(len(flats), max(PSIS_MIN_DRAWS, PSIS_PLAY_DRAWS // max(plays, 1))))
    h, x = flats[:count, i], np.delete(flats[:count], i, axis=1)
    owner = np.abs(h[:, None] - np.array([p["h"] for p in points])[None, :]).argmin(axis=1)
    log_q = np.empty(count)
    for j in np.unique(owner):  # grid points (at most GRID_MAX_POINTS), not draws
        p, rows = points[j], owner == j
        whitened = ((x[rows] - np.asarray(p["x"], np.float64)) @ p["vectors"]) * np.sqrt(p["eigenvalues"])
        log_q[rows] = (np.log(weights[j]) - 0.5 * x.shape[1] * np.log(2 * np.pi) + 0.5 * np.sum(np.log(p["eigenvalues"]))
                       - 0.5 * np.sum(whitened**2, axis=1))
    log_p = -np.asarray(programs.energies64(x, h), np.float64)
    _, k = array_stats.psislw(log_p - log_q)
    return (float(k) if np.isfinite(k) else float("inf")), count  # NaN: a tail too wide to fit


def approximation_warning(method: str, info: dict) -> str | None:
    """The warning ``fit`` gives when the Laplace grid's Pareto ``k`` exceeds
    ``PARETO_K_MAX`` (or could not be fitted); ``None`` otherwise and for other methods."""
    if method != "laplace_grid" or "pareto_k" not in info:
        return None
    k = info["pareto_k"]
    if k is not None and np.isfinite(k) and k <= PARETO_K_MAX:
        return None
    shown = "not finite (the log weights spread too far to fit)" if k is None or not np.isfinite(k) else f"{k:.2f}"
    return (
        f"the Laplace grid cannot vouch for these intervals: the Pareto k of its draws' importance weights against the "
        f"posterior is {shown}, above {PARETO_K_MAX} (PSIS over {info.get('pareto_k_draws')} draws), so its Gaussians "
        "miss the joint posterior and intervals can be too narrow (measured: 8-agent game, truths from the prior, fits "
        "above 0.7 covered 0.0-1.0 of the true differences, those below 0.97; E7 with 40 agents, every fit above, "
        "0.68-0.98 per draw); check with method='nuts' (bayes-diml fit --method nuts) where the model is small enough"
    )


def _newton(programs: _Programs, x, h, previous):
    """Newton's method on ``U(., h)`` from ``x``: the conditional mode, its log evidence and
    the eigendecomposition of its Hessian there.

    Steps use the Hessian of the previous grid point (``previous``: eigenvalues and
    vectors, or ``None``) as a fixed preconditioner, with a backtracking line search, so
    that most steps cost one gradient; the Hessian is then computed at the mode (the
    evidence needs it) and, where the mode has not settled, used for
    more steps (``NEWTON_HESSIANS`` Hessians at most)."""
    value_grad, curvature = programs.value_grad, programs.curvature
    h = jnp.asarray(h, x.dtype)
    value, grad = value_grad(x, h)
    eigen = previous if previous is not None else _eigen(curvature(x, h), h)
    total = 0
    for _ in range(NEWTON_HESSIANS):
        for _ in range(NEWTON_STEPS):
            x, value, grad, gain = _damped_step(value_grad, x, h, value, grad, eigen)
            total += 1
            if gain < NEWTON_TOL:
                break
        eigen = _eigen(curvature(x, h), h)
        if _decrement(grad, eigen) < NEWTON_TOL:
            break
    eigenvalues, vectors = eigen
    if eigenvalues.min() <= 0:
        raise FitError(
            f"laplace_grid: at log {SCALE_SITE} = {float(h):.3g} the conditional posterior's Hessian is not positive "
            f"definite (smallest eigenvalue {eigenvalues.min():.3g}): it is not unimodal there, so it has no Laplace "
            "approximation; the fit stopped (use method='nuts')"
        )
    log_evidence = -float(programs.energy64(x, h)) + 0.5 * x.size * np.log(2 * np.pi) - 0.5 * float(np.sum(np.log(eigenvalues)))
    return x, {"log_evidence": log_evidence, "eigenvalues": eigenvalues, "vectors": vectors, "newton_steps": total,
               "max_gradient": float(jnp.abs(grad).max())}


def _eigen(matrix, h):
    """Eigenvalues and vectors of a Hessian (``inverse_hessian``), or a ``FitError`` if not finite."""
    _, eigenvalues, vectors = inverse_hessian(np.asarray(matrix, np.float64))
    if eigenvalues is None:
        raise FitError(f"laplace_grid: the Hessian is not finite at log {SCALE_SITE} = {float(h):.3g}; the fit stopped")
    return eigenvalues, vectors


def _newton_step(grad, eigen) -> np.ndarray:
    """``-H^-1 grad``, eigenvalues floored (a start where ``U`` is not convex)."""
    eigenvalues, vectors = eigen
    floor = 1e-6 * max(1.0, float(np.abs(eigenvalues).max()))
    return -(vectors / np.maximum(eigenvalues, floor)) @ (vectors.T @ np.asarray(grad, np.float64))


def _decrement(grad, eigen) -> float:
    """Half the Newton decrement, ``g^T H^-1 g / 2``."""
    return float(-0.5 * np.asarray(grad, np.float64) @ _newton_step(grad, eigen))


def _damped_step(value_grad, x, h, value, grad, eigen):
    """One Newton step (``_newton_step``), halved until ``U`` does not increase; returns the
    new point, value, gradient and the decrement's gain at the old point (0 when no step
    lowered ``U``: the float32 rounding of ``U`` hides what is left)."""
    step = _newton_step(grad, eigen)
    gain = float(-0.5 * np.asarray(grad, np.float64) @ step)
    scale = 1.0
    for _ in range(30):
        trial = x + jnp.asarray(scale * step, x.dtype)
        trial_value, trial_grad = value_grad(trial, h)
        if np.isfinite(float(trial_value)) and float(trial_value) <= float(value):
            return trial, trial_value, trial_grad, gain
        scale /= 2
    return x, value, grad, 0.0
