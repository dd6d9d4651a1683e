"""Independent plain-NumPy references (float64, explicit loops), written from docs/design.md §2–4.

Nothing here imports ``bayes_diml``: the references are the equations of the design
document, evaluated one agent, one round, one joint action at a time, so that a test
comparing the package against them can fail.

Conventions
-----------
* A joint action ``a`` is a sequence of ``n`` ints; ``present`` is a bool sequence of
  length ``n`` (``None``: everybody played). Absent agents do not count in the others'
  payoffs; the payoff of agent ``i`` itself is computed as if ``i`` played.
* Mechanism parameters are plain dicts of arrays (converted to float64 here), with the
  package's parameter names (the names are the only thing shared with the package).
* ``learner`` is a rule name; its parameters are scalars or per-agent ``(n,)`` arrays.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "PAYOFF_FUNCTIONS",
    "STEP_SIZES",
    "LEARNER_UPDATES",
    "experience_weight",
    "policy_parameters",
    "update_row",
    "agent_payoff",
    "payoffs",
    "counterfactual_payoffs",
    "log_policy",
    "stickiness_row",
    "episode_log_likelihood",
    "linear_recurrence",
]


# ---------------------------------------------------------------- helpers


def _f64(params):
    return {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}


def _others_present(present, n, i):
    """Indices ``j != i`` of agents that played."""
    return [j for j in range(n) if j != i and (present is None or bool(present[j]))]


def _dense_stack(params, prefix, x, activation):
    """``x -> act(x W0 + b0) -> ... -> x W_L + b_L`` (activation on all but the last)."""
    num_layers = 0
    while f"{prefix}w{num_layers}" in params:
        num_layers += 1
    for layer in range(num_layers):
        w = params[f"{prefix}w{layer}"]
        b = params[f"{prefix}b{layer}"]
        y = np.dot(x, w) + b
        x = activation(y) if layer < num_layers - 1 else y
    return x


def _relu(x):
    return np.maximum(x, 0.0)


# ------------------------------------------------- payoff of one agent (docs/design.md §4)


def tabular_payoff(params, a, present, i, *, num_actions, **_):
    """``U[index(a), i]``, index base A, agent 0 least significant."""
    index = 0
    for j, aj in enumerate(a):
        index += int(aj) * num_actions**j
    return float(params["payoffs"][index, i])


def congestion_payoff(params, a, present, i, *, num_actions, **_):
    """``-(c1[k] L + c2[k] L^2) + tau[k] L``, ``k = a_i``, ``L`` = present agents on ``k``."""
    k = int(a[i])
    load = 1 + sum(1 for j in _others_present(present, len(a), i) if int(a[j]) == k)
    return float(-(params["c1"][k] * load + params["c2"][k] * load**2) + params["tau"][k] * load)


def public_goods_payoff(params, a, present, i, *, num_actions, **_):
    """``s (1 - exp(-k total)) - c level(a_i)^2 + subsidy(total, level(a_i))``."""
    levels = [j / (num_actions - 1) for j in range(num_actions)]
    own = levels[int(a[i])]
    total = own + sum(levels[int(a[j])] for j in _others_present(present, len(a), i))
    pay = params["scale"] * (1.0 - math.exp(-params["k"] * total)) - params["cost"] * own**2
    if "sub_w0" in params:
        pay = pay + _dense_stack(params, "sub_", np.array([total, own]), np.tanh)[0]
    return float(pay)


def neural_payoff(params, a, present, i, *, num_actions, **_):
    """Output ``i`` of a tanh MLP over the concatenated per-agent action embeddings."""
    x = np.concatenate([params["embed"][j, int(a[j])] for j in range(len(a))])
    return float(_dense_stack(params, "", x, np.tanh)[i])


def anonymous_payoff(params, a, present, i, *, num_actions, **_):
    """``f(a_i, counts_-i / (N - 1))``, N present agents, f a ReLU MLP over [emb(a_i); x]."""
    others = _others_present(present, len(a), i)
    counts = np.zeros(num_actions)
    for j in others:
        counts[int(a[j])] += 1.0
    shares = counts / len(others) if others else counts  # N - 1 = number of present others
    x = np.concatenate([params["embed"][int(a[i])], shares])
    return float(_dense_stack(params, "", x, _relu)[0])


def linear_payoff(params, a, present, i, *, num_actions, own=None, cross=None, **_):
    """``(own[a_i] + sum_c counts_-i[c] cross[a_i, c]) . theta``."""
    k = int(a[i])
    theta = params["theta"]
    phi = np.zeros(theta.shape[0])
    if own is not None:
        phi += np.asarray(own, np.float64)[k]
    if cross is not None:
        for j in _others_present(present, len(a), i):
            phi += np.asarray(cross, np.float64)[k, int(a[j])]
    return float(sum(phi[f] * theta[f] for f in range(theta.shape[0])))


PAYOFF_FUNCTIONS = {
    "tabular": tabular_payoff,
    "congestion": congestion_payoff,
    "public_goods": public_goods_payoff,
    "neural": neural_payoff,
    "anonymous": anonymous_payoff,
    "linear": linear_payoff,
}
"""Family name -> ``(params, a, present, i, *, num_actions, **features) -> float``."""


def agent_payoff(family, params, a, present, i, num_actions, **features):
    return PAYOFF_FUNCTIONS[family](_f64(params), a, present, i, num_actions=num_actions, **features)


def payoffs(family, params, a, present=None, *, num_actions, **features):
    """``M(a)``, shape ``(n,)`` (entries of absent agents computed as if they played)."""
    params = _f64(params)
    fn = PAYOFF_FUNCTIONS[family]
    return np.array([fn(params, a, present, i, num_actions=num_actions, **features) for i in range(len(a))])


def counterfactual_payoffs(family, params, a, present=None, *, num_actions, **features):
    """Brute force: ``U[i, k] = M(a with a_i := k)_i``, shape ``(n, A)``."""
    params = _f64(params)
    fn = PAYOFF_FUNCTIONS[family]
    n = len(a)
    out = np.zeros((n, num_actions))
    for i in range(n):
        for k in range(num_actions):
            substituted = [int(x) for x in a]
            substituted[i] = k
            out[i, k] = fn(params, substituted, present, i, num_actions=num_actions, **features)
    return out


# ------------------------------------------------------------ learners (docs/design.md §2)


def _agent_value(value, i):
    value = np.asarray(value, dtype=np.float64)
    return float(value) if value.ndim == 0 else float(value[i])


STEP_SIZES = {
    "logit_q": lambda lp, i, t: _agent_value(lp["alpha"], i),
    "logit_q_decreasing": lambda lp, i, t: 1.0 / (t + _agent_value(lp["c"], i)),
}
"""Rule name -> ``alpha_t`` of agent ``i`` at round ``t`` (``Q_{t+1} = (1-alpha_t) Q_t + alpha_t U_t``)."""


def experience_weight(rho, t):
    """EWA ``N(t) = rho N(t-1) + 1`` from ``N(0) = 1``, by iterating (Camerer & Ho 1999)."""
    N = 1.0
    for _ in range(t):
        N = rho * N + 1.0
    return N


def _update_logit_q(lp, i, t, q, payoff, action, rule):
    alpha = STEP_SIZES[rule](lp, i, t)
    return [(1.0 - alpha) * q[k] + alpha * payoff(k) for k in range(len(q))]


def _update_ewa(lp, i, t, q, payoff, action):
    """``A_j <- [phi N(t) A_j + (delta + (1 - delta) 1[j = a]) u(j, a_-i)] / N(t+1)``."""
    phi, rho, delta = (_agent_value(lp[k], i) for k in ("phi", "rho", "delta"))
    before, after = experience_weight(rho, t), experience_weight(rho, t + 1)
    out = []
    for k in range(len(q)):
        weight = 1.0 if k == action else delta
        out.append((phi * before * q[k] + weight * payoff(k)) / after)
    return out


def _update_hedge(lp, i, t, q, payoff, action):
    """Cumulative payoffs ``S_k <- S_k + u(k, a_-i)`` for every action."""
    return [q[k] + payoff(k) for k in range(len(q))]


def _update_bandit_q(lp, i, t, q, payoff, action):
    """Only the played action: ``Q_a <- (1 - alpha) Q_a + alpha u(a, a_-i)`` (realised payoff)."""
    alpha = _agent_value(lp["alpha"], i)
    out = list(q)
    out[action] = (1.0 - alpha) * q[action] + alpha * payoff(action)
    return out


LEARNER_UPDATES = {
    "logit_q": lambda *args: _update_logit_q(*args, rule="logit_q"),
    "logit_q_decreasing": lambda *args: _update_logit_q(*args, rule="logit_q_decreasing"),
    "ewa": _update_ewa,
    "hedge": _update_hedge,
    "bandit_q": _update_bandit_q,
}
"""Rule name -> ``(lp, i, t, q_row, payoff, action) -> new q_row`` for an agent that played:
``payoff(k)`` is agent ``i``'s payoff had it played ``k`` against the observed others
(``payoff(action)`` is the realised payoff)."""


def policy_parameters(learner, lp, i):
    """``(precision, eps)`` of agent ``i``'s logit policy: ``beta`` and ``eps``, or Hedge's ``eta`` and 0."""
    if learner == "hedge":
        return _agent_value(lp["eta"], i), 0.0
    return _agent_value(lp["beta"], i), _agent_value(lp["eps"], i)


def update_row(learner, lp, i, t, q_row, u_row, action):
    """One agent's new state from its counterfactual payoff row ``u_row`` (float64 list)."""
    q = [float(x) for x in q_row]
    return np.array(LEARNER_UPDATES[learner](lp, i, t, q, lambda k: float(u_row[k]), int(action)))


def log_policy(q_row, beta, eps, bias=None):
    """``log((1 - eps) softmax(beta q + bias) + eps / A)`` for one agent, float64
    (``bias``: the choice-stickiness logits, ``None`` = none)."""
    z = beta * np.asarray(q_row, np.float64)
    if bias is not None:
        z = z + np.asarray(bias, np.float64)
    m = max(z)
    log_norm = m + math.log(sum(math.exp(v - m) for v in z))
    A = len(z)
    out = np.zeros(A)
    for k in range(A):
        p = (1.0 - eps) * math.exp(z[k] - log_norm) + eps / A
        out[k] = math.log(p) if eps > 0 else z[k] - log_norm
    return out


def stickiness_row(learner_params, i, previous, num_actions):
    """Choice stickiness of agent ``i``: ``kappa_i`` on its previous action ``previous``
    (``None``: first round or absent in the last round -> no term), 0 elsewhere."""
    bias = np.zeros(num_actions)
    if "stickiness" in learner_params and previous is not None:
        bias[int(previous)] = _agent_value(learner_params["stickiness"], i)
    return bias


def episode_log_likelihood(
    family, mech_params, learner, learner_params, actions, mask=None, *, num_actions, q0=None, scored=None, **features
):
    """One episode's ``sum_t sum_i [played] log pi_t(a_ti | i)`` and the policies.

    Args:
        actions: ``(T, n)`` ints; mask: ``(T, n)`` bool, True = did not play.
        q0: optional initial state, broadcast to ``(n, A)``; default zeros.
        scored: optional ``(n,)`` bools (``[game] modelled``): only these agents' played
            log-probabilities are summed; the others still play (their actions enter the
            payoffs). Default: every agent.
        learner_params: may hold ``stickiness`` (``kappa``, scalar or per agent): the
            logits of agent ``i`` gain ``kappa_i`` on the action it played in round
            ``t - 1`` (nothing in round 0 or after a round it missed).

    Returns:
        ``(loglik, log_policies)`` with ``log_policies`` of shape ``(T, n, A)``.
    """
    actions = np.asarray(actions)
    T, n = actions.shape
    mask = np.zeros((T, n), bool) if mask is None else np.asarray(mask, bool)
    params = _f64(mech_params)
    fn = PAYOFF_FUNCTIONS[family]
    update = LEARNER_UPDATES[learner]
    Q = np.zeros((n, num_actions)) if q0 is None else np.broadcast_to(np.asarray(q0, np.float64), (n, num_actions)).copy()
    total = 0.0
    log_policies = np.zeros((T, n, num_actions))
    previous = [None] * n  # each agent's action in the last round, None if it did not play
    for t in range(T):
        present = [not bool(mask[t, j]) for j in range(n)]
        # policy of every agent from Q_t and its previous action
        for i in range(n):
            precision, eps = policy_parameters(learner, learner_params, i)
            bias = stickiness_row(learner_params, i, previous[i], num_actions)
            log_policies[t, i] = log_policy(Q[i], precision, eps, bias)
            if present[i] and (scored is None or bool(scored[i])):
                total += log_policies[t, i, int(actions[t, i])]
        # update of agents that played, with payoffs of the observed round
        new_Q = Q.copy()
        for i in range(n):
            if not present[i]:
                continue

            def payoff(k, i=i):
                substituted = [int(x) for x in actions[t]]
                substituted[i] = k
                return fn(params, substituted, present, i, num_actions=num_actions, **features)

            new_Q[i] = update(learner_params, i, t, [float(x) for x in Q[i]], payoff, int(actions[t, i]))
        Q = new_Q
        previous = [int(actions[t, j]) if present[j] else None for j in range(n)]
    return total, log_policies


def linear_recurrence(decay, drive, initial):
    """``x_0 = initial``, ``x_{t+1} = decay_t x_t + drive_t``; returns ``x_0 .. x_{T-1}``."""
    decay = np.asarray(decay, np.float64)
    drive = np.asarray(drive, np.float64)
    x = np.asarray(initial, np.float64).copy()
    out = [x.copy()]
    for t in range(decay.shape[0] - 1):
        x = decay[t] * x + drive[t]
        out.append(x.copy())
    return np.stack(out)
