"""Conditional posterior predictive checks: the sequential patterns learning models miss.

Per-round action frequencies (``results.predictive_frequencies``) can match while the
round-to-round structure of play is wrong: humans repeat their own last choice more
than a payoff-driven learner does, and a full-information learner then explains the
repetition with payoffs (issue 20). Following Wilson & Collins (2019, "Ten simple rules
for the computational modeling of behavioral data", eLife 8:e49547: validate a fitted
model by simulating it and comparing stay / switch behaviour), ``ppc(fit)`` tabulates, pooled over the
modelled agents (``[game] modelled``; every agent by default) and episodes, for every present
agent-round ``t >= 1`` of a modelled agent whose conditioning entry is observed:

* ``own_previous``: ``C[p, a] = #{a_t = a, a_{t-1} = p}`` (the agent's own last choice;
  the diagonal over the row totals is the stay share, reported with its band);
* ``opponent_previous``: ``C[p, a]`` with ``p`` the other agent's previous choice in a
  2-agent game (modelled or not); with ``n > 2`` agents, the modal previous choice of the
  other present agents (ties to the lowest action index), one table for all;
* ``previous_outcome``: ``C[b, a]`` with ``b`` the agent's outcome at ``t - 1``: the label
  of an outcome column (``[payoff] outcomes``; replicated rounds labelled through the
  observed relation joint action -> label, or the table skipped with a note in
  ``"notes"`` when the label is not a function of the joint action), else the bin of its
  recorded ``payoff``: by value with at most ``_ppc_outcomes.OUTCOME_LEVELS`` distinct
  values (cut at midpoints; replicated payoffs ``M(a_t)_i`` without noise: exact levels
  such as win / tie / lose), otherwise the observed terciles (replicated payoffs with the
  model's noise). Rows without an outcome are left out; without either column the table
  is skipped. The reasons are in ``_ppc_outcomes.py``.

Replicated tables ``C^rep_r`` (``r = 1..R``) come from play simulated with the fitted
learners and mechanism (``simulate.simulate_arrays``, the package's simulator) for
``R`` draws spread over the posterior (``results.thinned_index``; each of at most
``max_draws`` draws replicated ``R / S`` times), on the observed episodes and rounds.
Unmodelled agents are not simulated: their play is data, so every replicate replays the
episode's own observed actions (``simulate_arrays(..., replay=)``), exactly, and the
modelled agents' conditional behaviour is checked against the context they really faced
(an unmodelled agent's missing entry is replayed as action 0: the simulator plays every
agent in every round). Entries absent from the data (late starts, sit-outs, ragged
episodes) are dropped from replicated tables as from observed ones. Replicated payoffs
are ``M(a_t)_i + sigma * N(0, 1)`` (the draw's ``payoff_sigma``; terciles only). All
replicates run as one compiled program (``jax.lax.map`` over replicates, batched with ``vmap``).

Discrepancy (a chi-square distance of a table from its posterior predictive
conditional shares, given its own row totals ``N_p = sum_a C[p, a]``)::

    P_bar[p, a] = (sum_r C^rep_r[p, a] + 1/2) / (sum_r N^rep_r[p] + A/2)
    T(C) = sum_{p, a} (C[p, a] - N_p P_bar[p, a])^2 / (N_p P_bar[p, a])
    p_table = (1 + #{r : T(C^rep_r) >= T(C^obs)}) / (R + 1)

the posterior predictive p-value of Gelman, Meng & Stern (1996, Statistica Sinica 6,
733-807), estimated as a Monte Carlo test p-value with the ``+1`` (Davison & Hinkley
1997, ch. 4) so it is never 0. ``misfit`` is true when some table's ``p < ALPHA / k``
(``k`` tables: Bonferroni). With the true parameters in place of the posterior, observed
and replicated tables are exchangeable (given the unmodelled agents' play, which both
share) and misfit has probability at most ``ALPHA``;
posterior predictive p-values tend to be conservative (the data also enter through the
posterior), so a fitted model is flagged at about that rate or less (``tests/test_ppc.py``,
slow). With ``R + 1 < k / ALPHA`` replicates misfit cannot be flagged at all. Each cell
also gets the ``CREDIBLE_LEVEL`` (90%) band of its replicated share ``C^rep[p, a] / N^rep_p``.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np

from .._json import jsonable
from .._random import as_key
from ..errors import MisfitWarning
from ._ppc_outcomes import outcome_relation, payoff_cuts, relation_keys
from .results import CREDIBLE_LEVEL, draws_params, interval_columns, thinned_index

__all__ = ["ppc", "ppc_from_params", "observed_tables", "replicated_tables", "misfit_message", "as_json", "fit_checks", "ALPHA", "TABLES"]

ALPHA = 0.01
"""Family-wise level of the misfit flag (split over the tables by Bonferroni)."""
MAX_DRAWS = 200
"""Posterior draws the replicates are spread over (at most)."""
NUM_REPLICATES = 1000
"""Replicated data sets (``p`` resolution ``1 / (R + 1)``; 1000 lets 0.01 / 3 be reached)."""
MIN_REPLICATES = 400
"""Fewest replicates kept when a large data set lowers their number (``MAX_SIMULATED``)."""
MAX_SIMULATED = 100_000_000
"""Simulated agent-rounds (replicates x episodes x rounds x agents) above which fewer replicates run."""
QUICK_COMPILE_MAX = 5_000_000
"""Simulated agent-rounds up to which the replicates' program is compiled quickly (``_COMPILED``)."""
BATCH_ELEMENTS = 20_000_000
"""Array elements alive at once across a batch of replicates (about 80 MB of float32): sets the
batch size (``replicated_tables``)."""
PARAMETER_COPIES = 4
"""Copies of a draw's parameters a replicate holds (the gathered draw, the mechanism's prepared
form, temporaries), counted against ``BATCH_ELEMENTS`` with the play's cells."""
SEED = 0
"""Default seed of the replicates (a fixed key: ``ppc(fit)`` is reproducible)."""

TABLES = {
    "own_previous": ("choice given the agent's own previous choice", "own previous action"),
    "opponent_previous": ("choice given the opponent's previous choice", "opponent's previous action"),
    "previous_outcome": ("choice given the agent's previous payoff", "previous payoff"),
}
"""Name -> (title, what the rows are) of each table."""


def ppc(fit, *, max_draws: int = MAX_DRAWS, num_replicates: int = NUM_REPLICATES, seed=SEED) -> dict:
    """Conditional posterior predictive checks of a ``Fit`` (module docstring).

    Returns:
        ``{"tables": {name: table}, "misfit": bool, "failing": [names], "alpha",
        "threshold", "draws", "replicates", "level", "notes": [why a table was skipped]}``; each table holds ``rows``,
        ``columns`` (labels), ``observed`` counts, ``observed_share``, ``row_total``,
        ``predictive_share`` (``P_bar``), the band (``q05``, ``q95``), ``statistic``,
        ``replicated_statistic`` (mean and the band), ``p`` and ``misfit``;
        ``own_previous`` also ``stay`` (observed share, band, two-sided ``p``).
    """
    if isinstance(max_draws, bool) or not isinstance(max_draws, (int, np.integer)) or max_draws < 1:
        raise ValueError(f"max_draws must be a positive integer, got {max_draws!r}")
    index = thinned_index(fit.posterior, max_draws)
    params = draws_params(fit.model, fit.data, fit.posterior, index)
    return ppc_from_params(fit.model, fit.data, params, seed=seed, num_replicates=num_replicates)


def fit_checks(model, data, posterior) -> dict:
    """What ``fit`` records in ``info["ppc"]``: ``ppc`` of the posterior as JSON data, with a
    ``MisfitWarning`` (``misfit_message``) when it finds misfit."""
    index = thinned_index(posterior, MAX_DRAWS)
    result = ppc_from_params(model, data, draws_params(model, data, posterior, index))
    if result["misfit"]:
        warnings.warn(misfit_message(result), MisfitWarning, stacklevel=4)  # fit_checks <- fit._conditional_checks <- fit <- caller
    return as_json(result)


def ppc_from_params(model, data, params, *, seed=SEED, num_replicates: int = NUM_REPLICATES) -> dict:
    """``ppc`` with the draws given: ``params`` as ``results.draws_params`` returns them
    (a leading draw axis; one draw, e.g. the true parameters, checks a known model)."""
    if isinstance(num_replicates, bool) or not isinstance(num_replicates, (int, np.integer)) or num_replicates < 1:
        raise ValueError(f"num_replicates must be a positive integer, got {num_replicates!r}")
    draws = int(np.shape(jax.tree.leaves(params)[0])[0])
    setup = _setup(model, data)
    counts = replicated_tables(model, data, params, seed=seed, num_replicates=num_replicates, setup=setup)
    R = int(np.shape(counts["own_previous"])[0])
    observed = observed_tables(model, data)
    tables = {name: _table(name, observed[name], counts[name], setup["rows"][name], data,
                           setup["row_names"].get(name)) for name in setup["names"]}
    threshold = ALPHA / len(tables) if tables else ALPHA
    failing = [name for name, table in tables.items() if table["p"] < threshold]
    for name in failing:
        tables[name]["misfit"] = True
    return {
        "tables": tables, "misfit": bool(failing), "failing": failing, "alpha": ALPHA, "threshold": threshold,
        "draws": draws, "replicates": R, "level": CREDIBLE_LEVEL, "notes": setup["notes"],
    }


def observed_tables(model, data) -> dict[str, np.ndarray]:
    """The observed count tables ``{name: (rows, A)}`` (the same counting as the replicates)."""
    setup = _setup(model, data)
    arrays = setup["arrays"]
    actions = np.where(data.mask, 0, data.actions).astype(np.int32)
    counts = _jit_counts(actions, arrays["present"], arrays["observed_bins"], arrays["known"], arrays["scored"],
                         model.num_actions, setup["names"], setup["num_bins"])
    return {k: np.asarray(v, np.float64) for k, v in counts.items()}


def replicated_tables(model, data, params, *, seed=SEED, num_replicates: int = NUM_REPLICATES, setup=None) -> dict:
    """The replicated count tables ``{name: (R, rows, A)}`` (``R``: ``num_replicates``, lowered
    for large data sets, ``_replicates``), ``params`` as in ``ppc_from_params``."""
    E, T, n = data.actions.shape
    R = _replicates(int(num_replicates), E * T * n)
    setup = _setup(model, data) if setup is None else setup
    params = jax.tree.map(jnp.asarray, params)
    draws = int(np.shape(jax.tree.leaves(params)[0])[0])
    # a replicate holds its play's cells and its own copy of the draw's parameters (a tabular
    # game's table can hold millions of entries)
    entries = sum(int(np.size(leaf)) // draws for leaf in jax.tree.leaves(params))
    per_replicate = E * T * n * model.num_actions + PARAMETER_COPIES * entries
    batch = max(1, min(R, BATCH_ELEMENTS // max(1, per_replicate)))
    compiled = _COMPILED[R * E * T * n <= QUICK_COMPILE_MAX]
    counts = compiled(model, params, as_key(seed), setup["arrays"], T, setup["names"], setup["num_bins"], R, batch)
    return {name: np.asarray(v, np.float64) for name, v in counts.items()}


def misfit_message(result: dict) -> str:
    """One line naming the failing tables, their ``p`` and what may fit better."""
    shown = ", ".join(f"{name} (p = {result['tables'][name]['p']:.2g})" for name in result["failing"])
    return (
        f"posterior predictive check: the fitted model does not reproduce {shown}; misfit at "
        f"{result['alpha']} after Bonferroni over {len(result['tables'])} tables (p < {result['threshold']:.2g}): "
        "read the mechanism with care, and consider a learner with stickiness or another learning rule "
        "(tables: bayes_diml.ppc(fit), diagnostics.json of a run folder, and its report)"
    )


# ------------------------------------------------------------------ set-up


def _replicates(requested: int, agent_rounds: int) -> int:
    """``requested``, lowered (not below ``MIN_REPLICATES``) when the simulation would be large."""
    affordable = MAX_SIMULATED // max(1, agent_rounds)
    return int(min(requested, max(MIN_REPLICATES, affordable)))


def _setup(model, data) -> dict:
    """Which tables apply, their row labels, notes, and the arrays the counting takes
    (``"keys"`` / ``"values"``: an outcome column's relation; ``"cuts"`` / ``"noise"``: payoff bins)."""
    E, T, n = data.actions.shape
    actions = [str(a) for a in data.action_labels]
    names = ["own_previous"] + (["opponent_previous"] if n > 1 else [])
    rows = {"own_previous": actions, "opponent_previous": actions}
    present = np.asarray(~data.mask)
    scored = np.ones(n, bool) if model.scored_agents is None else np.asarray(model.scored_agents, bool)
    arrays = {"present": present, "scored": scored, "known": np.zeros((E, T, n), bool),
              "observed_bins": np.zeros((E, T, n), np.int32),
              "replay": np.where(present, data.actions, 0).astype(np.int32)}  # unmodelled agents' observed play
    notes, row_names, num_bins = [], {}, 1
    if getattr(data, "outcome", None) is not None:
        relation = outcome_relation(data, model.num_actions)
        if "note" in relation:
            notes.append(relation["note"])
        else:
            names.append("previous_outcome")
            rows["previous_outcome"], row_names["previous_outcome"] = relation["labels"], "previous outcome"
            num_bins = len(relation["labels"])
            arrays.update(known=relation["known"], observed_bins=relation["codes"], keys=relation["keys"],
                          values=relation["values"])
    elif (outcome := payoff_cuts(data)) is not None:
        names.append("previous_outcome")
        cuts, rows["previous_outcome"], noise = outcome
        payoff = np.asarray(data.payoff, float)
        num_bins = len(cuts) + 1
        arrays.update(known=np.isfinite(payoff) & ~data.mask, cuts=np.asarray(cuts, float), noise=np.asarray(noise),
                      observed_bins=np.searchsorted(cuts, np.nan_to_num(payoff), side="left").astype(np.int32))
    return {"names": tuple(names), "rows": rows, "row_names": row_names, "notes": notes, "num_bins": num_bins,
            "arrays": arrays}


# ------------------------------------------------------------------ counting


def _counts(actions, present, bins, known, scored, num_actions: int, names, num_bins: int = 1) -> dict:
    """Count tables of one data set: ``actions``, ``bins`` int and ``present``, ``known``
    bool, all ``(E, T, n)``; ``bins`` (``num_bins`` levels) count only where ``known``;
    only the choices (round ``t``) of the ``scored`` agents ``(n,)`` are counted."""
    onehot = jax.nn.one_hot(actions, num_actions) * present[..., None]
    previous, current = onehot[:, :-1], onehot[:, 1:] * scored[:, None]
    out = {"own_previous": jnp.einsum("etnp,etna->pa", previous, current)}
    if "opponent_previous" in names:
        others = previous.sum(axis=2, keepdims=True) - previous  # the other present agents' previous choices
        modal = jax.nn.one_hot(jnp.argmax(others, axis=-1), num_actions) * (others.sum(-1) > 0)[..., None]
        out["opponent_previous"] = jnp.einsum("etnp,etna->pa", modal, current)
    if "previous_outcome" in names:
        levels = jax.nn.one_hot(bins[:, :-1], num_bins) * known[:, :-1, :, None]
        out["previous_outcome"] = jnp.einsum("etnb,etna->ba", levels, current)
    return out


_jit_counts = jax.jit(_counts, static_argnames=("num_actions", "names", "num_bins"), compiler_options={"xla_backend_optimization_level": 0})


def _replicated_bins(model, p, key, actions, arrays):
    """Outcome bins of replicated ``actions`` and where they are known: through the observed
    relation of an outcome column, or the draw's payoffs binned at the cuts (``_ppc_outcomes``)."""
    present, known = arrays["present"], arrays["known"]
    if "keys" in arrays:
        keys, values = arrays["keys"], arrays["values"]
        joint = relation_keys(actions, present, model.num_actions, jnp)
        where = jnp.clip(jnp.searchsorted(keys, joint), 0, keys.shape[0] - 1)
        return values[where], known & (keys[where] == joint)
    if "cuts" in arrays:
        k_noise = jax.random.fold_in(key, 1)  # the play used ``key`` itself
        payoff = jax.vmap(jax.vmap(lambda a, m: model.mechanism.payoffs(p["mechanism"], a, m)))(actions, present)
        sigma = arrays["noise"] * p.get("payoff_sigma", 0.0)
        payoff = payoff + sigma * jax.random.normal(k_noise, payoff.shape)
        return jnp.searchsorted(arrays["cuts"], payoff, side="left").astype(jnp.int32), known
    return jnp.zeros(actions.shape, jnp.int32), known


def _replicated_counts(model, params, key, arrays, num_rounds: int, names, num_bins: int, num_replicates: int,
                       batch_size: int) -> dict:
    """The count tables of each replicate, ``{name: (R, rows, A)}``: one compiled program
    (``lax.map`` over replicates in ``vmap`` batches of ``batch_size``); replicate ``r``
    uses draw ``r mod S`` of ``params`` (``S`` draws); unmodelled agents replay their
    observed actions (``arrays["replay"]``). Compiled by ``_COMPILED``."""
    from ..simulate import simulate_arrays

    num_episodes = arrays["present"].shape[0]
    draws = jax.tree.leaves(params)[0].shape[0]
    which = jnp.arange(num_replicates) % draws
    keys = jax.random.split(key, num_replicates)

    def one(args):
        w, key = args
        p = jax.tree.map(lambda v: v[w], params)
        actions = simulate_arrays(model, p, key, num_episodes, num_rounds, replay=arrays["replay"])
        bins, known = _replicated_bins(model, p, key, actions, arrays)
        return _counts(actions, arrays["present"], bins, known, arrays["scored"], model.num_actions, names, num_bins)

    if batch_size >= num_replicates:  # one batch: no loop around it (less to compile)
        return jax.vmap(lambda w, k: one((w, k)))(which, keys)
    return jax.lax.map(one, (which, keys), batch_size=batch_size)


_STATIC = ("model", "num_rounds", "names", "num_bins", "num_replicates", "batch_size")
_COMPILED = {
    False: jax.jit(_replicated_counts, static_argnames=_STATIC),
    True: jax.jit(_replicated_counts, static_argnames=_STATIC, compiler_options={"xla_backend_optimization_level": 0}),
}
"""``_replicated_counts`` compiled with XLA's backend optimisation (``False``) or without
(``True``: compiles 3-4x faster, runs about 1.7x slower; measured on CPU, the better choice up to
``QUICK_COMPILE_MAX`` simulated agent-rounds, where compilation dominates)."""


# ------------------------------------------------------------------ statistics


def _shares(counts: np.ndarray) -> np.ndarray:
    """Row-conditional shares ``C[p, a] / N_p`` (NaN in empty rows); any leading axes."""
    totals = counts.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, counts / np.maximum(totals, 1), np.nan)


def _statistic(counts: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``T(C) = sum (C - N_p P_bar)^2 / (N_p P_bar)`` over the last two axes."""
    expected = counts.sum(axis=-1, keepdims=True) * reference
    with np.errstate(invalid="ignore", divide="ignore"):
        terms = np.where(expected > 0, (counts - expected) ** 2 / np.where(expected > 0, expected, 1), 0.0)
    return terms.sum(axis=(-2, -1))


def _band(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The equal-tailed ``CREDIBLE_LEVEL`` band over the first axis (NaN where no replicate reached a cell's row)."""
    tail = (1 - CREDIBLE_LEVEL) / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN cell: NaN band
        return np.nanquantile(values, tail, axis=0), np.nanquantile(values, 1 - tail, axis=0)


def _stay(observed: np.ndarray, replicated: np.ndarray) -> dict:
    """Stay share (diagonal over total) of the own-previous table: observed, band, two-sided p."""
    def share(c):
        total = c.sum(axis=(-2, -1))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, np.trace(c, axis1=-2, axis2=-1) / np.maximum(total, 1), np.nan)

    obs, rep = float(share(observed)), share(replicated)
    low, high = _band(rep)
    R = rep.size
    upper = (1 + np.sum(rep >= obs)) / (R + 1)
    lower = (1 + np.sum(rep <= obs)) / (R + 1)
    lo_name, hi_name = interval_columns()
    p = float(min(1.0, 2 * min(upper, lower))) if np.isfinite(obs) else float("nan")
    predictive = float(np.nanmean(rep)) if np.isfinite(rep).any() else float("nan")
    return {"observed": obs, "predictive": predictive, lo_name: float(low), hi_name: float(high), "p": p}


def _table(name: str, observed: np.ndarray, replicated: np.ndarray, rows: list, data, row_name=None) -> dict:
    """One table: observed counts against its replicates (module docstring); ``row_name``
    in place of ``TABLES``' (``previous_outcome`` of an outcome column: its labels)."""
    A = observed.shape[-1]
    reference = (replicated.sum(axis=0) + 0.5) / (replicated.sum(axis=(0, 2))[:, None] + 0.5 * A)
    t_obs = float(_statistic(observed, reference))
    t_rep = _statistic(replicated, reference)
    low, high = _band(_shares(replicated))
    t_low, t_high = _band(t_rep)
    lo_name, hi_name = interval_columns()
    table = {
        "title": TABLES[name][0], "row_name": row_name or TABLES[name][1], "rows": list(rows),
        "columns": [str(a) for a in data.action_labels],
        "observed": observed.astype(int), "row_total": observed.sum(axis=1).astype(int),
        "observed_share": _shares(observed), "predictive_share": reference, lo_name: low, hi_name: high,
        "statistic": t_obs,
        "replicated_statistic": {"mean": float(np.mean(t_rep)), lo_name: float(t_low), hi_name: float(t_high)},
        "p": float((1 + np.sum(t_rep >= t_obs)) / (t_rep.size + 1)), "misfit": False,
    }
    if name == "own_previous":
        table["stay"] = _stay(observed, replicated)
    return table


def as_json(result: dict) -> dict:
    """``result`` as plain JSON data (lists; NaN as ``None``)."""
    return jsonable(result)
