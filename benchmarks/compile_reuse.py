"""Compile reuse: does a second ``read_spec`` + MAP fit of the same model recompile?

In one process: read the default spec, simulate data, fit by MAP; then read the spec
again (a new ``Model`` object) and fit the same data again. JAX's compile time is summed
per fit from its ``jax.monitoring`` duration events (backend compile and tracing). With
models compared by value (issue 16, point 6) the second fit finds the compiled programs
of the first; with models hashed by identity it compiles them all again.

    python benchmarks/compile_reuse.py [--out benchmarks/results/compile_reuse.json] [--label after]

Run from the repository root (or with ``PYTHONPATH`` naming another tree, to measure it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections import defaultdict
from pathlib import Path

import jax
import jax.monitoring

EVENTS = (
    "/jax/core/compile/backend_compile_duration",
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
)


def _fit_once(bd, data_spec_path, data, steps: int) -> dict:
    """read_spec + MAP fit, with the compile seconds spent in it."""
    seconds = defaultdict(float)

    def listener(event, duration, **kwargs):
        if event in EVENTS:
            seconds[event] += duration

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        start = time.perf_counter()
        model, _ = bd.read_spec(data_spec_path)
        bd.fit(model, data, method="map", seed=1, steps=steps, restarts=1, progress=False, ppc=False)
        wall = time.perf_counter() - start
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    return {
        "wall_seconds": wall,
        "backend_compile_seconds": seconds[EVENTS[0]],
        "trace_seconds": seconds[EVENTS[1]],
        "lowering_seconds": seconds[EVENTS[2]],
        "compile_seconds_total": sum(seconds[e] for e in EVENTS),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write (default: print only)")
    parser.add_argument("--label", default="current tree")
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args(argv)

    import bayes_diml as bd

    path = bd.default_spec_path()
    model, truth = bd.read_spec(path)
    data = bd.simulate(model, truth, num_episodes=20, num_rounds=30, seed=0)
    first = _fit_once(bd, path, data, args.steps)
    second = _fit_once(bd, path, data, args.steps)
    again, _ = bd.read_spec(path)
    report = {
        "benchmark": "second read_spec + MAP fit of the same model in one process: compile reuse",
        "label": args.label,
        "bayes_diml_file": bd.__file__,
        "models_equal": bool(again == model),
        "first_fit": first,
        "second_fit": second,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.machine(),
            "cpu_count": os.cpu_count(),
            "device": str(jax.devices()[0]),
            "jax": jax.__version__,
        },
    }
    text = json.dumps(report, indent=1)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
