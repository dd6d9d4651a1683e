"""Tabular mechanism: one free payoff per (joint action, agent) — the enumeration oracle."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from .._types import Array, Params, PRNGKey
from .base import Mechanism

__all__ = ["Tabular", "joint_index", "joint_actions", "joint_labels", "TRUTH_PREVIEW_ROWS"]

TRUTH_PREVIEW_ROWS = 8
"""Rows of a tabular truth that ``bayes-diml check --spec`` prints (``Tabular.truth_lines``)."""


def joint_index(joint_action: Array, num_actions: int) -> Array:
    """Base-``num_actions`` index of a joint action, agent 0 least significant.

    ``index(a) = sum_i a_i * A**i``.
    """
    n = joint_action.shape[-1]
    weights = num_actions ** jnp.arange(n)
    return jnp.sum(joint_action * weights, axis=-1)


def joint_actions(num_agents: int, num_actions: int) -> np.ndarray:
    """Every joint action in table-row order, ``(A**n, n)``: row ``j`` is the joint
    action whose ``joint_index`` is ``j`` (agent 0's action changes fastest)."""
    rows = np.arange(num_actions**num_agents)
    return (rows[:, None] // num_actions ** np.arange(num_agents)[None, :]) % num_actions


def joint_labels(num_agents: int, num_actions: int, action_labels=None) -> list[str]:
    """The joint action of each table row as space-separated action labels in agent
    order (as in a query's ``joint`` column), e.g. ``"high low"``; codes when
    ``action_labels`` is ``None``."""
    labels = [str(x) for x in (action_labels if action_labels is not None else range(num_actions))]
    return [" ".join(labels[k] for k in row) for row in joint_actions(num_agents, num_actions).tolist()]


@dataclasses.dataclass(frozen=True, eq=False)
class Tabular(Mechanism):
    """``M(a)_i = payoffs[index(a), i]`` with ``payoffs`` of shape ``(A**n, n)``.

    Counterfactuals replace agent i's digit of the index:
    ``U[i, k] = payoffs[index(a) + (k - a_i) * A**i, i]``.

    Gauge: under full-information learners only differences
    ``payoffs[index(k, a_-i), i] - payoffs[index(k', a_-i), i]`` are identified
    (docs/design.md §3); the inference layer fixes action 0 of each agent in each
    opponent context at zero.  Small games only: ``A**n * n`` entries.
    """

    family = "tabular"
    allows_absence = False
    prior_options = frozenset({"scale"})
    prior_numbers = frozenset({"scale"})

    def __post_init__(self):
        from ..resources import check_table

        check_table(self.num_agents, self.num_actions, "the tabular family")

    def free_entries(self, fix_gauge: bool) -> tuple[np.ndarray, np.ndarray]:
        """(row, agent) index arrays of the table entries that are sampled.

        With the gauge fixed, entries where the agent itself plays action 0 are
        pinned at zero (the baseline action), so only the ``n (A-1) A**(n-1)``
        payoff differences are free.
        """
        n, A = self.num_agents, self.num_actions
        rows, agents = np.meshgrid(np.arange(A**n), np.arange(n), indexing="ij")
        own = (rows // A**agents) % A
        keep = own != 0 if fix_gauge else np.ones_like(own, bool)
        return rows[keep], agents[keep]

    def sample_prior(self, options, fix_gauge):
        """Free entries ``~ Normal(0, scale)`` (default ``scale = 1``), baseline entries 0."""
        import numpyro
        import numpyro.distributions as dist

        from .options import positive_number

        scale = positive_number(options, "scale", 1.0)
        rows, agents = self.free_entries(fix_gauge)
        free = numpyro.sample("free_payoffs", dist.Normal(0.0, scale).expand((rows.size,)).to_event(1))
        table = jnp.zeros(self.param_shapes()["payoffs"]).at[rows, agents].set(free)
        return {"payoffs": numpyro.deterministic("payoffs", table)}

    def param_shapes(self):
        return {"payoffs": (self.num_actions**self.num_agents, self.num_agents)}

    def init_params(self, key: PRNGKey) -> Params:
        return {"payoffs": jax.random.uniform(key, self.param_shapes()["payoffs"])}

    def output_params(self):
        return ("payoffs",)

    def param_coords(self, action_labels=None):
        """``joint``: the joint action of each row of ``payoffs`` (``"high low"``)."""
        return {"joint": joint_labels(self.num_agents, self.num_actions, action_labels)}

    def table_entries(self) -> int:
        return self.num_actions**self.num_agents * self.num_agents

    def payoffs(self, params, joint_action, present=None):
        idx = joint_index(joint_action, self.num_actions)
        return params["payoffs"][idx]

    def counterfactual_payoffs(self, params, joint_action, present=None):
        n, A = self.num_agents, self.num_actions
        place = A ** jnp.arange(n)  # (n,)
        base = joint_index(joint_action, A) - joint_action * place  # (n,)
        idx = base[:, None] + jnp.arange(A)[None, :] * place[:, None]  # (n, A)
        return params["payoffs"][idx, jnp.arange(n)[:, None]]

    # ------------------------------------------------------------ truth tables
    def truth_from_table(self, name: str, table: dict, action_labels=None, where: str = "[mechanism.truth]"):
        """``payoffs`` from a table keyed by joint actions (``[mechanism.truth.payoffs]``).

        Each key is one joint action, its action labels (or codes 0..A-1) separated by
        spaces in agent order (``"low high"``: agent 0 plays low, agent 1 high); each
        value lists one payoff per agent, in agent order. Every joint action must
        appear exactly once. Returns the ``(A**n, n)`` array in table-row order.
        """
        from .._checks import numeric_array
        from ..errors import SpecError

        n, A = self.num_agents, self.num_actions
        if name != "payoffs":
            raise SpecError(f"{where}: only 'payoffs' may be a table keyed by joint actions, got a table for '{name}'")
        named = joint_labels(n, A, action_labels)
        codes = joint_labels(n, A)
        lookup: dict[str, set[int]] = {}
        for row, forms in enumerate(zip(named, codes)):
            for form in set(forms):
                lookup.setdefault(" ".join(form.split()), set()).add(row)
        shown = [str(x) for x in (action_labels if action_labels is not None else range(A))]
        payoffs = np.zeros((A**n, n))
        given: dict[int, str] = {}
        for key, value in table.items():
            rows = lookup.get(" ".join(str(key).split()), set())
            if not rows:
                raise SpecError(
                    f"{where}: unknown joint action {key!r}; a key lists {n} actions (one per agent, in agent "
                    f"order, separated by spaces) from {shown} or the codes 0..{A - 1}, e.g. {named[min(1, A**n - 1)]!r}"
                )
            if len(rows) > 1:
                raise SpecError(f"{where}: joint action {key!r} is ambiguous (action labels contain spaces); use the codes 0..{A - 1}")
            row = next(iter(rows))
            if row in given:
                raise SpecError(f"{where}: {given[row]!r} and {key!r} are the same joint action ({named[row]!r}); give each joint action once")
            array = numeric_array(value, f"{where} {key!r}", SpecError)
            if array.shape != (n,):
                raise SpecError(f"{where} {key!r}: expected one payoff per agent ({n} numbers, in agent order), got {value!r}")
            payoffs[row], given[row] = array, key
        missing = [named[row] for row in range(A**n) if row not in given]
        if missing:
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            raise SpecError(
                f"{where}: {len(missing)} of {A**n} joint actions have no payoffs: "
                + ", ".join(repr(m) for m in missing[:3]) + more + "; give every joint action once"
            )
        return payoffs

    def truth_lines(self, params, action_labels=None, agent_labels=None, max_rows: int = TRUTH_PREVIEW_ROWS) -> list[str]:
        """The first ``max_rows`` rows of ``params["payoffs"]`` with their joint actions,
        e.g. ``low high | 1, 0.5`` (for ``bayes-diml check --spec``)."""
        payoffs = np.asarray(params["payoffs"], float)
        n, A = self.num_agents, self.num_actions
        agents = ", ".join(str(x) for x in (agent_labels if agent_labels is not None else range(n)))
        joints = joint_labels(n, A, action_labels)
        shown = min(max_rows, len(joints))
        head = f"joint ({agents})"
        width = max([len(head)] + [len(j) for j in joints[:shown]])
        lines = [
            f"payoffs: {len(joints)} rows, row = sum_i a_i * A**i (agent 0's action changes fastest)"
            + (f"; first {shown}:" if shown < len(joints) else ":"),
            f"{head:<{width}} | payoffs ({agents})",
        ]
        lines += [f"{joints[j]:<{width}} | " + ", ".join(f"{v:g}" for v in payoffs[j]) for j in range(shown)]
        return lines
