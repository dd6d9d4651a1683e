"""Gradient checkpointing over rounds (``round_chunk``) at a long horizon, as JSON.

The E2 congestion game (4 agents, 5 resources, ``models/e2_congestion.toml``) with
play simulated from its truth for ``--rounds`` (default 2,000) rounds x ``--episodes``
episodes; ``jax.value_and_grad`` of the full-data log-likelihood w.r.t. all mechanism
parameters, without checkpointing (``round_chunk=None``) and with chunks of several
sizes. Each configuration runs in a fresh subprocess so that its peak memory is its
own. Reported per configuration:

* ``compile_seconds``; ``seconds_per_gradient`` (median of repeats after a warm-up);
* ``temp_mb``, ``argument_mb``, ``output_mb``: XLA's buffer assignment of the compiled
  gradient (``Compiled.memory_analysis()``; the temporaries are what checkpointing
  bounds: ``O(T)`` states without it, ``O(T / chunk + chunk)`` with it);
* ``peak_host_mb`` (max RSS of the process) and ``peak_device_mb``
  (``device.memory_stats()["peak_bytes_in_use"]`` where the backend reports it, e.g.
  CUDA; ``None`` on CPU);
* ``max_rel_diff_value`` / ``max_abs_diff_grad`` against the unchunked result.

Runs unchanged on CPU and GPU; the machine (CPU model, cores, device, jax version,
load average at the end: timings on a shared machine are slower) is recorded. Usage:

    python benchmarks/checkpointing.py [--rounds 2000] [--episodes 32]
        [--chunks none 20 45 100 400] [--repeats 5] [--out PATH]

Default output: ``benchmarks/results/checkpointing_<platform>.json`` (``cpu``/``gpu``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))  # likelihood.py: machine(), peak_memory(), time_repeats()
sys.path.insert(0, str(ROOT))

SPEC = "e2_congestion.toml"
MB = 2**20


def _chunk(text: str) -> int | None:
    return None if text.lower() == "none" else int(text)


def worker(rounds: int, episodes: int, chunk: int | None, repeats: int) -> dict:
    """Measure one configuration in this process."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from likelihood import peak_memory, time_repeats

    import bayes_diml as bd
    from bayes_diml.likelihood import as_arrays, episode_log_likelihoods

    model, truth = bd.read_spec(ROOT / "models" / SPEC)
    data = bd.simulate(model, truth, num_episodes=episodes, num_rounds=rounds, seed=0)
    actions, mask = as_arrays(data)
    params = jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), truth)
    learner = params["learner"]

    def loss(mechanism, actions, mask, round_chunk):
        p = {"mechanism": mechanism, "learner": learner}
        return -jnp.sum(episode_log_likelihoods(model, p, actions, mask, round_chunk=round_chunk))

    def compiled_for(round_chunk):
        fn = jax.jit(jax.value_and_grad(lambda m, a, k: loss(m, a, k, round_chunk)))
        return fn.lower(params["mechanism"], actions, mask).compile()

    start = time.perf_counter()
    compiled = compiled_for(chunk)
    compile_seconds = time.perf_counter() - start
    value, grad = jax.block_until_ready(compiled(params["mechanism"], actions, mask))
    times = time_repeats(lambda: jax.block_until_ready(compiled(params["mechanism"], actions, mask)), repeats)
    memory = peak_memory()  # before the reference below adds its own buffers
    analysis = compiled.memory_analysis()
    result = {
        "round_chunk": chunk,
        "rounds": rounds,
        "episodes": episodes,
        "num_agents": model.num_agents,
        "num_actions": model.num_actions,
        "compile_seconds": compile_seconds,
        "seconds_per_gradient": float(np.median(times)),
        "seconds_per_gradient_min": float(np.min(times)),
        "repeats": len(times),
        "temp_mb": None if analysis is None else analysis.temp_size_in_bytes / MB,
        "argument_mb": None if analysis is None else analysis.argument_size_in_bytes / MB,
        "output_mb": None if analysis is None else analysis.output_size_in_bytes / MB,
        **memory,
        "log_likelihood": -float(value),
    }
    if chunk is not None:  # the same value and gradient as the unchunked path
        plain_value, plain_grad = jax.block_until_ready(compiled_for(None)(params["mechanism"], actions, mask))
        result["max_rel_diff_value"] = abs(float(value) - float(plain_value)) / abs(float(plain_value))
        result["max_abs_diff_grad"] = max(
            float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(grad), jax.tree.leaves(plain_grad))
        )
        result["max_abs_grad"] = max(float(jnp.max(jnp.abs(b))) for b in jax.tree.leaves(plain_grad))
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--episodes", type=int, default=32)
    parser.add_argument("--chunks", nargs="+", default=["none", "20", "45", "100", "400"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", help="output JSON (default benchmarks/results/checkpointing_<platform>.json)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.rounds, args.episodes, _chunk(args.worker), args.repeats)))
        return 0

    import jax
    from likelihood import machine

    results = []
    for text in args.chunks:  # a fresh process per configuration: its own peak memory
        command = [sys.executable, __file__, "--worker", text, "--rounds", str(args.rounds),
                   "--episodes", str(args.episodes), "--repeats", str(args.repeats)]
        proc = subprocess.run(command, capture_output=True, text=True)
        if proc.returncode != 0:
            results.append({"round_chunk": _chunk(text), "error": proc.stderr.strip().splitlines()[-3:]})
        else:
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), file=sys.stderr)
    platform_name = jax.devices()[0].platform
    report = {
        "benchmark": "checkpointing",
        "what": "value_and_grad of the E2 congestion log-likelihood (mechanism parameters), "
                f"{args.episodes} episodes x {args.rounds} rounds, with and without round_chunk",
        "machine": {**machine(), "load_average_1_5_15": list(os.getloadavg())},
        "results": results,
    }
    text = json.dumps(report, indent=2)
    print(text)
    out = Path(args.out) if args.out else HERE / "results" / f"checkpointing_{'gpu' if platform_name == 'gpu' else platform_name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
