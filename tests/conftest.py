"""Registry-driven fixtures: every mechanism family × every learner, on small games.

A family or learner added to a registry without a small test configuration here makes
``test_every_family_has_a_case`` / ``test_every_learner_has_values`` fail, so the
invariants always run over the whole registry.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # make ``reference`` importable

from bayes_diml.learners import LEARNERS  # noqa: E402
from bayes_diml.mechanisms import FAMILIES  # noqa: E402
from bayes_diml.model import Model  # noqa: E402

NUM_AGENTS = 3

_FEATURE_RNG_SEED = 20260117


def _linear_features(num_actions: int, num_features: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(_FEATURE_RNG_SEED)
    return {
        "own": rng.normal(size=(num_actions, num_features)),
        "cross": rng.normal(size=(num_actions, num_actions, num_features)) / 2,
    }


# case id -> (family, options). Several cases per family where an option changes the math.
MECHANISM_CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "tabular": ("tabular", {"num_actions": 3}),
    "congestion": ("congestion", {"num_actions": 4}),
    "public_goods": ("public_goods", {"num_actions": 4, "subsidy_hidden": (5,)}),
    "public_goods_nosubsidy": ("public_goods", {"num_actions": 3, "subsidy_hidden": None}),
    "neural": ("neural", {"num_actions": 3, "hidden": (8, 6), "embed_dim": 3}),
    # a joint space too large to tabulate (6**5 = 7776 joint actions): the per-round network path
    "neural_wide": ("neural", {"num_agents": 5, "num_actions": 6, "hidden": (6,), "embed_dim": 2}),
    "anonymous": ("anonymous", {"num_actions": 4, "hidden": (8, 6), "embed_dim": 3}),
    "linear": ("linear", {"num_actions": 3, **_linear_features(3)}),
    "linear_own": ("linear", {"num_actions": 3, "own": _linear_features(3)["own"]}),
    "linear_cross": ("linear", {"num_actions": 4, "cross": _linear_features(4)["cross"]}),
}

# Learner parameter values by name (inside every domain).
LEARNER_VALUES: dict[str, float] = {
    "alpha": 0.3, "beta": 3.0, "eps": 0.1, "c": 1.5,  # logit-Q, bandit-Q
    "phi": 0.8, "rho": 0.6, "delta": 0.4,  # EWA (with beta, eps)
    "eta": 0.7,  # Hedge
}
# Per-agent (num_agents,) values by name, for the heterogeneous-agent tests.
PER_AGENT_LEARNER_VALUES: dict[str, np.ndarray] = {
    "alpha": np.array([0.2, 0.5, 0.9]),
    "beta": np.array([1.0, 2.5, 4.0]),
    "eps": np.array([0.0, 0.05, 0.3]),
    "c": np.array([1.0, 2.0, 5.0]),
    # EWA: the domain edges (rho = 0, 1; delta = 0, 1; phi = 1) agent by agent
    "phi": np.array([0.5, 0.9, 1.0]),
    "rho": np.array([0.0, 0.6, 1.0]),
    "delta": np.array([1.0, 0.0, 0.5]),
    "eta": np.array([0.2, 1.0, 2.5]),
}

# Families whose package code is known to be broken: their cases are strict xfails, so the
# suite stays green and an eventual fix shows up as XPASS(strict) -> delete the entry.
KNOWN_BROKEN_FAMILIES: dict[str, str] = {}


def case_marks(case_id: str) -> list:
    family = MECHANISM_CASES[case_id][0]
    if family in KNOWN_BROKEN_FAMILIES:
        return [pytest.mark.xfail(strict=True, reason=KNOWN_BROKEN_FAMILIES[family])]
    return []


def case_param(case_id: str, *values, id: str | None = None):
    """``pytest.param(*values)`` carrying the case's known-bug marks."""
    values = values or (case_id,)
    return pytest.param(*values, marks=case_marks(case_id), id=id)


CASE_IDS = sorted(MECHANISM_CASES)
LEARNER_IDS = sorted(LEARNERS)
ABSENCE_CASE_IDS = [c for c in CASE_IDS if FAMILIES[MECHANISM_CASES[c][0]].allows_absence]
# One case per family (the case named after it): the model-level tests (likelihood,
# simulation, gradients: one compilation each) run over family x learner on these.
FAMILY_CASE_IDS = sorted(family for family in FAMILIES if family in MECHANISM_CASES)
FAMILY_LEARNER_IDS = [(c, lname) for c in FAMILY_CASE_IDS for lname in LEARNER_IDS]


class Case(NamedTuple):
    """A small model with random parameters, and what the NumPy reference needs."""

    case_id: str
    family: str
    mechanism: Any
    model: Model | None
    params: dict  # {"mechanism": {...}, "learner": {...}}
    features: dict  # keyword arguments of the reference payoff (linear features)
    num_agents: int
    num_actions: int

    @property
    def allows_absence(self) -> bool:
        return type(self.mechanism).allows_absence

    @property
    def learner_name(self) -> str:
        return self.model.learner.name


def _case_seed(case_id: str) -> int:
    return sum(ord(ch) * (i + 1) for i, ch in enumerate(case_id)) % (2**31)


@functools.cache
def build_mechanism(case_id: str):
    family, options = MECHANISM_CASES[case_id]
    options = {"num_agents": NUM_AGENTS, **options}
    mechanism = FAMILIES[family](**options)
    # jitted: one compilation instead of one per eager random op
    params = jax.jit(mechanism.init_params)(jax.random.key(_case_seed(case_id)))
    features = {k: options[k] for k in ("own", "cross") if k in options}
    return family, mechanism, params, features


def learner_values(learner, per_agent: bool = False) -> dict:
    table = PER_AGENT_LEARNER_VALUES if per_agent else LEARNER_VALUES
    return {name: jnp.asarray(table[name], jnp.float32) for name in learner.param_names}


@functools.cache
def build_case(case_id: str, learner_name: str | None = None) -> Case:
    """Cached (so jitted code keyed on the model compiles once per session)."""
    family, mechanism, mech_params, features = build_mechanism(case_id)
    model, learner_params = None, {}
    if learner_name is not None:
        learner = LEARNERS[learner_name]
        model = Model(mechanism, learner, learner_params={k: LEARNER_VALUES[k] for k in learner.param_names})
        learner_params = learner_values(learner)
    return Case(
        case_id=case_id,
        family=family,
        mechanism=mechanism,
        model=model,
        params={"mechanism": mech_params, "learner": learner_params},
        features=features,
        num_agents=mechanism.num_agents,
        num_actions=mechanism.num_actions,
    )


@pytest.fixture(params=[case_param(c) for c in CASE_IDS])
def mechanism_case(request) -> Case:
    """Every mechanism case (no learner)."""
    return build_case(request.param)


@pytest.fixture(params=[case_param(c) for c in ABSENCE_CASE_IDS])
def absence_case(request) -> Case:
    """Every mechanism case whose family allows absent agents."""
    return build_case(request.param)


@pytest.fixture(params=LEARNER_IDS)
def learner(request):
    """Every learner in the registry."""
    return LEARNERS[request.param]


@pytest.fixture(params=[case_param(c, (c, lname), id=f"{c}-{lname}") for c, lname in FAMILY_LEARNER_IDS])
def model_case(request) -> Case:
    """Every mechanism family × every learner: a model and its parameters."""
    return build_case(*request.param)


# ------------------------------------------------------------------ data


def make_data(rng: np.random.Generator, case: Case, num_episodes: int, num_rounds: int, kind: str):
    """Random ``(actions, mask)`` of shape ``(E, T, n)``.

    kind: ``"full"`` (nobody masked), ``"trailing"`` (episodes of unequal length:
    trailing masked rounds; episode 0 has full length), ``"absent"`` (trailing rounds
    and agents absent mid-episode, never a whole empty round inside an episode).
    Masked entries hold random valid actions: they must not matter.
    """
    n, A = case.num_agents, case.num_actions
    actions = rng.integers(0, A, size=(num_episodes, num_rounds, n)).astype(np.int32)
    mask = np.zeros(actions.shape, bool)
    if kind in ("trailing", "absent"):
        lengths = [num_rounds] + list(rng.integers(1, num_rounds + 1, size=num_episodes - 1))
        lengths[-1] = 1 if num_episodes > 2 else lengths[-1]  # one single-round episode
        for e, length in enumerate(lengths):
            mask[e, length:] = True
        if kind == "absent":
            for e, length in enumerate(lengths):
                for t in range(length):
                    absent = rng.random(n) < 0.35
                    if absent.all():
                        absent[rng.integers(n)] = False
                    mask[e, t] = absent
    elif kind != "full":
        raise ValueError(kind)
    return actions, mask


def has_mid_episode_absence(mask: np.ndarray) -> bool:
    """True when some agent is absent in a round in which somebody else played."""
    return bool((mask & ~mask.all(axis=2, keepdims=True)).any())


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop JAX's caches of compiled programs after each test module: one pytest process
    runs the whole suite, and thousands of cached executables would otherwise pile up in
    its memory (a 2-core CI machine has little to spare)."""
    yield
    jax.clear_caches()
