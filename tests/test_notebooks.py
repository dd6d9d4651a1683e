"""The notebooks: stored without outputs, and runnable top to bottom (small settings).

Each notebook's first code cell carries the tag ``parameters`` (papermill's convention)
and holds every size setting at its full value. The slow tests execute each notebook
with nbclient in a fresh kernel running *this* interpreter (so the kernel sees the
package under test, whatever kernelspecs the machine has), with a cell injected right
after the parameters cell that sets small values, and a last cell that prints a few
results as JSON, which the test then checks.
"""

from __future__ import annotations

import ast
import json
import sys
import time
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"

NOTEBOOKS = (
    "01_quickstart.ipynb",
    "02_identifiability.ipynb",
    "03_large_anonymous_game.ipynb",
    "04_your_own_data.ipynb",
    "05_policy_design.ipynb",
    "06_human_rps.ipynb",
)

PARAMETERS_TAG = "parameters"

# Small settings per notebook: each name must be assigned in the notebook's parameters
# cell (checked by ``test_small_settings_name_real_parameters``), so a renamed parameter
# cannot silently leave a test running at full size.
SMALL_SETTINGS: dict[str, dict] = {
    "01_quickstart.ipynb": dict(
        NUM_EPISODES=10, NUM_ROUNDS=25, NUM_CHAINS=2, NUM_WARMUP=50, NUM_SAMPLES=50,
        NUM_QUERIES=6, CF_EPISODES=4, CF_ROUNDS=25, CF_DRAWS=20, PROGRESS=False,
    ),
    "02_identifiability.ipynb": dict(
        NUM_EPISODES=10, NUM_ROUNDS=25, NUM_CHAINS=2, NUM_WARMUP=50, NUM_SAMPLES=50,
        TAB_EPISODES=6, TAB_ROUNDS=15, PROGRESS=False,
    ),
    "03_large_anonymous_game.ipynb": dict(
        NUM_AGENTS=300, NUM_EPISODES=4, NUM_ROUNDS=10, FEATURES=64, NUM_DRAWS=200,
        NUM_QUERIES=8, SCALING_AGENTS=[30, 300], PAPER_SPEC="e7_n40_a10.toml", PAPER_EPISODES=2,
        TIMING_REPEATS=1, PROGRESS=False,
    ),
    "04_your_own_data.ipynb": dict(
        NUM_EPISODES=8, NUM_ROUNDS=20, NUM_CHAINS=2, NUM_WARMUP=50, NUM_SAMPLES=50,
        CF_EPISODES=4, CF_ROUNDS=20, CF_DRAWS=20, PROGRESS=False,
    ),
    "05_policy_design.ipynb": dict(
        NUM_EPISODES=12, NUM_ROUNDS=25, NUM_CHAINS=2, NUM_WARMUP=50, NUM_SAMPLES=50, CF_EPISODES=4, CF_DRAWS=20,
        DESIGN_EPISODES=2, CANDIDATES=8, REFINEMENTS=1, TRUTH_EPISODES=200, PROGRESS=False,
    ),
    "06_human_rps.ipynb": dict(
        NUM_PLAYERS=6, NUM_ROUNDS=30, NUM_CHAINS=2, NUM_WARMUP=30, NUM_SAMPLES=50, PPC_REPLICATES=50, PROGRESS=False,
    ),
}

# Variables each notebook leaves behind that the slow test reads back (as JSON).
RESULTS: dict[str, dict[str, str]] = {
    "01_quickstart.ipynb": {
        "coverage": "coverage",
        "num_queries": "len(table)",
        "welfare_rows": "int((comparison['quantity'] == 'welfare').sum())",
        "frequency_rows": "int((comparison['quantity'] == 'frequency').sum())",
        "road0_change": "float(comparison.loc[comparison['action'] == 0, 'mean'].iloc[0])",
    },
    "02_identifiability.ipynb": {
        "level_gap": "abs(ll_shifted - ll_original)",
        "bump_gap": "abs(ll_bumped - ll_original)",
        "scale_gap": "abs(ll_scaled - ll_congestion)",
        "off_support": "int((~support_table['in_support']).sum())",
        "flat_directions": "list(report.flat_directions)",
        "refusal": "refusal",
    },
    "03_large_anonymous_game.ipynb": {
        "num_agents": "data.num_agents",
        "table_error": "table_error",
        "all_in_support": "bool(table['in_support'].all())",
        "relative_error": "relative_error",
        "method": "fit.method",
        "grid_weight": "float(grid['weight'].sum())",
        "pareto_k": "min(fit.info['pareto_k'], 1e9)",
        "pareto_k_draws": "fit.info['pareto_k_draws']",
        "seconds_per_gradient": "seconds_per_gradient",
    },
    "04_your_own_data.ipynb": {
        "summary": "summary",
        "bad_file_message": "bad_file_message",
        "query_agents": "list(answers['agent'])",
        "query_actions": "list(answers['action'])",
        "comparison_actions": "[a for a in comparison['action'] if a is not None]",
        "car_change": "float(comparison.loc[comparison['action'] == 'car', 'mean'].iloc[0])",
    },
    "05_policy_design.ipynb": {
        "flat_known": "len(report_known.flat_directions)",
        "flat_plain": "len(report_plain.flat_directions)",
        "identified_known": "cf_known.identified",
        "identified_plain": "cf_plain.identified",
        "unidentified_names": "unidentified_names",
        "warnings": "messages",
        "recommended": "list(result['recommended']['tau'])",
        "p_better": "p_better",
        "refusal": "refusal",
    },
    "06_human_rps.ipynb": {
        "facts": "facts",
        "models": "list(checks)",
        "tables": "{k: sorted(v['tables']) for k, v in checks.items()}",
        "loo_models": "sorted(loo.index)",
        "num_differences": "len(differences)",
        "a": "a_summary",
    },
}

RESULT_MARKER = "__NOTEBOOK_RESULT__"
CELL_TIMEOUT_S = 600
KERNEL_NAME = "bayes-diml-tests"


# ------------------------------------------------------------------ helpers
def _read(name: str):
    return nbformat.read(NOTEBOOK_DIR / name, as_version=4)


def _parameters_cell_index(nb) -> int:
    tagged = [i for i, c in enumerate(nb.cells) if PARAMETERS_TAG in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"expected exactly one cell tagged {PARAMETERS_TAG!r}, found {len(tagged)}"
    return tagged[0]


def _python_source(source: str) -> str:
    """A cell's source without IPython magics and shell escapes (``%...``, ``!...``)."""
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())


def _assigned_names(source: str) -> set[str]:
    names = set()
    for node in ast.parse(_python_source(source)).body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names


def prepared_notebook(name: str, settings: dict | None = None, results: dict | None = None):
    """The notebook with an injected cell of ``settings`` after its parameters cell and
    a last cell printing ``results`` (name -> expression) as one JSON line."""
    nb = _read(name)
    index = _parameters_cell_index(nb)
    if settings:
        source = "# injected by tests/test_notebooks.py\n" + "\n".join(f"{k} = {v!r}" for k, v in settings.items())
        cell = nbformat.v4.new_code_cell(source)
        cell.metadata["tags"] = ["injected-parameters"]
        nb.cells.insert(index + 1, cell)
    if results:
        items = ", ".join(f"{k!r}: {v}" for k, v in results.items())
        cell = nbformat.v4.new_code_cell(f"import json\nprint({RESULT_MARKER!r} + json.dumps({{{items}}}, default=float))")
        nb.cells.append(cell)
    for i, cell in enumerate(nb.cells):  # unique ids after insertion
        cell["id"] = f"test-{i:03d}"
    return nb


def execute(nb, working_dir: Path, kernel_dir: Path, timeout: int = CELL_TIMEOUT_S):
    """Run ``nb`` in a kernel of this interpreter (``sys.executable``); returns it executed."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    spec_dir = kernel_dir / KERNEL_NAME
    spec_dir.mkdir(parents=True, exist_ok=True)
    (spec_dir / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "bayes_diml tests",
                "language": "python",
            }
        )
    )
    specs = KernelSpecManager(kernel_dirs=[str(kernel_dir)], ensure_native_kernel=False)
    manager = KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=specs)
    client = NotebookClient(
        nb, km=manager, timeout=timeout, kernel_name=KERNEL_NAME, resources={"metadata": {"path": str(working_dir)}}
    )
    client.execute()
    return nb


def notebook_results(nb) -> dict:
    for output in nb.cells[-1].get("outputs", []):
        for line in output.get("text", "").splitlines():
            if line.startswith(RESULT_MARKER):
                return json.loads(line[len(RESULT_MARKER) :])
    raise AssertionError("the notebook's last cell printed no result line")


# ------------------------------------------------------------- fast tests
def test_every_notebook_is_listed():
    assert sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb")) == sorted(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_stored_without_outputs(name):
    nb = _read(name)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{name}: cell {i} has stored outputs; clear them before committing"
            assert cell.execution_count is None, f"{name}: cell {i} has an execution count"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_parameters_cell_comes_first(name):
    nb = _read(name)
    index = _parameters_cell_index(nb)
    first_code = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
    assert index == first_code, f"{name}: the parameters cell must be the first code cell"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_small_settings_name_real_parameters(name):
    nb = _read(name)
    assigned = _assigned_names(nb.cells[_parameters_cell_index(nb)].source)
    unknown = set(SMALL_SETTINGS[name]) - assigned
    assert not unknown, f"{name}: the tests set {sorted(unknown)}, which its parameters cell does not define"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebooks_use_only_the_public_api(name):
    """Every name a notebook takes from the package is in ``bayes_diml.__all__``: it imports
    ``bayes_diml`` itself (``import bayes_diml as bd``) or names from it (``from bayes_diml
    import plots``), never a submodule, and every ``bd.X`` is public."""
    import bayes_diml

    public = set(bayes_diml.__all__)
    aliases = set()
    for cell in _read(name).cells:
        if cell.cell_type != "code":
            continue
        tree = ast.parse(_python_source(cell.source))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "bayes_diml":
                        assert alias.name == "bayes_diml", f"{name}: imports {alias.name}, not the public API"
                        aliases.add(alias.asname or alias.name)
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "bayes_diml":
                assert node.module == "bayes_diml", f"{name}: imports from {node.module}, not the public API"
                private = [a.name for a in node.names if a.name not in public]
                assert not private, f"{name}: imports {private} from bayes_diml, which are not in its __all__"
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
                assert node.attr in public, f"{name}: uses {node.value.id}.{node.attr}, which is not in bayes_diml.__all__"
    assert aliases, f"{name}: does not import bayes_diml"


# ------------------------------------------------------------- slow tests
def run_notebook(name: str, tmp_path: Path) -> dict:
    results = {**RESULTS[name], "kernel_python": "__import__('sys').executable"}
    nb = prepared_notebook(name, SMALL_SETTINGS[name], results)
    start = time.perf_counter()
    execute(nb, NOTEBOOK_DIR, tmp_path / "kernels")
    print(f"{name}: {time.perf_counter() - start:.0f} s with the test settings")
    out = notebook_results(nb)
    assert Path(out.pop("kernel_python")) == Path(sys.executable), "the kernel ran another Python than the tests"
    return out


@pytest.mark.slow
def test_01_quickstart(tmp_path):
    out = run_notebook("01_quickstart.ipynb", tmp_path)
    assert out["num_queries"] == SMALL_SETTINGS["01_quickstart.ipynb"]["NUM_QUERIES"]
    assert 0.0 <= out["coverage"] <= 1.0
    assert out["frequency_rows"] == 5 and out["welfare_rows"] == 1
    assert out["road0_change"] > 0  # raising tau[0] draws agents to road 0


@pytest.mark.slow
def test_02_identifiability(tmp_path):
    out = run_notebook("02_identifiability.ipynb", tmp_path)
    # a per-context shift of payoff levels, and (payoffs x 2, beta / 2), leave the likelihood
    # unchanged up to float32 rounding; a change of one payoff difference does not
    assert out["level_gap"] < 1e-2 and out["scale_gap"] < 1e-2
    assert out["bump_gap"] > 1.0
    assert out["off_support"] >= 1
    assert any("c1" in d and "tau" in d for d in out["flat_directions"])
    assert "beta" in out["refusal"]


@pytest.mark.slow
def test_03_large_anonymous_game(tmp_path):
    out = run_notebook("03_large_anonymous_game.ipynb", tmp_path)
    assert out["num_agents"] == 300
    assert out["table_error"] < 1e-4  # the A x A table equals direct evaluation
    assert out["all_in_support"]
    assert out["seconds_per_gradient"] > 0
    assert out["relative_error"] < 0.5  # MSE(est - true) / Var(true), in-support differences
    assert out["method"] == "laplace_grid" and abs(out["grid_weight"] - 1.0) < 1e-6
    assert out["pareto_k_draws"] >= 200 and out["pareto_k"] >= 0  # the grid checked itself


@pytest.mark.slow
def test_04_your_own_data(tmp_path):
    out = run_notebook("04_your_own_data.ipynb", tmp_path)
    summary = out["summary"]
    assert summary["action_labels"] == ["bus", "car", "bike"]
    assert summary["agent_labels"][:2] == ["ann", "bob"]
    assert summary["masked_fraction"] > 0  # gaps and uneven episodes survived loading
    assert "line" in out["bad_file_message"] and "column 'action'" in out["bad_file_message"]
    assert set(out["query_agents"]) <= set(summary["agent_labels"])
    assert set(out["query_actions"]) <= {"bus", "car", "bike"}
    assert out["comparison_actions"] == ["bus", "car", "bike"]
    assert out["car_change"] < 0  # a charge on cars moves commuters off them


@pytest.mark.slow
def test_05_policy_design(tmp_path):
    out = run_notebook("05_policy_design.ipynb", tmp_path)
    # known tolls identify c1: no flat direction; without them c1 + tau is flat
    assert out["flat_known"] == 0 and out["flat_plain"] >= 1
    assert out["identified_known"] and not out["identified_plain"]
    assert "c1" in out["unidentified_names"] and len(out["warnings"]) == 1 and "c1" in out["warnings"][0]
    assert len(out["recommended"]) == 5 and all(0.0 <= v <= 0.6 for v in out["recommended"])
    assert 0.0 <= out["p_better"] <= 1.0
    assert "tau" in out["refusal"] and "[mechanism.known]" in out["refusal"]


@pytest.mark.slow
def test_06_human_rps(tmp_path):
    out = run_notebook("06_human_rps.ipynb", tmp_path)
    # the descriptive facts, recomputed here from the shipped file with a plain loop
    raw = pd.read_csv(NOTEBOOK_DIR / "data" / "wxz2014_rps.csv.gz")
    raw = raw[raw["id"].isin(sorted(raw["id"].unique())[:6]) & (raw["period"] <= 30)].sort_values(["id", "period"])
    stays = [a == b for _, g in raw.groupby("id") for a, b in zip(g["choice"].iloc[1:], g["choice"].iloc[:-1])]
    assert abs(out["facts"]["stay"] - np.mean(stays)) < 1e-12
    assert out["models"] == ["logit_q", "logit_q_sticky", "ewa_sticky", "bandit_sticky", "bandit_outcomes"]
    assert all({"own_previous", "opponent_previous"} <= set(t) for t in out["tables"].values())
    assert "previous_outcome" in out["tables"]["bandit_outcomes"]
    assert out["loo_models"] == sorted(["logit_q", "logit_q_sticky", "ewa_sticky", "bandit_sticky"])
    assert out["num_differences"] == 5 * 6
    assert out["a"]["q05"] < out["a"]["mean"] < out["a"]["q95"]
