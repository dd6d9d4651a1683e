"""Choice stickiness (a one-back choice kernel), available to every learning rule, and
the policy that the likelihood and the simulator share.

With ``[learner] stickiness = kappa`` (0 when absent) agent ``i`` favours (kappa > 0)
or avoids (kappa < 0, alternation) its own previous action::

    log pi_t(. | i) = learner.log_policy(params, Q_t, t, bias_t)
    bias_t[i, k]    = kappa_i 1[k = a_{t-1,i}]

so for the logit rules ``pi_t(k | i) = (1 - eps) softmax_k(beta Q_t[i, k] + kappa_i
1[k = a_{t-1,i}]) + eps / A`` (Hedge: ``softmax(eta S_t + bias_t)``). Source: Wilson &
Collins (2019), "Ten simple rules for the computational modeling of behavioral data",
eLife 8:e49547, the choice-kernel model with a kernel step of 1 (only the last choice
counts); the habit / inertia terms of the EWA literature are of the same form.

Choices:

* No term in round 0 (no previous action) and none for an agent that was absent in
  round ``t - 1`` (``bias_t[i] = 0``).
* ``kappa`` enters the logits before the uniform mixing: ``eps`` stays a lapse that
  replaces the sticky choice rule, not a lapse that is itself sticky.
* ``kappa`` is in logit units; it is not multiplied by ``beta`` (or ``eta``).

The bias depends on the observed previous action only, never on ``Q``: under teacher
forcing it is data, so the linear recurrence over rounds (``base``) is unchanged and the
likelihood stays parallel in time. A model without ``stickiness`` computes exactly what
it did before the term existed (no bias is formed: ``bias = None``).

Identifiability: ``kappa`` multiplies an indicator of the agent's *own* last choice,
while payoffs enter ``Q`` through ``U_t[i, k] = u_i(k, a_{t,-i})``, the *others'* play.
For full-information rules (``logit_q``, ``logit_q_decreasing``, ``hedge``, EWA at
``delta = 1``) ``Q_t`` is a function of the others' past actions only, so staying with
one's own last action beyond what the others' play explains is attributed to ``kappa``
and not to payoffs. Rules that reinforce the played action (``bandit_q``, EWA with
``delta < 1``) also make ``Q`` depend on own past choices; ``kappa`` is then separated
by its one-round reach (a jump in the stay rate at lag 1 only), against the payoff-driven
persistence that decays with ``alpha`` (or ``phi``) over several rounds.
"""

from __future__ import annotations

import jax.numpy as jnp

from .._types import Array, Params
from .base import Learner, per_agent

__all__ = ["STICKINESS", "with_stickiness", "choice_indicator", "previous_choices", "stickiness_bias", "log_policy"]

STICKINESS = "stickiness"
"""The parameter's name in specs and in ``params["learner"]``."""


def with_stickiness(learner: Learner, sticky: bool = True) -> Learner:
    """The rule with ``stickiness`` added to (``sticky``) or dropped from its ``param_names``.

    ``Model`` calls it when the spec names ``stickiness``, so that everything that walks
    a model's learner parameters (sampling, posterior draws, interventions, reports)
    treats ``kappa`` like the rule's own parameters."""
    if (STICKINESS in learner.param_names) == sticky:
        return learner  # the registry's own object when nothing changes
    names = tuple(name for name in learner.param_names if name != STICKINESS)
    return learner._replace(param_names=(*names, STICKINESS) if sticky else names)


def choice_indicator(actions: Array, present: Array, num_actions: int, dtype) -> Array:
    """``1[k = a_i]`` where the agent played, else 0: ``(..., n, A)`` from ``(..., n)``."""
    played = (actions[..., None] == jnp.arange(num_actions)) & present[..., None]
    return played.astype(dtype)


def previous_choices(actions: Array, present: Array, before: Array) -> Array:
    """``(R, n, A)``: row ``t`` is ``choice_indicator`` of round ``t - 1`` of ``(R, n)``
    ``actions`` / ``present``; row 0 is ``before`` (zeros at an episode's start, or the
    last round of the previous chunk)."""
    earlier = choice_indicator(actions[:-1], present[:-1], before.shape[-1], before.dtype)
    return jnp.concatenate([before[None], earlier], axis=0)


def stickiness_bias(params: Params, previous: Array | None) -> Array | None:
    """``kappa_i 1[k = a_{t-1,i}]`` from ``previous`` (``choice_indicator`` of the last round),
    or ``None`` when ``params`` has no ``stickiness`` (the policy is then untouched)."""
    if STICKINESS not in params or previous is None:
        return None
    return per_agent(params[STICKINESS]) * previous


def log_policy(learner: Learner, params: Params, Q: Array, t, previous: Array | None) -> Array:
    """``log pi_t``, ``(..., n, A)``: the rule's policy with the stickiness bias (module
    docstring). The one policy of the package: the likelihood and the simulator call it."""
    return learner.log_policy(params, Q, t, stickiness_bias(params, previous))
