"""The design document exists, every "§N" reference to it resolves, and the package's
load-time import graph has no cycle (issue 16, point 8).

References are the "DESIGN §N" / "design.md §N" citations in the package, the tests,
the docs and the other source folders, including lists and ranges ("§3, §5", "§2–4").
The graph check runs ``tools/import_graph.py`` itself, and is shown to detect a cycle
on a two-module package made up here.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DESIGN = ROOT / "docs" / "design.md"
SCRIPT = ROOT / "tools" / "import_graph.py"
SEARCHED = ["bayes_diml", "tests", "docs", "models", "experiments", "benchmarks", "tools", "README.md"]
SUFFIXES = {".py", ".md", ".toml", ".txt", ".rst"}
MAX_WORDS = 4000  # fifteen minutes at ~250 words a minute, the generated graph included

NUMBER = r"\d+(?:\s*[–-]\s*\d+)?"
REFERENCE = re.compile(rf"(?:DESIGN|[Dd]esign(?:\.md)?)\)?\s*(§\s*{NUMBER}(?:\s*(?:,|and)\s*§?\s*{NUMBER})*)")


def headings() -> set[int]:
    return {int(m) for m in re.findall(r"^## (?:§\s*)?(\d+)\.", DESIGN.read_text(), flags=re.MULTILINE)}


def cited_sections(text: str) -> list[int]:
    """Section numbers cited in ``text``: "DESIGN §2–4, §6" -> [2, 3, 4, 6]."""
    numbers = []
    for match in REFERENCE.finditer(text):
        for item in re.findall(NUMBER, match.group(1)):
            ends = [int(x) for x in re.split(r"\s*[–-]\s*", item)]
            numbers.extend(range(ends[0], ends[-1] + 1))
    return numbers


def source_files():
    for name in SEARCHED:
        path = ROOT / name
        files = [path] if path.is_file() else sorted(path.rglob("*")) if path.is_dir() else []
        for file in files:
            if file.is_file() and file.suffix in SUFFIXES and ".venv" not in file.parts and file != Path(__file__):
                yield file


def test_design_document_exists_and_is_short():
    assert DESIGN.is_file()
    assert headings() == set(range(1, 12)), sorted(headings())
    assert len(DESIGN.read_text().split()) <= MAX_WORDS


def test_reference_parser():
    assert cited_sections("see DESIGN §2–4, §6 and (DESIGN §9)") == [2, 3, 4, 6, 9]
    assert cited_sections("docs/design.md §3, §5") == [3, 5]
    assert cited_sections("the paper's §3") == []


def test_every_design_reference_names_an_existing_section():
    existing, bad, count = headings(), [], 0
    for file in source_files():
        for number, line in ((n, i) for i, text in enumerate(file.read_text(errors="replace").splitlines(), 1)
                             for n in cited_sections(text)):
            count += 1
            if number not in existing:
                bad.append(f"{file.relative_to(ROOT)}:{line}: §{number}")
    assert count >= 40, f"only {count} references found: is the pattern still right?"
    assert not bad, "references to sections that docs/design.md does not have:\n" + "\n".join(bad)


def run_graph(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120, check=False)


def test_import_graph_has_no_load_time_cycle():
    proc = run_graph("--check")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Load-time import cycles: none." in proc.stdout
    assert "| `likelihood` |" in proc.stdout and "| `inference.fit` |" in proc.stdout


def test_import_graph_finds_a_cycle_and_ignores_deferred_imports(tmp_path):
    package = tmp_path / "bayes_diml"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from . import b\n")
    (package / "b.py").write_text("from .a import thing\n")
    (package / "c.py").write_text("def f():\n    from . import a\n")
    (package / "d.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import c\n")
    (package / "e.py").write_text("import bayes_diml.a\n")
    proc = run_graph("--check", "--package-dir", str(package))
    assert proc.returncode == 1
    assert "* a -> b" in proc.stdout
    assert "| `c` | — | a |" in proc.stdout  # deferred
    assert "| `d` | — | — |" in proc.stdout  # type-only
    assert "| `e` | a | — |" in proc.stdout
    (package / "b.py").write_text("def g():\n    from .a import thing\n")
    assert run_graph("--check", "--package-dir", str(package)).returncode == 0


@pytest.mark.parametrize("flag", ["--mermaid"])
def test_import_graph_mermaid_output(flag):
    proc = run_graph(flag)
    assert proc.returncode == 0 and proc.stdout.startswith("graph LR")
