"""Which NUTS preconditioning below a few hundred coordinates: NumPyro's dense adaptation or the Laplace frame?

``inference.nuts.run_nuts`` has two dense paths. Up to ``ADAPTED_DENSE_MAX_DIM`` unconstrained
coordinates NumPyro adapts a dense mass matrix (a windowed sample covariance of warmup draws,
started from the inverse Hessian at the warm start); above it NUTS runs in the Laplace frame of
the Hessian at the warm start with a diagonal mass matrix adapted in the frame. Issue 16 reported
a tabular fit with 144 free differences on the adapted-dense path at about 3 s per warmup
iteration. This benchmark runs both paths on the same data for tabular games of 12 to 144 free
payoff differences (and E2's congestion game, 15 coordinates) and records seconds, leapfrog
steps per iteration, divergences and the smallest bulk ESS of the sampled coordinates, so the
rule can be read from the numbers.

Each case: logit-Q play (alpha 0.25, beta 3, eps 0.06) of a truth with free differences drawn
N(0, 1) (the family's prior), ``--size`` episodes x rounds (default 48 x 60), ``bayes_diml.fit``
with NUTS, ``--chains`` x (``--warmup`` + ``--samples``). A path is forced by setting
``nuts.ADAPTED_DENSE_MAX_DIM`` to a large value (adapted dense) or 0 (Laplace frame). A fit that
runs in its own process and is stopped at ``--budget`` seconds (recorded as stopped, with the
time); a path stopped once is not started again at a larger size. ``--cases`` picks cases by
name prefix and ``--append`` adds them to an existing ``--out`` file.

    python benchmarks/mass_matrix.py [--out benchmarks/results/mass_matrix.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from calibration import LEARNER, machine  # noqa: E402  (benchmarks/calibration.py)

GAMES = [(2, 3), (2, 5), (3, 3), (2, 8), (3, 4)]
PATHS = {"adapted dense": 10**9, "laplace frame": 0}


def tabular_case(num_agents: int, num_actions: int, seed: int):
    """A tabular model and a truth whose free differences are N(0, 1) draws."""
    from bayes_diml.learners import logit_q
    from bayes_diml.mechanisms import Tabular
    from bayes_diml.model import Model

    mechanism = Tabular(num_agents=num_agents, num_actions=num_actions)
    model = Model(mechanism, logit_q, dict(LEARNER))
    rows, agents = mechanism.free_entries(True)
    table = np.zeros(mechanism.param_shapes()["payoffs"], np.float32)
    table[rows, agents] = np.random.default_rng(seed).normal(size=rows.size)
    return model, {"mechanism": {"payoffs": table}, "learner": dict(LEARNER)}, int(rows.size)


def congestion_case():
    from bayes_diml import read_spec

    model, truth = read_spec(ROOT / "models" / "e2_congestion.toml")
    return model, truth, 15


CASES = {"congestion E2": (lambda seed: congestion_case(), 15)} | {
    f"tabular {n} agents x {a} actions": (lambda seed, n=n, a=a: tabular_case(n, a, seed), n * (a - 1) * a ** (n - 1)) for n, a in GAMES
}


def one_case(name: str, path: str, args) -> dict:
    """``run_case`` in a child process, stopped at ``--budget`` seconds."""
    command = [sys.executable, __file__, "--child", name, path, "--size", *map(str, args.size), "--chains", str(args.chains),
               "--warmup", str(args.warmup), "--samples", str(args.samples), "--seed", str(args.seed)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=args.budget, check=True)
    except subprocess.TimeoutExpired:
        return {"path": path, "stopped_after_seconds": args.budget}
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_case(model, truth, path: str, args) -> dict:
    import arviz as az

    import bayes_diml as bd
    from bayes_diml.inference import nuts

    data = bd.simulate(model, truth, num_episodes=args.size[0], num_rounds=args.size[1], seed=args.seed)
    nuts.ADAPTED_DENSE_MAX_DIM = PATHS[path]
    start = time.perf_counter()
    result = bd.fit(
        model, data, "nuts", seed=args.seed, num_chains=args.chains, num_warmup=args.warmup,
        num_samples=args.samples, progress=False, posterior_predictive_draws=0,
    )
    wall = time.perf_counter() - start
    columns = np.concatenate(
        [np.asarray(v, np.float64).reshape(args.chains, args.samples, -1) for v in result.posterior.values()], axis=-1
    )
    varying = columns[..., np.std(columns, axis=(0, 1)) > 0]  # the gauge's constant zeros have no ESS
    ess = float(np.min(az.ess(varying, method="bulk")))
    info = result.info
    iterations = args.chains * (args.warmup + args.samples)
    return {
        "path": path,
        "mass_matrix": info.get("mass_matrix"),
        "latent_dim": info.get("latent_dim"),
        "fit_seconds": wall,
        "sampling_seconds": info.get("seconds"),
        "seconds_per_chain_iteration": info.get("seconds") / iterations,
        "mean_leapfrog_steps": info.get("mean_leapfrog_steps"),
        "divergences": info.get("divergences"),
        "min_ess_bulk": ess,
        "min_ess_per_second": ess / info.get("seconds"),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, nargs=2, default=[48, 60], metavar=("EPISODES", "ROUNDS"))
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=150)
    parser.add_argument("--samples", type=int, default=150)
    parser.add_argument("--budget", type=float, default=600.0, help="seconds; a path slower than this stops growing")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--load", default="", help="what else ran on the machine, recorded beside the timings")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "mass_matrix.json")
    parser.add_argument("--cases", nargs="*", default=None, help="case name prefixes (default: all)")
    parser.add_argument("--append", action="store_true", help="add to the cases already in --out")
    parser.add_argument("--child", nargs=2, metavar=("CASE", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        name, path = args.child
        model, truth, _ = CASES[name][0](args.seed)
        print(json.dumps(run_case(model, truth, path, args)))
        return 0

    report = {
        "benchmark": "NUTS below 200 coordinates: NumPyro's adapted dense mass matrix vs the Laplace frame",
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "load": args.load,
        "settings": {k: v for k, v in vars(args).items() if k not in ("out",)},
        "cases": [],
    }
    report["settings"]["size"] = list(args.size)
    report["settings"].pop("child", None)
    if args.append and args.out.exists():
        report["cases"] = json.loads(args.out.read_text())["cases"]
    too_slow: set[str] = set()
    for name, (build, free) in CASES.items():
        if args.cases and not any(name.startswith(prefix) for prefix in args.cases):
            continue
        for path in PATHS:
            if path in too_slow:
                report["cases"].append({"case": name, "free_coordinates": free, "path": path, "skipped": "stopped at --budget at a smaller size"})
                continue
            print(f"[{time.strftime('%H:%M:%S')}] {name} ({free} coordinates), {path}", flush=True)
            row = {"case": name, "free_coordinates": free, **one_case(name, path, args)}
            print(json.dumps({k: row.get(k) for k in ("fit_seconds", "stopped_after_seconds", "mean_leapfrog_steps", "min_ess_bulk")}), flush=True)
            report["cases"].append(row)
            if "stopped_after_seconds" in row:
                too_slow.add(path)
            args.out.write_text(json.dumps(report, indent=2) + "\n")
    report["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
