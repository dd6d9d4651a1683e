"""Rounding error of the float32 log-likelihood against a float64 evaluation, as JSON.

The likelihood of E7 at n = 300 (16 episodes x 25 rounds x 300 agents, 40 actions;
``models/e7_n300_a40.toml``, data simulated from its truth, seed 0) sums
``E * T * n = 120,000`` log-probabilities. Reported (nats):

* ``*_error_vs_float64``: the default (float32) ``log_likelihood_per_episode`` (max and
  rms over episodes) and ``log_likelihood`` (total) minus the same evaluation under
  ``jax.enable_x64`` with float64 parameters (the reference);
* ``*_summation_error``: the float32 result minus the exact (``math.fsum``) sum of the
  float32 terms ``log pi_t(a_ti | i)`` themselves: the part of the error that comes
  from adding the terms up, the only part a better summation can remove;
* ``x64_float32_terms``: the same with x64 on but float32 parameters.

Result (2-core Xeon, jax 0.12.0.1; ``results/likelihood_precision_{before,after}.json``):
float32 per-episode sums are within about one float32 ulp of the float64 evaluation
(2.2e-3 of ~2.8e4 nats; total 4.7e-3 of 4.4e5), before and after the change, because
XLA's reductions are already pairwise-accurate. With x64 on, the models' terms come out
float64 anyway (summation error 4e-12 before and after); the change makes float64
accumulation certain also for float32 terms (``tests/test_precision.py``).

Usage:
    python benchmarks/likelihood_precision.py [--setting E7_n300] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from likelihood import SETTINGS, machine  # noqa: E402 (benchmarks/likelihood.py, beside this script)


def measure(setting: str) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    import bayes_diml as bd
    from bayes_diml.likelihood import (
        as_arrays,
        log_likelihood,
        log_likelihood_per_episode,
        teacher_forced_log_policies,
    )

    spec, episodes, rounds = SETTINGS[setting]
    model, truth = bd.read_spec(ROOT.parent / "models" / spec)
    data = bd.simulate(model, truth, num_episodes=episodes, num_rounds=rounds, seed=0)
    actions, mask = as_arrays(data)
    pair = (np.asarray(actions), np.asarray(mask))
    params32 = jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), truth)

    per32 = np.asarray(log_likelihood_per_episode(model, params32, pair, shard=False), np.float64)
    total32 = float(log_likelihood(model, params32, pair, shard=False))
    log_pi = np.asarray(teacher_forced_log_policies(model, params32, pair))
    played = np.take_along_axis(log_pi, pair[0][..., None], axis=-1)[..., 0]
    terms = np.where(pair[1], 0.0, played.astype(np.float64))
    exact_of_terms = np.array([math.fsum(e.ravel()) for e in terms])

    with jax.enable_x64(True):
        params64 = jax.tree.map(lambda v: jnp.asarray(np.asarray(v), jnp.float64), truth)
        per64 = np.asarray(log_likelihood_per_episode(model, params64, pair, shard=False), np.float64)
        total64 = float(log_likelihood(model, params64, pair, shard=False))
        # float32 parameters (so float32 terms) with x64 on: only the accumulation may change
        per32_x64 = np.asarray(log_likelihood_per_episode(model, params32, pair, shard=False), np.float64)
        total32_x64 = float(log_likelihood(model, params32, pair, shard=False))
        log_pi_x64 = np.asarray(teacher_forced_log_policies(model, params32, pair))
        played_x64 = np.take_along_axis(log_pi_x64, pair[0][..., None], axis=-1)[..., 0]
        exact_x64 = np.array([math.fsum(e.ravel()) for e in np.where(pair[1], 0.0, played_x64.astype(np.float64))])

    return {
        "setting": setting,
        "shape": {"episodes": episodes, "rounds": rounds, "agents": model.num_agents, "actions": model.num_actions},
        "terms": int((~pair[1]).sum()),
        "total_float64": total64,
        "total_error_vs_float64": total32 - total64,
        "per_episode_max_abs_error_vs_float64": float(np.max(np.abs(per32 - per64))),
        "per_episode_rms_error_vs_float64": float(np.sqrt(np.mean((per32 - per64) ** 2))),
        "per_episode_max_abs_summation_error": float(np.max(np.abs(per32 - exact_of_terms))),
        "total_summation_error": total32 - math.fsum(exact_of_terms),
        "per_episode_mean_float64": float(per64.mean()),
        "x64_float32_terms": {
            "per_episode_max_abs_summation_error": float(np.max(np.abs(per32_x64 - exact_x64))),
            "total_summation_error": total32_x64 - math.fsum(exact_x64),
            "per_episode_max_abs_error_vs_float64": float(np.max(np.abs(per32_x64 - per64))),
        },
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setting", default="E7_n300", choices=list(SETTINGS))
    parser.add_argument("--label", default="", help="a note stored with the result (e.g. 'before fix')")
    parser.add_argument("--out", help="write the JSON here as well")
    args = parser.parse_args(argv)
    result = {"label": args.label, **measure(args.setting), "machine": machine(), "load_average": os.getloadavg()}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
