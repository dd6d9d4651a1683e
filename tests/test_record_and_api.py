"""Issue 16, points 4, 6 and 7: ``Fit`` is a record (analyses are functions of it), one
JSON encoder writes no bare NaN, one atomic writer, no import circle among the record and
its analyses, models compare by value (and so share compiled programs), and a curated
public API whose random functions take an explicit seed."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import math
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import bayes_diml as bd
from bayes_diml._io import atomic_write
from bayes_diml._json import dumps, jsonable
from bayes_diml.learners import logit_q
from bayes_diml.mechanisms import Congestion, Linear
from bayes_diml.model import Model
from bayes_diml.priors import Prior

PACKAGE = Path(bd.__file__).parent
LEARNER = {"alpha": 0.3, "beta": 3.0, "eps": 0.05}
TRUTH = {"c1": np.array([0.2, 0.3, 0.1]), "c2": np.array([0.1, 0.05, 0.12]), "tau": np.array([0.1, 0.0, 0.2])}


def congestion_model(**learner):
    return Model(Congestion(num_agents=3, num_actions=3), logit_q, {**LEARNER, **learner})


@pytest.fixture(scope="module")
def map_fit():
    model = congestion_model()
    data = bd.simulate(model, {"mechanism": TRUTH, "learner": LEARNER}, num_episodes=4, num_rounds=10, seed=3)
    return bd.fit(model, data, method="map", seed=1, steps=30, restarts=1, progress=False, posterior_predictive_draws=2)


def _strict_loads(text: str):
    """``json.loads`` that refuses ``NaN``, ``Infinity`` and ``-Infinity`` (not JSON)."""

    def refuse(constant):
        raise ValueError(f"bare {constant} in JSON")

    return json.loads(text, parse_constant=refuse)


# ------------------------------------------------------------------ Fit as a record
def test_fit_is_frozen(map_fit):
    with pytest.raises(dataclasses.FrozenInstanceError):
        map_fit.log_likelihood = None
    with pytest.raises(dataclasses.FrozenInstanceError):
        map_fit.posterior_predictive = None


def test_fit_is_built_complete(map_fit):
    assert map_fit.log_likelihood.shape == (map_fit.num_chains, map_fit.num_draws, map_fit.data.num_episodes)
    assert map_fit.posterior_predictive["action_frequency"].shape[-2:] == (10, 3)
    for key in ("wall_seconds", "method", "round_chunk", "seed", "sharded"):
        assert key in map_fit.info


def test_fit_json_never_holds_a_bare_nan(map_fit, tmp_path):
    weird = dataclasses.replace(
        map_fit, info={**map_fit.info, "nan": float("nan"), "inf": np.float32("inf"), "array": np.array([1.0, np.nan])}
    )
    folder = bd.save_fit(weird, tmp_path / "run")
    meta = _strict_loads((folder / "fit.json").read_text(encoding="utf-8"))
    assert meta["info"]["nan"] is None and meta["info"]["inf"] is None and meta["info"]["array"] == [1.0, None]
    again = bd.load_fit(folder)
    assert again.info["nan"] is None
    # the DataTree's attrs carry the same info, also as strict JSON
    _strict_loads(weird.to_arviz().attrs["info"])


def test_run_folder_json_files_are_strict_json(map_fit, tmp_path):
    from bayes_diml.run_folder import save_run

    save_run(map_fit, tmp_path / "run")  # one MAP draw: R-hat and ESS are NaN in diagnostics.json
    for name in ("fit.json", "diagnostics.json", "provenance.json"):
        _strict_loads((tmp_path / "run" / name).read_text(encoding="utf-8"))


def test_jsonable():
    from pathlib import PurePosixPath

    value = {1: (np.int64(2), np.float32(0.5), np.bool_(True)), "x": [math.inf, -math.inf, math.nan], "p": PurePosixPath("a/b")}
    assert jsonable(value) == {"1": [2, 0.5, True], "x": [None, None, None], "p": "a/b"}
    with pytest.raises(TypeError):
        dumps({"x": object()})


def test_atomic_write_leaves_the_old_file_when_the_writer_fails(tmp_path):
    path = tmp_path / "out.bin"
    atomic_write(path, lambda handle: handle.write(b"old"), binary=True)

    def broken(handle):
        handle.write("half")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        atomic_write(path, broken)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"], "a temporary file was left behind"


def test_one_atomic_writer_and_one_json_encoder():
    """Only ``bayes_diml/_io.py`` renames temporary files into place (plus the run-folder
    swap of ``storage.atomic_folder``); only ``bayes_diml/_json.py`` defines a JSON encoder."""
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        rel = path.relative_to(PACKAGE).as_posix()
        if rel not in ("_io.py", "inference/storage.py"):
            assert "os.replace(" not in text, f"{rel} renames files itself; use bayes_diml._io.atomic_write"
        if rel != "_json.py":
            assert "def _jsonable" not in text, f"{rel} defines its own JSON encoder; use bayes_diml._json"


# ------------------------------------------------------------------ imports
ANALYSES = ("results", "storage", "diagnostics")


def _module_level_imports(path: Path, package: str) -> set[str]:
    """Modules of the package that ``path`` imports when it is imported: import statements
    at module level (function-local imports run only when the function is called)."""
    module = package + "." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    if module.endswith(".__init__"):
        module = module[: -len(".__init__")]
        parent = module
    else:
        parent = module.rsplit(".", 1)[0]
    out = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == package}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = parent.rsplit(".", node.level - 1)[0] if node.level > 1 else parent
                target = base + ("." + node.module if node.module else "")
            else:
                target = node.module or ""
            if target.split(".")[0] != package:
                continue
            for alias in node.names:  # ``from . import plots`` imports a module
                candidate = f"{target}.{alias.name}"
                out.add(candidate if _is_module(candidate, package) else target)
    return {m for m in out if _is_module(m, package)}


def _is_module(name: str, package: str) -> bool:
    parts = name.split(".")[1:]
    return (PACKAGE.joinpath(*parts).with_suffix(".py")).is_file() or (PACKAGE.joinpath(*parts) / "__init__.py").is_file()


def test_no_import_cycle_among_the_record_and_its_analyses():
    """The rule: at module level, ``storage`` and ``diagnostics`` may import ``results``
    (the analyses depend on the record), ``results`` imports neither, and no chain of
    module-level imports leads from one of the three back to itself. ``Fit``'s thin
    method aliases import their analysis inside the method, which is not a cycle: it
    runs only when called, after every module is loaded."""
    package = "bayes_diml"
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        module = package + "." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        if module.endswith(".__init__"):
            continue  # a package's __init__ re-exports; importing a submodule runs it anyway
        graph[module] = {m for m in _module_level_imports(path, package) if not (PACKAGE.joinpath(*m.split(".")[1:]) / "__init__.py").is_file()}
    names = {f"{package}.inference.{m}" for m in ANALYSES}
    assert not graph[f"{package}.inference.results"] & names

    def reaches(start, goal, seen):
        for nxt in graph.get(start, ()):
            if nxt == goal:
                return True
            if nxt not in seen:
                seen.add(nxt)
                if reaches(nxt, goal, seen):
                    return True
        return False

    cyclic = sorted(m for m in graph if reaches(m, m, set()))
    assert not cyclic, f"module-level import cycles through {cyclic}"


@pytest.mark.parametrize("name", ANALYSES)
def test_each_of_the_record_and_its_analyses_imports_first(name):
    """Imported first in a fresh interpreter, each of the three loads (no half-initialised module)."""
    code = f"import bayes_diml.inference.{name} as m; print(sorted(m.__all__)[0])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


# ------------------------------------------------------------------ models by value
def test_two_read_spec_of_one_file_give_equal_models():
    a, _ = bd.read_spec(bd.default_spec_path())
    b, _ = bd.read_spec(bd.default_spec_path())
    assert a is not b and a == b and hash(a) == hash(b)
    assert a.mechanism == b.mechanism and hash(a.mechanism) == hash(b.mechanism)
    assert dataclasses.replace(a, initial_scale=2.0) != a
    assert dataclasses.replace(a, learner_params={**a.learner_params, "alpha": Prior("beta", (("a", 2.0), ("b", 5.0)))}) != a


def test_mechanisms_with_arrays_compare_by_value():
    own = np.eye(3)
    a = Linear(num_agents=3, num_actions=3, own=own)
    b = Linear(num_agents=3, num_actions=3, own=own.copy())
    c = Linear(num_agents=3, num_actions=3, own=2 * own)
    assert a == b and hash(a) == hash(b) and a != c
    assert Congestion(num_agents=3, num_actions=3) != Congestion(num_agents=4, num_actions=3)
    assert congestion_model() == congestion_model() and congestion_model() != congestion_model(beta=2.0)


def test_a_second_fit_of_an_equal_model_compiles_nothing(map_fit):
    """A new ``Model`` object equal to the first reuses every compiled program of the fit."""
    compiles = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(duration)

    data = map_fit.data
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        bd.fit(congestion_model(), data, method="map", seed=1, steps=30, restarts=1, progress=False, posterior_predictive_draws=2)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert not compiles, f"{len(compiles)} programs compiled again ({sum(compiles):.1f} s)"


# ------------------------------------------------------------------ public API
def test_all_names_exist_and_are_public():
    assert len(set(bd.__all__)) == len(bd.__all__)
    for name in bd.__all__:
        assert not name.startswith("_"), name
        assert hasattr(bd, name), name
    needed = {
        "Model", "Prior", "Trajectories", "simulate", "log_likelihood", "fit", "Fit", "load_fit", "save_fit",
        "compare", "sbc", "counterfactual", "diagnose", "payoff_differences", "identifiability_report",
        "Tabular", "Congestion", "PublicGoods", "Anonymous", "Linear", "Neural", "Mechanism",
        "logit_q", "logit_q_decreasing", "ewa", "hedge", "bandit_q", "Learner",
    }
    assert needed <= set(bd.__all__), sorted(needed - set(bd.__all__))


@pytest.mark.parametrize("name", ["fit", "simulate", "counterfactual", "sbc", "sample_queries", "identifiability_report"])
def test_public_functions_that_draw_take_a_seed_without_default(name):
    parameter = inspect.signature(getattr(bd, name)).parameters["seed"]
    assert parameter.default is inspect.Parameter.empty, f"bd.{name}(seed=...) has a default"


def test_fit_without_a_seed_is_refused(map_fit):
    with pytest.raises(TypeError, match="seed"):
        bd.fit(map_fit.model, map_fit.data, method="map", steps=5, progress=False)
