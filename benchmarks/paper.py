"""Reproduce the DIML paper's experiments with baselines and Bayesian fits (a thin script).

The logic lives in ``experiments.reproduce`` (the paper study); this is the same as the CLI verb
``bayes-diml reproduce``. Usage (from the repository root):

    python benchmarks/paper.py E2 --seeds 1            # paper sizes, both variants
    python benchmarks/paper.py E1 E2 E3 E7 --seeds 3   # the whole table
    python benchmarks/paper.py E2 --seeds 1 --quick    # the CI subset
    python benchmarks/paper.py E2 --seeds 3 --data-sizes 3,6,12,24,48   # the data-size study

Writes ``benchmarks/results/paper.json`` and ``paper.md`` (``paper_quick.*`` with ``--quick``);
with ``--data-sizes``, ``data_size_E2.json``, ``.md`` and ``.png`` (``experiments.data_size``).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bayes_diml.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["reproduce", *sys.argv[1:]]))
