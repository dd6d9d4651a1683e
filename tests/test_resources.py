"""The memory guard (``bayes_diml.resources``): programs that cannot fit are refused in
one line, quickly, before anything is built; the estimates bound measured peaks."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest

from bayes_diml import read_spec
from bayes_diml.cli import main
from bayes_diml.errors import ResourceError
from bayes_diml.resources import (
    MEMORY_LIMIT_ENV,
    _parse_limit,
    available_memory,
    bytes_text,
    count_text,
)

from cli_helpers import one_error_line as one_line
from cli_helpers import run_cli as run

SPEC = """\
[game]
agents = {n}
actions = {A}

[mechanism]
family = "{family}"

[learner]
rule = "logit_q"
alpha = 0.3
beta = 3.0
eps = 0.05
"""

REFUSAL_SECONDS = 30
"""The issue asks for a refusal in under 5 s; the bound here is loose because the
machine is shared (the time measured is printed by pytest -ra on failure)."""


def write_play(path: Path, n: int, episodes: int = 2, rounds: int = 3) -> None:
    rows = [f"{e},{t},{i},{(e + t + i) % 3}" for e in range(episodes) for t in range(rounds) for i in range(n)]
    path.write_text("episode,round,agent,action\n" + "\n".join(rows) + "\n", encoding="utf-8")


def scientific(count: int) -> str:
    """3 significant digits, truncated, by Decimal (an independent formatter)."""
    sign, digits, exponent = Decimal(count).as_tuple()
    return f"{digits[0]}.{digits[1]}{digits[2]}e{len(digits) - 1 + exponent}"


def test_count_and_bytes_text_against_decimal():
    assert count_text(999_999_999) == "999,999,999"
    big = 40**300 * 300
    assert count_text(big) == f"about {scientific(big)}"
    assert bytes_text(4 * big) == f"{scientific(4 * big)} bytes"
    assert bytes_text(12_400_000_000) == "12.4 GB" and bytes_text(512) == "512 bytes"


@pytest.mark.parametrize("text,expected", [("8G", 8 * 2**30), ("512M", 512 * 2**20), ("1000", 1000), ("2gib", 2 * 2**30)])
def test_memory_limit_from_the_environment(text, expected, monkeypatch):
    monkeypatch.setenv(MEMORY_LIMIT_ENV, text)
    assert available_memory() == expected == _parse_limit(text)


def test_a_bad_memory_limit_is_one_clear_error(monkeypatch):
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "lots")
    with pytest.raises(ResourceError, match=MEMORY_LIMIT_ENV):
        available_memory()


def test_a_tabular_table_beyond_any_memory_is_refused_by_read_spec(tmp_path):
    spec = tmp_path / "huge.toml"
    spec.write_text(SPEC.format(n=300, A=40, family="tabular"), encoding="utf-8")
    with pytest.raises(ResourceError, match=rf"about {scientific(4 * 40**300 * 300)} bytes.*40\*\*300 \* 300 = "
                       rf"about {scientific(40**300 * 300)} entries.*family that scales"):
        read_spec(spec)


def test_a_tabular_map_fit_that_cannot_fit_is_refused_before_it_starts(tmp_path, capsys, monkeypatch):
    # 14 agents x 3 actions: a 4,782,969 x 14 table; MAP keeps 4 restarts of it with Adam's
    # state (the issue measured 12.4 GB before anything was said)
    spec, data = tmp_path / "t.toml", tmp_path / "play.csv"
    spec.write_text(SPEC.format(n=14, A=3, family="tabular"), encoding="utf-8")
    write_play(data, 14)
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "6G")
    start = time.perf_counter()
    status, out, err = run(capsys, "fit", spec, "--data", data, "--method", "map", "--out", tmp_path / "RUN")
    seconds = time.perf_counter() - start
    line = one_line(status, err, "MAP fit needs about", "GB", "more than the 6.4 GB available", MEMORY_LIMIT_ENV,
                    "family with fewer parameters")
    assert seconds < REFUSAL_SECONDS, (seconds, line)
    assert not (tmp_path / "RUN").exists() and out == ""


def test_the_same_fit_passes_the_guard_with_enough_memory(tmp_path, monkeypatch):
    from bayes_diml.resources import fit_memory

    model, _ = read_spec(_write(tmp_path / "t.toml", SPEC.format(n=14, A=3, family="tabular")))
    nbytes, part = fit_memory(model, 2, 3, "map", {})
    # 4 restarts x (2 + OPTIMISER_COPIES) copies of 66,961,566 float32 entries, plus the runtime
    assert 4 * 24 * 66_961_566 * 4 < nbytes < 4 * 28 * 66_961_566 * 4 and "4 restarts" in part


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("guard")
    spec = _write(root / "s.toml", SPEC.format(n=2, A=3, family="congestion"))
    write_play(root / "play.csv", 2, episodes=3, rounds=5)
    assert main(["fit", spec, "--data", root / "play.csv", "--method", "svi", "--steps", 10, "--samples", 50,
                 "--out", root / "RUN", "--no-progress"]) == 0
    return root


def test_a_huge_counterfactual_is_refused_in_one_line(small_run, capsys, monkeypatch):
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "16G")
    start = time.perf_counter()
    status, _, err = run(capsys, "counterfactual", small_run / "RUN", "--episodes", 100000, "--rounds", 100000,
                         "--out", small_run / "cf.csv")
    one_line(status, err, "counterfactual", "100000 episodes x 100000 rounds", "fewer episodes or rounds", "--max-draws")
    assert time.perf_counter() - start < REFUSAL_SECONDS
    assert not (small_run / "cf.csv").exists()


def test_a_huge_simulation_is_refused_in_one_line(small_run, capsys, monkeypatch):
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "16G")
    status, _, err = run(capsys, "simulate", small_run / "s.toml", "--episodes", 100000, "--rounds", 100000,
                         "--out", small_run / "sim.csv")
    # the spec has no truth: the refusal comes first from that; give it one
    assert status == 2
    spec = _write(small_run / "t.toml", SPEC.format(n=2, A=3, family="congestion")
                  + "\n[mechanism.truth]\nc1 = [0.2, 0.3, 0.1]\nc2 = [0.1, 0.05, 0.12]\ntau = [0.1, 0.0, 0.15]\n")
    status, _, err = run(capsys, "simulate", spec, "--episodes", 100000, "--rounds", 100000, "--out", small_run / "sim.csv")
    one_line(status, err, "simulating 100000 episodes x 100000 rounds", "simulate fewer episodes or rounds")


@pytest.mark.slow
def test_estimates_bound_the_measured_peak_memory():
    """A tabular MAP fit (12 agents x 3 actions, 6.4 million coordinates) and an SVI fit
    on 2.4 million likelihood cells, each in a fresh process: the estimate is at least
    the measured peak resident set above the baseline, and within a factor 4 of it."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "memory_guard.py"
    for case in ("tabular_12x3_map", "congestion_long_svi"):
        result = subprocess.run([sys.executable, str(script), "--case", case], capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stderr[-2000:]
        row = json.loads(result.stdout.strip().splitlines()[-1])
        assert row["measured_bytes"] <= row["estimate_bytes"] <= 4 * row["measured_bytes"], row
