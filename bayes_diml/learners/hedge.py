"""Hedge / exponential weights with full-information feedback.

Freund, Y. & Schapire, R. E. (1997), "A decision-theoretic generalization of on-line
learning and an application to boosting", J. Comput. Syst. Sci. 55(1):119–139
(algorithm Hedge(beta), written here with gains instead of losses);
Littlestone, N. & Warmuth, M. K. (1994), "The weighted majority algorithm",
Inf. Comput. 108(2):212–261. For agent ``i`` the state is the cumulative
counterfactual payoff of every own action::

    S_0 = 0
    pi_t(. | i) = softmax(eta S_t[i])          (weights proportional to exp(eta S_t))
                                               (+ kappa 1[k = a_{t-1,i}] with stickiness)
    S_{t+1} = S_t + U_t                        (decay 1, drive U_t)

with ``U_t[i, k] = u_i(k, a_{t,-i})`` for every action ``k`` (full information).
Parameter ``eta`` > 0 (learning rate; scalar or per-agent ``(num_agents,)``); it
multiplies every payoff, so it plays the role of ``beta`` for the payoff scale
(docs/design.md §3). No uniform mixing. ``q0`` (initial cumulative payoffs) is honoured
if given.

Shift invariance: adding ``g_i(a_-i)`` to every own action's payoff adds the same
number to every entry of ``S_t[i]``, which the softmax ignores: ``shift_invariant =
True`` (docs/design.md §3).
"""

from __future__ import annotations

import jax.numpy as jnp

from .base import make_learner
from .logit_q import log_policy_epsilon_softmax

__all__ = ["hedge"]

PARAM_NAMES = ("eta",)


def _log_policy(params, Q, t, bias=None):
    return log_policy_epsilon_softmax(params["eta"], 0.0, Q, bias)


def _transition(params, U, actions, t):
    return jnp.ones_like(U), U


hedge = make_learner("hedge", PARAM_NAMES, shift_invariant=True, log_policy=_log_policy, transition=_transition, scale_param="eta")
"""Hedge / exponential weights (Freund & Schapire 1997); see the module docstring."""
