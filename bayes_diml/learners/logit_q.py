"""Logit-Q learning, the learner of the DIML paper (An & Du 2026, §3)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .._types import Array, Params
from .base import Learner, make_learner, per_agent

__all__ = ["logit_q", "logit_q_decreasing", "log_policy_epsilon_softmax", "logit_log_policy"]


def log_policy_epsilon_softmax(beta, eps, Q: Array, bias: Array | None = None) -> Array:
    """``log pi = log((1 - eps) softmax(beta Q + bias) + eps / A)`` computed in log space.

    ``logaddexp(log1p(-eps) + log_softmax(beta Q), log(eps / A))``; where
    ``eps == 0`` the plain ``log_softmax(beta Q)`` is used, so there is no
    ``log(0)`` and no NaN gradient (docs/design.md §2).

    Args:
        beta, eps: scalars or per-agent ``(num_agents,)`` arrays.
        Q: ``(..., num_agents, num_actions)``.
        bias: ``None`` or logits added inside the softmax, before the mixing
            (choice stickiness, ``learners.stickiness``); broadcastable to ``Q``.
    """
    A = Q.shape[-1]
    logits = per_agent(beta) * Q
    if bias is not None:
        logits = logits + bias
    log_soft = jax.nn.log_softmax(logits, axis=-1)
    if _concrete_zero(eps):
        return log_soft
    eps = per_agent(eps)
    positive = eps > 0
    safe_eps = jnp.where(positive, eps, 0.5)
    mixed = jnp.logaddexp(jnp.log1p(-safe_eps) + log_soft, jnp.log(safe_eps / A))
    return jnp.where(positive, mixed, log_soft)


def _concrete_zero(value) -> bool:
    """True when ``value`` is a known (not traced) array of zeros."""
    try:
        return bool(np.all(np.asarray(value) == 0))
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return False


def logit_log_policy(params: Params, Q: Array, t, bias: Array | None = None) -> Array:
    """The ``log_policy`` of every learner with parameters ``beta`` and ``eps``:
    ``log((1 - eps) softmax(beta Q + bias) + eps / A)`` (``bias``: choice stickiness)."""
    return log_policy_epsilon_softmax(params["beta"], params["eps"], Q, bias)


def _make(name: str, step_name: str, step_size) -> Learner:
    def transition(params, U, actions, t):
        alpha = per_agent(step_size(params, t))
        return 1.0 - alpha, alpha * U

    return make_learner(name, ("beta", "eps", step_name), shift_invariant=True, log_policy=logit_log_policy, transition=transition)


logit_q = _make("logit_q", "alpha", lambda params, t: params["alpha"])
"""Logit-Q with a constant step (docs/design.md §2)::

    pi_t(. | i) = (1 - eps) softmax(beta Q_t[i]) + eps / A
    Q_{t+1}     = (1 - alpha) Q_t + alpha U_t,     Q_0 = 0

Parameters ``alpha`` in (0, 1], ``beta`` > 0, ``eps`` in [0, 1); each a scalar
or a per-agent ``(num_agents,)`` array. Full-information: shift invariant.
Source: An & Du (2026), "DIML", arXiv 2601.17678, §3.
"""

logit_q_decreasing = _make("logit_q_decreasing", "c", lambda params, t: 1.0 / (t + params["c"]))
"""Logit-Q with the decreasing step ``alpha_t = 1 / (t + c)`` (stochastic smooth
fictitious play; Fudenberg & Levine 1998, ch. 4): ``Q_t`` is then a weighted
running mean of past counterfactual payoffs. Parameters ``c`` >= 1, ``beta``, ``eps``.
"""
