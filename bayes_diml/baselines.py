"""Baseline estimators of the DIML paper, on the same training data as the Bayesian fits.

Every estimator takes the true ``Model`` (for the numbers of agents and actions and
the learner; the learner is known in the paper's set-up) and training
``Trajectories``, and returns an ``Estimate``:

* ``maximum_likelihood``: the paper's DIML estimator (maximum likelihood through the
  learning dynamics, Adam from a random initialisation, no prior);
* ``tabular_map``: MAP of the tabular family (the paper's "enumeration oracle",
  ``TabularMLE``), only where ``A**n * n`` is small;
* ``structured_map``: MAP of the correct parametric family (``StructMLE``);
* ``wrong_learner_map``: MAP of a family under a misspecified learner, ``beta x 0.6``
  (``DIML_Wrong``);
* ``behaviour_cloning``: an MLP over the last 5 joint actions predicting the next
  ones (``JointBC``); behaviour only, no mechanism;
* ``static_inverse``: logit inversion of empirical conditional action frequencies,
  ignoring learning (the paper's equilibrium-only inverse, here conditioned on the
  previous round's opponents, see its docstring).

``Estimate.from_fit`` wraps a Bayesian ``Fit`` (NUTS, SVI) in the same type.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .errors import SpecError
from .inference.adam import adam_scan
from .likelihood import as_arrays
from .mechanisms import Tabular
from .model import Model
from .resources import count_text

__all__ = [
    "Estimate",
    "maximum_likelihood",
    "tabular_map",
    "structured_map",
    "wrong_learner_map",
    "wrong_learner_model",
    "behaviour_cloning",
    "static_inverse",
    "TABULAR_MAX_ENTRIES",
    "WRONG_BETA_FACTOR",
    "BC_WINDOW",
]

TABULAR_MAX_ENTRIES = 20_000
"""The tabular family (and the static inverse, stored as a table) is refused above
``A**n * n`` entries: the paper's "enumeration oracle" is for small games only."""

WRONG_BETA_FACTOR = 0.6
"""The paper's misspecified learner: ``beta`` multiplied by this factor."""

BC_WINDOW = 5
"""Joint behaviour cloning conditions on the last this many joint actions (the paper's window)."""


@dataclasses.dataclass(eq=False)
class Estimate:
    """What an estimator returns, in the form the metrics take.

    Attributes:
        name: the estimator's name in tables.
        model: mechanism family + the learner the estimator assumed; ``None`` for
            behaviour-only estimators.
        params: ``{"mechanism": ..., "learner": ...}`` with a leading draw axis
            ``(S, ...)`` (``S = 1`` for point estimates); ``None`` when behaviour only.
        behaviour: behaviour-only estimators: ``data -> log pi (E, T, n, A)``.
        info: method, wall seconds and other settings.
        fit: the underlying ``Fit`` when there is one.
    """

    name: str
    model: Model | None
    params: dict | None
    behaviour: Callable[[Any], np.ndarray] | None = None
    info: dict = dataclasses.field(default_factory=dict)
    fit: Any = None

    @property
    def has_mechanism(self) -> bool:
        return self.model is not None

    @property
    def num_draws(self) -> int:
        if self.params is None:
            return 0
        return int(np.shape(next(iter(self.params["mechanism"].values())))[0])

    @classmethod
    def from_fit(cls, fit, name: str | None = None) -> "Estimate":
        """Wrap a ``Fit``: all its draws (one for MAP without Laplace)."""
        return cls(
            name=name or fit.method,
            model=fit.model,
            params=fit.params_draws(),
            info={"method": fit.method, "wall_seconds": float(fit.info.get("wall_seconds", np.nan))},
            fit=fit,
        )


# ------------------------------------------------------------------ MAP fits
def _map(model: Model, data, name: str, seed, options: dict) -> Estimate:
    from .inference import fit

    start = time.perf_counter()
    result = fit(model, data, method="map", seed=seed, posterior_predictive_draws=1, **{"progress": False, **options})
    estimate = Estimate.from_fit(result, name)
    estimate.info["wall_seconds"] = time.perf_counter() - start
    return estimate


def tabular_model(model: Model, prior_scale: float = 1.0, max_entries: int = TABULAR_MAX_ENTRIES) -> Model:
    """``model`` with its mechanism replaced by the tabular family (same learner).

    Raises:
        SpecError: when the table would have more than ``max_entries`` entries.
    """
    n, A = model.num_agents, model.num_actions
    entries = A**n * n
    if entries > max_entries:
        raise SpecError(
            f"tabular family: A**n * n = {A}**{n} * {n} = {count_text(entries)} payoff entries exceeds {max_entries}; "
            "the enumeration oracle is for small games only"
        )
    return dataclasses.replace(model, mechanism=Tabular(num_agents=n, num_actions=A), mechanism_prior={"scale": prior_scale},
                               mechanism_known={})


def tabular_map(model: Model, data, seed=0, *, prior_scale: float = 1.0, max_entries: int = TABULAR_MAX_ENTRIES,
                **options) -> Estimate:
    """MAP of the tabular family (one free payoff difference per own action and opponent
    context, ``Normal(0, prior_scale)`` prior) under ``model``'s learner (``TabularMLE``).

    Raises ``SpecError`` where ``A**n * n > max_entries``. ``options`` go to ``fit``
    (``steps``, ``learning_rate``, ``restarts``).
    """
    return _map(tabular_model(model, prior_scale, max_entries), data, "tabular MAP", seed, options)


def structured_map(model: Model, data, seed=0, **options) -> Estimate:
    """MAP of ``model``'s own (correct) family: ``fit(model, data, method="map")``."""
    return _map(model, data, f"{model.mechanism.family} MAP", seed, options)


def wrong_learner_model(model: Model, factor: float = WRONG_BETA_FACTOR) -> Model:
    """``model`` with ``beta`` multiplied by ``factor`` (a misspecified learner)."""
    if "beta" not in model.fixed_learner_params:
        raise SpecError("wrong learner: beta must be a fixed number in the model to be misspecified")
    params = dict(model.learner_params)
    params["beta"] = float(params["beta"]) * factor
    return dataclasses.replace(model, learner_params=params)


def wrong_learner_map(model: Model, data, seed=0, *, factor: float = WRONG_BETA_FACTOR, **options) -> Estimate:
    """MAP of ``model``'s family assuming ``beta x factor`` (the paper's ``DIML_Wrong``;
    ``maximum_likelihood(wrong_learner_model(model), ...)`` is its ML version).

    Its payoff differences come out scaled by about ``1 / factor``: the data pin only
    ``beta * Δ`` (docs/design.md §3).
    """
    wrong = wrong_learner_model(model, factor)
    return _map(wrong, data, f"{model.mechanism.family} MAP, beta x {factor:g}", seed, options)


def maximum_likelihood(model: Model, data, seed=0, *, steps: int = 2000, learning_rate: float = 1e-3,
                       l2_payoff: float = 1e-4, name: str | None = None) -> Estimate:
    """The paper's DIML estimator: maximum likelihood through the learning dynamics.

    Minimises, by full-batch Adam (optax) from the family's random initialisation
    (``init_params``: PyTorch's default for networks, as in the paper's code),

        −(1/N) sum_{e,t,i} log pi_t(a_{e,t,i})  +  l2_payoff · mean_{e,t,i} M(a_{e,t})_i**2

    (N present agent-rounds; the second term is the paper's ``reg_l2_pay``), with no
    prior: unlike ``fit(method="map")``, whose Gaussian prior on every network weight
    pulls a large network towards zero payoffs when the true differences are as small
    as the paper's (measured on E2: relative error 1.0, i.e. all differences ~0).
    One full-batch step is one epoch. Source: An & Du (2026), §3–4.
    """
    from .likelihood import episode_log_likelihoods

    actions, mask = as_arrays(data)
    present = ~mask
    count = jnp.sum(present)
    key = jax.random.key(seed) if isinstance(seed, int) else seed
    init = {k: jnp.asarray(v, jnp.float32) for k, v in model.mechanism.init_params(key).items()}
    learner = {k: jnp.asarray(v, jnp.float32) for k, v in model.learner_values().items()}
    mechanism = model.mechanism
    rounds = actions.reshape(-1, model.num_agents)
    round_present = present.reshape(-1, model.num_agents)

    def loss(p):
        ll = episode_log_likelihoods(model, {"mechanism": p, "learner": learner}, actions, mask)
        pay = jax.vmap(mechanism.payoffs, (None, 0, 0))(p, rounds, round_present)
        penalty = jnp.sum(jnp.where(round_present, pay**2, 0.0)) / count
        return -jnp.sum(ll) / count + l2_payoff * penalty

    optimizer = optax.adam(learning_rate)

    @jax.jit
    def train(p):  # the package's one Adam loop (inference/adam.py)
        (p, _, _), values = adam_scan(lambda q, _: loss(q), optimizer, p, optimizer.init(p), jnp.arange(steps))
        return p, values

    compiled = train.lower(init).compile()
    start = time.perf_counter()
    params, losses = compiled(init)
    losses = np.asarray(losses)
    seconds = time.perf_counter() - start
    if not np.isfinite(losses[-1]):
        raise FloatingPointError("maximum_likelihood: the objective became non-finite; lower learning_rate")
    return Estimate(
        name=name or f"{model.mechanism.family} ML",
        model=model,
        params={"mechanism": {k: v[None] for k, v in params.items()}, "learner": {k: v[None] for k, v in learner.items()}},
        info={"method": "ml", "wall_seconds": seconds, "steps": steps, "seconds_per_epoch": seconds / steps,
              "learning_rate": learning_rate, "final_loss": float(losses[-1])},
    )


# --------------------------------------------------------- behaviour cloning
def _history_features(actions: jax.Array, present: jax.Array, num_actions: int, window: int) -> jax.Array:
    """``(E, T, window * (n * A + 1))``: one-hot joint actions of rounds ``t-1 .. t-window``
    (zeros for absent agents), each with a flag for "before the episode started"."""
    E, T, n = actions.shape
    onehot = jax.nn.one_hot(actions, num_actions) * present[..., None]  # (E, T, n, A)
    onehot = onehot.reshape(E, T, n * num_actions)
    blocks = []
    for lag in range(1, window + 1):
        shifted = jnp.concatenate([jnp.zeros((E, lag, n * num_actions)), onehot[:, : T - lag]], axis=1)[:, :T]
        before = (jnp.arange(T) < lag).astype(onehot.dtype)
        blocks += [shifted, jnp.broadcast_to(before[None, :, None], (E, T, 1))]
    return jnp.concatenate(blocks, axis=-1)


def _bc_logits(params, features, n, A):
    h = jnp.tanh(features @ params["w0"] + params["b0"])
    h = jnp.tanh(h @ params["w1"] + params["b1"])
    logits = h @ params["w2"] + params["b2"]
    return jax.nn.log_softmax(logits.reshape(*logits.shape[:-1], n, A), axis=-1)


def behaviour_cloning(model: Model, data, seed=0, *, window: int = BC_WINDOW, hidden: int = 256, steps: int = 500,
                      learning_rate: float = 3e-3, weight_decay: float = 1e-4, validation: float = 0.2,
                      block: int = 10) -> Estimate:
    """Joint behaviour cloning (the paper's ``JointBC``): an MLP (two tanh layers of
    ``hidden``) over the one-hot joint actions of the last ``window`` rounds, predicting
    every agent's next action (a softmax per agent). Trained by full-batch AdamW
    (optax) on the cross-entropy of the present agents' actions, with early stopping:
    the last ``validation`` share of the training episodes is held out and the
    parameters of the best validation loss (checked every ``block`` steps) are kept,
    and the output layer starts at zero (uniform play). Without these, 500 steps on
    E2's 48 episodes overfit to a test NLL of 4.3 per agent-round, worse than uniform
    play's 1.61, where the learners' play is close to uniform. No mechanism: only the
    NLL metrics apply.
    """
    n, A = model.num_agents, model.num_actions
    actions, mask = as_arrays(data)
    present = ~mask
    features = _history_features(actions, present, A, window)
    E = actions.shape[0]
    cut = E - max(1, int(round(validation * E))) if validation > 0 and E > 1 else E
    d = features.shape[-1]
    key = jax.random.key(seed) if isinstance(seed, int) else seed
    k0, k1, k2 = jax.random.split(key, 3)
    sizes = [(d, hidden), (hidden, hidden), (hidden, n * A)]
    params = {}
    for layer, (k, (fan_in, fan_out)) in enumerate(zip((k0, k1, k2), sizes)):
        params[f"w{layer}"] = jax.random.normal(k, (fan_in, fan_out)) / np.sqrt(fan_in)
        params[f"b{layer}"] = jnp.zeros((fan_out,))
    params["w2"] = jnp.zeros_like(params["w2"])  # start at uniform play
    weight = present.astype(jnp.float32)

    def loss(p, rows):
        log_pi = _bc_logits(p, features[rows], n, A)
        played = jnp.take_along_axis(log_pi, actions[rows][..., None], axis=-1)[..., 0]
        return -jnp.sum(played * weight[rows]) / jnp.maximum(jnp.sum(weight[rows]), 1.0)

    fit_rows, check_rows = slice(0, cut), slice(cut, E) if cut < E else slice(0, E)
    optimizer = optax.adamw(learning_rate, weight_decay=weight_decay)

    @jax.jit
    def train_block(p, state):  # the package's one Adam loop (inference/adam.py), AdamW here
        (p, state, _), values = adam_scan(lambda q, _: loss(q, fit_rows), optimizer, p, state, jnp.arange(block))
        return p, state, values[-1], loss(p, check_rows)

    start = time.perf_counter()
    state = optimizer.init(params)
    best, best_loss, best_step, last = params, np.inf, 0, np.nan
    for b in range(max(1, -(-steps // block))):
        params, state, last, check = train_block(params, state)
        check = float(check)
        if not np.isfinite(float(last)):
            raise FloatingPointError("behaviour_cloning: the training loss became non-finite; lower learning_rate")
        if check < best_loss:
            best, best_loss, best_step = params, check, (b + 1) * block
    seconds = time.perf_counter() - start
    params = best

    @functools.partial(jax.jit)
    def predict(p, acts, pres):
        return _bc_logits(p, _history_features(acts, pres, A, window), n, A)

    def behaviour(test_data) -> np.ndarray:
        acts, msk = as_arrays(test_data)
        return np.asarray(predict(params, acts, ~msk))

    return Estimate(
        name="joint behaviour cloning",
        model=None,
        params=None,
        behaviour=behaviour,
        info={"method": "bc", "wall_seconds": seconds, "steps": steps, "best_step": best_step,
              "validation_loss": best_loss, "final_loss": float(last)},
    )


# ------------------------------------------------------------- static inverse
def static_inverse(model: Model, data, seed=0, *, pseudo_count: float = 0.5,
                   max_entries: int = TABULAR_MAX_ENTRIES) -> Estimate:
    """Equilibrium-only inverse: logit inversion of empirical conditional frequencies.

    Ignoring learning, it treats each round's action as a logit response to what the
    opponents played in the previous round (logit-Q with ``alpha = 1``, i.e. no memory):

        p(k | c) = (1 − eps) softmax_k(beta M(., c)_i) + eps / A,     c = a_{t-1,-i}
        Δ_i(k, 0 | c) = [log s(k | c) − log s(0 | c)] / beta,  s = (p − eps/A) / (1 − eps)

    with ``p`` the empirical frequency of agent ``i`` playing ``k`` in round ``t``
    after context ``c`` (``pseudo_count`` added to every cell; ``s`` floored at
    ``1e-6``). Contexts are the opponents' joint action, or their action counts for
    count-based families (``mechanism.counts_context``). Exact for memoryless logit
    responders as the sample grows; biased for slow learners, whose play depends on
    the whole history (the point of the comparison). The paper's version conditions
    on the same round's opponents' most frequent action. Stored as a tabular mechanism
    (payoff 0 for action 0 and in contexts never seen), so ``A**n * n <= max_entries``.
    """
    del seed
    start = time.perf_counter()
    n, A = model.num_agents, model.num_actions
    tab_model = tabular_model(model, max_entries=max_entries)
    values = model.learner_values()
    beta, eps = float(np.mean(values["beta"])), float(np.mean(values["eps"]))
    actions, mask = np.asarray(data.actions), np.asarray(data.mask)
    counts_context = model.mechanism.counts_context

    def context(joint: np.ndarray, agent: int):  # joint (..., n)
        others = np.delete(joint, agent, axis=-1)
        if counts_context:
            return (others[..., None] == np.arange(A)).sum(axis=-2)
        return others

    table = np.zeros((A**n, n))
    index = np.arange(A**n)
    joints = (index[:, None] // A ** np.arange(n)) % A  # (A**n, n)
    for i in range(n):
        prev, now = actions[:, :-1], actions[:, 1:]
        ok = ~mask[:, :-1].any(axis=2) & ~mask[:, 1:, i]
        keys = context(prev[ok], i)  # (R, n-1) or (R, A)
        chosen = now[..., i][ok]
        vocabulary, inverse = np.unique(keys.reshape(len(keys), -1), axis=0, return_inverse=True)
        freq = np.full((len(vocabulary), A), pseudo_count)
        np.add.at(freq, (inverse.reshape(-1), chosen), 1.0)
        p = freq / freq.sum(axis=1, keepdims=True)
        s = np.maximum((p - eps / A) / (1.0 - eps), 1e-6)
        diffs = (np.log(s) - np.log(s[:, :1])) / beta  # (C, A) vs action 0
        lookup = {tuple(v): row for v, row in zip(vocabulary.tolist(), diffs)}
        table_keys = context(joints, i).reshape(A**n, -1)
        for j in range(A**n):
            row = lookup.get(tuple(table_keys[j].tolist()))
            if row is not None:
                table[j, i] = row[joints[j, i]]
    params = {"mechanism": {"payoffs": jnp.asarray(table[None], jnp.float32)},
              "learner": {k: jnp.asarray(v)[None] for k, v in values.items()}}
    return Estimate(
        name="static inverse",
        model=tab_model,
        params=params,
        info={"method": "static", "wall_seconds": time.perf_counter() - start, "pseudo_count": pseudo_count},
    )
