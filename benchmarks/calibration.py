"""Simulation-based calibration study (Talts et al. 2018, arXiv:1804.06788) of the NUTS fit.

Two games, each with ``--datasets`` datasets (default 100) drawn from the model's own prior:

* ``tabular``: 2 agents x 3 actions, tabular payoffs (12 free gauge-fixed payoff
  differences ~ N(0, 1)), logit-Q learners alpha 0.25, beta 3, eps 0.06;
  ``--tabular-size`` episodes x rounds (default 10 x 20).
* ``congestion``: E2's game (4 agents, 5 resources, congestion with tolls, logit-Q
  alpha 0.25, beta 3, eps 0.06; latent d, c2, c1: 15 dimensions) with the family's
  default prior, but fewer data than E2's 48 x 60: ``--congestion-size`` (default
  12 x 20) to fit the time budget of a shared 2-core machine.

Each game: ``bayes_diml.calibration.sbc`` with NUTS (1 chain, 250 warmup, L = 99 draws
thinned by 2), every dataset fitted by the shipped runner ``fit`` calls
(``inference.nuts.run_nuts``: its warm start and mass matrix). Writes
``benchmarks/results/calibration.json`` (ranks, p-values, settings, wall time, machine)
after each game, and ``calibration_<game>.png`` rank histograms with the 99% band of a
uniform histogram. Usage::

    python benchmarks/calibration.py [--datasets 100] [--games tabular congestion]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

LEARNER = {"alpha": 0.25, "beta": 3.0, "eps": 0.06}


def machine() -> dict:
    import jax
    import numpyro

    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "platform": platform.platform(),
        "cpu_model": model,
        "cpu_count": os.cpu_count(),
        "device": str(jax.devices()[0]),
        "jax": jax.__version__,
        "numpyro": numpyro.__version__,
        "python": platform.python_version(),
    }


def build(game: str):
    from bayes_diml import read_spec
    from bayes_diml.learners import logit_q
    from bayes_diml.mechanisms import Tabular
    from bayes_diml.model import Model

    if game == "tabular":
        return Model(Tabular(num_agents=2, num_actions=3), logit_q, dict(LEARNER))
    if game == "congestion":
        model, _ = read_spec(ROOT / "models" / "e2_congestion.toml")
        return model
    raise SystemExit(f"unknown game {game!r}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", type=int, default=100)
    parser.add_argument("--games", nargs="+", default=["tabular", "congestion"])
    parser.add_argument("--tabular-size", type=int, nargs=2, default=[10, 20], metavar=("EPISODES", "ROUNDS"))
    parser.add_argument("--congestion-size", type=int, nargs=2, default=[12, 20], metavar=("EPISODES", "ROUNDS"))
    parser.add_argument("--num-draws", type=int, default=99)
    parser.add_argument("--thin", type=int, default=2)
    parser.add_argument("--num-warmup", type=int, default=250)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "calibration.json")
    args = parser.parse_args(argv)

    from bayes_diml.calibration import sbc
    from bayes_diml.calibration_ranks import distinct_quantities

    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": "simulation-based calibration (Talts et al. 2018), NUTS",
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "command": " ".join(["python", "benchmarks/calibration.py", *(argv if argv is not None else sys.argv[1:])]),
        "combined_p_value_note": "Bonferroni over quantities of the per-quantity chi-square p-values: min(1, Q min p)",
        "games": {},
    }
    if args.out.exists():  # keep games measured by an earlier run that are not re-run now
        try:
            report["games"].update({k: v for k, v in json.loads(args.out.read_text()).get("games", {}).items() if k not in args.games})
        except (json.JSONDecodeError, OSError):
            pass
    for game in args.games:
        model = build(game)
        episodes, rounds = args.tabular_size if game == "tabular" else args.congestion_size
        print(f"[{time.strftime('%H:%M:%S')}] {game}: {args.datasets} datasets of {episodes} x {rounds}", flush=True)
        result = sbc(
            model, None, args.datasets, num_episodes=episodes, num_rounds=rounds, num_draws=args.num_draws,
            thin=args.thin, num_warmup=args.num_warmup, batch_size=args.batch_size, seed=args.seed, progress=True,
        )
        print(result.verdict(), flush=True)
        print(result.to_frame().to_string(), flush=True)
        frame = result.to_frame()
        report["games"][game] = {
            "settings": result.settings,
            "wall_seconds": result.wall_seconds,
            "num_bins": result.num_bins,
            "combined_p_value": result.combined_p_value,
            "min_p_chi2": float(frame["p_chi2"].min()),
            "min_p_ks": float(frame["p_ks"].min()),
            "total_divergences": int(result.divergences.sum()),
            "datasets_with_divergences": int((result.divergences > 0).sum()),
            "quantities": frame.to_dict(orient="records"),
            "distinct_quantities": [result.quantities[q] for q in distinct_quantities(result.true_values)],
            "ranks": result.ranks.tolist(),
            "true_values": result.true_values.tolist(),
            "verdict": result.verdict(),
        }
        report["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        args.out.write_text(json.dumps(report, indent=1, default=float) + "\n")
        figure = result.plot(title=f"SBC, {game} ({args.datasets} datasets of {episodes} x {rounds}, NUTS, L = {result.num_draws}); "
                             f"combined p = {result.combined_p_value:.2g}")
        figure.savefig(args.out.parent / f"calibration_{game}.png", dpi=110)
        import jax

        jax.clear_caches()  # each fit's compiled programs hold memory mappings: see bayes_diml.calibration.sbc
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
