"""Running ``bayes_diml.cli.main`` in-process from tests, and reading its one-line errors."""

from __future__ import annotations

from bayes_diml.cli import main

CONGESTION_SPEC = """\
[game]
agents = {agents}
actions = 3

[mechanism]
family = "congestion"

[mechanism.truth]
c1 = [0.20, 0.30, 0.10]
c2 = [0.10, 0.05, 0.12]
tau = [0.10, 0.00, 0.15]

[learner]
rule = "logit_q"
alpha = 0.3
beta = 3.0
eps = 0.05
"""
"""A small congestion spec with a truth (3 roads), for ``agents`` agents: ``CONGESTION_SPEC.format(agents=2)``."""


def run_cli(capsys, *args) -> tuple[int, str, str]:
    """``bayes_diml.cli.main(ARGS)``: (exit status, stdout, stderr); argparse exits are caught."""
    try:
        status = main([str(a) for a in args])
    except SystemExit as exit_:
        status = exit_.code
    out, err = capsys.readouterr()
    return status, out, err


def one_error_line(status: int, err: str, *fragments: str) -> str:
    """Exit status 2, no traceback, exactly one line starting 'error: ' holding every fragment."""
    lines = err.strip().splitlines()
    assert status == 2, f"exit {status}; stderr:\n{err}"
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]
