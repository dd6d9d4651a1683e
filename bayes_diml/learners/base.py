"""The learner interface: every learning rule is a linear recurrence in its state.

A learner is a NamedTuple of pure functions (optax/blackjax style). Its state
``Q`` (shape ``(num_agents, num_actions)``) evolves as

    Q_{t+1} = decay_t * Q_t + drive_t

where ``(decay_t, drive_t) = transition(params, U_t, a_t, t)`` may depend on the
round's counterfactual payoffs ``U_t`` and actions ``a_t``, but never on ``Q``.
Under teacher forcing (likelihood) ``U_t`` and ``a_t`` are observed, so the whole
path of ``Q`` is a first-order linear recurrence solved by
``jax.lax.associative_scan`` (docs/design.md §2); in simulation the same
``step_coefficients`` drives a sequential ``lax.scan``. The two cannot drift
apart because they call the same function.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax.numpy as jnp
import numpy as np

from .._types import Array, Params
from ..priors import Domain, Interval, Prior

__all__ = [
    "Learner",
    "make_learner",
    "step_coefficients",
    "apply_step",
    "per_agent",
    "initial_state",
    "one_hot_actions",
    "check_domains",
    "PARAMETER_DOMAINS",
]


class Learner(NamedTuple):
    """A learning rule.

    Attributes:
        name: the rule's name in specs (``[learner] rule = ...``).
        param_names: names of its parameters.
        shift_invariant: True when adding any ``g_i(a_-i)`` to every own action's
            payoff leaves the likelihood unchanged (full-information learners):
            the payoff gauge must then be fixed (docs/design.md §3).
        init: ``(params, num_agents, num_actions) -> Q_0``.
        log_policy: ``(params, Q, t, bias=None) -> log pi_t``, all ``(..., num_agents,
            num_actions)``; ``bias`` (``stickiness.stickiness_bias``) is added to the
            logits inside the softmax, before any uniform mixing. Callers go through
            ``stickiness.log_policy``, the one policy of the package.
        transition: ``(params, U, actions, t) -> (decay, drive)``, each broadcastable
            to ``(num_agents, num_actions)``.
        check_params: ``(params, where) -> None``, raises ``SpecError`` on values
            outside the parameter's domain.
        scale_param: the parameter that multiplies every payoff in the policy
            (``beta``; Hedge's ``eta``): with it unknown only its product with payoff
            differences is identified (docs/design.md §3).
    """

    name: str
    param_names: tuple[str, ...]
    shift_invariant: bool
    init: Callable[[Params, int, int], Array]
    log_policy: Callable[[Params, Array, Array], Array]
    transition: Callable[[Params, Array, Array, Array], tuple[Array, Array]]
    check_params: Callable[[Params, str], None]
    scale_param: str = "beta"


def per_agent(value) -> Array:
    """Broadcast a scalar or per-agent ``(num_agents,)`` parameter against ``(num_agents, num_actions)``."""
    value = jnp.asarray(value)
    return value[..., None] if value.ndim >= 1 else value


def initial_state(params: Params, num_agents: int, num_actions: int) -> Array:
    """``Q_0``: ``params["q0"]`` broadcast to ``(num_agents, num_actions)`` when given, else zeros."""
    if "q0" in params:
        return jnp.broadcast_to(params["q0"], (num_agents, num_actions))
    return jnp.zeros((num_agents, num_actions))


def one_hot_actions(actions: Array, num_actions: int) -> Array:
    """``1[k = a_i]``, shape ``(num_agents, num_actions)``, from ``(num_agents,)`` int actions."""
    return (actions[:, None] == jnp.arange(num_actions)).astype(jnp.result_type(float))


def _prior(dist: str, **args: float) -> Prior:
    return Prior(dist, tuple((k, float(v)) for k, v in args.items()))


_UNIT_CLOSED = Interval(0.0, 1.0, low_closed=True, high_closed=True)

PARAMETER_DOMAINS: dict[str, Domain] = {
    "alpha": Domain(Interval(0.0, 1.0, high_closed=True), _prior("beta", a=2, b=5)),
    "beta": Domain(Interval(0.0), _prior("lognormal", loc=1, scale=0.5)),
    "eps": Domain(Interval(0.0, 1.0, low_closed=True), _prior("beta", a=1, b=20)),
    "c": Domain(Interval(1.0, low_closed=True), _prior("uniform", low=1, high=20), "so that alpha_t = 1/(t + c) <= 1"),
    "phi": Domain(_UNIT_CLOSED, _prior("beta", a=2, b=2)),
    "rho": Domain(_UNIT_CLOSED, _prior("beta", a=2, b=2)),
    "delta": Domain(_UNIT_CLOSED, _prior("beta", a=2, b=2)),
    "eta": Domain(Interval(0.0), _prior("lognormal", loc=0, scale=1)),
    "stickiness": Domain(Interval(), _prior("normal", loc=0, scale=1)),
}
"""Learner parameter name -> its domain (interval, and a prior inside it for messages).

Fixed values are checked against it (``check_domains``), and so is the support of a
prior (``Model``): a prior reaching outside the domain is refused, so every draw,
which NumPyro maps from the unconstrained scale onto the prior's support, is valid.
The prior is also the default prior of a parameter written ``name = "prior"`` in a spec."""


def check_domains(params: Params, where: str, names: tuple[str, ...]) -> None:
    """Raise ``SpecError`` naming the first of ``names`` whose value (scalar or per-agent
    array) is not finite or lies outside ``PARAMETER_DOMAINS``."""
    from ..errors import SpecError

    for name in names:
        value = np.asarray(params[name], dtype=float)
        domain = PARAMETER_DOMAINS[name]
        if not np.all(np.isfinite(value)) or not np.all(domain.interval.contains(value)):
            raise SpecError(f"{where}: learner parameter '{name}' = {value.tolist()}: {name} must be {domain.describe()}")


def make_learner(
    name: str,
    param_names: tuple[str, ...],
    *,
    shift_invariant: bool,
    log_policy: Callable[[Params, Array, Array], Array],
    transition: Callable[[Params, Array, Array, Array], tuple[Array, Array]],
    scale_param: str = "beta",
) -> Learner:
    """A ``Learner`` with the package's common parts: ``Q_0`` from ``initial_state`` and
    fixed values checked against ``PARAMETER_DOMAINS`` (``check_domains`` over ``param_names``,
    and ``stickiness`` where ``params`` has it: every rule takes it, ``learners.stickiness``)."""

    def check_params(params: Params, where: str = "learner") -> None:
        from .stickiness import STICKINESS

        check_domains(params, where, (*param_names, *((STICKINESS,) if STICKINESS in params else ())))

    return Learner(
        name=name,
        param_names=param_names,
        shift_invariant=shift_invariant,
        init=initial_state,
        log_policy=log_policy,
        transition=transition,
        check_params=check_params,
        scale_param=scale_param,
    )


def step_coefficients(learner: Learner, params: Params, U: Array, actions: Array, present: Array, t) -> tuple[Array, Array]:
    """The learner's ``(decay, drive)`` for one round, with absent agents frozen.

    An agent that did not play (``present[i]`` False) keeps its state:
    ``decay = 1``, ``drive = 0`` (docs/design.md §2).

    Args:
        U: ``(num_agents, num_actions)`` counterfactual payoffs of the round.
        actions: ``(num_agents,)`` int; present: ``(num_agents,)`` bool; t: round index.

    Returns:
        ``(decay, drive)``, each ``(num_agents, num_actions)``.
    """
    decay, drive = learner.transition(params, U, actions, t)
    shape = U.shape
    keep = present[:, None]
    decay = jnp.where(keep, jnp.broadcast_to(decay, shape), 1.0)
    drive = jnp.where(keep, jnp.broadcast_to(drive, shape), 0.0)
    return decay, drive


def apply_step(coefficients: tuple[Array, Array], Q: Array) -> Array:
    """``Q_{t+1} = decay * Q_t + drive``."""
    decay, drive = coefficients
    return decay * Q + drive
