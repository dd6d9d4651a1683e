"""Peak memory of fits and simulations against ``bayes_diml.resources``' estimates.

Each case runs in a fresh process (``--case NAME``): the resident set after building
the data is the baseline, the peak RSS after the work minus it is the measurement, and
the estimate is what the guard would compare with the memory available. The fit runs
without the conditional predictive checks (``ppc=False``): they are not in the estimate;
their replicates run in batches bounded by ``inference.ppc.BATCH_ELEMENTS``. Writes
``benchmarks/results/memory_guard.json`` (machine named). Run: ``python
benchmarks/memory_guard.py`` (a few minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

SPEC = """[game]
agents = {n}
actions = {A}

[mechanism]
family = "{family}"

[learner]
rule = "logit_q"
alpha = 0.25
beta = 3.0
eps = 0.06
"""

CASES = {
    # name: (family, agents, actions, episodes, rounds, method, options)
    "tabular_10x3_map": ("tabular", 10, 3, 4, 10, "map", {"steps": 20, "restarts": 4}),
    "tabular_11x3_map": ("tabular", 11, 3, 4, 10, "map", {"steps": 20, "restarts": 4}),
    "tabular_12x3_map": ("tabular", 12, 3, 4, 10, "map", {"steps": 20, "restarts": 4}),
    "congestion_long_map": ("congestion", 6, 5, 200, 400, "map", {"steps": 20, "restarts": 4}),
    "congestion_long_svi": ("congestion", 6, 5, 200, 400, "svi", {"steps": 20, "num_samples": 100}),
    "congestion_nuts": ("congestion", 4, 5, 100, 200, "nuts", {"num_chains": 2, "num_warmup": 20, "num_samples": 20}),
    "tabular_4x4_nuts": ("tabular", 4, 4, 20, 30, "nuts", {"num_chains": 2, "num_warmup": 10, "num_samples": 10}),
}


def _rss() -> int:
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def run_case(name: str) -> dict:
    import bayes_diml as bd
    from bayes_diml.resources import fit_memory

    family, n, A, E, T, method, options = CASES[name]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "spec.toml"
        path.write_text(SPEC.format(n=n, A=A, family=family), encoding="utf-8")
        model, _ = bd.read_spec(path)
    import jax

    truth = {"mechanism": model.mechanism.init_params(jax.random.key(0)), "learner": model.fixed_learner_params}
    data = bd.simulate(model, truth, num_episodes=E, num_rounds=T, seed=0)
    estimate, part = fit_memory(model, E, T, method, options)
    base = _rss()
    bd.fit(model, data, method=method, seed=0, progress=False, ppc=False, **options)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"case": name, "family": family, "agents": n, "actions": A, "episodes": E, "rounds": T, "method": method,
            "options": options, "estimate_bytes": estimate, "largest_part": part, "baseline_rss_bytes": base,
            "peak_rss_bytes": peak, "measured_bytes": peak - base, "ratio_estimate_to_measured": estimate / max(peak - base, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--case", choices=sorted(CASES))
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "memory_guard.json"))
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case)))
        return
    rows = []
    for name in CASES:
        result = subprocess.run([sys.executable, __file__, "--case", name], capture_output=True, text=True, check=True)
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
        print(f"{name}: estimate {rows[-1]['estimate_bytes'] / 1e6:.0f} MB, measured {rows[-1]['measured_bytes'] / 1e6:.0f} MB "
              f"(ratio {rows[-1]['ratio_estimate_to_measured']:.1f})", flush=True)
    document = {"machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                            "cpu_count": os.cpu_count()}, "rows": rows}
    Path(args.out).write_text(json.dumps(document, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
