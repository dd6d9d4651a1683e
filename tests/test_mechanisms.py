"""Mechanism families against the plain-NumPy reference (docs/design.md §4)."""

from __future__ import annotations

import itertools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayes_diml.errors import SpecError
from bayes_diml.mechanisms import FAMILIES, Anonymous, Mechanism, Tabular

import reference as ref
from conftest import MECHANISM_CASES, build_case, case_param

# float32 payoffs of O(1) against float64 references
PAYOFF_RTOL = 1e-5
PAYOFF_ATOL = 1e-5
NUM_JOINT_ACTIONS = 12  # random joint actions per case
SYMMETRIC_FAMILIES = {"anonymous", "congestion", "public_goods", "linear"}  # payoff depends on a_i and counts only


def _random_joint_actions(case, seed, count=NUM_JOINT_ACTIONS):
    rng = np.random.default_rng(seed)
    return rng.integers(0, case.num_actions, size=(count, case.num_agents)).astype(np.int32)


def _random_presence(case, seed, count=NUM_JOINT_ACTIONS):
    """Presence masks with at least one present agent; includes a lone agent and everybody."""
    rng = np.random.default_rng(seed)
    present = rng.random((count, case.num_agents)) < 0.6
    present[0] = True
    present[1] = False
    present[1, 0] = True
    for row in present:
        if not row.any():
            row[rng.integers(case.num_agents)] = True
    return present


def _ref_kwargs(case):
    return {"num_actions": case.num_actions, **case.features}


def test_every_family_has_a_case():
    covered = {family for family, _ in MECHANISM_CASES.values()}
    assert covered == set(FAMILIES), f"families without a test case: {set(FAMILIES) - covered}"
    assert set(FAMILIES) == set(ref.PAYOFF_FUNCTIONS), "every family needs a NumPy reference payoff"


def test_param_shapes_match_init(mechanism_case):
    mech, params = mechanism_case.mechanism, mechanism_case.params["mechanism"]
    shapes = mech.param_shapes()
    assert set(params) == set(shapes)
    for name, shape in shapes.items():
        assert np.shape(params[name]) == tuple(shape), name
    mech.check_params(params)  # accepts its own random parameters


def test_check_params_refuses_wrong_shape_and_missing_key(mechanism_case):
    mech, params = mechanism_case.mechanism, dict(mechanism_case.params["mechanism"])
    name = sorted(params)[0]
    with pytest.raises(SpecError, match=name):
        mech.check_params({**params, name: np.zeros(np.shape(params[name]) + (2,))})
    with pytest.raises(SpecError, match=name):
        mech.check_params({k: v for k, v in params.items() if k != name})


def test_payoffs_match_reference(mechanism_case):
    case = mechanism_case
    params = case.params["mechanism"]
    joint = _random_joint_actions(case, seed=1)
    eager = [np.asarray(case.mechanism.payoffs(params, jnp.asarray(a))) for a in joint[:1]]
    batched = np.asarray(jax.jit(jax.vmap(case.mechanism.payoffs, (None, 0)))(params, jnp.asarray(joint)))
    for a, got in [*zip(joint, eager), *zip(joint, batched)]:
        want = ref.payoffs(case.family, params, a, None, **_ref_kwargs(case))
        np.testing.assert_allclose(got, want, rtol=PAYOFF_RTOL, atol=PAYOFF_ATOL, err_msg=f"a={a}")


def test_counterfactuals_match_brute_force(mechanism_case):
    case = mechanism_case
    params = case.params["mechanism"]
    joint = _random_joint_actions(case, seed=2)
    # eager, one joint action
    for a in joint[:1]:
        got = np.asarray(case.mechanism.counterfactual_payoffs(params, jnp.asarray(a)))
        want = ref.counterfactual_payoffs(case.family, params, a, None, **_ref_kwargs(case))
        assert got.shape == (case.num_agents, case.num_actions)
        np.testing.assert_allclose(got, want, rtol=PAYOFF_RTOL, atol=PAYOFF_ATOL, err_msg=f"a={a}")
    # jit + vmap over joint actions (the path the likelihood takes), everybody present
    batched = jax.jit(jax.vmap(case.mechanism.counterfactual_payoffs, (None, 0, 0)))
    got = np.asarray(batched(params, jnp.asarray(joint), jnp.ones(joint.shape, bool)))
    for a, g in zip(joint, got):
        want = ref.counterfactual_payoffs(case.family, params, a, None, **_ref_kwargs(case))
        np.testing.assert_allclose(g, want, rtol=PAYOFF_RTOL, atol=PAYOFF_ATOL, err_msg=f"a={a}")


def test_prepared_path_matches_brute_force(mechanism_case):
    """``prepare`` (work hoisted out of the round loops, e.g. payoff tables) followed by
    ``prepared_counterfactual_payoffs`` -- the path the likelihood and the simulator take."""
    case = mechanism_case
    mech, params = case.mechanism, case.params["mechanism"]
    joint = _random_joint_actions(case, seed=8)
    presence = _random_presence(case, seed=9) if case.allows_absence else np.ones(joint.shape, bool)

    @jax.jit
    def batched(params, joint, presence):
        prepared = mech.prepare(params)
        return jax.vmap(mech.prepared_counterfactual_payoffs, (None, 0, 0))(prepared, joint, presence)

    got = np.asarray(batched(params, jnp.asarray(joint), jnp.asarray(presence)))
    for a, present, g in zip(joint, presence, got):
        want = ref.counterfactual_payoffs(case.family, params, a, present, **_ref_kwargs(case))
        rows = np.flatnonzero(present)
        np.testing.assert_allclose(g[rows], want[rows], rtol=PAYOFF_RTOL, atol=PAYOFF_ATOL,
                                   err_msg=f"a={a} present={present}")


def test_absent_agents_do_not_count(absence_case):
    """With a presence mask, rows of present agents equal the reference (absent ones are not counted)."""
    case = absence_case
    params = case.params["mechanism"]
    joint = _random_joint_actions(case, seed=3)
    presence = _random_presence(case, seed=4)
    batched = jax.jit(jax.vmap(case.mechanism.counterfactual_payoffs, (None, 0, 0)))
    got_cf = np.asarray(batched(params, jnp.asarray(joint), jnp.asarray(presence)))
    got_pay = np.asarray(jax.jit(jax.vmap(case.mechanism.payoffs, (None, 0, 0)))(params, jnp.asarray(joint), jnp.asarray(presence)))
    for a, present, g, got in zip(joint, presence, got_cf, got_pay):
        want_cf = ref.counterfactual_payoffs(case.family, params, a, present, **_ref_kwargs(case))
        want = ref.payoffs(case.family, params, a, present, **_ref_kwargs(case))
        rows = np.flatnonzero(present)
        np.testing.assert_allclose(g[rows], want_cf[rows], rtol=PAYOFF_RTOL, atol=PAYOFF_ATOL,
                                   err_msg=f"a={a} present={present}")
        np.testing.assert_allclose(got[rows], want[rows], rtol=PAYOFF_RTOL, atol=PAYOFF_ATOL,
                                   err_msg=f"a={a} present={present}")


def test_absence_changes_payoffs(absence_case):
    """The presence mask is not ignored: dropping an agent changes somebody's counterfactuals.

    (Guards the test above against a reference and a package that both ignore ``present``.)
    """
    case = absence_case
    params = case.params["mechanism"]
    a = (np.arange(case.num_agents) + 1) % 2  # [1, 0, 1]: the dropped agent has level > 0 and its own action
    a = a.astype(np.int32)
    present = np.ones(case.num_agents, bool)
    present[-1] = False
    full = ref.counterfactual_payoffs(case.family, params, a, None, **_ref_kwargs(case))
    dropped = ref.counterfactual_payoffs(case.family, params, a, present, **_ref_kwargs(case))
    if case.case_id == "linear_own":  # no interaction term at all
        np.testing.assert_allclose(full, dropped)
        return
    assert not np.allclose(full[:-1], dropped[:-1])
    got = np.asarray(case.mechanism.counterfactual_payoffs(params, jnp.asarray(a), jnp.asarray(present)))
    np.testing.assert_allclose(got[:-1], dropped[:-1], rtol=PAYOFF_RTOL, atol=PAYOFF_ATOL)


# ------------------------------------------------------------- anonymous games


def _small_anonymous():
    mech = Anonymous(num_agents=3, num_actions=3, hidden=(8, 6), embed_dim=3)
    params = jax.jit(mech.init_params)(jax.random.key(7))
    # make payoffs O(1) so that differences are visible
    params = {k: v * 2.0 for k, v in params.items()}
    return mech, params


def test_anonymous_payoff_function_matches_reference():
    mech, params = _small_anonymous()
    n, A = mech.num_agents, mech.num_actions
    for a in itertools.product(range(A), repeat=n):
        for i in range(n):
            counts = np.zeros(A)
            for j in range(n):
                if j != i:
                    counts[a[j]] += 1
            got = float(mech.payoff_function(params, jnp.asarray(a[i]), jnp.asarray(counts / (n - 1))))
            want = ref.agent_payoff("anonymous", params, a, None, i, A)
            np.testing.assert_allclose(got, want, rtol=PAYOFF_RTOL, atol=PAYOFF_ATOL)


def test_anonymous_equals_enumerated_tabular():
    """Enumerate f(a_i, counts_-i/(n-1)) over all joint actions into a table: the tabular
    family with that table has the same payoffs and counterfactuals (checks the A x A
    table trick and the tabular index convention together)."""
    mech, params = _small_anonymous()
    n, A = mech.num_agents, mech.num_actions
    table = np.zeros((A**n, n))
    for a in itertools.product(range(A), repeat=n):
        index = sum(a[j] * A**j for j in range(n))  # agent 0 least significant
        for i in range(n):
            counts = np.zeros(A)
            for j in range(n):
                if j != i:
                    counts[a[j]] += 1
            table[index, i] = float(mech.payoff_function(params, jnp.asarray(a[i]), jnp.asarray(counts / (n - 1))))
    tab = Tabular(num_agents=n, num_actions=A)
    tab_params = {"payoffs": jnp.asarray(table, jnp.float32)}
    for a in itertools.product(range(A), repeat=n):
        a = jnp.asarray(a, jnp.int32)
        np.testing.assert_allclose(
            np.asarray(mech.counterfactual_payoffs(params, a)),
            np.asarray(tab.counterfactual_payoffs(tab_params, a)),
            rtol=PAYOFF_RTOL, atol=PAYOFF_ATOL, err_msg=f"a={a}",
        )
        np.testing.assert_allclose(
            np.asarray(mech.payoffs(params, a)), np.asarray(tab.payoffs(tab_params, a)),
            rtol=PAYOFF_RTOL, atol=PAYOFF_ATOL, err_msg=f"a={a}",
        )


@pytest.mark.parametrize("case_id", [case_param(c) for c, (f, _) in sorted(MECHANISM_CASES.items()) if f in SYMMETRIC_FAMILIES])
def test_symmetric_families_are_permutation_equivariant(case_id):
    """Permuting agents permutes payoffs (and counterfactual rows), with and without absences."""
    case = build_case(case_id)
    params = case.params["mechanism"]
    mech = case.mechanism
    rng = np.random.default_rng(5)
    joint = _random_joint_actions(case, seed=6)
    presence = _random_presence(case, seed=7)
    perms = np.stack([rng.permutation(case.num_agents) for _ in joint])
    joint_perm = np.take_along_axis(joint, perms, axis=1)
    presence_perm = np.take_along_axis(presence, perms, axis=1)

    @jax.jit
    def both(a, present):
        return (jax.vmap(mech.counterfactual_payoffs, (None, 0, 0))(params, a, present),
                jax.vmap(mech.payoffs, (None, 0, 0))(params, a, present))

    everybody = np.ones(joint.shape, bool)
    for pres, pres_perm in ((everybody, everybody), (presence, presence_perm)):
        cf, pay = (np.asarray(x) for x in both(jnp.asarray(joint), jnp.asarray(pres)))
        cf_p, pay_p = (np.asarray(x) for x in both(jnp.asarray(joint_perm), jnp.asarray(pres_perm)))
        for e, perm in enumerate(perms):
            rows = np.flatnonzero(pres_perm[e])
            np.testing.assert_allclose(cf_p[e][rows], cf[e][perm][rows], rtol=PAYOFF_RTOL, atol=PAYOFF_ATOL)
            np.testing.assert_allclose(pay_p[e][rows], pay[e][perm][rows], rtol=PAYOFF_RTOL, atol=PAYOFF_ATOL)
    # and present=None means everybody
    a = jnp.asarray(joint[0])
    np.testing.assert_allclose(np.asarray(mech.payoffs(params, a)),
                               np.asarray(mech.payoffs(params, a, jnp.ones(case.num_agents, bool))),
                               rtol=PAYOFF_RTOL, atol=PAYOFF_ATOL)


def test_neural_is_not_permutation_equivariant():
    """Control for the test above: a joint family distinguishes agents, so it can fail."""
    case = build_case("neural")
    params = case.params["mechanism"]
    a = jnp.asarray([0, 1, 2], jnp.int32)
    perm = np.array([1, 2, 0])
    pay = np.asarray(case.mechanism.payoffs(params, a))
    pay_perm = np.asarray(case.mechanism.payoffs(params, a[perm]))
    assert not np.allclose(pay_perm, pay[perm], atol=1e-3)


# ------------------------------------------------- family knowledge on the family (issue 16)
REPO = Path(__file__).resolve().parents[1]
FAMILY_CLASS_NAMES = {cls.__name__ for cls in FAMILIES.values()} | {"NetworkMechanism"}


def _write_files(files: dict, folder: Path) -> None:
    for name, arrays in files.items():
        np.savez(folder / name, **arrays)


def test_spec_table_round_trip(mechanism_case, tmp_path):
    """spec table -> family (``from_spec``, through the registry) -> spec table: equal, and
    the same parameters give the same payoffs."""
    mech = mechanism_case.mechanism
    table, files = mech.spec_table()
    assert table["family"] == mech.family and FAMILIES[table["family"]] is type(mech)
    assert set(table) - {"family"} <= type(mech).spec_options
    _write_files(files, tmp_path)
    again = FAMILIES[table["family"]].from_spec(dict(table), mech.num_agents, mech.num_actions, "[mechanism]", tmp_path)
    table_again, files_again = again.spec_table()
    assert table_again == table
    assert set(files_again) == set(files)
    for name, arrays in files.items():
        assert set(files_again[name]) == set(arrays)
        for key, value in arrays.items():
            np.testing.assert_array_equal(files_again[name][key], value)
    assert again.param_shapes() == mech.param_shapes()
    params = mechanism_case.params["mechanism"]
    joint = jnp.asarray(_random_joint_actions(mechanism_case, seed=11))
    np.testing.assert_array_equal(np.asarray(jax.vmap(again.payoffs, (None, 0))(params, joint)),
                                  np.asarray(jax.vmap(mech.payoffs, (None, 0))(params, joint)))


def test_from_spec_refuses_unknown_and_foreign_keys(mechanism_case, tmp_path):
    mech = mechanism_case.mechanism
    table, files = mech.spec_table()
    _write_files(files, tmp_path)
    with pytest.raises(SpecError, match=r"\[mechanism\]: unknown key 'no_such_key'"):
        type(mech).from_spec({**table, "no_such_key": 1}, mech.num_agents, mech.num_actions, "[mechanism]", tmp_path)
    foreign = set().union(*(cls.spec_options for cls in FAMILIES.values())) - type(mech).spec_options
    for key in sorted(foreign):
        with pytest.raises(SpecError, match=f"unknown key '{key}'"):
            type(mech).from_spec({**table, key: 1}, mech.num_agents, mech.num_actions, "[mechanism]", tmp_path)


def test_scale_params_scales_every_difference(mechanism_case):
    """``scale_params(params, c)`` multiplies every payoff difference by ``c`` and leaves
    the parameters outside ``output_params`` alone."""
    from bayes_diml.differences import random_queries, true_differences

    mech = mechanism_case.mechanism
    params = {k: np.asarray(v) for k, v in mechanism_case.params["mechanism"].items()}
    names = mech.output_params()
    assert names and set(names) <= set(mech.param_shapes())
    scaled = mech.scale_params(params, 2.5)
    assert set(scaled) == set(params)
    for name in set(params) - set(names):
        np.testing.assert_array_equal(scaled[name], params[name])
    actions = _random_joint_actions(mechanism_case, seed=12, count=40).reshape(4, 10, -1)
    codes = random_queries(actions, None, mech.num_actions, 60, seed=0, distinct=True)
    base = true_differences(mech, params, codes)
    assert np.std(base) > 1e-3  # a test that can fail
    np.testing.assert_allclose(true_differences(mech, scaled, codes), 2.5 * base, rtol=1e-4, atol=1e-6)


def test_registry_families_implement_the_family_interface():
    common = {"family", "truth", "prior"}
    for name, cls in FAMILIES.items():
        assert cls.family == name and name
        assert isinstance(cls.spec_options, frozenset) and not (cls.spec_options & common), name
        assert cls.prior_numbers <= cls.prior_options and set(cls.prior_domains) <= cls.prior_options, name
        for method in ("param_shapes", "init_params", "sample_prior", "counterfactual_payoffs", "output_params"):
            assert getattr(cls, method) is not getattr(Mechanism, method), f"{name} lacks {method}"
        assert isinstance(cls.__dict__.get("from_spec", Mechanism.__dict__["from_spec"]), classmethod)
        if cls.spec_options:  # a family with options parses and writes them itself
            assert cls.spec_kwargs.__func__ is not Mechanism.spec_kwargs.__func__, name
            assert cls.spec_table is not Mechanism.spec_table, name


def test_neural_and_anonymous_share_their_network_code():
    from bayes_diml.mechanisms import NetworkMechanism, Neural

    for cls in (Neural, Anonymous):
        assert issubclass(cls, NetworkMechanism)
        for method in ("param_shapes", "init_params", "sample_prior", "output_params", "spec_table"):
            assert method not in cls.__dict__, f"{cls.__name__}.{method} should come from NetworkMechanism"
    assert Neural(3, 3).embedding_size == 6 and Anonymous(3, 3).embedding_size == 12
    assert Neural(2, 40).embedding_size == 24 and Anonymous(2, 40).embedding_size == 32


def test_absence_families_come_from_the_registry():
    from bayes_diml.trajectories import absence_families

    assert absence_families() == tuple(n for n, cls in FAMILIES.items() if cls.allows_absence)
    assert "tabular" not in absence_families() and "congestion" in absence_families()


def _family_chains(source: str) -> list[int]:
    """Lines that compare a ``family`` to a string or family name, test ``isinstance`` against a
    family class, key a dict literal by family names or list family names by hand."""
    import ast

    names = set(FAMILIES)

    def is_family(node):
        return (isinstance(node, ast.Attribute) and node.attr == "family") or (isinstance(node, ast.Name) and node.id == "family")

    def strings(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return {node.value}
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return set().union(*(strings(e) for e in node.elts)) if node.elts else set()
        return set()

    def class_names(node):
        if isinstance(node, (ast.Tuple, ast.List)):
            return set().union(*(class_names(e) for e in node.elts)) if node.elts else set()
        if isinstance(node, ast.Name):
            return {node.id}
        if isinstance(node, ast.Attribute):
            return {node.attr}
        return set()

    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(is_family(o) for o in operands) and any(strings(o) for o in operands if not is_family(o)):
                lines.append(node.lineno)
            elif any(strings(o) and strings(o) <= names for o in operands):
                lines.append(node.lineno)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("isinstance", "issubclass"):
            if len(node.args) == 2 and class_names(node.args[1]) & FAMILY_CLASS_NAMES:
                lines.append(node.lineno)
        elif isinstance(node, ast.Dict):
            keys = [k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)]
            if len(set(keys) & names) >= 2:
                lines.append(node.lineno)
        elif isinstance(node, (ast.Tuple, ast.List, ast.Set)) and len(strings(node) & names) >= 2:
            lines.append(node.lineno)  # a hand-kept list of families
    return sorted(set(lines))


def test_family_chain_detector_can_fail():
    assert _family_chains('if model.mechanism.family == "tabular":\n    pass\n') == [1]
    assert _family_chains('x = family in ("neural", "anonymous")\n') == [1]
    assert _family_chains('x = mech.family != name\n') == []
    assert _family_chains('x = name == "public_goods"\n') == [1]
    assert _family_chains('x = isinstance(m, Tabular)\n') == [1]
    assert _family_chains('x = {"tabular": 1, "linear": 2}\n') == [1]
    assert _family_chains('x = "family" in change\n') == []
    assert _family_chains('ABSENT = ("congestion", "anonymous")\n') == [1]


def test_no_family_chains_outside_mechanisms():
    """Family knowledge lives on the family classes: no module outside
    ``bayes_diml/mechanisms/`` branches on a family's name or class."""
    files = [p for p in sorted((REPO / "bayes_diml").rglob("*.py")) if "mechanisms" not in p.relative_to(REPO).parts]
    files += sorted((REPO / "experiments").glob("*.py"))
    assert len(files) > 20
    found = {str(p.relative_to(REPO)): lines for p in files if (lines := _family_chains(p.read_text(encoding="utf-8")))}
    assert not found, f"family chains (move the logic onto the family class): {found}"
