"""The anonymous function-space Laplace grid on a very large game (issue 17, point 2).

One truth draw of E7's anonymous network (two ReLU layers of 256, the paper's truth
distribution ``Anonymous.init_params``, seed ``TRUTH_SEED_BASE + seed`` as reproduce
draws it), at ``--agents`` agents and ``--actions`` actions, learner logit-Q as in E7
(alpha 0.2, beta 6, eps 0.02); ``scaled`` variant by default (true differences of unit
sd, as reproduce's ``unit_scale_factor``). Data: ``--episodes`` x ``--rounds`` simulated
with ``simulate`` (data seed ``2000 + seed``), split 80/20 as reproduce splits (at least
one test episode).

Fit: the anonymous family with its prior in function space (``AnonymousFunction``,
``--features``) by ``fit(method="laplace_grid", batch_episodes=B)``: the modes on every
training episode, the Hessians on a fixed minibatch of ``B`` (``--batch-episodes``;
``0`` = all, the full-data Hessians). Scores: reproduce's ``evaluate_estimate`` (90%
coverage of the true payoff differences and the posterior mean's relative error on
4,000 distinct-pair queries from the test episodes, 400 draws). Recorded: wall seconds
of the simulation and of the fit, the grid, the fit's Pareto k and warnings, and the peak
resident memory of the process (``ru_maxrss``) after each stage (simulation, fit, and
scoring: reproduce's ``evaluate_estimate`` is not the library and holds far more at
10,000 agents than the fit); the machine and ``--load``.

``--agents 300 --batch-episodes 0`` and ``--batch-episodes 1`` on the same data measure
what the minibatch Hessian changes (coverage, error, interval width). Usage::

    python benchmarks/anonymous_large.py --agents 10000 --actions 10 --episodes 5 --rounds 25 \\
        --batch-episodes 1 --seed 1 [--load "idle"] [--out benchmarks/results/anonymous_large/n10000.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far, GB (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def build(args):
    """Model (E7's anonymous network at the requested size), truth and the simulated data."""
    from bayes_diml.mechanisms import Anonymous
    from bayes_diml.simulate import simulate
    from bayes_diml.spec import read_spec
    from experiments import reproduce as rp

    base, spec_truth = read_spec(ROOT / "models" / "e7_n40_a10.toml")
    mechanism = Anonymous(num_agents=args.agents, num_actions=args.actions, hidden=base.mechanism.hidden)
    model = dataclasses.replace(base, mechanism=mechanism)
    truth = rp.draw_truth(model, {"learner": spec_truth["learner"]}, args.seed)
    factor = 1.0
    if args.variant == "scaled":
        factor = rp.unit_scale_factor(model, truth["mechanism"], args.seed)
        truth = {"mechanism": rp.scale_mechanism(model.mechanism, truth["mechanism"], factor), "learner": truth["learner"]}
    data = simulate(model, truth, num_episodes=args.episodes, num_rounds=args.rounds, seed=rp.DATA_SEED_BASE + args.seed)
    return model, truth, factor, data


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--actions", type=int, default=10)
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--batch-episodes", type=int, default=1, help="episodes of the Hessians' minibatch (0: all)")
    parser.add_argument("--features", type=int, default=512)
    parser.add_argument("--variant", choices=["paper", "scaled"], default="scaled")
    parser.add_argument("--seed", type=int, default=1, help="truth draw (>= 1: Anonymous.init_params)")
    parser.add_argument("--load", default="unrecorded", help="what else ran on the machine (recorded)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    out = args.out or HERE / "results" / "anonymous_large" / f"n{args.agents}_A{args.actions}_b{args.batch_episodes}.json"
    out.parent.mkdir(parents=True, exist_ok=True)

    from calibration import machine
    from coverage_neural import function_model

    from bayes_diml.baselines import Estimate
    from bayes_diml.inference import fit
    from experiments import reproduce as rp

    report = {
        "benchmark": "anonymous function-space Laplace grid on a large anonymous game (issue 17)",
        "agents": args.agents, "actions": args.actions, "episodes": args.episodes, "rounds": args.rounds,
        "batch_episodes": args.batch_episodes or None, "features": args.features, "variant": args.variant,
        "seed": args.seed, "machine": machine(), "load": args.load,
        "command": " ".join(["python", "benchmarks/anonymous_large.py", *(argv if argv is not None else sys.argv[1:])]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "peak_rss_gb_at_start": peak_rss_gb(),
    }
    start = time.perf_counter()
    model, truth, factor, data = build(args)
    train, test = rp.split_episodes(data)
    report.update(simulate_seconds=time.perf_counter() - start, scale_factor=factor, train_episodes=train.num_episodes,
                  test_episodes=test.num_episodes, peak_rss_gb_after_simulation=peak_rss_gb())
    print(f"simulated {data.num_episodes} x {data.num_rounds} x {args.agents} in {report['simulate_seconds']:.0f} s; "
          f"peak RSS {report['peak_rss_gb_after_simulation']:.2f} GB", flush=True)
    fmodel = function_model(model, args.features)
    start = time.perf_counter()
    options = {"batch_episodes": args.batch_episodes} if args.batch_episodes else {}
    result = fit(fmodel, train, method="laplace_grid", seed=args.seed, progress=True, posterior_predictive_draws=1,
                 ppc=False, **options)
    report.update(fit_seconds=time.perf_counter() - start, peak_rss_gb_after_fit=peak_rss_gb(),
                  laplace_seconds=result.info.get("seconds"), hessian_episodes=result.info.get("hessian_episodes"),
                  grid=result.info.get("grid"), edge_weight=result.info.get("edge_weight"),
                  pareto_k=result.info.get("pareto_k"), pareto_k_draws=result.info.get("pareto_k_draws"),
                  hessian_columns=result.info.get("hessian_columns"), warnings=result.diagnostics()["warnings"])
    print(f"fit {report['fit_seconds']:.0f} s; peak RSS {report['peak_rss_gb_after_fit']:.2f} GB", flush=True)
    s = rp.Settings()
    scored = rp.evaluate_estimate(Estimate.from_fit(result, "anonymous function-space Laplace grid"), model, truth,
                                  train, test, seed=args.seed, settings=s, counterfactual=False)
    report.update(scored)
    report.update(peak_rss_gb_scoring_included=peak_rss_gb(), finished=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  loadavg_after=list(os.getloadavg()))
    out.write_text(json.dumps(rp._jsonable(report), indent=1) + "\n")
    print(json.dumps({k: report[k] for k in ("coverage90", "rel_error", "fit_seconds", "peak_rss_gb_after_fit", "pareto_k")
                      if k in report}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
