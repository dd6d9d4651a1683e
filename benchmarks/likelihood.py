"""Likelihood + gradient speed on the paper's settings (DESIGN §7), as JSON.

For each setting: data simulated from the spec's truth at the paper's sizes,
the 80% training split, then ``jax.value_and_grad`` of the full-data
log-likelihood w.r.t. all mechanism parameters. Reported: compile seconds,
seconds per epoch (one likelihood + gradient over all training episodes, the
median of repeats after compilation), peak host memory (max RSS of a fresh
subprocess per setting) and peak device memory where the backend reports it.

Usage:
    python benchmarks/likelihood.py [--settings E1 E2 E7_n40 ...] [--repeats 20]
        [--method associative|sequential] [--out benchmarks/results/likelihood_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SETTINGS = {
    # name: (spec, episodes, rounds)
    "E1": ("e1_neural.toml", 60, 60),
    "E2": ("e2_congestion.toml", 60, 60),
    "E3": ("e3_public_goods.toml", 60, 60),
    "E7_n40": ("e7_n40_a10.toml", 24, 30),
    "E7_n80": ("e7_n80_a20.toml", 24, 30),
    "E7_n120": ("e7_n120_a25.toml", 24, 30),
    "E7_n200": ("e7_n200_a30.toml", 20, 30),
    "E7_n300": ("e7_n300_a40.toml", 16, 25),
}
TRAIN_FRACTION = 0.8


def measure(name: str, repeats: int, method: str) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    import bayes_diml as bd
    from bayes_diml.likelihood import as_arrays

    spec, episodes, rounds = SETTINGS[name]
    model, truth = bd.read_spec(ROOT / "models" / spec)
    data = bd.simulate(model, truth, num_episodes=episodes, num_rounds=rounds, seed=0)
    num_train = int(round(TRAIN_FRACTION * episodes))
    actions, mask = as_arrays(data)
    actions, mask = actions[:num_train], mask[:num_train]
    params = jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), truth)

    def loss(mechanism_params):
        p = {"mechanism": mechanism_params, "learner": params["learner"]}
        return -jnp.sum(jax.vmap(bd.episode_log_likelihood, (None, None, 0, 0, None))(model, p, actions, mask, method))

    step = jax.jit(jax.value_and_grad(loss))
    start = time.perf_counter()
    compiled = step.lower(params["mechanism"]).compile()
    compile_seconds = time.perf_counter() - start
    jax.block_until_ready(compiled(params["mechanism"]))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(params["mechanism"]))
        times.append(time.perf_counter() - start)
    device = jax.devices()[0]
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    return {
        "setting": name,
        "spec": spec,
        "num_agents": model.num_agents,
        "num_actions": model.num_actions,
        "train_episodes": num_train,
        "rounds": rounds,
        "method": method,
        "compile_seconds": compile_seconds,
        "seconds_per_epoch": float(np.median(times)),
        "seconds_per_epoch_min": float(np.min(times)),
        "peak_host_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_device_mb": None if not stats else stats.get("peak_bytes_in_use", 0) / 2**20,
    }


def machine() -> dict:
    import os

    import jax
    import numpyro

    return {
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpu_count": os.cpu_count(),
        "device": str(jax.devices()[0]),
        "device_kind": jax.devices()[0].device_kind,
        "jax": jax.__version__,
        "numpyro": numpyro.__version__,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--method", default="associative", choices=("associative", "sequential"))
    parser.add_argument("--out", help="write the JSON here as well")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(measure(args.worker, args.repeats, args.method)))
        return 0
    results = []
    for name in args.settings:  # a fresh process per setting: per-setting peak memory
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", name, "--repeats", str(args.repeats), "--method", args.method],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            results.append({"setting": name, "error": proc.stderr.strip().splitlines()[-1:]})
        else:
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), file=sys.stderr)
    report = {"benchmark": "likelihood", "machine": machine(), "results": results}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
