"""Speed of ``bd.design`` on the E2 posterior (200 draws, the 5 tolls), as JSON.

The E2 congestion game (4 agents, 5 resources, ``models/e2_congestion.toml``) with the
tolls in force declared known (``[mechanism.known] tau``, so that a design over ``tau`` is
identified); play simulated from its truth (``--data-episodes`` x ``--data-rounds``), a
fit (``--method``: the Laplace approximation at the MAP by default, or NUTS), then
``bd.design(fit, lever="tau", ...)`` over ``--draws`` posterior draws, timed whole
(compilation included, as a user meets it) for each objective, in wall-clock and in
CPU seconds of the process (all cores; less sensitive to the load of a shared machine). The goal (issue 18):
under 2 minutes on the 2-core CPU for 200 draws and 5 tolls.

The machine (CPU model, cores, jax version) and the load average before and after each
design are recorded: the machine is shared, and a loaded one is slower. Usage:

    python benchmarks/design_speed.py [--draws 200] [--episodes 20] [--rounds 60]
        [--candidates 32] [--refinements 4] [--method laplace|nuts] [--out PATH]

Default output: ``benchmarks/results/design_speed.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))  # likelihood.py: machine()
sys.path.insert(0, str(ROOT))

OBJECTIVES = (  # (objective, target, risk)
    ("net_welfare", None, "mean"),
    ("share:0", 0.1, "mean"),
    ("net_welfare", None, "cvar:0.1"),
)


def _fit(args):
    import bayes_diml as bd

    model, truth = bd.read_spec(ROOT / "models" / "e2_congestion.toml")
    model = dataclasses.replace(model, mechanism_known={"tau": truth["mechanism"]["tau"]})
    data = bd.simulate(model, truth, num_episodes=args.data_episodes, num_rounds=args.data_rounds, seed=args.seed)
    start = time.perf_counter()
    if args.method == "nuts":
        per_chain = -(-args.draws // 2)
        fit = bd.fit(model, data, method="nuts", seed=args.seed, num_chains=2, num_warmup=200, num_samples=per_chain, progress=False)
    else:
        fit = bd.fit(
            model,
            data,
            method="map",
            seed=args.seed,
            steps=1000,
            restarts=2,
            laplace=True,
            num_samples=args.draws,
            posterior_predictive_draws=1,
            progress=False,
        )
    return fit, truth, time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--episodes", type=int, default=20, help="simulated episodes per draw and candidate")
    parser.add_argument("--rounds", type=int, default=60, help="simulated rounds (E2's data have 60)")
    parser.add_argument("--candidates", type=int, default=32, help="candidates per compiled batch")
    parser.add_argument("--refinements", type=int, default=4)
    parser.add_argument("--data-episodes", type=int, default=60)
    parser.add_argument("--data-rounds", type=int, default=60)
    parser.add_argument("--method", choices=("laplace", "nuts"), default="laplace")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="output JSON (default benchmarks/results/design_speed.json)")
    args = parser.parse_args(argv)

    import numpy as np
    from likelihood import machine

    import bayes_diml as bd

    fit, truth, fit_seconds = _fit(args)
    print(f"fit ({args.method}): {fit_seconds:.1f} s", file=sys.stderr, flush=True)
    results = []
    for objective, target, risk in OBJECTIVES:
        load_before = list(os.getloadavg())
        start, cpu_start = time.perf_counter(), time.process_time()
        result = bd.design(
            fit,
            lever="tau",
            bounds=(-0.2, 0.6),
            objective=objective,
            target=target,
            risk=risk,
            num_episodes=args.episodes,
            num_rounds=args.rounds,
            seed=args.seed,
            max_draws=args.draws,
            num_candidates=args.candidates,
            refinements=args.refinements,
        )
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        row = {
            "objective": objective,
            "target": target,
            "risk": risk,
            "seconds": round(seconds, 2),
            "cpu_seconds": round(cpu_seconds, 2),
            "under_2_minutes": seconds < 120,
            "load_average_before": load_before,
            "load_average_after": list(os.getloadavg()),
            **{k: result["settings"][k] for k in ("num_draws", "candidates_evaluated", "num_episodes", "num_rounds")},
            "recommended": np.round(result["recommended"]["tau"], 4).tolist(),
            "status_quo": np.round(result["status_quo"]["tau"], 4).tolist(),
            "plug_in": np.round(result["plug_in"]["tau"], 4).tolist(),
            "objective_values": result["objective"],
        }
        results.append(row)
        print(json.dumps({k: row[k] for k in ("objective", "risk", "seconds", "load_average_before")}), file=sys.stderr, flush=True)
    report = {
        "benchmark": "design_speed",
        "what": f"bd.design over the 5 E2 tolls (tau known), {args.draws} posterior draws x {args.episodes} episodes x "
        f"{args.rounds} rounds per candidate, {args.candidates} candidates per compiled batch, "
        f"{args.refinements} refinements; seconds include compilation",
        "machine": {**machine(), "cores_shared_with_other_jobs": True},
        "fit": {
            "method": args.method,
            "seconds": round(fit_seconds, 1),
            "data_episodes": args.data_episodes,
            "data_rounds": args.data_rounds,
            "truth_tau": np.asarray(truth["mechanism"]["tau"]).tolist(),
        },
        "results": results,
    }
    text = json.dumps(report, indent=2)
    out = Path(args.out) if args.out else HERE / "results" / "design_speed.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
