"""Experience-weighted attraction (EWA; Camerer & Ho 1999).

Camerer, C. & Ho, T.-H. (1999), "Experience-weighted attraction learning in normal
form games", Econometrica 67(4):827–874, §2 (the attraction and experience updates
and the logit response). For agent ``i`` with attractions ``A_j`` over own actions ``j``::

    N(t)   = rho N(t-1) + 1,                                     N(0) = 1
    A_j(t) = [phi N(t-1) A_j(t-1) + (delta + (1 - delta) 1[j = a_i(t)]) u_i(j, a_-i(t))] / N(t)
    pi_t(. | i) = (1 - eps) softmax(beta A(t-1)) + eps / A

In the package's indexing the state before round ``t`` (0-based) is
``Q_t = A(t)``, and round ``t`` is Camerer & Ho's period ``t + 1``, so::

    Q_{t+1} = decay_t Q_t + drive_t,
    decay_t = phi N(t) / N(t+1),   drive_t = w_t * U_t / N(t+1),
    w_t[i, j] = delta + (1 - delta) 1[j = a_{t,i}]

with ``U_t[i, j] = u_i(j, a_{t,-i})`` the counterfactual payoffs. Given the observed
play ``N`` is deterministic (``N(t) = sum_{k=0}^{t} rho^k`` with ``N(0) = 1``), so the
attractions are a linear recurrence with data-dependent coefficients and the
likelihood stays parallel in time (docs/design.md §2).

Parameters (scalars or per-agent ``(num_agents,)`` arrays):

* ``phi`` in [0, 1]: decay of past attractions;
* ``rho`` in [0, 1]: decay of the experience weight ``N``;
* ``delta`` in [0, 1]: weight of foregone payoffs (the played action gets weight 1);
* ``beta`` > 0: logit precision (Camerer & Ho's ``lambda``; named ``beta`` as in every
  logit learner of the package, so that the payoff-scale rules of docs/design.md §3 apply);
* ``eps`` in [0, 1): uniform mixing, as in logit-Q.

Choices: ``N(0) = 1`` is fixed (not a parameter); ``A(0) = 0`` unless a ``q0``
(initial attractions) is given. ``N(t)`` counts the rounds of the episode, not the
rounds the agent played: an agent absent mid-episode keeps its attractions
(docs/design.md §2) but its experience weight still follows the episode's clock.

Special cases (tested in ``tests/test_learners.py``):

* ``delta = 0``: reinforcement learning, only the played action is reinforced
  (``rho = 0``: cumulative reinforcement ``A_j(t) = phi A_j(t-1) + 1[j = a] u``;
  ``rho = phi``: averaged reinforcement);
* ``delta = 1, rho = phi``: weighted fictitious play, ``A_j(t)`` is the expected payoff of
  ``j`` under beliefs formed from past opponent play discounted by ``phi``
  (with prior beliefs of weight ``N(0) = 1`` whose expected payoffs are ``A(0)``);
* ``delta = 1, rho = 0, phi = 1``: Hedge with ``eta = beta``.

Shift invariance: adding ``g_i(a_-i)`` to every own action's payoff adds ``w_t g`` to the
drive. With ``delta = 1`` that is the same for all actions and the policy ignores it;
with ``delta < 1`` the played action gets more of it, so payoff levels enter the
likelihood. The learner therefore declares ``shift_invariant = False`` (docs/design.md §3).
"""

from __future__ import annotations

import jax.numpy as jnp

from .base import make_learner, one_hot_actions, per_agent
from .logit_q import logit_log_policy

__all__ = ["ewa", "experience_weight"]

PARAM_NAMES = ("beta", "eps", "phi", "rho", "delta")


def experience_weight(rho, t):
    """``N(t) = rho N(t-1) + 1`` with ``N(0) = 1``, i.e. ``sum_{k=0}^{t} rho^k``.

    Closed form ``(1 - rho^(t+1)) / (1 - rho)`` evaluated as
    ``expm1((t+1) log rho) / (rho - 1)`` (accurate for ``rho`` near 1), with the
    limits ``t + 1`` at ``rho = 1`` and ``1`` at ``rho = 0`` taken exactly; gradients
    in ``rho`` are exact inside (0, 1).

    Args:
        rho: scalar or any array (e.g. per-agent, broadcast already).
        t: round index ``>= 0`` (int or traced int).
    """
    rho = jnp.asarray(rho, jnp.result_type(float))
    count = jnp.asarray(t, rho.dtype) + 1.0
    inside = (rho > 0) & (rho < 1)
    safe = jnp.where(inside, rho, 0.5)
    geometric = jnp.expm1(count * jnp.log(safe)) / (safe - 1.0)
    return jnp.where(rho >= 1, count, jnp.where(rho <= 0, jnp.ones_like(geometric), geometric))


def _transition(params, U, actions, t):
    phi = per_agent(params["phi"])
    rho = per_agent(params["rho"])
    delta = per_agent(params["delta"])
    before = experience_weight(rho, t)  # N(t)
    after = experience_weight(rho, t + 1)  # N(t+1) = rho N(t) + 1
    weight = delta + (1.0 - delta) * one_hot_actions(actions, U.shape[-1])
    return phi * before / after, weight * U / after


ewa = make_learner("ewa", PARAM_NAMES, shift_invariant=False, log_policy=logit_log_policy, transition=_transition)
"""Experience-weighted attraction (Camerer & Ho 1999); see the module docstring."""
