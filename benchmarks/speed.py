"""Training speed: seconds per epoch on the paper's settings and on very large anonymous games.

For each setting (one fresh subprocess each, so peak memory is per setting):

* compile seconds and seconds per epoch of ``jax.value_and_grad`` of the full-data
  log-likelihood (all training episodes, all rounds, one batch), and of a full optax
  Adam step (gradient + update); medians of repeats after a warm-up call;
* peak host memory (max RSS of the subprocess) and peak device memory
  (``memory_stats()["peak_bytes_in_use"]`` where the backend reports it);
* the recurrence ``method`` ("associative" by default; the settings in
  ``--sequential-for`` are also run with "sequential");
* ``episode_batch`` for the large games: ``None`` (one vmap over all episodes) when
  ``n*A*T*E*4 bytes * MEMORY_FACTOR`` fits in 80% of the memory available, else the
  largest batch that fits (``lax.map`` + ``jax.checkpoint``), at least 1; a run that
  fails for memory with ``None`` or a batch > 1 is retried once with ``episode_batch=1``.

Settings: the paper's (``E1 E2 E3 E7_n40 .. E7_n300``, from ``likelihood.py``: data
simulated from the spec's truth, 80% training split), ``E2_neural`` (the neural
class on E2's congestion data, as DIML fits it in the paper), and the large anonymous
games ``anon_n1000 .. anon_n1000000`` (A = 50, 16 episodes x 25 rounds, a random
truth ``Anonymous(n, 50).init_params``, learner alpha 0.2, beta 6, eps 0.02; data
simulated with ``simulate_arrays`` for n < ``--simulate-below``, else actions drawn
uniformly at random: the likelihood's cost does not depend on which actions were played).

``--against-reference PATH`` (the authors' ``run_experiments.py``) also times one
training epoch of the authors' own PyTorch trainer on the settings it has
(``reference_trainer.py``, run with ``--reference-python``, on CUDA when available) and
reports the ratio reference / ours (ours = one Adam epoch).

Results are written to ``--out`` after every setting (so a run that is cut short keeps
what it measured). Usage:

    python benchmarks/speed.py [--quick] [--settings E1 E2 anon_n10000 ...]
        [--against-reference .ref/run_experiments.py] [--out benchmarks/results/speed_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from likelihood import SETTINGS, TRAIN_FRACTION  # noqa: E402  (the shared settings of the benchmarks)
from reference_trainer import REFERENCE_SETTINGS  # noqa: E402

LARGE_ACTIONS, LARGE_EPISODES, LARGE_ROUNDS = 50, 16, 25
LARGE_LEARNER = {"alpha": 0.20, "beta": 6.0, "eps": 0.02}
LARGE = {f"anon_n{n}": n for n in (1_000, 10_000, 100_000, 1_000_000)}
EXTRA = {"E2_neural": "neural class (n=4, A=5, embedding 6, two tanh layers of 128, random init) on E2's congestion data"}
ALL_SETTINGS = [*SETTINGS, *EXTRA, *LARGE]
SEQUENTIAL_DEFAULT = ["E2", "E7_n120"]
# float32 words per n*A*T*E element that one epoch needs at its peak (calibrated on the CPU,
# docs/performance.md): ~6 with one vmap over all episodes, ~14 per episode in a batch
# (jax.checkpoint recomputes the batch's forward pass inside the backward pass).
MEMORY_FACTOR = 6
BATCHED_MEMORY_FACTOR = 16
INT32_ELEMENTS = 2**31 - 1


# ---------------------------------------------------------------- worker side (imports JAX)


def available_bytes() -> tuple[int | None, str]:
    """Memory one process may use: the device's ``bytes_limit``, else the host's MemAvailable."""
    import jax

    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:
        stats = None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"]), "device bytes_limit"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024, "host MemAvailable"
    except OSError:
        pass
    return None, "unknown"


def choose_episode_batch(n: int, A: int, T: int, E: int, available: int | None, hidden: int = 0) -> int | None:
    """``None`` when all episodes fit at once, else the largest batch that fits (>= 1).

    Bytes per episode: ``n*A*T*4*MEMORY_FACTOR`` (the ``(T, n, A)`` payoffs, ``Q``,
    log-policies, scan partials and their cotangents; ``BATCHED_MEMORY_FACTOR`` in a
    batch) plus the ``A x A`` payoff tables' hidden activations, ``A*A*hidden*T*4*2``
    (``hidden`` = the sum of the hidden widths). A batch also keeps each
    ``(batch, T, n, A)`` array under 2**31 elements.
    """
    per_episode = (n * A * MEMORY_FACTOR + A * A * hidden * 2) * T * 4
    if available is None:
        return None if per_episode * E < 4 * 2**30 else 1
    budget = 0.8 * available
    if per_episode * E < budget and n * A * T * E < INT32_ELEMENTS:
        return None
    per_episode = (n * A * BATCHED_MEMORY_FACTOR + A * A * hidden * 2) * T * 4
    batch = max(1, int(budget // per_episode))
    batch = min(batch, max(1, INT32_ELEMENTS // (n * A * T)), E)
    return batch


def load(name: str, simulate_below: int, large_actions: int = LARGE_ACTIONS):
    """``(model, params, actions, mask, info)`` of a setting."""
    import jax
    import jax.numpy as jnp
    from likelihood import load_setting

    if name in SETTINGS:
        model, params, actions, mask, spec = load_setting(name)
        return model, params, actions, mask, {"spec": spec, "data": "simulated from the spec's truth (seed 0)"}
    if name == "E2_neural":
        import bayes_diml as bd
        from bayes_diml.learners import logit_q
        from bayes_diml.mechanisms import Neural

        _, params, actions, mask, spec = load_setting("E2")
        model = bd.Model(
            Neural(num_agents=4, num_actions=5, hidden=(128, 128), embed_dim=6),
            logit_q,
            {"alpha": 0.25, "beta": 3.0, "eps": 0.06},
        )
        mechanism = model.mechanism.init_params(jax.random.key(0))
        params = {"mechanism": mechanism, "learner": params["learner"]}
        return model, params, actions, mask, {"spec": spec, "data": "simulated from E2's congestion truth (seed 0)"}
    n = LARGE[name]
    import bayes_diml as bd
    from bayes_diml.learners import logit_q
    from bayes_diml.mechanisms import Anonymous
    from bayes_diml.simulate import simulate_arrays

    model = bd.Model(Anonymous(num_agents=n, num_actions=large_actions), logit_q, dict(LARGE_LEARNER))
    params = {
        "mechanism": model.mechanism.init_params(jax.random.key(0)),
        "learner": {k: jnp.float32(v) for k, v in LARGE_LEARNER.items()},
    }
    key = jax.random.key(1)
    shape = (LARGE_EPISODES, LARGE_ROUNDS, n)
    if n < simulate_below:
        actions = simulate_arrays(model, params, key, LARGE_EPISODES, LARGE_ROUNDS)
        data = f"simulated with simulate_arrays from a random truth Anonymous(n, {large_actions}).init_params(key 0)"
    else:
        actions = jax.random.randint(key, shape, 0, large_actions, jnp.int32)
        data = "actions drawn uniformly at random (the likelihood's cost does not depend on which actions were played)"
    actions = jax.block_until_ready(actions.astype(jnp.int32))
    mask = jnp.zeros(shape, bool)
    return model, params, actions, mask, {"data": data, "truth": f"Anonymous(n, {large_actions}).init_params(key 0)"}


def worker(name: str, method: str, episode_batch: str, repeats: int, max_seconds: float, simulate_below: int, large_actions: int) -> dict:
    from likelihood import machine, measure_arrays

    started = time.perf_counter()
    model, params, actions, mask, info = load(name, simulate_below, large_actions)
    load_seconds = time.perf_counter() - started
    E, T, n = (int(s) for s in actions.shape)
    A = model.num_actions
    available, source = available_bytes()
    if name not in LARGE or episode_batch == "none":
        batch = None  # the paper's settings: one vmap over all episodes
    elif episode_batch == "auto":
        batch = choose_episode_batch(n, A, T, E, available, sum(model.mechanism.hidden))
    else:
        batch = int(episode_batch)
    print(f"EPISODE_BATCH={batch}", file=sys.stderr, flush=True)
    timing = measure_arrays(
        model, params, actions, mask, repeats=repeats, method=method, episode_batch=batch, adam=True, max_seconds=max_seconds
    )
    return {
        "setting": name,
        "implementation": "bayes_diml (JAX)",
        "family": model.mechanism.family,
        "num_agents": n,
        "num_actions": A,
        "train_episodes": E,
        "rounds": T,
        **info,
        "data_seconds": load_seconds,
        "elements_n_A_T_E": n * A * T * E,
        "estimated_epoch_mb_unbatched": (n * A * MEMORY_FACTOR + A * A * sum(getattr(model.mechanism, "hidden", ())) * 2) * T * E * 4 / 2**20,
        "memory_available_mb": None if available is None else available / 2**20,
        "memory_available_source": source,
        **timing,
        "matmul_precision": str(__import__("jax").config.jax_default_matmul_precision),
        "loadavg": os.getloadavg(),
        "machine": machine(),
    }


# ---------------------------------------------------------------- driver side (no JAX here)


def _last_json(text: str):
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    return None


def _batch_info(stderr: str) -> dict:
    for line in stderr.splitlines():
        if line.startswith("EPISODE_BATCH="):
            value = line.split("=", 1)[1].strip()
            return {"episode_batch": None if value == "None" else int(value)}
    return {}


def _run(cmd: list[str], timeout: float, env=None) -> dict:
    started = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as err:
        tail = err.stderr or b""
        tail = tail.decode(errors="replace") if isinstance(tail, bytes) else tail
        return {"error": f"timed out after {timeout:.0f} s", "stderr_tail": tail.strip().splitlines()[-3:], **_batch_info(tail)}
    result = _last_json(proc.stdout) if proc.returncode == 0 else None
    if result is None:
        lines = proc.stderr.strip().splitlines()
        error = next((line for line in reversed(lines) if "Error" in line or "error" in line), lines[-1] if lines else "")
        if proc.returncode < 0:
            error = f"killed by signal {-proc.returncode} (out of memory?) {error}".strip()
        return {
            "error": error[-500:],
            "returncode": proc.returncode,
            "stderr_tail": [s[-300:] for s in lines[-4:]],
            **_batch_info(proc.stderr),
        }
    result["process_seconds"] = time.perf_counter() - started
    return result


def run_ours(name, method, episode_batch, args) -> dict:
    def command(batch):
        return [
            sys.executable, __file__, "--worker", name, "--method", method, "--episode-batch", str(batch),
            "--repeats", str(args.repeats), "--max-seconds", str(args.max_seconds),
            "--simulate-below", str(args.simulate_below), "--large-actions", str(args.large_actions),
        ]  # fmt: skip

    result = _run(command(episode_batch), args.worker_timeout)
    out_of_memory = any(word in result.get("error", "") for word in ("RESOURCE_EXHAUSTED", "MemoryError", "out of memory", "signal 9"))
    if name in LARGE and out_of_memory and result.get("episode_batch", 0) != 1:
        retry = _run(command(1), args.worker_timeout)
        retry["retried_after"] = {"episode_batch": result.get("episode_batch"), "error": result["error"]}
        result = retry
    result.setdefault("setting", name)
    result.setdefault("implementation", "bayes_diml (JAX)")
    result.setdefault("method", method)
    return result


def run_reference(name, args) -> dict:
    epochs = args.reference_epochs
    cmd = [args.reference_python, str(HERE / "reference_trainer.py"), "--script", args.against_reference,
           "--setting", name, "--epochs", str(epochs)]  # fmt: skip
    result = _run(cmd, args.worker_timeout)
    result.setdefault("setting", name)
    result.setdefault("implementation", "reference (authors' PyTorch DIMLTrainer, unmodified)")
    return result


def ratios(results: list[dict]) -> list[dict]:
    """reference seconds per epoch / ours, per reference result. Ours: the Adam epoch of the
    same setting measured just before it in the same run (``--append`` runs keep their own
    pairs), with the recurrence ``method="auto"`` picks on that device (sequential on a
    CPU, associative elsewhere) when both were measured."""

    def auto_method(result):
        return "sequential" if "cpu" in str(result.get("machine", {}).get("device_kind", "cpu")).lower() else "associative"

    latest: dict[str, dict[str, dict]] = {}  # setting -> method -> ours result, since the last reference
    rows = []
    for result in results:
        if "error" in result:
            continue
        setting = result.get("setting")
        if result.get("implementation", "").startswith("bayes"):
            latest.setdefault(setting, {})[result.get("method")] = result
            continue
        if not result.get("implementation", "").startswith("reference") or not latest.get(setting):
            continue
        candidates = latest.pop(setting)
        mine = next((r for m, r in candidates.items() if m == auto_method(r)), next(iter(candidates.values())))
        rows.append(
            {
                "setting": setting,
                "reference_seconds_per_epoch": result["seconds_per_epoch"],
                "ours_adam_seconds_per_epoch": mine["adam_seconds_per_epoch"],
                "ours_grad_seconds_per_epoch": mine["seconds_per_epoch"],
                "ours_method": mine.get("method"),
                "ratio_reference_over_ours": result["seconds_per_epoch"] / mine["adam_seconds_per_epoch"],
                "reference_device": result.get("device_name"),
                "ours_device": mine.get("machine", {}).get("device_kind"),
            }
        )
    return rows


def write(path: Path | None, report: dict) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, path)


def host() -> dict:
    from likelihood import cpu_model

    return {"platform": platform.platform(), "cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "python": sys.version.split()[0]}


def _fmt(value, digits=4):
    return "-" if value is None else (f"{value:.{digits}g}" if isinstance(value, float) else str(value))


def summary(results: list[dict]) -> str:
    lines = [
        f"{'setting':<15} {'impl':<9} {'method':<11} {'batch':>5} {'compile s':>9} {'grad s/ep':>10} {'adam s/ep':>10} "
        f"{'host MB':>8} {'dev MB':>8}"
    ]
    for r in results:
        impl = "ref" if r.get("implementation", "").startswith("reference") else "ours"
        if "error" in r:
            lines.append(f"{r['setting']:<15} {impl:<9} ERROR {r['error'][:90]}")
            continue
        if impl == "ref":
            lines.append(
                f"{r['setting']:<15} {impl:<9} {'(torch)':<11} {r['batch_size']:>5} {'-':>9} {'-':>10} "
                f"{_fmt(r['seconds_per_epoch']):>10} {_fmt(r['peak_host_mb'], 5):>8} {_fmt(r['peak_device_mb'], 5):>8}"
            )
        else:
            lines.append(
                f"{r['setting']:<15} {impl:<9} {r['method']:<11} {_fmt(r['episode_batch']):>5} {_fmt(r['compile_seconds'], 3):>9} "
                f"{_fmt(r['seconds_per_epoch']):>10} {_fmt(r['adam_seconds_per_epoch']):>10} "
                f"{_fmt(r['peak_host_mb'], 5):>8} {_fmt(r['peak_device_mb'], 5):>8}"
            )
    rows = ratios(results)
    if rows:
        lines.append("reference / ours (seconds per training epoch):")
        for row in rows:
            lines.append(
                f"  {row['setting']:<12} {row['reference_seconds_per_epoch']:.4g} s / {row['ours_adam_seconds_per_epoch']:.4g} s"
                f" = {row['ratio_reference_over_ours']:.3g}x"
            )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", nargs="+", choices=ALL_SETTINGS, help="in this order (default: all)")
    parser.add_argument("--quick", action="store_true", help="CPU smoke run: 2 repeats, skip n >= 100,000")
    parser.add_argument("--repeats", type=int, help="timed repeats per measurement (default 10; --quick 2)")
    parser.add_argument("--max-seconds", type=float, help="stop repeating after this many seconds (default 30; --quick 5)")
    parser.add_argument("--max-agents", type=int, help="skip large games with more agents (default: none; --quick 99,999)")
    parser.add_argument("--sequential-for", nargs="*", default=SEQUENTIAL_DEFAULT, help="settings also run with method='sequential'")
    parser.add_argument("--episode-batch", default="auto", help="auto | none | an int (large games only; paper settings use none)")
    parser.add_argument("--methods", nargs="+", default=["associative"], choices=("associative", "sequential"),
                        help="recurrence methods for every setting")
    parser.add_argument("--simulate-below", type=int, default=100_000, help="large games: simulate data when n is below this")
    parser.add_argument("--large-actions", type=int, default=LARGE_ACTIONS, help="A of the large games (50; smaller only for smoke tests)")
    parser.add_argument("--against-reference", metavar="PATH", help="the authors' run_experiments.py: time their trainer too")
    parser.add_argument("--reference-python", default=sys.executable, help="Python with torch for the reference (default: this one)")
    parser.add_argument("--reference-epochs", type=int, default=3, help="reference epochs per setting, the first a warm-up")
    parser.add_argument("--reference-settings", nargs="*", help="time the reference only on these (default: all it has)")
    parser.add_argument("--worker-timeout", type=float, default=900, help="seconds before a setting's subprocess is killed")
    parser.add_argument("--out", type=Path, help="JSON file (rewritten after every setting)")
    parser.add_argument("--append", action="store_true", help="add to the results already in --out")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--method", default="associative", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 2 if args.quick else 10
    if args.max_seconds is None:
        args.max_seconds = 5.0 if args.quick else 30.0
    if args.max_agents is None and args.quick:
        args.max_agents = 99_999

    if args.worker:
        result = worker(args.worker, args.method, args.episode_batch, args.repeats, args.max_seconds, args.simulate_below, args.large_actions)
        print(json.dumps(result))
        return 0

    if args.against_reference and not Path(args.against_reference).is_file():
        parser.error(f"--against-reference: {args.against_reference} is not a file")
    names = args.settings or ALL_SETTINGS
    if args.max_agents is not None:
        names = [s for s in names if s not in LARGE or LARGE[s] <= args.max_agents]
    report = {
        "benchmark": "speed",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": host(),
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in ("worker", "method")},
        "notes": [
            "ours: one epoch = jax.value_and_grad (or a full optax Adam step) of the log-likelihood of all training "
            "episodes and all rounds in one batch; median of repeats after compilation and a warm-up call",
            "reference: the authors' DIMLTrainer.fit epoch (mini-batches of the paper's batch size; E1-E3 on random "
            "50-round windows of the 60-round episodes, as in their code), median of epochs after the first",
            f"train split {TRAIN_FRACTION:.0%} for the paper's settings; large anonymous games use all {LARGE_EPISODES} episodes",
            "peak_host_mb: max RSS of the setting's own subprocess; peak_device_mb: memory_stats()['peak_bytes_in_use'] (None on CPU)",
        ],
        "machine": None,
        "results": [],
        "ratios": [],
    }
    if args.append and args.out and args.out.is_file():
        previous = json.loads(args.out.read_text())
        report["results"] = previous.get("results", [])
        report["machine"] = previous.get("machine")
        report["runs"] = previous.get("runs", []) + [previous.get("options")]
    reference_names = REFERENCE_SETTINGS if args.reference_settings is None else args.reference_settings
    for name in names:
        methods = list(args.methods)
        if name in (args.sequential_for or []) and "sequential" not in methods:
            methods.append("sequential")
        jobs = [("ours", method) for method in methods]
        if args.against_reference and name in REFERENCE_SETTINGS and name in reference_names:
            jobs.append(("reference", None))
        for impl, method in jobs:
            result = run_ours(name, method, args.episode_batch, args) if impl == "ours" else run_reference(name, args)
            if report["machine"] is None and "machine" in result:
                report["machine"] = result["machine"]
            report["results"].append(result)
            report["ratios"] = ratios(report["results"])
            write(args.out, report)
            brief = {k: v for k, v in result.items() if k not in ("machine",)}
            print(json.dumps(brief), file=sys.stderr, flush=True)
    report["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    write(args.out, report)
    print(summary(report["results"]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
