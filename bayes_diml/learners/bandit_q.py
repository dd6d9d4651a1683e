"""Q-learning with bandit feedback: only the played action is updated, with its realised payoff.

Single-state Q-learning with a logit policy: Watkins & Dayan (1992), "Q-learning",
Machine Learning 8:279–292, with one state and no discounting; in games this is
"individual Q-learning" (Leslie & Collins 2005, SIAM J. Control Optim. 44(2):495–514).
For agent ``i`` playing ``a = a_{t,i}``::

    Q_0 = 0
    pi_t(. | i)    = (1 - eps) softmax(beta Q_t[i]) + eps / A
    Q_{t+1}[i, a]  = (1 - alpha) Q_t[i, a] + alpha u_i(a, a_{t,-i})
    Q_{t+1}[i, k]  = Q_t[i, k]                 for k != a

The realised payoff ``u_i(a_{t,i}, a_{t,-i})`` is the played entry of the
counterfactual payoffs ``U_t``, so under teacher forcing this is the linear recurrence
``Q_{t+1} = decay_t Q_t + drive_t`` with the action-dependent elementwise
``decay_t = 1 - alpha 1[k = a_{t,i}]``, ``drive_t = alpha 1[k = a_{t,i}] U_t``.
Parameters ``alpha`` in (0, 1], ``beta`` > 0, ``eps`` in [0, 1), scalars or
per-agent ``(num_agents,)``; ``q0`` (initial Q) is honoured if given.

Shift invariance: adding ``g_i(a_-i)`` to every own action's payoff changes only the
played action's Q, so differences between actions move and payoff levels of played
actions enter the likelihood: ``shift_invariant = False`` (docs/design.md §3).
"""

from __future__ import annotations

from .base import make_learner, one_hot_actions, per_agent
from .logit_q import logit_log_policy

__all__ = ["bandit_q"]

PARAM_NAMES = ("beta", "eps", "alpha")


def _transition(params, U, actions, t):
    step = per_agent(params["alpha"]) * one_hot_actions(actions, U.shape[-1])
    return 1.0 - step, step * U


bandit_q = make_learner("bandit_q", PARAM_NAMES, shift_invariant=False, log_policy=logit_log_policy, transition=_transition)
"""Bandit-feedback logit Q-learning; see the module docstring."""
