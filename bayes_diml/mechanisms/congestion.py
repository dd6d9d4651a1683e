"""Congestion game with tolls (the paper's E2 structured family)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import numpyro

from .._types import Params, PRNGKey
from .base import Mechanism, present_counts
from .options import sample_site

__all__ = ["Congestion"]


@dataclasses.dataclass(frozen=True, eq=False)
class Congestion(Mechanism):
    """Each action is a resource; the payoff of agent i on resource ``k = a_i`` is

        M(a)_i = -(c1[k] L + c2[k] L**2) + tau[k] L,   L = #present agents on k

    (An & Du 2026, §5, E2). Parameters ``c1, c2, tau``, each ``(num_actions,)``.

    Gauge and identifiability: only ``d = tau - c1`` and ``c2`` enter the payoff
    (``payoff = d L - c2 L**2``), so the direction ``c1 + tau`` is not identified
    by any data; the inference layer samples ``(d, c2, c1)`` so that ``c1`` only
    meets its prior. Absent agents do not load any resource.

    Known levers (``[mechanism.known]``, ``known_params``): any of ``tau``, ``c1``,
    ``c2``. With ``tau`` (the tolls in force when the data were recorded) known,
    ``c1 = tau - d`` is identified and every coordinate is (no flat direction).

    Payoff levels: there is no gauge freedom (``levels_gauge = False``): a shift common
    to all actions of a context is not expressible, so welfare is identified as far as
    ``d`` and ``c2`` are; it carries ``c1`` and ``tau`` only through ``d``.
    """

    family = "congestion"
    allows_absence = True
    counts_context = True
    prior_options = frozenset({"d", "c2", "c1"})
    known_params = frozenset({"tau", "c1", "c2"})
    levels_gauge = False
    unidentified_advice = (
        "declare tau known in [mechanism.known] (the tolls in force when the data were recorded), "
        "or change tau relative to each draw (--set 'mechanism.tau+=[...]'; {\"tau\": (\"+\", [...])} in Python)"
    )

    def param_shapes(self):
        A = self.num_actions
        return {"c1": (A,), "c2": (A,), "tau": (A,)}

    def init_params(self, key: PRNGKey) -> Params:
        # The paper's truth distribution (docs/design.md §6).
        k1, k2, k3 = jax.random.split(key, 3)
        A = self.num_actions
        return {
            "c1": jax.random.uniform(k1, (A,), minval=0.1, maxval=0.4),
            "c2": jax.random.uniform(k2, (A,), minval=0.05, maxval=0.15),
            "tau": jax.random.uniform(k3, (A,), minval=0.0, maxval=0.2),
        }

    def output_params(self):
        return ("c1", "c2", "tau")

    def sample_prior(self, options, fix_gauge):
        """Sample ``d = tau - c1`` and ``c2`` (identified) and ``c1`` (prior only).

        ``tau = d + c1`` is a deterministic site. Defaults: ``d ~ Normal(0, 1)``,
        ``c2 ~ Normal(0, 0.5)``, ``c1 ~ Normal(0.25, 0.25)`` (per resource). No
        further gauge: a shift common to all resources is not expressible.
        """
        A = self.num_actions
        d = sample_site("d", options, {"dist": "normal", "loc": 0.0, "scale": 1.0}, (A,))
        c2 = sample_site("c2", options, {"dist": "normal", "loc": 0.0, "scale": 0.5}, (A,))
        c1 = sample_site("c1", options, {"dist": "normal", "loc": 0.25, "scale": 0.25}, (A,))
        tau = numpyro.deterministic("tau", d + c1)
        return {"c1": c1, "c2": c2, "tau": tau}

    def sample_prior_known(self, options, fix_gauge, known):
        """``sample_prior`` with known parameters held at their values (deterministic sites,
        constant across draws). ``d`` is sampled unless both ``tau`` and ``c1`` are known;
        with ``tau`` known, ``c1 = tau - d`` (identified); with ``c1`` known, ``tau = d + c1``;
        ``c2`` is sampled unless known."""
        if not known:
            return self.sample_prior(options, fix_gauge)
        A = self.num_actions

        def const(name):
            return numpyro.deterministic(name, jnp.asarray(known[name]))

        c2 = const("c2") if "c2" in known else sample_site(
            "c2", options, {"dist": "normal", "loc": 0.0, "scale": 0.5}, (A,))
        if "tau" in known and "c1" in known:
            tau, c1 = const("tau"), const("c1")
            numpyro.deterministic("d", tau - c1)
        else:
            d = sample_site("d", options, {"dist": "normal", "loc": 0.0, "scale": 1.0}, (A,))
            if "tau" in known:
                tau = const("tau")
                c1 = numpyro.deterministic("c1", tau - d)
            elif "c1" in known:
                c1 = const("c1")
                tau = numpyro.deterministic("tau", d + c1)
            else:
                c1 = sample_site("c1", options, {"dist": "normal", "loc": 0.25, "scale": 0.25}, (A,))
                tau = numpyro.deterministic("tau", d + c1)
        return {"c1": c1, "c2": c2, "tau": tau}

    def unidentified_by(self, overrides, known):
        """``["c1"]`` when play under ``overrides`` depends on the prior-only ``c1``, else ``[]``.

        Only ``d = tau - c1`` and ``c2`` are identified. Write each change of ``tau`` and
        ``c1`` as ``x' = a x + b`` per resource (``=``: ``a = 0``; ``+``: ``a = 1``; ``*``:
        ``a`` the factor). With ``tau = d + c1``::

            d' = tau' - c1' = a_tau d + (a_tau - a_c1) c1 + (b_tau - b_c1)

        so the new payoff depends on ``c1`` (only its prior speaks) wherever
        ``a_tau != a_c1``: replacing ``tau`` (or ``c1``) alone, and also *scaling* ``tau``
        by a factor other than 1 (``tau *= f`` gives ``f d + (f - 1) c1``: ``tau`` itself
        is not identified, so neither is a multiple of it). ``tau += v`` (or ``c1 += v``),
        replacing both ``tau`` and ``c1``, and any change of ``c2`` are identified. With
        ``tau`` or ``c1`` known, ``c1`` is identified and every change is.
        """
        if {"tau", "c1"} & set(known):
            return []
        A = self.num_actions
        coefficient = {"tau": np.ones(A), "c1": np.ones(A)}
        for name, op, value in overrides:
            if name not in coefficient:
                continue
            if op == "=":
                coefficient[name] = np.zeros(A)
            elif op == "*":
                coefficient[name] = coefficient[name] * np.broadcast_to(np.asarray(value, float), (A,))
        return ["c1"] if np.any(coefficient["tau"] != coefficient["c1"]) else []

    def lever_transfers(self, params, joint_action, present=None):
        """The toll each agent receives, ``tau[a_i] L_i`` (``L_i``: present agents on its resource;
        a negative ``tau`` is a charge), so that ``M(a)_i - tau[a_i] L_i = -(c1[a_i] L_i + c2[a_i] L_i**2)``
        is the agent's congestion cost alone (An & Du 2026, §5, E2)."""
        counts, _ = present_counts(joint_action, present, self.num_actions)
        transfers = params["tau"][joint_action] * counts[joint_action]
        return transfers if present is None else jnp.where(present, transfers, 0.0)

    def counterfactual_payoffs(self, params, joint_action, present=None):
        _, counts_minus = present_counts(joint_action, present, self.num_actions)
        load = counts_minus + 1.0  # (n, A): load on k had agent i joined it
        return -(params["c1"] * load + params["c2"] * load**2) + params["tau"] * load
