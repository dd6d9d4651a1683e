"""Design under uncertainty: the lever values that maximise the posterior expected
objective of simulated learning play (docs/design.md §10).

A *lever* is a mechanism parameter the designer sets (the congestion tolls ``tau``).
For a candidate value ``x`` in the box ``[lower, upper]`` and the posterior draws
``theta_s`` (``s < S``, thinned as for a counterfactual), the learners are simulated
afresh under ``M(x; theta_s)`` (``E`` episodes x ``T`` rounds, ``simulate_arrays``) and
the play is scored (``_design_search.play_score``)::

    J_s(x) = f(play under x and theta_s, key_s)
    V(x)   = mean_s J_s(x)                              risk "mean"
    V(x)   = mean of the ceil(q S) smallest J_s(x)      risk "cvar:q" (Rockafellar & Uryasev 2000)

with ``f`` one of ``welfare`` (mean over episodes and rounds of the sum of payoffs),
``net_welfare`` (the same less the transfers the levers pay or charge,
``Mechanism.lever_transfers``) or ``share:ACTION`` (the share of agent-plays on the
action over the last quarter of the rounds; with ``target = X``, ``-(share - X)**2``).
``V`` is maximised by ``_design_search.search``, each batch of candidates one compiled
program, every candidate of a draw simulated with the same key (common random numbers).

Three designs are then scored afresh with the counterfactual's keys
(``fold_in(key(seed), draw)``; the search used other keys, so the reported values are
not inflated by having been selected on the same random numbers): the *recommended*
one, the *status quo* (the lever's known value, ``[mechanism.known]``, else its
posterior mean) and the *plug-in* design (the same search with every draw replaced by
the posterior mean: what ignoring the uncertainty would choose). The differences are
paired per draw: ``difference = J_s(recommended) - J_s(status quo)``.
"""

from __future__ import annotations

import difflib
import math
import shlex
from pathlib import Path

import jax
import numpy as np

from .._checks import numeric_array
from .._random import as_key
from .._types import Params
from ..errors import DataError
from ._counterfactual_result import INTERVAL
from ._design_search import Score, cell_elements, evaluate, risk_values, search
from ._interventions import identification
from .counterfactual import _labels, _replay_pool, _seed_description
from .numpyro_model import observed_payoffs
from .results import interval_columns

__all__ = ["design", "save_design", "DESIGNS_DIR", "WHERE"]

WHERE = "design"
"""How error messages of a design begin."""

DESIGNS_DIR = "designs"
"""Sub-folder of a run folder where ``bayes-diml design`` records its results."""

_LOW, _HIGH = interval_columns(INTERVAL)
_SIZES = ("num_episodes", "num_rounds", "max_draws", "num_candidates")


def design(
    fit,
    *,
    lever: str,
    bounds,
    objective: str = "welfare",
    target: float | None = None,
    risk: str = "mean",
    num_episodes: int,
    num_rounds: int,
    seed,
    max_draws: int = 200,
    num_candidates: int = 32,
    refinements: int = 4,
    progress: bool = False,
) -> dict:
    """Search the lever's values in ``bounds`` for the design that maximises the posterior
    risk-adjusted objective of simulated play (module docstring).

    Args:
        fit: a ``Fit``.
        lever: a mechanism parameter, e.g. ``"tau"``; play under a new value must not depend
            on a prior-driven parameter (for congestion: ``tau`` declared in ``[mechanism.known]``).
        bounds: ``(lower, upper)``, each a number or one value per entry of the lever.
        objective: ``"welfare"``, ``"net_welfare"`` or ``"share:ACTION"`` (an action label or index).
        target: with ``share:ACTION``, the share to aim at (the objective is ``-(share - target)**2``).
        risk: ``"mean"`` or ``"cvar:q"`` (``0 < q <= 1``: the mean of the worst ``q`` share of draws).
        num_episodes, num_rounds: simulated per draw and candidate.
        seed: an int or a JAX key.
        max_draws: at most this many posterior draws, spread evenly over chains.
        num_candidates: candidates per compiled batch; refinements: batches after the first.
        progress: a progress bar over the batches.

    Returns:
        A JSON-able dict: ``lever``, ``bounds``, ``recommended`` / ``status_quo`` / ``plug_in``
        (lever name -> values), ``objective`` (for each design ``mean``, ``q05``, ``q95`` and
        ``score`` (the risk functional), ``difference`` (recommended - status quo: ``mean``,
        ``q05``, ``q95``, ``p_better``) and ``versus_plug_in`` (recommended - plug-in)),
        ``per_draw`` (each design's objective per draw) and ``settings``.

    Raises:
        DataError: in one line naming the parameter, before anything is simulated: an unknown
            lever, objective, action or risk, bad bounds, a lever the data do not identify.
    """
    E, T, max_draws, C = (_positive_int(k, v) for k, v in zip(_SIZES, (num_episodes, num_rounds, max_draws, num_candidates)))
    refinements = _nonnegative_int("refinements", refinements)
    model = fit.model
    shape = _check_lever(model, lever)
    lower, upper = _parse_bounds(model, lever, shape, bounds)
    score = _parse_objective(objective, target, _labels(fit)[0])
    cvar = _parse_risk(risk)
    _check_identified(fit, lever, lower, score)
    _check_memory(model, C, E, T)
    pool, replayed = _replay(fit, T)
    key = as_key(seed)
    index = np.asarray(fit.thinned_index(max_draws))
    draws = fit.params_draws(index)
    params: Params = {"mechanism": dict(draws["mechanism"]), "learner": dict(draws["learner"])}
    status_quo = _status_quo(model, params, lever, score)
    eval_keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, np.asarray(index, np.uint32))
    searches = _Search(model, lever, shape, score, cvar, E, T, C, refinements, key, pool)
    designs, scores, evaluated, best_score = searches.run(params, lower, upper, status_quo, eval_keys, progress)
    settings = {
        "objective": _objective_name(score, objective, _labels(fit)[0]),
        "target": score.target,
        "risk": risk,
        "seed": _seed_description(seed, key),
        "num_episodes": E,
        "num_rounds": T,
        "max_draws": max_draws,
        "num_draws": int(index.size),
        "num_candidates": C,
        "refinements": refinements,
        "candidates_evaluated": evaluated,
        "search_score": best_score,
        "interval": INTERVAL,
        **replayed,
    }
    return _result(lever, lower, upper, shape, designs, scores, cvar, index, settings)


# ------------------------------------------------------------------ the searches
class _Search:
    """The plug-in and the Bayesian searches (``_design_search.search``) and the final scoring."""

    def __init__(self, model, lever, shape, score, cvar, E, T, C, refinements, key, pool):
        self.model, self.lever, self.shape, self.score, self.cvar, self.pool = model, lever, shape, score, cvar, pool
        self.E, self.T, self.C, self.refinements = E, T, C, refinements
        self.rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())

    def _batch_score(self, params, keys):
        """``values (C, D) -> (C,)``: the risk functional of one compiled batch."""
        return lambda flat: risk_values(self._evaluate(params, flat.reshape(-1, *self.shape), keys), self.cvar)

    def _evaluate(self, params, values, keys):
        return evaluate(self.model, params, self.lever, values, keys, self.score, self.E, self.T, self.pool)

    def run(self, params, lower, upper, status_quo, eval_keys, progress):
        """The designs ``(3, *shape)`` (recommended, status quo, plug-in), their scores ``(3, S)``
        under ``eval_keys``, the number of candidates evaluated and the search's best risk value.
        The searches use the keys ``fold_in(eval_key_s, 1)``: common to all candidates, and
        independent of ``eval_keys``."""
        from tqdm.auto import tqdm

        search_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(eval_keys, 1)
        plug_params = jax.tree.map(lambda v: np.broadcast_to(v, (len(eval_keys), *np.shape(v))), _mean(params))
        sq = status_quo.reshape(-1)
        C, R = self.C, self.refinements
        with tqdm(total=2 * (R + 1) + 1, desc=f"design of {self.lever}", unit="batch", disable=not progress) as bar:
            plug_in, _, n_plug = search(self._batch_score(plug_params, search_keys), lower, upper, [sq], C, R, self.rng, bar.update)
            best, best_score, n_bayes = search(self._batch_score(params, search_keys), lower, upper, [sq, plug_in], C, R, self.rng, bar.update)
            designs = np.stack([best, sq, plug_in]).reshape(3, *self.shape)
            scores = self._evaluate(params, designs, eval_keys)
            bar.update()
        return designs, scores, n_plug + n_bayes, best_score


# ------------------------------------------------------------------ summary
def _result(lever, lower, upper, shape, designs, scores, cvar, index, settings) -> dict:
    names = ("recommended", "status_quo", "plug_in")
    out = {
        "lever": lever,
        "bounds": {"lower": lower.reshape(shape).tolist(), "upper": upper.reshape(shape).tolist()},
        **{name: {lever: designs[j].tolist()} for j, name in enumerate(names)},
    }
    risk = risk_values(scores, cvar)
    objective = {name: {**_band(scores[j]), "score": float(risk[j])} for j, name in enumerate(names)}
    objective["difference"] = _paired(scores[0], scores[1])
    objective["versus_plug_in"] = _paired(scores[0], scores[2])
    out["objective"] = objective
    out["per_draw"] = {"draw": index.tolist(), **{name: scores[j].tolist() for j, name in enumerate(names)}}
    out["settings"] = settings
    return out


def _band(values: np.ndarray) -> dict[str, float]:
    """Posterior mean and equal-tailed ``INTERVAL`` bounds of per-draw values."""
    tail = (1 - INTERVAL) / 2
    return {"mean": float(np.mean(values)), _LOW: float(np.quantile(values, tail)), _HIGH: float(np.quantile(values, 1 - tail))}


def _paired(new: np.ndarray, old: np.ndarray) -> dict[str, float]:
    """The per-draw difference ``new - old`` summarised, and ``p_better = P(new > old)``."""
    diff = np.asarray(new, np.float64) - np.asarray(old, np.float64)
    return {**_band(diff), "p_better": float(np.mean(diff > 0))}


def _status_quo(model, params: Params, lever: str, score: Score) -> np.ndarray:
    """The lever's known value (``[mechanism.known]``), else its posterior mean over the draws.
    With ``net_welfare``, first asks the family for its transfers (``Mechanism.lever_transfers``
    refuses in one line where the family names none)."""
    known = model.mechanism_known.get(lever)
    status_quo = np.asarray(known if known is not None else np.mean(np.asarray(params["mechanism"][lever]), axis=0))
    if score.kind == "net_welfare":
        model.mechanism.lever_transfers({**_mean(params)["mechanism"], lever: status_quo}, np.zeros(model.num_agents, int))
    return status_quo


def _mean(params: Params) -> Params:
    """The posterior mean of every parameter (one draw, no leading axis)."""
    return jax.tree.map(lambda v: np.mean(np.asarray(v, np.float64), axis=0), params)


# ------------------------------------------------------------------ checks
def _check_lever(model, lever) -> tuple[int, ...]:
    shapes = model.mechanism.param_shapes()
    if not isinstance(lever, str) or lever not in shapes:
        close = difflib.get_close_matches(str(lever), sorted(shapes), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise DataError(f"{WHERE}: unknown lever '{lever}' for the {model.mechanism.family} family{hint}; levers: {sorted(shapes)}")
    return tuple(shapes[lever])


def _parse_bounds(model, lever: str, shape: tuple, bounds) -> tuple[np.ndarray, np.ndarray]:
    """``(lower, upper)`` flat ``(D,)``, each given as a number or one value per lever entry."""
    if not isinstance(bounds, (tuple, list)) or len(bounds) != 2:
        raise DataError(f"{WHERE}: bounds must be (lower, upper), got {bounds!r}")
    size = math.prod(shape)
    out = []
    for name, value in zip(("lower", "upper"), bounds):
        array = numeric_array(value, f"{WHERE} bounds: {name}")
        if array.size not in (1, size):
            raise DataError(
                f"{WHERE} bounds: {name} has {array.size} values; the lever '{lever}' has {size} (shape {shape}): give one number or {size}"
            )
        out.append(np.broadcast_to(array.reshape(-1), (size,)).astype(np.float64))
    lower, upper = out
    if np.any(lower > upper):
        k = int(np.argmax(lower > upper))
        raise DataError(f"{WHERE} bounds: lower > upper for {lever}[{k}] ({float(lower[k]):g} > {float(upper[k]):g})")
    for name, value in (("lower", lower), ("upper", upper)):
        problem = model.mechanism.known_problem(lever, value.reshape(shape))
        if problem:
            raise DataError(f"{WHERE} bounds: {name}: '{lever}' {problem}")
    return lower, upper


def _parse_objective(objective, target, actions: tuple) -> Score:
    if not isinstance(objective, str):
        raise DataError(f"{WHERE}: objective must be 'welfare', 'net_welfare' or 'share:ACTION', got {objective!r}")
    kind, _, action = objective.partition(":")
    if kind in ("welfare", "net_welfare") and not action:
        if target is not None:
            raise DataError(f"{WHERE}: target is for objective 'share:ACTION', not '{objective}'")
        return Score(kind)
    if kind != "share" or not action:
        raise DataError(f"{WHERE}: unknown objective '{objective}'; objectives: welfare, net_welfare, share:ACTION")
    labels = [str(label) for label in actions]
    if action in labels:
        k = labels.index(action)
    elif action.isdigit() and int(action) < len(labels):
        k = int(action)
    else:
        raise DataError(f"{WHERE}: objective '{objective}': unknown action '{action}'; actions: {labels}")
    if target is not None:
        target = float(numeric_array(target, f"{WHERE} target"))
        if not 0.0 <= target <= 1.0:
            raise DataError(f"{WHERE}: target must be a share in [0, 1], got {target!r}")
    return Score("share", k, target)


def _objective_name(score: Score, objective: str, actions: tuple) -> str:
    return f"share:{actions[score.action]}" if score.kind == "share" else objective


def _parse_risk(risk) -> float | None:
    """``None`` for ``"mean"``, ``q`` for ``"cvar:q"``."""
    text = risk if isinstance(risk, str) else ""
    kind, _, q = text.partition(":")
    if text == "mean":
        return None
    try:
        value = float(q) if kind == "cvar" else math.nan
    except ValueError:
        value = math.nan
    if not 0.0 < value <= 1.0:
        raise DataError(f"{WHERE}: risk must be 'mean' or 'cvar:q' with 0 < q <= 1 (e.g. cvar:0.1), got {risk!r}")
    return value


def _check_identified(fit, lever: str, value: np.ndarray, score: Score) -> None:
    """Refuse a lever whose new values move play through a prior-driven parameter
    (``Mechanism.unidentified_by`` of replacing it), and a welfare objective whose
    payoff levels only the gauge fixes (``_interventions.identification``)."""
    model = fit.model
    found = identification(model, {lever: value.reshape(model.mechanism.param_shapes()[lever])}, observed_payoffs(fit.data) is not None)
    if found["unidentified"]:
        fix = (
            f"declare {lever} known in [mechanism.known] (its value when the data were recorded) and fit again"
            if lever in model.mechanism.known_params
            else found["advice"]
        )
        raise DataError(
            f"{WHERE}: lever '{lever}' is not identified: play under a new {lever} depends on "
            f"{', '.join(found['unidentified'])}, which the data do not identify; {fix}"
        )
    if score.kind != "share" and not found["welfare_identified"]:
        raise DataError(
            f"{WHERE}: objective '{score.kind}' sums payoff levels that the data do not identify (the "
            "gauge fixes them); use objective share:ACTION, or fit with observed payoffs"
        )


def _check_memory(model, C: int, E: int, T: int) -> None:
    """Refuse, before anything is traced, a batch whose one draw (``C`` candidates) cannot fit:
    draws are batched under ``counterfactual.CHUNK_ELEMENTS``, but never fewer than one."""
    from ..resources import check_memory

    nbytes = C * cell_elements(model, E, T) * 4 * 3
    check_memory(
        nbytes,
        f"this design ({C} candidates x {E} episodes x {T} rounds per draw)",
        f"one draw's {C} candidates: {nbytes / 2**20:.0f} MiB",
        "use fewer episodes, rounds or candidates",
    )


def _replay(fit, T: int):
    """The observed episodes whose unmodelled agents replay their play, as in a counterfactual
    (``counterfactual._replay_pool``), and its description; refusals begin with ``design``."""
    try:
        return _replay_pool(fit, T)
    except DataError as err:
        raise DataError(f"{WHERE}:{str(err).partition(':')[2]}") from None


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise DataError(f"{WHERE}: {name} must be a positive integer, got {value!r}")
    return int(value)


def _nonnegative_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise DataError(f"{WHERE}: {name} must be a non-negative integer, got {value!r}")
    return int(value)


# ------------------------------------------------------------------ record
def save_design(run_dir, result: dict, name: str, command=None, overwrite: bool = False) -> Path:
    """Record a design in ``RUN/designs/NAME.json`` (the command line, the date, UTC, and
    ``result``), written atomically; without ``overwrite`` a taken name becomes ``NAME-2``, ...

    Returns:
        The path of the record.
    """
    from .._json import dumps
    from .._report_html import now
    from ..report import _SAFE_NAME
    from .storage import write_text_atomic

    folder = Path(run_dir) / DESIGNS_DIR
    folder.mkdir(exist_ok=True)
    base = _SAFE_NAME.sub("_", str(name)).strip("._") or "design"
    stem, k = base, 1
    while not overwrite and (folder / f"{stem}.json").exists():
        k += 1
        stem = f"{base}-{k}"
    if command is not None and not isinstance(command, str):
        command = shlex.join(str(part) for part in command)
    path = folder / f"{stem}.json"
    write_text_atomic(path, dumps({"name": stem, "command": command, "date": now(), **result}))
    return path
