"""Credible counterfactuals: re-simulate the learners under an intervention (docs/design.md §5).

For each posterior draw ``s`` of a thinned subset (``S`` draws), an intervention
replaces mechanism parameters (or the whole mechanism, ``M -> M'``) and/or learner
parameters, and the learners are simulated afresh by ``simulate_arrays`` (the same
learner step as the likelihood, docs/design.md §2)::

    a^s_{e,t,i} ~ pi_t(. | i; M'^s, learner'^s)            e < E, t < T
    freq^s_t[k]  = mean_{e,i} 1[a^s_{e,t,i} = k]            (S, T, A)
    W^s_t        = mean_e sum_i M'^s(a^s_{e,t})_i            (S, T)  expected welfare

and summarised over draws by the posterior mean and the equal-tailed 90% interval.

Draw ``s`` is simulated with the key ``fold_in(key(seed), flat draw index)``
whatever the intervention, so two runs with the same ``seed`` over the same draws
share their random numbers: ``result.compare(baseline)`` gives paired, per-draw
differences with far less Monte Carlo noise than two independent runs.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from .._checks import numeric_array
from .._random import as_key
from .._types import Array, Params, PRNGKey
from ..errors import DataError, SpecError
from ..mechanisms import Mechanism
from ..model import Model
from ..simulate import simulate_arrays
from .results import CREDIBLE_LEVEL, interval_columns

__all__ = ["counterfactual", "CounterfactualResult", "INTERVAL", "CHUNK_ELEMENTS", "PER_AGENT_MAX"]

INTERVAL = CREDIBLE_LEVEL
"""Mass of the equal-tailed credible intervals: ``results.CREDIBLE_LEVEL`` (columns
``interval_columns()``, ``q05``, ``q95``)."""

_LOW, _HIGH = interval_columns(INTERVAL)

CHUNK_ELEMENTS = 2**24
"""Rough bound on the array elements alive at once while simulating a chunk of draws
(about 64 MiB of float32): draws, and within a draw the joint actions whose welfare
is evaluated, are processed in chunks sized to stay under it."""

PER_AGENT_MAX = 10_000
"""Per-agent frequencies ``(S, T, n, A)`` are kept only when ``n * A`` is at most this."""

_FACTOR = re.compile(r"^\s*\*\s*(\S+)\s*$")
_WHERE = "counterfactual"


# ------------------------------------------------------------------ result
@dataclasses.dataclass(eq=False)
class CounterfactualResult:
    """Counterfactual play summarised over posterior draws.

    Attributes:
        frequencies: long DataFrame ``round, action, mean, q05, q95``: the share of
            agents (over episodes and agents) playing ``action`` in ``round``.
        welfare: DataFrame ``round, mean, q05, q95``: expected welfare per round,
            ``mean_e sum_i M'(a_{e,t})_i`` under the (intervened) mechanism.
        draws: raw arrays: ``frequency`` ``(S, T, A)``, ``welfare`` ``(S, T)``,
            ``agent_frequency`` ``(S, T, n, A)`` (only when ``n * A <= PER_AGENT_MAX``),
            ``draw`` ``(S,)`` flat posterior draw indices, ``round`` ``(T,)``, and
            ``actions`` ``(S, E, T, n)`` when asked for (``return_actions``).
        intervention: JSON-able description of the intervention and the settings.
        action_labels, agent_labels: labels of the data.
    """

    frequencies: pd.DataFrame
    welfare: pd.DataFrame
    draws: dict[str, np.ndarray] = dataclasses.field(repr=False)
    intervention: dict[str, Any]
    action_labels: tuple = dataclasses.field(repr=False)
    agent_labels: tuple = dataclasses.field(repr=False)

    @property
    def rounds(self) -> np.ndarray:
        """Round labels ``(T,)`` (numbered from the data's first round)."""
        return self.draws["round"]

    def agent_frequencies(self) -> pd.DataFrame:
        """Long DataFrame ``round, agent, action, mean, q05, q95`` of per-agent frequencies.

        Raises ``DataError`` when they were not kept (``n * A > PER_AGENT_MAX``).
        """
        if "agent_frequency" not in self.draws:
            raise DataError(
                f"per-agent frequencies were not kept: num_agents x num_actions > {PER_AGENT_MAX}"
            )
        return _long_frame(
            self.draws["agent_frequency"],
            [("round", self.rounds), ("agent", self.agent_labels), ("action", self.action_labels)],
        )

    def to_frame(self) -> pd.DataFrame:
        """One long, CSV-ready DataFrame ``quantity, round, action, mean, q05, q95``:
        ``"frequency"`` rows carry an action, ``"welfare"`` rows have none."""
        freq = self.frequencies.assign(quantity="frequency")
        welfare = self.welfare.assign(quantity="welfare", action=None)
        columns = ["quantity", "round", "action", "mean", _LOW, _HIGH]
        freq["action"] = freq["action"].astype(object)
        return pd.concat([freq[columns], welfare[columns]], ignore_index=True)

    def compare(self, baseline: "CounterfactualResult") -> pd.DataFrame:
        """Paired differences ``self - baseline``, computed per draw, then summarised.

        Rows: ``quantity = "frequency"`` for each action's final-round frequency, and
        ``quantity = "welfare"`` for welfare averaged over all rounds. Columns:
        ``quantity, action, mean, q05, q95`` (of the difference), ``p_positive``
        (posterior share of draws with a positive difference), ``baseline`` and
        ``counterfactual`` (posterior means of each side). ``attrs["common_random_numbers"]``
        says whether both sides used the same seed (the usual, least noisy pairing).

        Raises:
            DataError: when the two results do not cover the same draws, rounds and actions.
        """
        if not isinstance(baseline, CounterfactualResult):
            raise DataError(f"compare: baseline must be a CounterfactualResult, got {type(baseline).__name__}")
        if not np.array_equal(self.draws["draw"], baseline.draws["draw"]):
            raise DataError(
                "compare: the two results use different posterior draws; run both from the same fit "
                "with the same max_draws"
            )
        if not np.array_equal(self.rounds, baseline.rounds):
            raise DataError(
                f"compare: rounds differ ({len(self.rounds)} vs {len(baseline.rounds)} rounds); "
                "use the same num_rounds"
            )
        if tuple(self.action_labels) != tuple(baseline.action_labels):
            raise DataError("compare: the two results have different actions")
        final = self.draws["frequency"][:, -1, :], baseline.draws["frequency"][:, -1, :]  # (S, A)
        welfare = self.draws["welfare"].mean(axis=1), baseline.draws["welfare"].mean(axis=1)  # (S,)
        rows = []
        for k, label in enumerate(self.action_labels):
            rows.append({"quantity": "frequency", "action": label, **_difference(final[0][:, k], final[1][:, k])})
        rows.append({"quantity": "welfare", "action": None, **_difference(*welfare)})
        out = pd.DataFrame(rows)
        out["action"] = pd.Series([r["action"] for r in rows], dtype=object)
        out.attrs["final_round"] = int(self.rounds[-1])
        out.attrs["common_random_numbers"] = (
            self.intervention.get("seed") == baseline.intervention.get("seed")
            and self.intervention.get("num_episodes") == baseline.intervention.get("num_episodes")
        )
        return out

    def plot(self, ax=None):
        """Frequency bands per action over rounds, and welfare.

        Args:
            ax: a matplotlib ``Axes`` to draw the frequencies on (welfare then goes on
                a twin y-axis); ``None`` makes a new ``Figure`` with two panels.

        Returns:
            The ``matplotlib.figure.Figure``.
        """
        from matplotlib.figure import Figure

        if ax is None:
            fig = Figure(figsize=(8, 6), layout="constrained")
            ax_freq, ax_welfare = fig.subplots(2, 1, sharex=True, height_ratios=[2, 1])
            welfare_color = "k"
        else:
            fig = ax.figure
            ax_freq, ax_welfare = ax, ax.twinx()
            welfare_color = "0.3"
        rounds = self.rounds
        mean, lo, hi = _summaries(self.draws["frequency"])
        for k, label in enumerate(self.action_labels):
            color = f"C{k % 10}"
            ax_freq.fill_between(rounds, lo[:, k], hi[:, k], color=color, alpha=0.2, lw=0)
            ax_freq.plot(rounds, mean[:, k], color=color, lw=1.5, label=str(label))
        ax_freq.set_ylabel("action frequency")
        ax_freq.set_ylim(0, 1)
        ax_freq.legend(title="action", fontsize=7, ncol=max(1, len(self.action_labels) // 8), loc="best")
        w_mean, w_lo, w_hi = _summaries(self.draws["welfare"])
        ax_welfare.fill_between(rounds, w_lo, w_hi, color=welfare_color, alpha=0.15, lw=0)
        ax_welfare.plot(rounds, w_mean, color=welfare_color, lw=1.5, ls="--" if ax is not None else "-")
        ax_welfare.set_ylabel("expected welfare")
        ax_welfare.set_xlabel("round")
        ax_freq.set_title(
            f"counterfactual play: posterior mean, {INTERVAL:.0%} bands\n{_title(self.intervention)}", fontsize=9
        )
        return fig


# -------------------------------------------------------------- entry point
def counterfactual(
    fit,
    *,
    mechanism=None,
    learner=None,
    num_episodes: int,
    num_rounds: int,
    seed,
    max_draws: int = 200,
    return_actions: bool = False,
) -> CounterfactualResult:
    """Simulate the learners forward under an intervention, once per posterior draw.

    Args:
        fit: a ``Fit``.
        mechanism: ``None`` (each draw keeps its mechanism); a dict of natural-parameter
            overrides applied to every draw, e.g. ``{"tau": [0.3, 0, 0, 0, 0]}`` (each of
            the parameter's exact shape), where a value ``("+", values)`` or
            ``("*", values)`` changes each draw's value instead of replacing it (a toll
            *increase* ``{"tau": ("+", [0.1, 0, 0, 0, 0])}`` moves only the identified
            ``tau - c1``; an absolute toll also carries the prior-only ``c1``, docs/design.md §3);
            or a tuple ``(Mechanism, params)``: a different mechanism (same numbers of
            agents and actions) for every draw.
        learner: ``None`` or a dict of learner-parameter overrides: a number (or a
            per-agent list) sets the parameter for every draw; a string ``"*f"``
            multiplies each draw's value by ``f`` (``{"alpha": "*0.6", "beta": "*1.4",
            "eps": "*1.5"}`` is the paper's shifted learner, docs/design.md §6). ``"q0"`` (shape
            ``(A,)`` or ``(n, A)``) sets new initial learner states.
        num_episodes, num_rounds: simulated episodes and rounds per draw (static).
        seed: an int or a JAX key.
        max_draws: at most this many posterior draws, spread evenly over chains.
        return_actions: keep the simulated actions ``(S, E, T, n)`` in ``draws``
            (for checks; memory grows with every size).

    Returns:
        A ``CounterfactualResult``.

    Raises:
        DataError / SpecError: naming the parameter, before anything is traced.
    """
    E = _positive_int("num_episodes", num_episodes)
    T = _positive_int("num_rounds", num_rounds)
    max_draws = _positive_int("max_draws", max_draws)
    key = as_key(seed)
    model: Model = fit.model
    index = np.asarray(fit.thinned_index(max_draws))
    S = int(index.size)
    params = fit.params_draws(index)

    sim_model, mech_params, mech_description = _mechanism_intervention(model, params["mechanism"], S, mechanism)
    learner_params, learner_description = _learner_intervention(model, params["learner"], S, learner, index)
    params = {"mechanism": mech_params, "learner": learner_params}

    n, A = model.num_agents, model.num_actions
    per_agent = n * A <= PER_AGENT_MAX
    _check_memory(model, S, E, T, per_agent, bool(return_actions))
    draw_batch, row_batch = _batch_sizes(S, E, T, n, A, per_agent)
    num_batches = math.ceil(S / draw_batch)
    draw_batch = math.ceil(S / num_batches)  # equal batches: one compiled body, no remainder
    padded = np.minimum(np.arange(num_batches * draw_batch), S - 1)
    # strongly typed float arrays, so that every intervention of a model reuses one compilation
    dtype = jnp.result_type(float)
    padded_params = jax.tree.map(lambda v: jnp.asarray(np.asarray(v)[padded], dtype), params)
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, jnp.asarray(index[padded], jnp.uint32))
    out = _simulate_draws(
        sim_model, padded_params, keys, E, T, draw_batch, row_batch, per_agent, bool(return_actions)
    )
    draws = {name: np.asarray(value)[:S] for name, value in out.items()}
    first_round = int(getattr(fit.data, "first_round", 0) or 0)
    draws["draw"] = index
    draws["round"] = np.arange(first_round, first_round + T)

    action_labels, agent_labels = _labels(fit)
    intervention = {
        "mechanism": mech_description,
        "learner": learner_description,
        "num_episodes": E,
        "num_rounds": T,
        "first_round": first_round,
        "seed": _seed_description(seed, key),
        "max_draws": max_draws,
        "num_draws": S,
        "interval": INTERVAL,
    }
    return CounterfactualResult(
        frequencies=_long_frame(draws["frequency"], [("round", draws["round"]), ("action", action_labels)]),
        welfare=_long_frame(draws["welfare"], [("round", draws["round"])]),
        draws=draws,
        intervention=intervention,
        action_labels=action_labels,
        agent_labels=agent_labels,
    )


# ------------------------------------------------------------- simulation
@functools.partial(
    jax.jit,
    static_argnames=("model", "num_episodes", "num_rounds", "draw_batch", "row_batch", "per_agent", "return_actions"),
)
def _simulate_draws(
    model: Model,
    params: Params,
    keys: PRNGKey,
    num_episodes: int,
    num_rounds: int,
    draw_batch: int,
    row_batch: int,
    per_agent: bool,
    return_actions: bool,
) -> dict[str, Array]:
    """Simulate every draw and summarise it in one compiled function.

    Args:
        params: ``{"mechanism": ..., "learner": ...}`` with a leading draw axis ``(S, ...)``.
        keys: ``(S,)`` keys, one per draw.

    Returns:
        ``frequency (S, T, A)``, ``welfare (S, T)``, and ``agent_frequency (S, T, n, A)``
        / ``actions (S, E, T, n)`` when asked for.
    """
    mechanism = model.mechanism
    n, A = model.num_agents, model.num_actions

    def one_draw(args):
        p, key = args
        actions = simulate_arrays(model, p, key, num_episodes, num_rounds)  # (E, T, n)
        out = {"welfare": _welfare(mechanism, p["mechanism"], actions, row_batch)}
        if per_agent:
            counts = _counts(actions, num_rounds, A, by_agent=True)  # (T, n, A)
            out["agent_frequency"] = counts / num_episodes
            out["frequency"] = counts.sum(axis=1) / (num_episodes * n)
        else:
            out["frequency"] = _counts(actions, num_rounds, A, by_agent=False) / (num_episodes * n)
        if return_actions:
            out["actions"] = actions
        return out

    return jax.lax.map(one_draw, (params, keys), batch_size=draw_batch)


def _counts(actions: Array, num_rounds: int, num_actions: int, by_agent: bool) -> Array:
    """How many times each action was played per round (per agent), by scatter-add
    (no one-hot array of size ``E T n A``). Returns ``(T, n, A)`` or ``(T, A)``."""
    E, T, n = actions.shape
    t = jnp.broadcast_to(jnp.arange(T)[None, :, None], actions.shape)
    if by_agent:
        i = jnp.broadcast_to(jnp.arange(n)[None, None, :], actions.shape)
        return jnp.zeros((num_rounds, n, num_actions)).at[t, i, actions].add(1.0)
    return jnp.zeros((num_rounds, num_actions)).at[t, actions].add(1.0)


def _welfare(mechanism: Mechanism, mech_params: Params, actions: Array, row_batch: int) -> Array:
    """``mean_e sum_i M(a_{e,t})_i``, shape ``(T,)``; joint actions in chunks of ``row_batch``."""
    E, T, n = actions.shape
    flat = actions.reshape(E * T, n)
    totals = jax.lax.map(lambda a: mechanism.payoffs(mech_params, a).sum(), flat, batch_size=row_batch)
    return totals.reshape(E, T).mean(axis=0)


def _batch_sizes(S: int, E: int, T: int, n: int, A: int, per_agent: bool) -> tuple[int, int]:
    """Draws simulated together, and joint actions per welfare chunk, under ``CHUNK_ELEMENTS``."""
    per_draw = E * T * n + 2 * E * n * A + E * A * A + (T * n * A if per_agent else T * A)
    draw_batch = max(1, min(S, CHUNK_ELEMENTS // per_draw))
    row_batch = max(1, min(E * T, CHUNK_ELEMENTS // (draw_batch * (n * A + A * A))))
    return int(draw_batch), int(row_batch)


# ------------------------------------------------------------ interventions
def _check_memory(model: Model, S: int, E: int, T: int, per_agent: bool, keep_actions: bool) -> None:
    """Refuse, before anything is traced, a simulation that cannot fit in memory."""
    from ..resources import check_memory, counterfactual_memory

    nbytes, detail = counterfactual_memory(model, S, E, T, per_agent, keep_actions)
    check_memory(nbytes, f"this counterfactual ({S} draws x {E} episodes x {T} rounds)", detail,
                 "use fewer episodes or rounds, or fewer draws (--max-draws)")


def _mechanism_intervention(model: Model, draws: Params, S: int, mechanism) -> tuple[Model, Params, Any]:
    """The model to simulate, its mechanism parameters ``(S, ...)``, and a description."""
    if mechanism is None:
        return model, draws, None
    if isinstance(mechanism, dict):
        shapes = model.mechanism.param_shapes()
        out = dict(draws)
        description = {}
        for name, value in mechanism.items():
            where = f"{_WHERE} mechanism override '{name}'"
            if name not in shapes:
                raise DataError(
                    f"{_WHERE} mechanism override: unknown parameter '{name}' for the "
                    f"{model.mechanism.family} family{_hint(name, shapes)}; parameters: {sorted(shapes)}"
                )
            op = "="
            if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
                op, value = value
                if op not in ("+", "*"):
                    raise DataError(f"{where}: a relative change is ('+', values) or ('*', values), got op {op!r}")
            array = _finite_array(value, where)
            if array.shape != tuple(shapes[name]):
                raise DataError(f"{where}: expected shape {tuple(shapes[name])}, got shape {array.shape}")
            if op == "+":
                out[name] = np.asarray(draws[name], np.float64) + array
            elif op == "*":
                out[name] = np.asarray(draws[name], np.float64) * array
            else:
                out[name] = np.broadcast_to(array, (S, *array.shape))
            description[name] = array.tolist() if op == "=" else {"op": op, "value": array.tolist()}
        return model, out, {"set": description}
    if isinstance(mechanism, tuple) and len(mechanism) == 2:
        family, values = mechanism
        if not isinstance(family, Mechanism):
            raise DataError(
                f"{_WHERE}: mechanism=(family, params) needs a Mechanism instance first, "
                f"got {type(family).__name__}"
            )
        if (family.num_agents, family.num_actions) != (model.num_agents, model.num_actions):
            raise DataError(
                f"{_WHERE}: the new {family.family} mechanism has {family.num_agents} agents and "
                f"{family.num_actions} actions; the fitted model has {model.num_agents} and {model.num_actions}"
            )
        if not isinstance(values, dict):
            raise DataError(
                f"{_WHERE}: mechanism=(family, params) needs a dict of parameters, got {type(values).__name__}"
            )
        arrays = {}
        for name, value in values.items():
            arrays[name] = _finite_array(value, f"{_WHERE} mechanism parameter '{name}'")
        family.check_params(arrays, f"{_WHERE} mechanism ({family.family})")
        new_model = _with_mechanism(model, family)
        out = {k: np.broadcast_to(v, (S, *v.shape)) for k, v in arrays.items()}
        description = {"family": family.family, "params": {k: v.tolist() for k, v in arrays.items()}}
        return new_model, out, description
    raise DataError(
        f"{_WHERE}: mechanism must be None, a dict of parameter overrides, or a tuple "
        f"(Mechanism, params); got {type(mechanism).__name__}"
    )


def _with_mechanism(model: Model, mechanism: Mechanism) -> Model:
    """``model`` with another mechanism. Models compare by value, so repeated
    counterfactuals under one new mechanism compile once."""
    return dataclasses.replace(model, mechanism=mechanism)


def _learner_intervention(model: Model, draws: Params, S: int, learner, index: np.ndarray) -> tuple[Params, Any]:
    """Learner parameters ``(S, ...)`` after the overrides, and a description."""
    out = dict(draws)
    if learner is None:
        return out, None
    if not isinstance(learner, dict):
        raise DataError(
            f"{_WHERE}: learner must be None or a dict of parameter overrides, got {type(learner).__name__}"
        )
    n, A = model.num_agents, model.num_actions
    allowed = (*model.learner.param_names, "q0")
    description = {}
    for name, value in learner.items():
        where = f"{_WHERE} learner override '{name}'"
        if name not in allowed:
            raise DataError(
                f"{_WHERE} learner override: unknown parameter '{name}' for the '{model.learner.name}' "
                f"learner{_hint(name, allowed)}; parameters: {list(allowed)}"
            )
        if isinstance(value, str):
            match = _FACTOR.match(value)
            factor = _parse_float(match.group(1)) if match else None
            if name == "q0" or factor is None or not math.isfinite(factor):
                raise DataError(
                    f"{where} = {value!r}: a string must be '*factor' with a finite number, e.g. '*0.6'"
                    + (" (q0 takes numbers only)" if name == "q0" else "")
                )
            out[name] = np.asarray(out[name]) * factor
            description[name] = f"*{factor!r}"
            continue
        array = _finite_array(value, where)
        if name == "q0":
            allowed_shapes, meaning = [(A,), (n, A)], "initial state per action, or per agent and action"
        else:
            allowed_shapes, meaning = [(), (n,)], "a number, or one per agent"
        if array.shape not in allowed_shapes:
            raise DataError(
                f"{where}: expected shape {' or '.join(str(s) for s in allowed_shapes)} ({meaning}), "
                f"got shape {array.shape}"
            )
        out[name] = np.broadcast_to(array, (S, *array.shape))
        description[name] = array.tolist()
    _check_learner_draws(model, out, index)
    return out, description


def _check_learner_draws(model: Model, params: Params, index: np.ndarray) -> None:
    """Every draw's learner parameters inside their domains; names the parameter and
    the first posterior draw that is out of it."""
    host = {k: np.asarray(v) for k, v in params.items() if k in model.learner.param_names}
    try:
        model.learner.check_params(host, "")  # all draws at once (the common, valid case)
        return
    except SpecError:
        pass
    for s in range(len(index)):
        for name in host:  # the parameter that fails with the others set inside their domains
            probe = {k: (host[k][s] if k == name else _inside(k)) for k in host}
            try:
                model.learner.check_params(probe, "")
            except SpecError as err:
                draw = {k: np.asarray(v[s]).tolist() for k, v in host.items()}
                raise SpecError(
                    f"{_WHERE} learner: after the overrides, parameter '{name}' of posterior draw "
                    f"{int(index[s])} is out of its domain ({str(err).lstrip(': ')}); that draw's learner: {draw}"
                ) from None


def _inside(name: str) -> float:
    """A value inside the domain of a learner parameter (for isolating a bad one)."""
    return {"c": 1.0}.get(name, 0.5)


# ------------------------------------------------------------------ helpers
def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise DataError(f"{_WHERE}: {name} must be a positive integer, got {value!r}")
    return int(value)


def _parse_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _finite_array(value, where: str) -> np.ndarray:
    """``value`` as a float64 array; ``DataError`` when not numbers or not finite."""
    return numeric_array(value, where)


def _hint(name: str, known) -> str:
    close = difflib.get_close_matches(str(name), sorted(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _labels(fit) -> tuple[tuple, tuple]:
    model = fit.model
    data = getattr(fit, "data", None)
    actions = getattr(data, "action_labels", None)
    agents = getattr(data, "agent_labels", None)
    if actions is None:
        actions = model.action_labels if model.action_labels is not None else range(model.num_actions)
    if agents is None:
        agents = model.agent_labels if model.agent_labels is not None else range(model.num_agents)
    return tuple(actions), tuple(agents)


def _seed_description(seed, key):
    if isinstance(seed, (int, np.integer)):
        return int(seed)
    return np.asarray(jax.random.key_data(key)).tolist()


def _summaries(draws: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and equal-tailed ``INTERVAL`` bounds over the leading draw axis."""
    lo, hi = (1 - INTERVAL) / 2, 1 - (1 - INTERVAL) / 2
    return draws.mean(axis=0), np.quantile(draws, lo, axis=0), np.quantile(draws, hi, axis=0)


def _long_frame(draws: np.ndarray, axes: list[tuple[str, Any]]) -> pd.DataFrame:
    """Summaries of ``draws (S, *sizes)`` in long format: one column per axis, then
    ``mean, q05, q95`` (the first axis varies slowest)."""
    mean, lo, hi = _summaries(np.asarray(draws, dtype=np.float64))
    grids = np.meshgrid(*[np.arange(len(values)) for _, values in axes], indexing="ij")
    frame = {}
    for (name, values), grid in zip(axes, grids):
        values = list(values.tolist() if isinstance(values, np.ndarray) else values)
        frame[name] = [values[j] for j in grid.ravel()]
    frame.update({"mean": mean.ravel(), _LOW: lo.ravel(), _HIGH: hi.ravel()})
    return pd.DataFrame(frame)


def _difference(new: np.ndarray, old: np.ndarray) -> dict[str, float]:
    diff = np.asarray(new, np.float64) - np.asarray(old, np.float64)
    mean, lo, hi = _summaries(diff)
    return {
        "mean": float(mean),
        _LOW: float(lo),
        _HIGH: float(hi),
        "p_positive": float(np.mean(diff > 0)),
        "baseline": float(np.mean(old)),
        "counterfactual": float(np.mean(new)),
    }


def _title(intervention: dict) -> str:
    parts = []
    mech = intervention.get("mechanism")
    if isinstance(mech, dict) and "set" in mech:
        changes = (f"{k} changed" if isinstance(v, dict) else f"{k} set" for k, v in mech["set"].items())
        parts.append("mechanism: " + ", ".join(changes))
    elif isinstance(mech, dict) and "family" in mech:
        parts.append(f"mechanism: new {mech['family']}")
    learner = intervention.get("learner")
    if learner:
        changes = (f"{k}{v}" if isinstance(v, str) else f"{k}={v}" for k, v in learner.items())
        parts.append("learner: " + ", ".join(changes))
    return "; ".join(parts) or "no intervention"
