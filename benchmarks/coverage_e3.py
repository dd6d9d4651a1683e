"""Why does E3's structured NUTS posterior cover more than 90% of the true payoff differences?

``bayes-diml reproduce E3`` measured 90% coverage of 1.000 on its three scaled truth draws
(0.918 over eight paper-scale draws). This study fits the same posterior as ``reproduce``
(``reproduce.E3_NUTS_OPTIONS``) on one data set and asks two questions of its draws, on
the 4,000 distinct-pair queries from the test episodes that ``reproduce`` scores:

1. **Is the width tied to how little the data say?** Queries are grouped by how often
   the less-played of their two own actions was played, in the training data, by an
   agent facing the same sum of the others' contributions (every payoff of the family
   depends on the own level and that sum only). In each group: coverage, the mean
   squared z-score ``((mean - truth) / sd)^2`` (1 for a calibrated posterior) and the
   median posterior sd.
2. **On how many numbers does one data set's coverage rest?** The posterior covariance
   of the distinct queries (one per own-action pair and others' sum) is split into
   principal components ``Σ = Σ_j λ_j v_j v_j'``. With a few components holding most of
   the variance, one data set's coverage moves as a whole: it is near 1 unless the
   posterior-mean error is large along one of them. The error's z-score on component j
   is ``(mean - truth)·v_j / sqrt(λ_j)``; for a calibrated posterior these behave like
   independent standard normals, so their squares sum to about the number of
   components (chi-square).

Writes ``--out`` (JSON, with the machine). Usage::

    python benchmarks/coverage_e3.py [--variant scaled] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

COUNT_BINS = (0, 1, 10, 100, 1000, 10**9)
"""Edges of the groups of queries by the training count of their less-played own action."""


def context_counts(actions: np.ndarray, num_actions: int) -> np.ndarray:
    """``counts[s, k]``: how often an agent played ``k`` while the others' codes summed to ``s``."""
    actions = np.asarray(actions)
    others = actions.sum(-1, keepdims=True) - actions
    counts = np.zeros((actions.shape[-1] * (num_actions - 1) + 1, num_actions))
    np.add.at(counts, (others.ravel(), actions.ravel()), 1)
    return counts


def query_groups(codes: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per query: the others' code sum, and the training count of its less-played own action."""
    agent, first, second, joint = codes[:, 0], codes[:, 1], codes[:, 2], codes[:, 3:]
    others = joint.sum(1) - joint[np.arange(len(codes)), agent]
    return others, np.minimum(counts[others, first], counts[others, second])


def by_information(draws: np.ndarray, truth: np.ndarray, support: np.ndarray) -> list[dict]:
    """Coverage, mean squared z-score and median sd per group of ``COUNT_BINS``."""
    from bayes_diml import metrics

    mean, sd = draws.mean(0), draws.std(0)
    z2 = ((mean - truth) / sd) ** 2
    rows = []
    for lo, hi in zip(COUNT_BINS[:-1], COUNT_BINS[1:]):
        m = (support >= lo) & (support < hi)
        if m.any():
            rows.append({"count_from": lo, "count_below": hi, "queries": int(m.sum()),
                         "coverage90": metrics.interval_coverage(draws[:, m], truth[m]),
                         "mean_z2": float(z2[m].mean()), "median_sd": float(np.median(sd[m]))})
    return rows


def components(draws: np.ndarray, truth: np.ndarray, keys: np.ndarray) -> dict:
    """Principal components of the posterior over the distinct queries, and the
    posterior-mean error's z-score on each (components with ``λ > 1e-6 λ_max``)."""
    _, first = np.unique(keys, return_index=True)
    x, t = draws[:, first], truth[first]
    lam, vec = np.linalg.eigh(np.cov(x, rowvar=False))
    lam, vec = lam[::-1], vec[:, ::-1]
    kept = int(np.sum(lam > 1e-6 * lam[0]))
    z = (x.mean(0) - t) @ vec[:, :kept] / np.sqrt(lam[:kept])
    share = np.cumsum(lam) / lam.sum()
    return {
        "distinct_queries": int(len(first)),
        "variance_share_top": share[:10].tolist(),
        "components_for_90pct_variance": int(np.searchsorted(share, 0.9)) + 1,
        "components_kept": kept,
        "error_z": z.tolist(),
        "sum_z2": float(np.sum(z**2)),
        "sum_z2_top3": float(np.sum(z[:3] ** 2)),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", choices=("paper", "scaled"), default="scaled")
    parser.add_argument("--seed", type=int, default=0, help="reproduce's truth draw")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    out = args.out or HERE / "results" / "coverage_E3" / f"components_{args.variant}_{args.seed}.json"

    from calibration import machine

    from bayes_diml import metrics
    from bayes_diml.inference import fit
    from experiments import reproduce as rp

    rp._enable_compilation_cache(rp.default_cache_dir())
    start = time.perf_counter()
    s = rp.Settings()
    model, truth, factor, data = rp._setting_data(rp.EXPERIMENTS["E3"][0], args.variant, args.seed, s)
    train, test = rp.split_episodes(data)
    A = model.num_actions
    codes = metrics.difference_queries(test.actions, test.mask, A, s.num_queries, args.seed + 1, distinct=True, skip_last=False)
    true_d = np.asarray(metrics.mechanism_differences(model.mechanism, rp._with_draw_axis(truth["mechanism"]), codes)[0], np.float64)
    result = fit(model, train, method="nuts", seed=args.seed, progress=False, posterior_predictive_draws=1, ppc=False, **rp.E3_NUTS_OPTIONS)
    fit_seconds = time.perf_counter() - start
    draws = np.asarray(metrics.mechanism_differences(model.mechanism, result.params_draws()["mechanism"], codes), np.float64)

    others, support = query_groups(np.asarray(codes), context_counts(train.actions, A))
    mean = draws.mean(0)
    report = {
        "benchmark": "E3 structured NUTS: coverage by information, and principal components of the posterior of Δ",
        "command": " ".join(["python", "benchmarks/coverage_e3.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine(),
        "variant": args.variant, "seed": args.seed, "scale_factor": factor,
        "nuts_options": rp.E3_NUTS_OPTIONS, "fit_seconds": fit_seconds,
        "coverage90": metrics.interval_coverage(draws, true_d),
        "rhat_differences": metrics.difference_rhat(draws, result.num_chains),
        "mean_z2": float(np.mean(((mean - true_d) / draws.std(0)) ** 2)),
        "rmse_posterior_mean": float(np.sqrt(np.mean((mean - true_d) ** 2))),
        "median_posterior_sd": float(np.median(draws.std(0))),
        "by_information": by_information(draws, true_d, support),
        "components": components(draws, true_d, (others * A + np.asarray(codes)[:, 1]) * A + np.asarray(codes)[:, 2]),
        "action_shares": (np.bincount(np.asarray(train.actions).ravel(), minlength=A) / np.asarray(train.actions).size).tolist(),
        "wall_seconds": time.perf_counter() - start,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    c = report["components"]
    print(f"coverage {report['coverage90']:.3f}, mean z^2 {report['mean_z2']:.3f}; {c['components_for_90pct_variance']} components hold 90% "
          f"of the variance; error z on the top 3: {np.round(c['error_z'][:3], 2).tolist()}; sum z^2 {c['sum_z2']:.1f} over {c['components_kept']}")
    for row in report["by_information"]:
        print(f"  count {row['count_from']}-{row['count_below']}: {row['queries']} queries, coverage {row['coverage90']:.3f}, "
              f"mean z^2 {row['mean_z2']:.3f}, median sd {row['median_sd']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
