"""Model comparison by leave-one-episode-out cross-validation (PSIS-LOO, ArviZ 1.x).

For each fit, the expected log predictive density of a held-out episode,

    elpd_loo = sum_e log p(a_e | a_{-e}),
    p(a_e | a_{-e}) ≈ sum_s w_e^s p(a_e | theta^s) / sum_s w_e^s,   w_e^s ∝ 1 / p(a_e | theta^s),

with the raw importance weights stabilised by Pareto smoothing (Vehtari, Gelman &
Gabry 2017, Stat Comput 27:1413; Vehtari et al. 2024, JMLR 25:72). The unit
left out is a whole episode (the ``log_likelihood`` group has dims chain, draw,
episode): rounds within an episode are dependent through the learners' state,
episodes are not. Fits are ranked by ``arviz.compare``; the Pareto shape ``k`` of
each episode's weights says whether its estimate can be trusted.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ..errors import DataError

__all__ = ["compare", "loo", "pareto_k_warnings", "MIN_LOO_DRAWS"]

MIN_LOO_DRAWS = 100
"""Fewest posterior draws for PSIS-LOO: Pareto smoothing fits the largest ``min(S / 5,
3 sqrt(S))`` importance weights of each episode, and its shape estimate needs a tail of
some size (a MAP point has one draw and no tail at all)."""


def _as_fit(item):
    from .results import Fit, load_fit

    if isinstance(item, Fit):
        return item
    if isinstance(item, (str, Path)):
        return load_fit(item)
    raise DataError(f"compare takes fits or run folders, got {type(item).__name__}")


def _named_fits(fits_or_run_dirs) -> dict:
    """``{name: Fit}``: a dict keeps its names; run folders are named by their folder,
    fits by ``learner/family`` (made unique with ``#k``)."""
    if isinstance(fits_or_run_dirs, dict):
        items = list(fits_or_run_dirs.items())
    else:
        items = []
        for item in fits_or_run_dirs:
            if isinstance(item, (str, Path)):
                items.append((Path(item).name or str(item), item))
            else:
                items.append((f"{item.model.learner.name}/{item.model.mechanism.family}", item))
    named: dict = {}
    for name, item in items:
        key, k = str(name), 2
        while key in named:
            key, k = f"{name}#{k}", k + 1
        named[key] = _as_fit(item)
    return named


def loo(fit):
    """PSIS-LOO of one fit over episodes (``arviz.loo`` with pointwise values)."""
    import arviz as az

    if fit.log_likelihood is None:
        raise DataError("this fit has no per-episode log-likelihood; refit it with bayes_diml.fit")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the plain-words Pareto-k warnings below replace ArviZ's
        return az.loo(fit.to_arviz(), pointwise=True, var_name="actions")


def pareto_k_warnings(name: str, elpd, episode_labels=None) -> list[str]:
    """Plain-words warnings for episodes whose Pareto ``k`` exceeds the reliability bound.

    The bound is ``min(1 - 1 / log10(S), 0.7)`` for ``S`` draws (ArviZ's ``good_k``):
    above it the importance weights have too heavy a tail for the episode's
    left-out density to be estimated from the draws.
    """
    k = np.asarray(elpd.pareto_k).ravel()
    bound = float(elpd.good_k)
    bad = np.flatnonzero(k > bound)
    if bad.size == 0:
        return []
    labels = list(episode_labels) if episode_labels is not None else list(range(k.size))
    shown = ", ".join(str(labels[i]) for i in bad[:10]) + (" ..." if bad.size > 10 else "")
    return [
        f"{name}: leaving out episode(s) {shown} changes the posterior too much for PSIS-LOO to "
        f"estimate (Pareto k above {bound:.2f} for {bad.size} of {k.size} episodes); its elpd "
        "for this model is unreliable: draw more samples, or compare by refitting without those episodes (K-fold)."
    ]


def compare(fits_or_run_dirs, *, names=None):
    """Rank fits of the same data by PSIS-LOO over episodes (``arviz.compare``).

    Args:
        fits_or_run_dirs: ``Fit`` objects and/or run folders (paths), or a dict
            ``{name: fit or folder}``. All must be fits of the same data.
        names: optional list of names, one per item (default: folder names, or
            ``learner/family``).

    Returns:
        ArviZ's comparison DataFrame (one row per fit, best first: ``rank``,
        ``elpd``, ``p``, ``elpd_diff``, ``dse``, ``weight``, ``se``, ...), with
        ``attrs["warnings"]`` a list of plain-words sentences (Pareto-k problems;
        differences within two standard errors of the best). The warnings are also
        issued with ``warnings.warn``.
    """
    import arviz as az

    if names is not None:
        items = list(fits_or_run_dirs.values()) if isinstance(fits_or_run_dirs, dict) else list(fits_or_run_dirs)
        if len(names) != len(items):
            raise DataError(f"compare: {len(names)} names for {len(items)} fits")
        fits_or_run_dirs = dict(zip(names, items))
    fits = _named_fits(fits_or_run_dirs)
    if len(fits) < 2:
        raise DataError("compare needs at least two fits")
    first_name, first = next(iter(fits.items()))
    for name, fit in fits.items():
        if fit.data.num_episodes != first.data.num_episodes or not _same_actions(fit.data, first.data):
            raise DataError(
                f"compare: '{name}' was fitted to other data than '{first_name}'; LOO compares models of the same data"
            )
    for name, fit in fits.items():
        if _modelled(fit) != _modelled(first):
            raise DataError(
                f"compare: '{name}' scores the play of agents {_modelled(fit)} but '{first_name}' of "
                f"{_modelled(first)} ([game] modelled); LOO compares models of the same agents' play"
            )
    for name, fit in fits.items():
        draws = fit.num_chains * fit.num_draws
        if draws < MIN_LOO_DRAWS:
            fix = ("refit it with --method nuts or svi" if fit.method == "map"
                   else "refit it with more draws (--chains x --samples)")
            raise DataError(
                f"compare: '{name}' is a {fit.method} fit with {draws} posterior draw(s); PSIS-LOO needs posterior "
                f"draws (at least {MIN_LOO_DRAWS}): {fix}"
            )
    elpds = {name: loo(fit) for name, fit in fits.items()}
    messages = []
    for name, elpd in elpds.items():
        messages += pareto_k_warnings(name, elpd, fits[name].data.episode_labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = az.compare(elpds, round_to="none")
    best = table.index[0]
    for name, row in table.iloc[1:].iterrows():
        if np.isfinite(row["dse"]) and abs(row["elpd_diff"]) < 2 * row["dse"]:
            messages.append(
                f"'{name}' is within two standard errors of '{best}' (elpd difference {row['elpd_diff']:.1f} "
                f"± {row['dse']:.1f}): the data do not clearly prefer one over the other."
            )
    table.attrs["warnings"] = messages
    for message in messages:
        warnings.warn(message, stacklevel=2)
    return table


def _same_actions(a, b) -> bool:
    """Same played actions, and payoffs observed in both or in neither (the log-likelihood
    of a fit with observed payoffs includes their density)."""
    from .numpyro_model import observed_payoffs

    if (observed_payoffs(a) is None) != (observed_payoffs(b) is None):
        return False
    return a.actions.shape == b.actions.shape and np.array_equal(a.mask, b.mask) and np.array_equal(
        np.where(a.mask, 0, a.actions), np.where(b.mask, 0, b.actions)
    )


def _modelled(fit) -> list:
    """The labels of the agents whose play a fit's log-likelihood scores (``[game] modelled``)."""
    labels = fit.data.agent_labels
    scored = fit.model.scored_agents
    return [label for i, label in enumerate(labels) if scored is None or scored[i]]
