"""Are the function-space posteriors calibrated on the paper's games? (issue 17)

``E7`` (``--setting``, e.g. ``E7_n40_A10``): the anonymous family with its prior in
function space (``AnonymousFunction``: random features, ``fit(method="auto")`` -> the
Laplace grid), on reproduce's E7 data of that setting, against reproduce's "DIML
(anonymous ML)"; the rest of this docstring describes E1 and E2, and applies to E7 with
those substitutions.

For one experiment (``E1``: the random neural joint mechanism, 3 agents x 6 actions; ``E2``:
the congestion truth, 4 agents x 5 actions, fitted with the neural family as reproduce's
"neural SVI" and "DIML (neural ML)" rows are) and variant (``paper``: the truth's own scale;
``scaled``: true differences rescaled to unit sd), and each truth draw in ``--seeds``:

1. the data exactly as ``bayes-diml reproduce`` makes them (``experiments/reproduce.py``:
   ``_setting_data`` with the paper's 60 x 60 sizes, data seed ``2000 + seed``), split
   80/20 into 48 training and 12 test episodes (``split_episodes``);
2. the neural family with its prior in function space (``NeuralFunction``, i.e.
   ``family = "neural"`` with ``[mechanism.prior] space = "function"``, the default
   128 x 128 tanh network of reproduce's ``neural_model``: a Gaussian prior over the payoff
   table with the network prior's covariance and a hierarchical payoff scale), fitted with
   ``fit(method="auto")`` (which picks NUTS) on the training episodes, ``--chains`` x
   (``--warmup`` + ``--samples``), fit seed = truth seed as in reproduce;
3. the scores reproduce reports (``evaluation.evaluate_estimate``, no counterfactuals):
   90% coverage of the true payoff differences and relative error of the posterior mean on
   its 4,000 distinct-pair queries from the test episodes (query seed ``seed + 1``, 400
   draws), plus the coverage and mean interval width split by whether the query's opponent
   context occurs in the training data (``differences.in_support``), R-hat of the payoff
   differences (all queries, every draw, rank-normalised split R-hat; beside it the same
   draws shuffled across chains, the value independent draws would give) and of the sampled
   sites (``Fit.diagnostics``), divergences and wall seconds of the fit;
4. unless ``--no-ml``, reproduce's "DIML (neural ML)" (``baselines.maximum_likelihood`` of
   ``neural_model``, 200 full-batch Adam steps at 1e-3) on the same data, for the relative
   error comparison; the committed reproduce rows of the same (experiment, variant, seed)
   (``benchmarks/results/paper*/paper.json``: neural ML, neural SVI, tabular MAP, tabular
   NUTS) are copied beside it.

Pooled coverage = covered queries / queries over all seeds of the file. Rows of seeds not
re-run are kept from an existing JSON, so seeds can be added run by run. Writes
``<out-dir>/<experiment>_<variant>.json`` (rows, pooled, NUTS settings, machine, command,
``--load``) and ``.md``. Run one fit at a time on a shared machine. Usage::

    python benchmarks/coverage_neural.py --experiment E1 --variant scaled --seeds 0 1 2 3 \\
        [--chains 2 --warmup 300 --samples 300] [--no-ml] [--load "idle"]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

ESTIMATOR = "neural function-space NUTS"
COMMITTED = ["paper_E1_E3/paper.json", "paper_E1/paper.json", "paper.json", "paper_E3/paper.json", "paper_E7/paper.json"]
"""reproduce tables (under benchmarks/results) searched, in this order, for committed rows."""
COMMITTED_ESTIMATORS = ("DIML (neural ML)", "neural SVI", "tabular MAP", "tabular NUTS", "DIML (anonymous ML)", "anonymous SVI")
ML_KEY = {"E7": "DIML (anonymous ML)"}
"""The committed ML row compared per experiment (default ``DIML (neural ML)``)."""
SVI_KEY = {"E7": "anonymous SVI"}


def function_model(model, features=None):
    """The fitted family (``network_model``) with its prior in function space: what
    ``read_spec`` builds from ``family = "neural"`` (or ``"anonymous"``) with
    ``[mechanism.prior] space = "function"``, default sizes."""
    network = type(model.mechanism)
    section = {"family": network.family, "prior": {"space": "function"}, **({"features": features} if features else {})}
    mechanism = network.from_spec(section, model.num_agents, model.num_actions)
    return dataclasses.replace(model, mechanism=mechanism, mechanism_prior={"space": "function"})


def network_model(experiment: str, model):
    """The network family reproduce's ML fits: the anonymous truth's own family on E7,
    reproduce's ``neural_model`` (128 x 128 tanh) on E1 and E2."""
    from experiments import reproduce as rp

    return model if experiment == "E7" else rp.neural_model(model)


def committed_rows(experiment: str, variant: str, seed: int, setting: str) -> dict:
    """``{estimator: {rel_error, coverage90, wall_seconds, source}}`` from committed reproduce tables."""
    out: dict = {}
    for name in COMMITTED:
        path = HERE / "results" / name
        if not path.exists():
            continue
        for row in json.loads(path.read_text()).get("rows", []):
            key = row.get("estimator")
            if (row.get("experiment"), row.get("variant"), row.get("seed"), row.get("status")) != (experiment, variant, seed, "ok"):
                continue
            if row.get("setting", setting) != setting:
                continue
            if key in COMMITTED_ESTIMATORS and key not in out:
                out[key] = {k: row.get(k) for k in ("rel_error", "rel_error_in_support", "coverage90", "wall_seconds")}
                out[key]["source"] = f"benchmarks/results/{name}"
    return out


def support_scores(estimate, model, truth, train, test, seed: int, s) -> dict:
    """Coverage, counts and mean 90% width on reproduce's ``rel_error`` / ``coverage90``
    queries, split by support; R-hat of every query's difference over every draw."""
    from bayes_diml import metrics
    from bayes_diml.differences import in_support, support_contexts
    from bayes_diml.evaluation import DIFFERENCE_DRAWS, _thinned
    from experiments import reproduce as rp

    A = model.num_actions
    codes = metrics.difference_queries(test.actions, test.mask, A, s.num_queries, seed + 1, distinct=True, skip_last=False)
    true = metrics.mechanism_differences(model.mechanism, rp._with_draw_axis(truth["mechanism"]), codes)[0]
    draws = metrics.mechanism_differences(estimate.model.mechanism, _thinned(estimate, DIFFERENCE_DRAWS)["mechanism"], codes)
    lo, hi = np.quantile(draws, 0.05, axis=0), np.quantile(draws, 0.95, axis=0)
    covered = (true >= lo) & (true <= hi)
    seen = in_support(codes, support_contexts(train, model.mechanism.counts_context, A), model.mechanism.counts_context, A)
    out = {"queries": int(len(codes)), "covered": int(covered.sum()), "true_sd": float(np.std(true))}
    for name, keep in (("in_support", seen), ("off_support", ~seen)):
        n = int(keep.sum())
        out[f"queries_{name}"] = n
        out[f"covered_{name}"] = int(covered[keep].sum())
        out[f"coverage90_{name}"] = float(covered[keep].mean()) if n else None
        out[f"width90_{name}"] = float((hi - lo)[keep].mean()) if n else None
    fit = estimate.fit
    if fit is not None and fit.num_chains > 1:
        every = metrics.mechanism_differences(estimate.model.mechanism, estimate.params["mechanism"], codes)
        out["rhat_differences_all"] = metrics.difference_rhat(every, fit.num_chains)
        # the same draws shuffled across chains and positions: what R-hat reads for
        # independent draws of this posterior at this length (its noise floor)
        shuffled = np.random.default_rng(seed).permutation(np.asarray(every), axis=0)
        out["rhat_differences_shuffled"] = metrics.difference_rhat(shuffled, fit.num_chains)
    return out


def run_seed(experiment: str, variant: str, seed: int, args, log) -> dict:
    from bayes_diml import baselines
    from bayes_diml.baselines import Estimate
    from bayes_diml.inference import fit
    from experiments import reproduce as rp

    s = rp.Settings()
    setting = next(x for x in rp.EXPERIMENTS[experiment] if x.name == args.setting)
    model, truth, factor, data = rp._setting_data(setting, variant, seed, s)
    train, test = rp.split_episodes(data)
    estimator = "anonymous function-space Laplace grid" if experiment == "E7" else ESTIMATOR
    row = {"experiment": experiment, "setting": setting.name, "variant": variant, "seed": seed, "estimator": estimator,
           "scale_factor": factor, "train_episodes": train.num_episodes, "test_episodes": test.num_episodes,
           "rounds": data.num_rounds, "load": args.load, "loadavg_before": list(os.getloadavg())}
    fmodel = function_model(network_model(experiment, model), args.features)
    row["mechanism"] = type(fmodel.mechanism).__name__
    start = time.perf_counter()
    try:
        options = {"num_chains": args.chains, "num_warmup": args.warmup, "num_samples": args.samples}
        result = fit(fmodel, train, method="auto", seed=seed, progress=False, posterior_predictive_draws=1, ppc=False,
                     **{k: v for k, v in options.items() if v is not None})
        row["wall_seconds"] = time.perf_counter() - start
        row["loadavg_after_fit"] = list(os.getloadavg())
        row["method"] = result.method
        row["method_reason"] = result.info.get("method_reason")
        diagnostics = result.diagnostics()
        for key in ("max_rhat", "min_ess_bulk", "min_ess_tail", "divergences", "mean_leapfrog_steps", "ebfmi", "grid",
                    "edge_weight", "pareto_k", "pareto_k_draws"):
            row[key] = diagnostics.get(key)
        row["warnings"] = diagnostics.get("warnings")
        estimate = Estimate.from_fit(result, estimator)
        scored = rp.evaluate_estimate(estimate, model, truth, train, test, seed=seed, settings=s, counterfactual=False)
        row.update(scored)
        row.update(support_scores(estimate, model, truth, train, test, seed, s))
        row["status"] = "ok"
    except Exception as err:  # a failed fit stays in the table with its reason
        row.update(status="failed", reason=f"{type(err).__name__}: {err}", traceback=traceback.format_exc()[-3000:])
        log(traceback.format_exc())
    row["total_seconds"] = time.perf_counter() - start
    log(f"{setting.name} {variant} seed {seed} {estimator}: {row['status']} coverage90={row.get('coverage90')} "
        f"(in {row.get('coverage90_in_support')}, off {row.get('coverage90_off_support')}) rel_error={row.get('rel_error')} "
        f"rhat_diff={row.get('rhat_differences_all')} max_rhat={row.get('max_rhat')} div={row.get('divergences')} "
        f"fit {row.get('wall_seconds', float('nan')):.0f} s")
    if not args.no_ml:
        start = time.perf_counter()
        try:
            ml = baselines.maximum_likelihood(network_model(experiment, model), train, seed, steps=s.ml_steps,
                                              learning_rate=s.ml_learning_rate, name=ML_KEY.get(experiment, rp.DIML))
            seconds = time.perf_counter() - start
            scored = rp.evaluate_estimate(ml, model, truth, train, test, seed=seed, settings=s, counterfactual=False)
            row["neural_ml"] = {"rel_error": scored["rel_error"], "rel_error_in_support": scored["rel_error_in_support"],
                                "diff_mse": scored["diff_mse"], "wall_seconds": seconds, "steps": s.ml_steps,
                                "learning_rate": s.ml_learning_rate}
        except Exception as err:
            row["neural_ml"] = {"status": "failed", "reason": f"{type(err).__name__}: {err}"}
            log(traceback.format_exc())
        log(f"  neural ML: {row['neural_ml']}")
    row["committed_reproduce"] = committed_rows(experiment, variant, seed, setting.name)
    row["loadavg_after"] = list(os.getloadavg())
    rp.release_compiled()
    return row


def pooled(rows: list[dict]) -> dict:
    ok = [r for r in rows if r.get("status") == "ok"]
    out = {"seeds": [r["seed"] for r in ok], "failed_seeds": [r["seed"] for r in rows if r.get("status") != "ok"]}
    for suffix in ("", "_in_support", "_off_support"):
        q = sum(r.get(f"queries{suffix}", 0) for r in ok)
        c = sum(r.get(f"covered{suffix}", 0) for r in ok)
        out[f"coverage90{suffix}"] = c / q if q else None
        out[f"queries{suffix}"] = q
    for key in ("rel_error", "wall_seconds", "rhat_differences_all", "max_rhat"):
        values = [r[key] for r in ok if r.get(key) is not None]
        out[f"mean_{key}"] = float(np.mean(values)) if values else None
    for key in ("rhat_differences_all", "rhat_differences_shuffled"):
        values = [r[key] for r in ok if r.get(key) is not None]
        out[f"max_{key}"] = max(values) if values else None
    out["total_divergences"] = int(sum(r.get("divergences") or 0 for r in ok))
    ml = [r["neural_ml"]["rel_error"] for r in ok if isinstance(r.get("neural_ml"), dict) and "rel_error" in r["neural_ml"]]
    out["mean_neural_ml_rel_error"] = float(np.mean(ml)) if ml else None
    return out


def _f(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def markdown(report: dict) -> str:
    n, experiment = report["nuts"], report["experiment"]
    ml_key, svi_key = ML_KEY.get(experiment, "DIML (neural ML)"), SVI_KEY.get(experiment, "neural SVI")
    if experiment == "E7":
        how = (f"Anonymous family, `[mechanism.prior] space = \"function\"` ({(report.get('inference') or {}).get('features', 512)} "
               "random features), `fit(method=\"auto\")` -> "
               "the Laplace grid over the payoff scale; reproduce's data of the setting (80/20 split of its episodes)")
        ml_name = "anonymous ML"
    else:
        how = (f"Neural family, `[mechanism.prior] space = \"function\"`, `fit(method=\"auto\")` -> NUTS, {n['num_chains']} "
               f"chains x ({n['num_warmup']} warmup + {n['num_samples']} samples); reproduce's data (48 train / 12 test "
               "episodes x 60 rounds)")
        ml_name = "neural ML"
    lines = [
        f"# {report.get('estimator', ESTIMATOR)}: {report.get('setting', experiment)} {report['variant']}",
        "",
        f"{how} and queries. Machine: {report['machine']['cpu_model']} ({report['machine']['cpu_count']} CPUs); "
        f"load: {report['load']}. Command: `{report['command']}`.",
        "",
        f"| seed | coverage90 | in support (n) | off support (n) | width in / off | rel. error | {ml_name} rel. error "
        f"| {ml_name} (committed) | {svi_key} cov. (committed) | R-hat Δ (shuffled) | max R-hat sites | div. | fit s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(report["rows"], key=lambda r: r["seed"]):
        if r.get("status") != "ok":
            reason = r.get("reason", "")[:200].replace("\n", " ").replace("|", "/")
            lines.append(f"| {r['seed']} | failed: {reason} |" + " – |" * 11)
            continue
        ml = r.get("neural_ml") or {}
        com = r.get("committed_reproduce", {})
        lines.append(
            f"| {r['seed']} | {_f(r['coverage90'])} | {_f(r['coverage90_in_support'])} ({r['queries_in_support']}) "
            f"| {_f(r['coverage90_off_support'])} ({r['queries_off_support']}) "
            f"| {_f(r['width90_in_support'])} / {_f(r['width90_off_support'])} | {_f(r['rel_error'])} "
            f"| {_f(ml.get('rel_error'))} | {_f(com.get(ml_key, {}).get('rel_error'))} "
            f"| {_f(com.get(svi_key, {}).get('coverage90'))} | {_f(r.get('rhat_differences_all'), 4)} "
            f"({_f(r.get('rhat_differences_shuffled'), 4)}) "
            f"| {_f(r.get('max_rhat'), 4)} | {_f(r.get('divergences'))} | {_f(r.get('wall_seconds'), 0)} |"
        )
    p = report["pooled"]
    lines += [
        "",
        f"Pooled over seeds {p['seeds']}: coverage90 **{_f(p['coverage90'])}** ({p['queries']} queries), in support "
        f"{_f(p['coverage90_in_support'])} ({p['queries_in_support']}), off support {_f(p['coverage90_off_support'])} "
        f"({p['queries_off_support']}); mean relative error {_f(p['mean_rel_error'])} ({ml_name} {_f(p['mean_neural_ml_rel_error'])}); "
        f"largest R-hat of Δ {_f(p['max_rhat_differences_all'], 4)} (of the same draws shuffled, the value for independent "
        f"draws: {_f(p.get('max_rhat_differences_shuffled'), 4)}); divergences {p['total_divergences']}; "
        f"mean fit {_f(p['mean_wall_seconds'], 0)} s." + (f" Failed seeds: {p['failed_seeds']}." if p["failed_seeds"] else ""),
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--experiment", choices=["E1", "E2", "E7"], required=True)
    parser.add_argument("--setting", help="the experiment's setting (E7: E7_n40_A10 ... E7_n300_A40; default: the first)")
    parser.add_argument("--variant", choices=["paper", "scaled"], required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="truth draws (0 = the models/ truth)")
    parser.add_argument("--chains", type=int, help="NUTS chains (default 2; not for E7)")
    parser.add_argument("--warmup", type=int, help="NUTS warmup (default 300; not for E7)")
    parser.add_argument("--samples", type=int, help="draws per chain (default 300; E7: the Laplace grid's 1000 draws)")
    parser.add_argument("--features", type=int, help="E7: random features of the function-space prior (default 512)")
    parser.add_argument("--no-ml", action="store_true", help="skip the neural ML comparison fit")
    parser.add_argument("--load", default="unrecorded", help="what else ran on the machine (recorded)")
    parser.add_argument("--out-dir", type=Path, default=HERE / "results" / "coverage_neural")
    args = parser.parse_args(argv)
    if args.experiment != "E7":
        args.chains, args.warmup, args.samples = args.chains or 2, args.warmup or 300, args.samples or 300

    from calibration import machine

    from experiments import reproduce as rp

    rp._enable_compilation_cache(rp.default_cache_dir())  # as reproduce does
    args.out_dir.mkdir(parents=True, exist_ok=True)
    args.setting = args.setting or rp.EXPERIMENTS[args.experiment][0].name
    if args.setting not in {x.name for x in rp.EXPERIMENTS[args.experiment]}:
        parser.error(f"--setting {args.setting!r}: {args.experiment} has {[x.name for x in rp.EXPERIMENTS[args.experiment]]}")
    stem = f"{args.setting}_{args.variant}"
    out_json, out_md = args.out_dir / f"{stem}.json", args.out_dir / f"{stem}.md"
    nuts = {"num_chains": args.chains, "num_warmup": args.warmup, "num_samples": args.samples}
    report_inference = ({"method": "auto (laplace_grid)", "num_samples": args.samples or 1000, "features": args.features or 512}
                        if args.experiment == "E7" else None)
    command = " ".join(["python", "benchmarks/coverage_neural.py", *(argv if argv is not None else sys.argv[1:])])
    rows: list[dict] = []
    commands = [command]
    if out_json.exists():  # keep seeds measured by an earlier run with the same NUTS settings
        old = json.loads(out_json.read_text())
        if old.get("nuts") == nuts and old.get("inference") == report_inference:
            rows = [r for r in old.get("rows", []) if r["seed"] not in args.seeds]
            commands = [c for c in old.get("commands", []) if rows] + [command]
        else:
            print(f"{out_json}: earlier run had NUTS settings {old.get('nuts')}, replaced", flush=True)
    report = {
        "benchmark": "90% coverage of the neural family's function-space NUTS posterior on reproduce's data (issue 17)",
        "experiment": args.experiment, "setting": args.setting, "variant": args.variant,
        "estimator": "anonymous function-space Laplace grid" if args.experiment == "E7" else ESTIMATOR,
        "inference": report_inference,
        "model": (f'family = "anonymous" ({args.features or 512} random features), [mechanism.prior] space = "function"'
                  if args.experiment == "E7"
                  else 'family = "neural" (hidden 128 x 128, default embedding), [mechanism.prior] space = "function"'),
        "nuts": nuts, "queries": "reproduce's rel_error/coverage90 queries: 4000 distinct-pair, test episodes, seed + 1; 400 draws",
        "machine": machine(), "command": command, "commands": commands, "load": args.load,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }

    def write():
        rows.sort(key=lambda r: r["seed"])
        report["rows"] = rows
        report["pooled"] = pooled(rows)
        report["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        out_json.write_text(json.dumps(rp._jsonable(report), indent=1) + "\n")
        out_md.write_text(markdown(report))

    for seed in args.seeds:
        print(f"[{time.strftime('%H:%M:%S')}] {args.setting} {args.variant} seed {seed}", flush=True)
        rows.append(run_seed(args.experiment, args.variant, seed, args, lambda m: print(m, flush=True)))
        write()
    print(markdown(report), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
