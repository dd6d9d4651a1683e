"""Wall time of whole fits (issue 6 item 7), as JSON: NUTS on E2 congestion, SVI on E1 neural.

* ``nuts_E2``: the structured congestion model (15 parameters) on E2's training data
  (48 episodes x 60 rounds, simulated from the spec's truth, seed 0), 4 chains x
  (1,000 warmup + 1,000 draws) by default.
* ``svi_E1``: the neural joint mechanism on E1's training data (48 x 60), 2,000 SVI
  steps (AutoNormal; the MAP warm start's steps are part of the fit and reported).

Reported per setting: total wall seconds of ``bayes_diml.fit`` (the sampler only,
without the posterior predictive pass), the seconds spent compiling inside it
(``jax.monitoring``'s trace, lowering and backend-compile events, summed), the
seconds per gradient of the log joint (a jitted ``value_and_grad`` of NumPyro's
potential, median of repeats), NUTS's mean leapfrog steps per iteration, the
divergences, R-hat / ESS of the parameters (NumPyro's estimators), the device and
the versions.

Usage:
    python benchmarks/inference.py [--settings nuts_E2 svi_E1] [--chain-method vectorized]
        [--warmup 1000] [--samples 1000] [--steps 2000] [--out benchmarks/results/inference_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from likelihood import SETTINGS, TRAIN_FRACTION, machine, peak_memory, time_repeats  # noqa: E402

FIT_SETTINGS = {"nuts_E2": ("E2", "nuts"), "svi_E1": ("E1", "svi")}
COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)


class CompileClock:
    """Sums the durations of JAX's compilation events while it is installed."""

    def __init__(self):
        self.seconds = 0.0
        self.count = 0

    def __call__(self, event, duration, **_):
        if event in COMPILE_EVENTS:
            self.seconds += duration
            self.count += event == COMPILE_EVENTS[-1]

    def __enter__(self):
        import jax.monitoring

        jax.monitoring.register_event_duration_secs_listener(self)
        return self

    def __exit__(self, *exc):
        import jax.monitoring

        jax.monitoring.unregister_event_duration_listener(self)


def training_data(experiment: str):
    import bayes_diml as bd

    spec, episodes, rounds = SETTINGS[experiment]
    model, truth = bd.read_spec(HERE.parent / "models" / spec)
    data = bd.simulate(model, truth, num_episodes=episodes, num_rounds=rounds, seed=0)
    train = int(round(TRAIN_FRACTION * episodes))
    return model, bd.Trajectories.from_arrays(data.actions[:train], data.mask[:train], num_actions=data.num_actions)


def seconds_per_gradient(model, data, repeats: int = 50) -> float:
    """Median seconds of one jitted gradient of the NumPyro potential (the sampler's unit of work)."""
    import functools

    import jax
    import numpy as np
    from numpyro.infer.util import initialize_model

    from bayes_diml.inference.numpyro_model import numpyro_model
    from bayes_diml.likelihood import as_arrays

    actions, mask = as_arrays(data)
    info = initialize_model(jax.random.key(0), functools.partial(numpyro_model, model), model_args=(actions, mask))
    grad = jax.jit(jax.value_and_grad(info.potential_fn))
    z = info.param_info.z
    jax.block_until_ready(grad(z))
    times = time_repeats(lambda: jax.block_until_ready(grad(z)), repeats, max_seconds=20)
    return float(np.median(times))


def run_setting(name: str, args) -> dict:
    import numpy as np
    import numpyro.diagnostics

    import bayes_diml as bd

    experiment, method = FIT_SETTINGS[name]
    model, data = training_data(experiment)
    if method == "nuts":
        options = dict(num_chains=args.chains, num_warmup=args.warmup, num_samples=args.samples, chain_method=args.chain_method)
    else:
        options = dict(steps=args.steps)
    with CompileClock() as clock:
        start = time.perf_counter()
        result = bd.fit(model, data, method=method, seed=0, progress=False, posterior_predictive_draws=1, ppc=False, **options)
        total = time.perf_counter() - start
    out = {
        "setting": name,
        "experiment": experiment,
        "method": method,
        "options": options,
        "episodes": int(data.actions.shape[0]),
        "rounds": int(data.actions.shape[1]),
        "latent_dim": result.info.get("latent_dim"),
        "fit_seconds": result.info["wall_seconds"],
        "total_seconds_with_predictive": total,
        "compile_seconds": clock.seconds,
        "compilations": clock.count,
        "sampler_seconds": result.info["seconds"],
        "seconds_per_gradient": seconds_per_gradient(model, data),
    }
    if method == "nuts":
        stats = result.sample_stats
        out["mean_leapfrog_steps"] = float(np.mean(stats["n_steps"]))
        out["divergences"] = int(np.sum(stats["diverging"]))
        rhat, ess = [], []
        for values in result.posterior.values():
            values = np.asarray(values, np.float64)
            flat = values.reshape(values.shape[0], values.shape[1], -1)
            for j in range(flat.shape[-1]):
                if np.ptp(flat[..., j]) > 0:
                    rhat.append(float(numpyro.diagnostics.split_gelman_rubin(flat[..., j])))
                    ess.append(float(numpyro.diagnostics.effective_sample_size(flat[..., j])))
        out["max_rhat"] = max(rhat)
        out["min_ess"] = min(ess)
        draws = args.chains * (args.warmup + args.samples)
        out["leapfrog_steps_sampling"] = int(np.sum(stats["n_steps"]))
        out["seconds_per_iteration"] = out["sampler_seconds"] / draws
    else:
        out["map_steps"] = result.info.get("map_steps")
        out["final_elbo"] = result.info.get("final_elbo")
    out.update(peak_memory())
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", nargs="+", default=list(FIT_SETTINGS), choices=list(FIT_SETTINGS))
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--chain-method", default=None, choices=("sequential", "vectorized", "parallel"))
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--out", help="write the JSON here")
    args = parser.parse_args(argv)
    report = {
        "benchmark": "inference",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "loadavg_start": os.getloadavg(),
        "results": [],
    }
    for name in args.settings:
        result = run_setting(name, args)
        result["loadavg"] = os.getloadavg()
        print(json.dumps(result), flush=True)
        report["results"].append(result)
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
