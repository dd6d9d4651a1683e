"""``bayes_diml.fit(method="auto")``: which inference to run for a family and size, from
what was measured (``docs/results.md``, ``docs/calibration_shipped/``; the README's
"which method for which family" table).

The rule (``choose_method``), in order:

1. **A neural mechanism with the function-space prior** (``NeuralFunction``, a tabular
   game as far as inference goes): NUTS up to ``NUTS_MAX_DIM`` coordinates, 2 chains x
   (300 + 300) (``NeuralFunction.AUTO_NUTS``, the settings measured calibrated). The
   prior over the network becomes a prior over the payoff table, and tabular NUTS is
   calibrated at 540 and 2,000 free differences.
2. **The anonymous family with the function-space prior** (``AnonymousFunction``, whose
   ``Mechanism.auto_inference`` is ``"laplace_grid"``): the Laplace grid over the payoff
   scale (``laplace_grid.run_laplace_grid``), whatever the size: the payoffs are linear in
   the coordinates given the scale, and the grid needs one Hessian per point where NUTS
   would need thousands of gradients per draw. When the data hold more than
   ``laplace_grid.HESSIAN_MAX_PLAYS`` plays, the Hessians come from a minibatch of
   episodes (``batch_episodes``, ``hessian_batch``): a Hessian costs one gradient per
   coordinate, so its data are bounded, while the modes still use every episode.
3. **A family that sets ``Mechanism.svi_warning``** (neural with a prior over its
   weights, anonymous):
   SVI with a low-rank multivariate normal guide (``guide = "lowrank"``), with
   minibatches of episodes when the data would need more than
   ``MINIBATCH_MEMORY_SHARE`` of the memory available (``minibatch_episodes``). NUTS
   over thousands of network weights has no measured budget on a CPU, and these
   intervals are *not* calibrated: ``calibration_warning`` says so, with the measured
   coverage, and ``fit`` warns (``UncalibratedWarning``).
4. **Every other family** (tabular, congestion, public goods, linear): NUTS when the
   model has at most ``NUTS_MAX_DIM`` latent coordinates (the mass matrix, dense or the
   Laplace frame, as ``nuts.run_nuts`` decides from the size); public goods with a
   subsidy network with ``PublicGoods.NETWORK_NUTS`` (E3's measured settings, from
   ``Mechanism.auto_nuts``). Above the limit: low-rank SVI, whose coverage on these
   families was not measured.

Measured (90% intervals of the true payoff differences, 2-core CPU): tabular NUTS 0.914
(E1, 540 differences) and 0.910 (E2, 2,000) pooled over three truth draws, 86-112 s per
fit; congestion NUTS 0.866 over 20 draws (E2), 84-94 s; public goods with a 64-unit
subsidy network 0.918 over 8 draws (E3), 380-400 s; neural mean-field SVI 0.33 (E2),
0.25 (E2 scaled), 0.71 (E1 scaled), 0.75 (E3 scaled); anonymous SVI not measured. Neural
function-space NUTS (2 x (300 + 300)): 0.920 (E1 scaled), 0.908 (E2 scaled), 0.903 (E2)
pooled over 8 draws each, 170-380 s. Anonymous function-space Laplace grid (512 features),
E7 with 40 agents: 0.872 (scaled) and 0.907 (paper's scale) over 8 draws each, 35-96 s;
120 agents: 0.905 (scaled) and 0.914 (paper's scale) over 5 draws each, 216-296 s and 651-910 s (``benchmarks/results/coverage_neural/``);
10,000 agents with Hessians from one of 4 episodes: 0.773 (one draw; the basis's misfit of
the two-layer truth outgrows the intervals), 640 s, 9 GB (``benchmarks/anonymous_large.py``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

from .laplace_grid import HESSIAN_MAX_PLAYS

__all__ = [
    "MethodChoice",
    "choose_method",
    "calibration_warning",
    "latent_dim",
    "minibatch_episodes",
    "hessian_batch",
    "NUTS_MAX_DIM",
    "MINIBATCH_MEMORY_SHARE",
]

NUTS_MAX_DIM = 2500
"""``auto`` runs NUTS on models with at most this many latent coordinates (the same
bound as ``experiments/reproduce.TABULAR_NUTS_MAX_DIM``). Measured: tabular NUTS with
540 (E1) and 2,000 (E2) free payoff differences, 4 chains x (300 + 700), 86-112 s and
87-97 s per fit on the 2-core CPU, calibrated (docs/results.md). Cost grows with the
size: a dense mass matrix or the Laplace frame needs the ``d x d`` Hessian of the log
joint (``d`` Hessian-vector products, each a gradient of the whole likelihood, and
``4 d^2`` float64 numbers: 200 MB at 2,500) and a ``d x d`` product per leapfrog step;
without it, NUTS on thousands of correlated coordinates needs long trees. Beyond 2,500
nothing was measured."""

MINIBATCH_MEMORY_SHARE = 0.5
"""SVI chosen by ``auto`` uses minibatches of episodes (``batch_episodes``) when the
full-data fit would need more than this share of the memory available
(``resources.fit_memory``, ``resources.available_memory``); the batch is the largest
number of episodes whose fit needs at most that share."""

class MethodChoice(NamedTuple):
    """What ``method="auto"`` runs: the method, its options (a caller's own options win
    over these), and the reason in one sentence."""

    method: str
    options: dict
    reason: str


def latent_dim(model, num_episodes: int, observed: bool = False) -> int:
    """Latent coordinates of the model (every unobserved sample site of the prior, after
    the gauge), counted from a trace of shapes only (``jax.eval_shape``: nothing is
    computed)."""
    import jax
    from numpyro import handlers

    from .numpyro_model import sample_params

    def latents():
        trace = handlers.trace(handlers.seed(lambda: sample_params(model, num_episodes, observed), 0)).get_trace()
        return {n: s["value"] for n, s in trace.items() if s["type"] == "sample" and not s["is_observed"]}

    return int(sum(math.prod(v.shape) for v in jax.tree.leaves(jax.eval_shape(latents))))


def minibatch_episodes(model, num_episodes: int, num_rounds: int, options: dict) -> int | None:
    """Episodes per SVI minibatch: ``None`` (all data at once) when the full-data fit needs
    at most ``MINIBATCH_MEMORY_SHARE`` of the memory available (or that memory is unknown,
    or the model has per-episode initial propensities, which cannot be subsampled), else
    the largest batch that does (at least 1)."""
    from ..resources import available_memory, fit_memory

    available = available_memory()
    if available is None or model.initial == "per_episode" or num_episodes <= 1:
        return None
    budget = MINIBATCH_MEMORY_SHARE * available

    def fits(batch: int | None) -> bool:
        return fit_memory(model, num_episodes, num_rounds, "svi", {**options, "batch_episodes": batch})[0] <= budget

    if fits(None):
        return None
    low, high = 1, num_episodes - 1  # the largest batch that fits, by bisection (memory grows with the batch)
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if fits(middle) else (low, middle - 1)
    return low


def hessian_batch(num_episodes: int, num_rounds: int, num_agents: int) -> int | None:
    """Episodes of the Laplace grid's Hessians: ``None`` (all) when the data hold at most
    ``laplace_grid.HESSIAN_MAX_PLAYS`` plays, else the most episodes within it (at least 1)."""
    per_episode = num_rounds * num_agents
    if num_episodes * per_episode <= HESSIAN_MAX_PLAYS:
        return None
    return max(1, HESSIAN_MAX_PLAYS // per_episode)


def _lowrank_svi(model, data, dim: int, why: str) -> MethodChoice:
    """Low-rank SVI (rank ``round(sqrt(dim))``, NumPyro's default, given explicitly so that
    the memory guard counts it), with minibatches when the data are large."""
    options = {"guide": "lowrank", "rank": max(1, round(math.sqrt(dim)))}
    batch = minibatch_episodes(model, data.num_episodes, data.num_rounds, options)
    if batch is not None:
        options["batch_episodes"] = batch
        why += f"; minibatches of {batch} of the {data.num_episodes} episodes, as the full data would need more than half the memory available"
    return MethodChoice("svi", options, why)


def choose_method(model, data) -> MethodChoice:
    """The method ``fit(method="auto")`` runs on ``model`` and ``data`` (``Trajectories``):
    the module docstring's rule, with its reason in one sentence. What differs by family
    lives on the family (``Mechanism.svi_warning``, ``Mechanism.auto_nuts``)."""
    from .numpyro_model import observed_payoffs

    mechanism = model.mechanism
    dim = latent_dim(model, data.num_episodes, observed_payoffs(data) is not None)
    size = f"{dim:,} latent coordinates"
    if mechanism.auto_inference == "laplace_grid":
        why = (f"the Laplace grid: the {mechanism.family} family's function-space prior ({size}) is Gaussian given its "
               "payoff scale, and was measured calibrated on E7 (docs/results.md)")
        batch = hessian_batch(data.num_episodes, data.num_rounds, model.num_agents)
        if batch is None:
            return MethodChoice("laplace_grid", {}, why)
        return MethodChoice("laplace_grid", {"batch_episodes": batch}, why + f"; Hessians from {batch} of the "
                            f"{data.num_episodes} episodes, as the data hold more than the {HESSIAN_MAX_PLAYS:,} plays a "
                            "Hessian is computed on")
    if mechanism.svi_warning is not None:
        return _lowrank_svi(model, data, dim, f"low-rank SVI for the {mechanism.family} family with a prior over network "
                            f"weights ({size}): NUTS was not measured there, and these intervals are not calibrated (see the warning)")
    if dim > NUTS_MAX_DIM:
        return _lowrank_svi(model, data, dim, f"low-rank SVI: {size} exceed NUTS's limit of {NUTS_MAX_DIM:,} "
                            f"(its coverage on the {mechanism.family} family is not measured)")
    options, why = mechanism.auto_nuts()
    return MethodChoice(
        "nuts", options, f"NUTS: the {mechanism.family} family with {size} (at most {NUTS_MAX_DIM:,})"
        + (f"; {why}" if why else "; NUTS was measured calibrated on tabular and structured games of up to 2,000 coordinates"),
    )


def calibration_warning(model, method: str) -> str | None:
    """The warning ``fit`` gives for intervals measured too narrow: SVI (either guide) on a
    family that sets ``Mechanism.svi_warning``; ``None`` otherwise."""
    return model.mechanism.svi_warning if method == "svi" else None
