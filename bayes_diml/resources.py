"""One memory guard for the whole package: estimate a program's memory before building it.

Every entry point that allocates in proportion to its sizes (``fit``, ``simulate``,
``counterfactual``, the tabular family's table) first calls ``check_memory`` with an
estimate from this module, and refuses in one line, before anything is traced, what
cannot fit in the memory available now:

    error: this NUTS fit needs about 41.3 GB of memory (posterior draws: 4 chains x 500
    x 45,000,000 coordinates), more than the 19.6 GB available; ...

The estimates count the arrays that scale with the problem (payoff tables and their
optimiser states, the likelihood's per-cell intermediates, Hessians, stored draws,
simulated actions); the constants below were measured with peak RSS on small runs
(``tests/test_resources.py`` checks that each estimate bounds a measured peak). They are
upper bounds of the right order, not byte counts: a program refused here would not
have fitted, and one allowed may still need up to the estimate.

The memory available is ``MemAvailable`` of ``/proc/meminfo`` (the accelerator's free
memory when JAX computes on one), or the environment variable
``BAYES_DIML_MEMORY_LIMIT`` (bytes, or with a suffix ``K``, ``M``, ``G``, ``T``) when it
is set: a smaller budget for a shared machine, or a larger one to skip the guard.
"""

from __future__ import annotations

import math
import os

from .errors import ResourceError

__all__ = [
    "MEMORY_LIMIT_ENV",
    "available_memory",
    "check_memory",
    "count_text",
    "bytes_text",
    "fit_memory",
    "simulation_memory",
    "counterfactual_memory",
]

MEMORY_LIMIT_ENV = "BAYES_DIML_MEMORY_LIMIT"

LIKELIHOOD_FLOATS_PER_CELL = 16
"""Floats alive per (episode, round, agent, action) cell in one log-likelihood and its
gradient: counterfactual payoffs, the scan's decay and drive, its tree levels, log
policies, and their cotangents."""

OPTIMISER_COPIES = 24
"""Copies of the parameter vector during an Adam step (parameters, gradient, two
moments, the update, the prior's terms and temporaries). Measured for a tabular MAP
fit of 6.4 million coordinates (``benchmarks/results/memory_guard.json``): 12 to 17
copies on the development machine, the equivalent of 19 on the CI machine (2.37 GB peak above baseline
against 1.21 GB here, same code and jax); the allocator's fragmentation is part of
what a fit needs, so the constant covers the larger."""

POINTWISE_FLOATS_PER_CELL = 6
"""Floats alive per cell in a forward log-likelihood (no gradient), as for the
per-episode log-likelihood of every draw after a fit (measured: 6.0 for SVI on 2.4
million cells x 64 draws, ``benchmarks/results/memory_guard.json``)."""

POINTWISE_MAX_CELLS = 2**25
"""Cells evaluated at once when scoring draws (``pointwise_batch``): about 0.8 GB of
float32 intermediates."""

SVI_LIKELIHOOD_COPIES = 14
"""An SVI step holds several likelihood evaluations' intermediates at once (the ELBO's
sample from the guide, its gradient through the guide, the blocked Adam scan). For SVI
on 2.4 million cells (``benchmarks/results/memory_guard.json``, ``tests/test_resources.py``)
the development machine measured 1.0 GB of peak resident memory above baseline and the
CI machine 2.38 GB, same code and jax: beside the estimate's other parts, the equivalent
of 9 likelihood copies. As with ``OPTIMISER_COPIES``, the constant covers the larger
with a margin."""

RUNTIME_BYTES = 300 * 10**6
"""What any compiled program adds (compilation, XLA's buffers), whatever its size."""

DRAW_COPIES = 3
"""Copies of the stored draws (the sampler's, the constrained ones, the ArviZ tree)."""

_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def count_text(count: int) -> str:
    """An exact integer with thousands separators up to 10**9, else ``"about 9.67e105"``
    (from the digits, no float: ``40**300`` overflows one)."""
    count = int(count)
    if count < 10**9:
        return f"{count:,}"
    digits = str(count)
    return f"about {digits[0]}.{digits[1:3]}e{len(digits) - 1}"


def bytes_text(nbytes: int) -> str:
    """``"12.4 GB"``, ``"512 MB"``, ``"4.97e483 bytes"`` (decimal units)."""
    nbytes = int(nbytes)
    if nbytes >= 10**18:
        return f"{count_text(nbytes).removeprefix('about ')} bytes"
    for unit, size in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if nbytes >= size:
            return f"{nbytes / size:.1f} {unit}"
    return f"{nbytes} bytes"


def _parse_limit(text: str) -> int:
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = text[-1:] if text[-1:] in _UNITS and text[-1:] != "" else ""
    try:
        value = float(text[: len(text) - len(unit)] if unit else text)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value <= 0:
        raise ResourceError(
            f"{MEMORY_LIMIT_ENV}={text!r}: expected a number of bytes > 0, optionally with K, M, G or T (e.g. 8G)"
        )
    return int(value * _UNITS[unit])


def available_memory() -> int | None:
    """Bytes a new program may use now, or ``None`` when unknown (then nothing is refused)."""
    limit = os.environ.get(MEMORY_LIMIT_ENV)
    if limit:
        return _parse_limit(limit)
    device = _accelerator_free_memory()
    if device is not None:
        return device
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def _accelerator_free_memory() -> int | None:
    """Free memory of JAX's default device when it is an accelerator reporting it."""
    import jax

    if jax.default_backend() == "cpu":
        return None
    try:
        stats = jax.devices()[0].memory_stats() or {}
    except Exception:  # a backend without memory statistics
        return None
    if "bytes_limit" not in stats:
        return None
    return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))


def check_memory(nbytes: int, what: str, detail: str, advice: str) -> None:
    """Raise ``ResourceError`` (one line) when ``nbytes`` exceeds the memory available.

    Args:
        nbytes: the estimate.
        what: the program, e.g. ``"this NUTS fit"``.
        detail: the largest part of the estimate, in words and sizes.
        advice: what to change, e.g. ``"use fewer --episodes"``.
    """
    available = available_memory()
    if available is None or nbytes <= available:
        return
    source = f" ({MEMORY_LIMIT_ENV})" if os.environ.get(MEMORY_LIMIT_ENV) else ""
    raise ResourceError(
        f"{what} needs about {bytes_text(nbytes)} of memory ({detail}), more than the {bytes_text(available)} "
        f"available{source}; {advice}"
    )


# ------------------------------------------------------------------ estimates
def _float_bytes() -> int:
    import jax

    return 8 if jax.config.jax_enable_x64 else 4


def _largest(parts: dict[str, int]) -> str:
    return max(parts, key=parts.get)


def latent_size(model, num_episodes: int) -> int:
    """Unconstrained coordinates of a model: mechanism parameters (an upper bound: the
    gauge removes some), learner parameters with a prior, initial propensities."""
    n, A = model.num_agents, model.num_actions
    size = sum(math.prod(shape) for shape in model.mechanism.param_shapes().values())
    for name in model.learner_priors:
        size += n + 2 if name in model.per_agent else 1
    if model.initial == "shared":
        size += n * A
    elif model.initial == "per_episode":
        size += num_episodes * n * A + 2 * n * A
    return int(size)


def pointwise_batch(num_cells: int, most: int = 64) -> int:
    """Draws scored together after a fit, so that ``POINTWISE_MAX_CELLS`` bounds the cells
    alive at once (at least one draw, at most ``most``)."""
    return int(max(1, min(most, POINTWISE_MAX_CELLS // max(int(num_cells), 1))))


def fit_memory(model, num_episodes: int, num_rounds: int, method: str, options: dict) -> tuple[int, str]:
    """Bytes a fit needs, and its largest part in words.

    ``options`` are the method's options as given to ``bayes_diml.fit`` (defaults are
    the samplers' defaults)."""
    f = _float_bytes()
    n, A = model.num_agents, model.num_actions
    D = latent_size(model, num_episodes)
    batch = options.get("batch_episodes") or num_episodes
    cells = batch * num_rounds * n * A
    per_round = 2 * model.mechanism.round_entries()  # a network's activations on each round's table (and tangents)
    lik = (LIKELIHOOD_FLOATS_PER_CELL * cells + per_round * batch * num_rounds) * f
    table = _table_bytes(model, f)
    parts: dict[str, int] = {}
    if method == "map":
        restarts = int(options.get("restarts", 4))
        parts[f"{restarts} restarts x (the likelihood of {count_text(cells)} cells + {count_text(D)} coordinates)"] = (
            restarts * (lik + table + OPTIMISER_COPIES * D * f)
        )
        if options.get("laplace"):
            parts[f"a {count_text(D)} x {count_text(D)} Hessian"] = 3 * D * D * 8 + _hessian_chunk(D) * lik
            parts[f"{options.get('num_samples', 1000)} Laplace draws of {count_text(D)} coordinates"] = (
                DRAW_COPIES * int(options.get("num_samples", 1000)) * D * f
            )
    elif method == "svi":
        rank = int(options.get("rank") or 0) if options.get("guide") == "lowrank" else 0
        particles = int(options.get("num_particles", 1))
        parts[f"the likelihood of {count_text(cells)} cells x {particles} particle(s)"] = particles * (
            SVI_LIKELIHOOD_COPIES * lik + table
        )
        parts[f"the guide over {count_text(D)} coordinates"] = OPTIMISER_COPIES * D * (2 + rank) * f
        parts[f"{options.get('num_samples', 1000)} draws of {count_text(D)} coordinates"] = (
            DRAW_COPIES * int(options.get("num_samples", 1000)) * D * f
        )
    elif method == "laplace_grid":
        from .inference.laplace_grid import GRID_MAX_POINTS, HVP_GRADIENTS, hessian_columns

        wide = lik * 8 // f  # the Hessians are float64 (laplace_grid._programs)
        columns = min(D, hessian_columns(wide))  # as the fit sizes them, each HVP_GRADIENTS gradients
        parts[f"the likelihood of {count_text(cells)} cells x {columns} float64 Hessian columns"] = (
            columns * HVP_GRADIENTS * wide + table)
        if batch < num_episodes:  # the modes' gradients use every episode
            full = num_episodes * num_rounds
            parts[f"the gradient on all {count_text(full * n * A)} cells"] = (
                LIKELIHOOD_FLOATS_PER_CELL * full * n * A + per_round * full) * f
        parts[f"up to {GRID_MAX_POINTS} grid points' {count_text(D)} x {count_text(D)} Hessians"] = (
            GRID_MAX_POINTS * 2 * D * D * 8
        )
        parts[f"{options.get('num_samples', 1000)} draws of {count_text(D)} coordinates"] = (
            DRAW_COPIES * int(options.get("num_samples", 1000)) * D * f
        )
    else:  # nuts
        chains = int(options.get("num_chains", 4))
        samples = int(options.get("num_samples", 500))
        parts[f"{chains} chains x the likelihood of {count_text(cells)} cells"] = chains * (lik + table + 16 * D * f)
        dense = options.get("dense_mass")
        if dense or (dense is None and D <= 1000):
            parts[f"a {count_text(D)} x {count_text(D)} Hessian"] = 4 * D * D * 8 + _hessian_chunk(D) * lik
        parts[f"posterior draws: {chains} chains x {samples} x {count_text(D)} coordinates"] = (
            DRAW_COPIES * chains * samples * D * f
        )
    draws = {"map": int(options.get("num_samples", 1000)) if options.get("laplace") else 1,
             "svi": int(options.get("num_samples", 1000)),
             "laplace_grid": int(options.get("num_samples", 1000)),
             "nuts": int(options.get("num_chains", 4)) * int(options.get("num_samples", 500))}[method]
    parts[f"scoring {draws} draw(s) on {count_text(cells)} cells"] = (
        min(draws, pointwise_batch(cells)) * POINTWISE_FLOATS_PER_CELL * cells * f + draws * num_episodes * f
    )
    parts[f"the data ({count_text(num_episodes * num_rounds * n)} actions)"] = 8 * num_episodes * num_rounds * n
    return RUNTIME_BYTES + sum(parts.values()), _largest(parts)


def _hessian_chunk(D: int) -> int:
    """Hessian columns computed at once (``inference.preconditioning.HESSIAN_CHUNK``), each a
    gradient's worth of the likelihood's intermediates."""
    from .inference.preconditioning import HESSIAN_CHUNK

    return min(HESSIAN_CHUNK, D)


def _table_bytes(model, f: int) -> int:
    """A payoff table the mechanism builds per evaluation (``prepare``), if it is a joint table."""
    return 2 * model.mechanism.table_entries() * f


def simulation_memory(model, num_episodes: int, num_rounds: int) -> tuple[int, str]:
    """Bytes ``simulate`` needs: log-policies and actions, then the long table."""
    f = _float_bytes()
    n, A = model.num_agents, model.num_actions
    plays = num_episodes * num_rounds * n
    parts = {
        f"{count_text(plays)} simulated plays x {A} actions": 2 * plays * A * f + 4 * plays,
        f"a long table of {count_text(plays)} rows": 64 * plays,
    }
    return sum(parts.values()), _largest(parts)


def counterfactual_memory(model, num_draws: int, num_episodes: int, num_rounds: int, per_agent: bool,
                          keep_actions: bool) -> tuple[int, str]:
    """Bytes a counterfactual needs: one draw's simulation at least (draws are batched
    to ``inference.counterfactual.CHUNK_ELEMENTS``), and the per-round summaries."""
    f = _float_bytes()
    n, A = model.num_agents, model.num_actions
    one_draw = (num_episodes * num_rounds * n + 2 * num_episodes * n * A + num_episodes * A * A) * 4 * 3
    parts = {
        f"one posterior draw's {count_text(num_episodes)} episodes x {count_text(num_rounds)} rounds x {n} agents": one_draw,
        f"{num_draws} draws x {count_text(num_rounds)} rounds of frequencies": (
            num_draws * num_rounds * A * (n if per_agent else 1) * f * 2 + num_draws * num_rounds * f
        ),
    }
    if keep_actions:
        parts[f"{num_draws} draws' actions"] = num_draws * num_episodes * num_rounds * n * 4
    return sum(parts.values()), _largest(parts)


def table_entries(num_actions: int, num_agents: int) -> int:
    """``A**n * n``, exactly (a Python integer)."""
    return int(num_actions) ** int(num_agents) * int(num_agents)


def check_table(num_agents: int, num_actions: int, what: str) -> None:
    """Refuse a joint payoff table (``A**n x n`` floats) that cannot fit in memory, before
    anything is built."""
    entries = table_entries(num_actions, num_agents)
    nbytes = entries * 4
    check_memory(
        nbytes,
        what,
        f"a payoff table of A**n * n = {num_actions}**{num_agents} * {num_agents} = {count_text(entries)} entries",
        "use a family that scales with the number of agents (congestion, public_goods, anonymous, linear)",
    )

