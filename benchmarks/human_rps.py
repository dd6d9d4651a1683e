"""Run ``notebooks/06_human_rps.ipynb`` at its stored (full) settings and keep its numbers.

The notebook fits five learning models to Wang, Xu & Zhou's (2014) human rock-paper-scissors
play and checks each with the conditional posterior predictive checks; this executes it
top to bottom in a fresh kernel of this interpreter (``nbclient``) with ``RESULTS_PATH`` set,
so the JSON it writes (``--out``: facts, PPC p-values, LOO, payoff differences against the
experimenter's rule, ``a``, fit times and diagnostics) is exactly what the notebook shows.
The machine and the load are added. ``docs/results.md`` quotes it. Usage::

    python benchmarks/human_rps.py [--load idle]     # about ten minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
NOTEBOOK = ROOT / "notebooks" / "06_human_rps.ipynb"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--load", default="not stated")
    parser.add_argument("--out", default=str(HERE / "results" / "human_rps.json"))
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    sys.path.insert(0, str(ROOT))
    from test_notebooks import execute, prepared_notebook

    from experiments import reproduce as rp

    out = Path(args.out).resolve()
    nb = prepared_notebook(NOTEBOOK.name, {"RESULTS_PATH": str(out), "PROGRESS": False})
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as kernels:
        execute(nb, NOTEBOOK.parent, Path(kernels), timeout=3600)
    document = json.loads(out.read_text(encoding="utf-8"))
    document["run"] = {"machine": rp._machine(), "load": args.load, "seconds": time.perf_counter() - start,
                       "command": " ".join(sys.argv)}
    out.write_text(json.dumps(document, indent=1), encoding="utf-8")
    print(json.dumps({k: document[k] for k in ("ppc", "loo", "a", "fits")}, indent=1))


if __name__ == "__main__":
    main()
