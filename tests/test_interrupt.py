"""Determinism and no data loss (issue 4, item 5).

* the same seed gives bit-identical draws (two ``fit`` calls, SVI and NUTS);
* ``bayes-diml fit`` interrupted with SIGINT mid-fit exits non-zero with one line
  ("interrupted; nothing was written") and leaves no run folder and no temporary
  folder beside it; with ``--overwrite`` the old folder stays as it was;
* re-running into an existing folder refuses (exit 2, one line) unless ``--overwrite``;
* the atomic swap itself: an interrupt inside the block or between the two renames
  leaves the old folder (or none), never half of one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import bayes_diml as bd
from bayes_diml.cli import main
from bayes_diml.inference import storage
from bayes_diml.inference.storage import atomic_folder, interrupts_deferred
from bayes_diml.learners import logit_q
from bayes_diml.mechanisms import Congestion

ROOT = Path(__file__).resolve().parents[1]
LEARNER = {"alpha": 0.3, "beta": 3.0, "eps": 0.05}
TRUTH = {"c1": np.array([0.2, 0.3, 0.1]), "c2": np.array([0.1, 0.05, 0.12]), "tau": np.array([0.1, 0.0, 0.2])}
SPEC = """\
[game]
agents = 3
actions = 3

[mechanism]
family = "congestion"

[learner]
rule = "logit_q"
alpha = 0.3
beta = 3.0
eps = 0.05
"""
START_TIMEOUT_S = 240  # python + jax import + tracing, on a loaded 2-core machine
EXIT_TIMEOUT_S = 120


def model():
    return bd.Model(Congestion(num_agents=3, num_actions=3), logit_q, LEARNER)


@pytest.fixture(autouse=True)
def python_sigint_handler():
    """Python's own SIGINT handler during each test, also when the suite was started with
    SIGINT ignored (a background job of a non-interactive shell inherits it so)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture(scope="module")
def data():
    return bd.simulate(model(), {"mechanism": TRUTH, "learner": LEARNER}, num_episodes=4, num_rounds=12, seed=3)


@pytest.fixture()
def work(tmp_path, data):
    (tmp_path / "tiny.toml").write_text(SPEC, encoding="utf-8")
    data.to_csv(tmp_path / "D.csv")
    return tmp_path


def leftovers(folder: Path, name: str = "RUN") -> list[str]:
    """Temporary folders or files that ``atomic_folder`` would leave beside ``name``."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(f".{name}."))


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------ determinism


@pytest.mark.slow  # two full fits: ~25 s of CPU
def test_same_seed_gives_bit_identical_svi_draws(data):
    # MAP warm start (20 steps), then 100 SVI steps, then draws from the guide
    options = dict(method="svi", seed=7, steps=100, map_steps=20, num_samples=20, progress=False, posterior_predictive_draws=2)
    a, b = bd.fit(model(), data, **options), bd.fit(model(), data, **options)
    assert set(a.posterior) == set(b.posterior)
    for name in a.posterior:
        assert np.array_equal(a.posterior[name], b.posterior[name]), name
    assert np.array_equal(a.log_likelihood, b.log_likelihood)
    assert np.unique(a.posterior["d"][0, :, 0]).size == 20  # real draws, not one repeated value


@pytest.mark.slow
def test_same_seed_gives_bit_identical_nuts_draws(data):
    options = dict(method="nuts", seed=3, num_chains=2, num_warmup=40, num_samples=20, progress=False,
                   posterior_predictive_draws=2)
    a, b = bd.fit(model(), data, **options), bd.fit(model(), data, **options)
    for name in a.posterior:
        assert np.array_equal(a.posterior[name], b.posterior[name]), name
    for name in a.sample_stats:
        assert np.array_equal(a.sample_stats[name], b.sample_stats[name]), name


# ------------------------------------------------------------------ refusing to overwrite


def test_fit_into_an_existing_folder_is_refused_in_one_line(work, capsys):
    run = work / "RUN"
    run.mkdir()
    (run / "posterior.nc").write_text("old", encoding="utf-8")
    status = main(["fit", str(work / "tiny.toml"), "--data", str(work / "D.csv"), "--out", str(run), "--no-progress"])
    err = capsys.readouterr().err
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "RUN is a folder that bayes-diml did not write" in lines[0]
    assert snapshot(run) == {"posterior.nc": b"old"} and leftovers(work) == []


# ------------------------------------------------------------------ SIGINT mid-fit


def _interrupt_fit(work: Path, *extra: str) -> subprocess.CompletedProcess:
    """Start ``bayes-diml fit`` (MAP, effectively endless), SIGINT it once its progress bar shows."""
    command = [
        sys.executable, "-m", "bayes_diml", "fit", "tiny.toml", "--data", "D.csv", "--method", "map",
        "--steps", "100000000", "--out", "RUN", *extra,
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    # SIGINT back to its default in the child: a suite started in the background by a
    # non-interactive shell inherits it ignored, and Python then installs no handler
    restore = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    process = subprocess.Popen(command, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=restore)
    err = bytearray()
    reader = threading.Thread(target=lambda: [err.extend(chunk) for chunk in iter(lambda: process.stderr.read1(4096), b"")])
    reader.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while b"MAP (Adam)" not in err:  # the optimisation loop has started
            assert process.poll() is None, f"fit ended before it was interrupted:\n{err.decode()}"
            assert time.monotonic() < deadline, f"no progress bar after {START_TIMEOUT_S} s:\n{err.decode()}"
            time.sleep(0.2)
        time.sleep(1.0)
        process.send_signal(signal.SIGINT)
        process.wait(timeout=EXIT_TIMEOUT_S)  # (stdout stays far below a pipe's buffer)
        out = process.stdout.read()
    finally:
        if process.poll() is None:
            process.kill()
        reader.join(timeout=10)
    return subprocess.CompletedProcess(command, process.returncode, out.decode(), err.decode())


def _assert_interrupted(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 130, result
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.replace("\r", "\n").splitlines() if "interrupted" in line]
    assert lines == ["interrupted; nothing was written"], result.stderr
    assert result.stderr.rstrip().endswith("\ninterrupted; nothing was written"), result.stderr


def test_sigint_mid_fit_writes_nothing(work):
    result = _interrupt_fit(work)
    _assert_interrupted(result)
    assert not (work / "RUN").exists()
    assert leftovers(work) == []


@pytest.mark.slow  # a second subprocess fit: ~20 s of CPU; the swap itself is covered in-process below
def test_sigint_mid_fit_with_overwrite_keeps_the_old_folder(work):
    run = work / "RUN"
    run.mkdir()
    (run / "posterior.nc").write_bytes(b"old posterior")
    (run / "fit.json").write_text('{"method": "old"}', encoding="utf-8")
    before = snapshot(run)
    result = _interrupt_fit(work, "--overwrite")
    _assert_interrupted(result)
    assert snapshot(run) == before
    assert leftovers(work) == []


# ------------------------------------------------------------------ atomic_folder


def _old_run(parent: Path) -> Path:
    run = parent / "RUN"
    run.mkdir()
    (run / "fit.json").write_text("old a", encoding="utf-8")
    (run / "posterior.nc").write_text("old posterior", encoding="utf-8")  # with fit.json: a run folder of ours
    (run / "counterfactuals").mkdir()
    (run / "counterfactuals" / "b.csv").write_text("old b", encoding="utf-8")
    return run


def test_interrupt_inside_the_block_leaves_the_old_folder(tmp_path):
    run = _old_run(tmp_path)
    before = snapshot(run)
    with pytest.raises(KeyboardInterrupt):
        with atomic_folder(run, overwrite=True) as tmp:
            (tmp / "fit.json").write_text("half", encoding="utf-8")
            raise KeyboardInterrupt
    assert snapshot(run) == before and leftovers(tmp_path) == []
    with pytest.raises(KeyboardInterrupt):
        with atomic_folder(tmp_path / "NEW") as tmp:
            (tmp / "fit.json").write_text("half", encoding="utf-8")
            raise KeyboardInterrupt
    assert not (tmp_path / "NEW").exists() and leftovers(tmp_path, "NEW") == []


def test_failure_between_the_two_renames_puts_the_old_folder_back(tmp_path, monkeypatch):
    run = _old_run(tmp_path)
    before = snapshot(run)
    calls = []
    real_replace = os.replace

    def replace(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # the old folder is aside, the new one not yet in place
            raise KeyboardInterrupt
        return real_replace(src, dst)

    monkeypatch.setattr(storage.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        with atomic_folder(run, overwrite=True) as tmp:
            (tmp / "fit.json").write_text("new a", encoding="utf-8")
    monkeypatch.undo()
    assert len(calls) >= 2
    assert snapshot(run) == before and leftovers(tmp_path) == []


def test_sigint_during_the_swap_is_held_back_until_the_folder_is_written(tmp_path, monkeypatch):
    run = _old_run(tmp_path)
    real_replace = os.replace

    def replace(src, dst):  # Ctrl-C arrives right between the renames
        real_replace(src, dst)
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(storage.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt, match="RUN was written"):
        with atomic_folder(run, overwrite=True) as tmp:
            (tmp / "fit.json").write_text("new a", encoding="utf-8")
    monkeypatch.undo()
    assert snapshot(run) == {"fit.json": b"new a"} and leftovers(tmp_path) == []
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_interrupts_deferred_raises_after_the_block():
    done = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            done.append(True)
    assert done == [True]
    with interrupts_deferred():  # no signal, no exception
        done.append(True)
    assert done == [True, True]
