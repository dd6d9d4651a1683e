"""Likelihood + gradient speed on the paper's settings (docs/design.md §7), as JSON.

For each setting: data simulated from the spec's truth at the paper's sizes,
the 80% training split, then ``jax.value_and_grad`` of the full-data
log-likelihood w.r.t. all mechanism parameters. Reported: compile seconds,
seconds per epoch (one likelihood + gradient over all training episodes, the
median of repeats after compilation), peak host memory (max RSS of a fresh
subprocess per setting) and peak device memory where the backend reports it.

Usage:
    python benchmarks/likelihood.py [--settings E1 E2 E7_n40 ...] [--repeats 20]
        [--method associative|sequential] [--out benchmarks/results/likelihood_cpu.json]

``load_setting``, ``measure_arrays`` and ``machine`` are reused by ``speed.py``.
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


def load_setting(name: str):
    """``(model, params, actions, mask, spec)`` of one of ``SETTINGS``: data simulated
    from the spec's truth at the paper's sizes (seed 0), the 80% training split,
    parameters as float32 (the truth)."""
    import jax
    import jax.numpy as jnp

    import bayes_diml as bd
    from bayes_diml.likelihood import as_arrays

    spec, episodes, rounds = SETTINGS[name]
    model, truth = bd.read_spec(ROOT / "models" / spec)
    data = bd.simulate(model, truth, num_episodes=episodes, num_rounds=rounds, seed=0)
    num_train = int(round(TRAIN_FRACTION * episodes))
    actions, mask = as_arrays(data)
    params = jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), truth)
    return model, params, actions[:num_train], mask[:num_train], spec


def peak_memory() -> dict:
    """Peak host memory of this process (max RSS) and peak device memory where the
    backend reports it (``memory_stats()["peak_bytes_in_use"]``; ``None`` on CPU)."""
    import jax

    device = jax.devices()[0]
    try:
        stats = device.memory_stats()
    except Exception:  # some backends raise instead of returning None
        stats = None
    return {
        "peak_host_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_device_mb": None if not stats else stats.get("peak_bytes_in_use", 0) / 2**20,
    }


def time_repeats(run, repeats: int, max_seconds: float | None = None) -> list[float]:
    """Wall seconds of ``run()`` (which must block until its result is ready),
    ``repeats`` times, stopping early once ``max_seconds`` have been spent (at least once)."""
    times: list[float] = []
    spent = 0.0
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
        spent += times[-1]
        if max_seconds is not None and spent >= max_seconds:
            break
    return times


def measure_arrays(
    model,
    params,
    actions,
    mask,
    *,
    repeats: int,
    method: str = "associative",
    episode_batch: int | None = None,
    adam: bool = False,
    learning_rate: float = 1e-3,
    max_seconds: float | None = None,
) -> dict:
    """Time one training epoch on ``(actions, mask)`` (all episodes, one full batch).

    The loss is ``-sum_e log p(episode e)`` through ``episode_log_likelihoods``
    (vmap over episodes, or ``lax.map`` + ``jax.checkpoint`` in batches of
    ``episode_batch``); gradients w.r.t. all mechanism parameters, learner fixed.

    Returns ``compile_seconds`` and ``seconds_per_epoch`` (median after a warm-up
    call; ``_min`` the fastest) of ``jax.value_and_grad``, and with ``adam`` the
    same for a full optax Adam step (gradient + update), plus peak memory.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np

    from bayes_diml.likelihood import episode_log_likelihoods

    learner_params = params["learner"]

    def loss(mechanism_params, actions, mask):  # data as arguments, not as constants baked into the program
        p = {"mechanism": mechanism_params, "learner": learner_params}
        return -jnp.sum(episode_log_likelihoods(model, p, actions, mask, method, episode_batch))

    result = {"method": method, "episode_batch": episode_batch}
    step = jax.jit(jax.value_and_grad(loss))
    start = time.perf_counter()
    compiled = step.lower(params["mechanism"], actions, mask).compile()
    result["compile_seconds"] = time.perf_counter() - start
    jax.block_until_ready(compiled(params["mechanism"], actions, mask))
    times = time_repeats(lambda: jax.block_until_ready(compiled(params["mechanism"], actions, mask)), repeats, max_seconds)
    result.update(
        seconds_per_epoch=float(np.median(times)),
        seconds_per_epoch_min=float(np.min(times)),
        repeats=len(times),
    )
    if adam:
        import optax

        optimizer = optax.adam(learning_rate)

        def train_step(mechanism_params, opt_state, actions, mask):
            value, grads = jax.value_and_grad(loss)(mechanism_params, actions, mask)
            updates, opt_state = optimizer.update(grads, opt_state, mechanism_params)
            return optax.apply_updates(mechanism_params, updates), opt_state, value

        state = (params["mechanism"], optimizer.init(params["mechanism"]))
        start = time.perf_counter()
        compiled_step = jax.jit(train_step).lower(*state, actions, mask).compile()
        result["adam_compile_seconds"] = time.perf_counter() - start

        def run():
            nonlocal state
            *new_state, value = compiled_step(*state, actions, mask)
            state = tuple(new_state)
            jax.block_until_ready((state, value))

        run()
        times = time_repeats(run, repeats, max_seconds)
        result.update(
            adam_seconds_per_epoch=float(np.median(times)),
            adam_seconds_per_epoch_min=float(np.min(times)),
            adam_repeats=len(times),
        )
    result.update(peak_memory())
    return result


def measure(name: str, repeats: int, method: str) -> dict:
    model, params, actions, mask, spec = load_setting(name)
    timing = measure_arrays(model, params, actions, mask, repeats=repeats, method=method)
    return {
        "setting": name,
        "spec": spec,
        "num_agents": model.num_agents,
        "num_actions": model.num_actions,
        "train_episodes": int(actions.shape[0]),
        "rounds": int(actions.shape[1]),
        "method": method,
        "compile_seconds": timing["compile_seconds"],
        "seconds_per_epoch": timing["seconds_per_epoch"],
        "seconds_per_epoch_min": timing["seconds_per_epoch_min"],
        "peak_host_mb": timing["peak_host_mb"],
        "peak_device_mb": timing["peak_device_mb"],
    }


def cpu_model() -> str | None:
    """The CPU's model name from ``/proc/cpuinfo`` (Linux), else ``None``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def machine() -> dict:
    import os

    import jax
    import numpyro

    return {
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpu_model": cpu_model(),
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
