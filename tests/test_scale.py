"""An anonymous game with 10,000 agents: the A x A table likelihood against a direct
O(n A) evaluation, agent by agent, on a subsample of agents (issue 6, item 3).

The package never evaluates the payoff network per agent: it builds the table
``F[c, k] = f(k, (counts - e_c) / (N - 1))`` once per round and gathers from it
(docs/design.md §4). The reference below does what the paper does, for each sampled agent
``i``: count the *other* present agents' actions, evaluate ``f(k, counts_-i / (N - 1))``
for every own action ``k`` with a plain NumPy MLP, run logit-Q on that row, and score
the agent's actions. Learners' states evolve row by row (agent ``i``'s ``Q`` depends
only on its own payoffs and actions), so a subsample is an exact check of those rows.
"""

from __future__ import annotations

import jax
import numpy as np

from bayes_diml.learners import LEARNERS
from bayes_diml.likelihood import log_likelihood_per_episode, teacher_forced_log_policies
from bayes_diml.mechanisms import FAMILIES
from bayes_diml.model import Model

import reference as ref

N_AGENTS, N_ACTIONS, N_EPISODES, N_ROUNDS = 10_000, 50, 2, 6
LEARNER = {"alpha": 0.2, "beta": 6.0, "eps": 0.02}


def _direct_rows(params, actions, mask, agents):
    """``log pi_t(. | i)`` for the given agents, ``(E, T, len(agents), A)``, float64, by the
    per-agent route: counts of the others, the MLP at every own action, logit-Q."""
    params = {k: np.asarray(v, np.float64) for k, v in params.items()}
    E, T, _ = actions.shape
    out = np.zeros((E, T, len(agents), N_ACTIONS))
    for e in range(E):
        for s, i in enumerate(agents):
            q = np.zeros(N_ACTIONS)
            for t in range(T):
                out[e, t, s] = ref.log_policy(q, LEARNER["beta"], LEARNER["eps"])
                if mask[e, t, i]:
                    continue  # absent: Q frozen
                present = ~mask[e, t]
                present[i] = False
                counts = np.bincount(actions[e, t, present], minlength=N_ACTIONS).astype(np.float64)
                shares = counts / present.sum()
                x = np.concatenate([params["embed"], np.tile(shares, (N_ACTIONS, 1))], axis=1)
                u = ref._dense_stack(params, "", x, ref._relu)[:, 0]
                q = (1.0 - LEARNER["alpha"]) * q + LEARNER["alpha"] * u
    return out


def test_ten_thousand_agents_match_a_direct_evaluation_on_a_subsample():
    rng = np.random.default_rng(0)
    mechanism = FAMILIES["anonymous"](num_agents=N_AGENTS, num_actions=N_ACTIONS)
    model = Model(mechanism, LEARNERS["logit_q"], LEARNER)
    actions = rng.integers(0, N_ACTIONS, size=(N_EPISODES, N_ROUNDS, N_AGENTS))
    # a skewed action distribution (shares far from uniform) and 3% absences, so N varies by round
    actions = np.where(rng.random(actions.shape) < 0.5, actions % 7, actions)
    mask = rng.random(actions.shape) < 0.03
    agents = np.sort(rng.choice(N_AGENTS, size=12, replace=False))
    with jax.enable_x64(True):
        params = {"mechanism": jax.tree.map(lambda v: np.asarray(v, np.float64), mechanism.init_params(jax.random.key(0))),
                  "learner": LEARNER}
        log_pi = np.asarray(teacher_forced_log_policies(model, params, (actions, mask)))
        per_episode = np.asarray(log_likelihood_per_episode(model, params, (actions, mask)))
    direct = _direct_rows(params["mechanism"], actions, mask, agents)
    # float64 on both sides; the table route sums the same products in another order
    np.testing.assert_allclose(log_pi[:, :, agents], direct, rtol=1e-9, atol=1e-12)
    # the likelihood is the sum of every present agent's log-probability of its action
    played = np.take_along_axis(log_pi, actions[..., None], axis=-1)[..., 0]
    np.testing.assert_allclose(per_episode, np.where(mask, 0.0, played).sum(axis=(1, 2)), rtol=1e-10)
    # and the table is not trivially flat: payoffs differ between own actions in these contexts
    assert np.ptp(direct[:, -1], axis=-1).min() > 1e-3
