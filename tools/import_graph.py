"""Import graph of the ``bayes_diml`` package, from its source (``ast``; nothing is imported).

For every module of the package (``bayes_diml/**/*.py``) it lists the package modules it
imports, in two kinds:

* **load**: imports executed when the module is imported (module level, including
  ``try``/``if`` blocks and class bodies, but not ``if TYPE_CHECKING:``);
* **deferred**: imports inside a function body, run only when the function is called
  (used to keep heavy or circular dependencies out of import time).

It then looks for cycles among the load-time edges (Tarjan's strongly connected
components): such a cycle makes the import order matter and is an error. Deferred
edges may close a cycle; they are listed, not refused.

Usage::

    python tools/import_graph.py              # Markdown list, then the cycle report
    python tools/import_graph.py --mermaid    # a mermaid ``graph LR`` of the load edges
    python tools/import_graph.py --check      # exit 1 when a load-time cycle exists
    python tools/import_graph.py --write-doc docs/design.md   # refresh the doc's graph

``--write-doc`` replaces what lies between ``<!-- import-graph:begin -->`` and
``<!-- import-graph:end -->`` in the given file with the Markdown list of load-time edges
(the deferred ones are printed, not written, to keep the document short).

Edges name the imported module: ``from .inference import fit`` is an edge to
``inference.fit`` when that is a module, else to ``inference``; names are given
relative to the package (``likelihood``, ``inference.fit``; ``__init__`` is the package).
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

PACKAGE = "bayes_diml"
ROOT = Path(__file__).resolve().parents[1]


def module_names(package_dir: Path) -> dict[str, Path]:
    """``{"bayes_diml.likelihood": path, "bayes_diml.inference": .../__init__.py, ...}``."""
    names = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _resolve(node: ast.ImportFrom, current: str, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = current.split(".") if is_package else current.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(name: str, path: Path, modules: set[str]) -> tuple[set[str], set[str]]:
    """``(load, deferred)`` package modules imported by one module."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    load, deferred = set(), set()

    def targets(node) -> set[str]:
        found = set()
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == PACKAGE:
                    found.add(alias.name)
        else:
            base = _resolve(node, name, is_package)
            if base.split(".")[0] != PACKAGE:
                return found
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in modules else base)
        return {t for t in found if t in modules and t != name}

    def visit(node, in_function: bool) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            (deferred if in_function else load).update(targets(node))
            return
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child, in_function)
            return  # type-only imports run never
        inner = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(tree, False)
    return load, deferred - load


def graph(package_dir: Path = ROOT / PACKAGE) -> dict[str, tuple[set[str], set[str]]]:
    names = module_names(package_dir)
    return {name: imports_of(name, path, set(names)) for name, path in names.items()}


def load_cycles(edges: dict[str, tuple[set[str], set[str]]]) -> list[list[str]]:
    """Strongly connected components of the load-time graph with more than one module
    (or a module importing itself), each sorted; Tarjan's algorithm, iterative."""
    index, low, on_stack, stack, result, counter = {}, {}, set(), [], [], [0]

    def strongconnect(root: str) -> None:
        work = [(root, iter(sorted(edges[root][0])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child][0]))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in edges[node][0]:
                    result.append(sorted(component))

    for name in sorted(edges):
        if name not in index:
            strongconnect(name)
    return sorted(result)


def short(name: str) -> str:
    return name[len(PACKAGE) + 1 :] if name != PACKAGE else "__init__"


def markdown(edges, deferred: bool = True) -> str:
    """The graph as a Markdown table; without ``deferred`` only the load-time edges (the doc's form)."""
    lines = (["| module | imports at load | imports inside functions |", "|---|---|---|"] if deferred
             else ["| module | imports at load |", "|---|---|"])
    for name in sorted(edges, key=short):
        load, inside = edges[name]
        row = f"| `{short(name)}` | {', '.join(short(m) for m in sorted(load)) or '—'} |"
        lines.append(row + (f" {', '.join(short(m) for m in sorted(inside)) or '—'} |" if deferred else ""))
    cycles = load_cycles(edges)
    lines.append("")
    if cycles:
        lines += ["Load-time import cycles:"] + [f"* {' -> '.join(short(m) for m in c)}" for c in cycles]
    else:
        lines.append("Load-time import cycles: none.")
    return "\n".join(lines)


def mermaid(edges) -> str:
    lines = ["graph LR"]
    for name in sorted(edges, key=short):
        for target in sorted(edges[name][0]):
            lines.append(f"  {short(name).replace('.', '_')}[{short(name)}] --> {short(target).replace('.', '_')}[{short(target)}]")
    return "\n".join(lines)


BEGIN, END = "<!-- import-graph:begin -->", "<!-- import-graph:end -->"


def write_doc(path: Path, text: str) -> None:
    """Put ``text`` between the graph markers of a Markdown file (atomically)."""
    document = path.read_text()
    head, found, rest = document.partition(BEGIN)
    _, found_end, tail = rest.partition(END)
    if not (found and found_end):
        raise SystemExit(f"{path}: markers {BEGIN} ... {END} not found")
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")
    temporary.replace(path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mermaid", action="store_true", help="print a mermaid graph of the load edges")
    parser.add_argument("--check", action="store_true", help="exit 1 when a load-time cycle exists")
    parser.add_argument("--package-dir", type=Path, default=ROOT / PACKAGE)
    parser.add_argument("--write-doc", type=Path, help="replace the marked graph section of this Markdown file")
    args = parser.parse_args(argv)
    edges = graph(args.package_dir)
    if args.write_doc:
        write_doc(args.write_doc, markdown(edges, deferred=False))
    print(mermaid(edges) if args.mermaid else markdown(edges))
    cycles = load_cycles(edges)
    if args.check and cycles:
        print(f"{len(cycles)} load-time import cycle(s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
