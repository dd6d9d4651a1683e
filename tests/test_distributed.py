"""Two processes with ``jax.distributed`` on the CPU equal one process (issue 16, point 10).

``tools/distributed_check.py`` is started twice on this machine, as processes 0 and 1
of a two-process JAX cluster (coordinator on ``127.0.0.1``, a free port, gloo CPU
collectives, one CPU device each): the episode axis is split over the two processes'
devices, exactly as over the hosts of a cluster. A third run, one process without
sharding, is the reference. Compared: per-episode log-likelihoods, the total, its
gradient and a short SVI fit (posterior means and pointwise log-likelihood).

Tolerances: the likelihood's per-episode values and total came out bitwise equal; the
gradient adds the two processes' partial sums in another order than one device does
(float32 round-off, measured 7.6e-6 on entries of ~100, about one ulp), and SVI
follows that gradient for 60 steps (posterior means measured within 6e-8). Every
process has bounded timeouts and exits by itself.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "distributed_check.py"
TIMEOUT = 240  # seconds per process, start to exit
RTOL, ATOL = 1e-5, 1e-6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args: list[str], out: Path) -> subprocess.Popen:
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    env.pop("XLA_FLAGS", None)  # one CPU device per process
    return subprocess.Popen([sys.executable, str(SCRIPT), *args, "--out", str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("distributed")
    address = f"127.0.0.1:{free_port()}"
    cluster = ["--coordinator", address, "--num-processes", "2", "--timeout", "60"]
    procs = {
        "p0": launch([*cluster, "--process-id", "0"], tmp / "p0.json"),
        "p1": launch([*cluster, "--process-id", "1"], tmp / "p1.json"),
        "single": launch(["--num-processes", "1", "--no-shard"], tmp / "single.json"),
    }
    logs = {}
    try:
        for name, proc in procs.items():
            logs[name], _ = proc.communicate(timeout=TIMEOUT)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for name, proc in procs.items():
        assert proc.returncode == 0, f"{name} exited {proc.returncode}:\n{logs.get(name, '')[-4000:]}"
    return {name: json.loads((tmp / f"{name}.json").read_text()) for name in procs}


pytestmark = pytest.mark.slow


def test_two_processes_form_one_cluster(runs):
    for index, name in enumerate(("p0", "p1")):
        run = runs[name]
        assert (run["process_index"], run["process_count"]) == (index, 2)
        assert (run["device_count"], run["local_device_count"]) == (2, 1)
        assert run["sharded"]
    assert (runs["single"]["process_count"], runs["single"]["sharded"]) == (1, False)


def test_log_likelihood_equals_single_process(runs):
    single = np.asarray(runs["single"]["per_episode"])
    assert single.shape == (7,) and np.all(single < 0)
    for name in ("p0", "p1"):
        np.testing.assert_allclose(runs[name]["per_episode"], single, rtol=RTOL, atol=ATOL, err_msg=name)
        np.testing.assert_allclose(runs[name]["total"], runs["single"]["total"], rtol=RTOL, err_msg=name)


def test_gradient_equals_single_process(runs):
    for key, value in runs["single"]["grad"].items():
        assert np.any(np.asarray(value) != 0), key
        for name in ("p0", "p1"):
            np.testing.assert_allclose(runs[name]["grad"][key], value, rtol=RTOL, atol=ATOL, err_msg=f"{name} {key}")


def test_short_svi_fit_equals_single_process(runs):
    single = runs["single"]
    for name in ("p0", "p1"):
        assert runs[name]["svi_mean"].keys() == single["svi_mean"].keys()
        for key, value in single["svi_mean"].items():
            np.testing.assert_allclose(runs[name]["svi_mean"][key], value, rtol=RTOL, atol=ATOL, err_msg=f"{name} {key}")
        assert np.shape(runs[name]["fit_log_likelihood"]) == (1, 40, 7)
        np.testing.assert_allclose(runs[name]["fit_log_likelihood"], single["fit_log_likelihood"], rtol=RTOL, atol=1e-5)
    # both processes hold the same (replicated) result
    assert runs["p0"]["svi_mean"] == runs["p1"]["svi_mean"]
