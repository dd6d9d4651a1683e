"""Reproduce the DIML paper's experiments side by side with its baselines (docs/design.md §6–7).

For each experiment (E1, E2, E3, E7), setting, variant and seed:

1. draw a truth: seed 0 is the ``models/`` truth; seed ``s >= 1`` a fresh draw from the
   paper's distributions (``mechanism.init_params(key(TRUTH_SEED_BASE + s))``: congestion
   ``c1 ~ U[0.1, 0.4], c2 ~ U[0.05, 0.15], tau ~ U[0, 0.2]``; networks at PyTorch's
   default initialisation). The *scaled* variant multiplies the true mechanism's payoffs
   by ``1 / sd(Δ_true)`` (Δ over random contexts and distinct own-action pairs), so true
   differences have unit sd (``scale_mechanism``);
2. simulate the paper's sizes and split episodes 80/20 (train/test);
3. fit every estimator (``bayes_diml.baselines`` and the Bayesian fits: NUTS for the
   structured and small tabular families, SVI for the neural and anonymous ones);
4. evaluate every metric (``bayes_diml.metrics``), the paper's columns with the paper's
   conventions and ours with ours, and write ``paper.json`` and ``paper.md``.

We fit whole episodes with Q restarted at 0 at round 0; the paper trains on random
50-round windows restarting Q at each window start. Crashed or skipped estimators stay in
the table with the reason.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import time
import traceback
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import numpy as np

from bayes_diml import baselines, metrics
from bayes_diml._json import jsonable
from bayes_diml.baselines import Estimate
from bayes_diml.errors import DataError, SpecError
from bayes_diml.evaluation import (  # the library's scoring; re-exported for the study's callers
    TRAIN_FRACTION,
    _with_draw_axis,
    episode_subset,
    evaluate_estimate,
    evaluate_run,
    split_episodes,
)
from bayes_diml.mechanisms import Neural
from bayes_diml.model import Model
from bayes_diml.simulate import simulate

__all__ = [
    "EXPERIMENTS",
    "PUBLISHED",
    "Setting",
    "Settings",
    "reproduce",
    "draw_truth",
    "scale_mechanism",
    "split_episodes",
    "episode_subset",
    "evaluate_estimate",
    "evaluate_run",
    "markdown_table",
    "TRAIN_FRACTION",
]

TRUTH_SEED_BASE = 1000
DATA_SEED_BASE = 2000
MODELS = Path(__file__).resolve().parents[1] / "models"
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
"""The tables' default folder (``benchmarks/results`` of the checkout)."""


class Setting(NamedTuple):
    """One data-generating setting: spec file (in ``models/``), episodes, rounds."""

    name: str
    spec: str
    episodes: int
    rounds: int


EXPERIMENTS: dict[str, list[Setting]] = {
    "E1": [Setting("E1", "e1_neural.toml", 60, 60)],
    "E2": [Setting("E2", "e2_congestion.toml", 60, 60)],
    "E3": [Setting("E3", "e3_public_goods.toml", 60, 60)],
    "E7": [
        Setting(f"E7_n{n}_A{A}", f"e7_n{n}_a{A}.toml", E, T)
        for n, A, E, T in [(40, 10, 24, 30), (80, 20, 24, 30), (120, 25, 24, 30), (200, 30, 20, 30), (300, 40, 16, 25)]
    ],
}
"""The paper's experiments (docs/design.md §7)."""

DIML = "DIML (neural ML)"
WRONG = "wrong learner (neural ML, beta x 0.6)"
DIML_LARGE = "DIML (anonymous ML)"
WRONG_LARGE = "wrong learner (anonymous ML, beta x 0.6)"
"""Estimator names of the paper's DIML and DIML_Wrong columns (maximum likelihood)."""

PUBLISHED: dict[tuple[str, str], dict[str, float]] = {
    # (setting, estimator) -> final-epoch values of the authors' log (one truth draw, their GPU)
    ("E1", DIML): {"diff_mse": 0.009792, "nll_test": 1.765113, "cfkl": 0.032358, "mse_on": 0.084817, "epoch_seconds": 0.399},
    ("E1", WRONG): {"diff_mse": 0.040192, "nll_test": 1.784650, "cfkl": 0.086402, "mse_on": 0.239380, "epoch_seconds": 0.399},
    ("E1", "tabular MAP"): {"diff_mse": 0.012882, "nll_test": 1.765033, "cfkl": 0.039462, "mse_on": 0.028626, "epoch_seconds": 0.201},
    ("E2", DIML): {"diff_mse": 0.090709, "nll_test": 1.537998, "cfkl": 0.221998, "mse_on": 0.694836, "epoch_seconds": 0.545},
    ("E2", WRONG): {"diff_mse": 0.122417, "nll_test": 1.578522, "cfkl": 0.509643, "mse_on": 0.817786, "epoch_seconds": 0.545},
    ("E2", "tabular MAP"): {"diff_mse": 0.133192, "nll_test": 1.547642, "cfkl": 0.124715, "mse_on": 0.168393, "epoch_seconds": 0.256},
    ("E2", "structured MAP"): {"diff_mse": 0.003354, "nll_test": 1.521921, "cfkl": 0.137099, "mse_on": 0.004861, "epoch_seconds": 1.187},
    ("E3", DIML): {"diff_mse": 0.018992, "nll_test": 1.910763, "cfkl": 0.076252, "mse_on": 0.574691, "epoch_seconds": 0.404},
    ("E3", WRONG): {"diff_mse": 0.058818, "nll_test": 1.940359, "cfkl": 0.168015, "mse_on": 0.628987, "epoch_seconds": 0.403},
    ("E3", "structured MAP"): {"diff_mse": 0.000417, "nll_test": 1.902990, "cfkl": 0.071677, "mse_on": 0.279795, "epoch_seconds": 0.395},
    ("E7_n40_A10", DIML_LARGE): {"diff_mse": 0.000246, "nll_test": 2.269048, "cfkl": 0.094507, "mse_on": 0.000485, "epoch_seconds": 0.170},
    ("E7_n80_A20", DIML_LARGE): {"diff_mse": 0.000069, "nll_test": 2.976924, "cfkl": 0.250820, "mse_on": 0.000165, "epoch_seconds": 0.246},
    ("E7_n120_A25", DIML_LARGE): {"diff_mse": 0.000034, "nll_test": 3.188730, "cfkl": 0.329280, "mse_on": 0.001806, "epoch_seconds": 0.403},
    ("E7_n200_A30", DIML_LARGE): {"diff_mse": 0.000046, "nll_test": 3.378409, "cfkl": 0.679438, "mse_on": 0.002545, "epoch_seconds": 0.610},
    ("E7_n300_A40", DIML_LARGE): {"diff_mse": 0.000043, "nll_test": 3.661184, "cfkl": 1.644675, "mse_on": 0.137055, "epoch_seconds": 0.809},
}
"""The authors' released per-epoch log (``training_curves.csv``), last epoch of each run
(one truth draw; ``epoch_seconds`` is the median over epochs, their GPU)."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """Sizes of fits and metrics (``full`` for the paper's sizes, ``quick`` for CI)."""

    quick: bool = False
    map_steps: int = 2000
    map_restarts: int = 2
    ml_steps: int = 200  # the paper's budget: 100 epochs x 2 mini-batches of 32 episodes, Adam 1e-3
    ml_learning_rate: float = 1e-3
    svi_steps: int = 2000
    svi_samples: int = 200
    # NUTS in the Laplace frame needs little warmup; 4 x 700 draws bring the largest R-hat over
    # E1's 540 tabular differences to 1.0095 (2 x 400: 1.02-1.035), 188 s on the shared 2-core CPU
    nuts_chains: int = 4
    nuts_warmup: int = 300
    nuts_samples: int = 700
    bc_steps: int = 500
    bc_hidden: int = 256
    num_queries: int = 4000
    cf_episodes: int = 300
    cf_rounds: int = 50
    max_draws: int = 50
    episodes: int | None = None  # override the paper's sizes (quick)
    rounds: int | None = None

    @classmethod
    def for_mode(cls, quick: bool) -> "Settings":
        if not quick:
            return cls()
        return cls(
            quick=True, map_steps=100, map_restarts=1, ml_steps=50, svi_steps=100, svi_samples=20, nuts_chains=1,
            nuts_warmup=20, nuts_samples=20, bc_steps=30, bc_hidden=16, num_queries=500,
            cf_episodes=40, cf_rounds=20, max_draws=10, episodes=10, rounds=20,
        )


# ------------------------------------------------------------------ truths
def draw_truth(model: Model, spec_truth: dict, seed: int) -> dict:
    """Seed 0: the spec's truth; seed ``s >= 1``: ``init_params(key(TRUTH_SEED_BASE + s))``,
    the paper's truth distribution of the family; learner values from the spec."""
    if seed == 0:
        return spec_truth
    mechanism = model.mechanism.init_params(jax.random.key(TRUTH_SEED_BASE + seed))
    return {"mechanism": {k: np.asarray(v) for k, v in mechanism.items()}, "learner": spec_truth["learner"]}


def scale_mechanism(mechanism, params: dict, factor: float) -> dict:
    """Mechanism parameters whose payoffs are ``factor`` times those of ``params``.

    Linear in the output: tabular payoffs, congestion ``c1, c2, tau``, linear ``theta``;
    public goods ``scale``, ``cost`` and the subsidy's output layer; neural and anonymous
    the output layer's weights and bias.
    """
    return mechanism.scale_params(params, factor)  # each family's ``output_params``


def _random_contexts(n: int, A: int, num: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    joint = rng.integers(A, size=(num, n))
    first = rng.integers(A, size=num)
    second = (first + rng.integers(1, A, size=num)) % A
    return np.concatenate([rng.integers(n, size=(num, 1)), first[:, None], second[:, None], joint], axis=1).astype(np.int32)


def unit_scale_factor(model: Model, mech_params: dict, seed: int = 0, num: int = 4000) -> float:
    """``1 / sd(Δ_true)`` over uniformly random contexts and distinct own-action pairs."""
    codes = _random_contexts(model.num_agents, model.num_actions, num, seed)
    diffs = metrics.mechanism_differences(model.mechanism, _with_draw_axis(mech_params), codes)[0]
    return float(1.0 / np.std(diffs))


# -------------------------------------------------------------- estimators
def neural_model(model: Model) -> Model:
    """The paper's DIML class on a small game: a neural joint MLP (two tanh layers of 128)."""
    return dataclasses.replace(model, mechanism=Neural(num_agents=model.num_agents, num_actions=model.num_actions), mechanism_prior={},
                               mechanism_known={})


class Estimator(NamedTuple):
    name: str
    run: Callable[[Model, Any, int, Settings], Estimate]
    in_quick: bool = False


def _map_options(s: Settings, restarts: int | None = None) -> dict:
    return {"steps": s.map_steps, "restarts": restarts or s.map_restarts, "ppc": False}  # many fits; checks unread


def _bayes(method: str, model_of: Callable[[Model], Model], name: str, full_options: dict | None = None):
    """A Bayesian fit with the ``Settings`` sizes; ``full_options`` replace them at the
    paper's sizes (not with ``--quick``)."""

    def run(model, train, seed, s: Settings):
        from bayes_diml.inference import fit

        fitted = model_of(model)
        if method == "nuts":
            options = {"num_chains": s.nuts_chains, "num_warmup": s.nuts_warmup, "num_samples": s.nuts_samples}
        else:
            options = {"steps": s.svi_steps, "num_samples": s.svi_samples}
        if full_options and not s.quick:
            options.update(full_options)
        start = time.perf_counter()
        result = fit(fitted, train, method=method, seed=seed, progress=False, posterior_predictive_draws=1, ppc=False, **options)
        estimate = Estimate.from_fit(result, name)
        estimate.info["wall_seconds"] = time.perf_counter() - start
        return estimate

    return run


def _tabular_nuts(model, train, seed, s):
    fitted = baselines.tabular_model(model)
    free = fitted.num_agents * (fitted.num_actions - 1) * fitted.num_actions ** (fitted.num_agents - 1)
    if free > TABULAR_NUTS_MAX_DIM:
        raise SpecError(f"tabular NUTS: {free} free payoff differences > {TABULAR_NUTS_MAX_DIM}, beyond a CPU run's budget")
    return _bayes("nuts", lambda m: fitted, "tabular NUTS")(model, train, seed, s)


E3_NUTS_OPTIONS = {"num_chains": 2, "num_warmup": 200, "num_samples": 400, "max_tree_depth": 8}
"""Structured NUTS on E3, where the 64-unit tanh subsidy network's weights are not
identified (259 coordinates for a payoff grid of 19 x 7 values) and its posterior
curvature varies along them (largest Hessian eigenvalue 9e3 at the warm start, 5e4 at
the truth): every iteration runs to the tree-depth cap, so the cap sets the cost.
Depth 8 (255 leapfrog steps): 0.63 s per iteration for 2 chains on the 2-core CPU,
about 380-400 s per fit; the weights' R-hat is 1.01-1.10, the payoff differences'
(``rhat_differences``) at most 1.011 (seeds 0-2, both variants; docs/results.md). The
pooled coverage is 0.918 over 8 paper-scale draws and 0.907 over 8 scaled ones. Depth 10 with 4 x
(300 + 700) would take about 1.5 hours per fit."""

TABULAR_NUTS_MAX_DIM = 2500
"""Tabular NUTS runs where the free payoff differences number at most this (E1: 540, E2:
2,000). NUTS in the Laplace frame costs little per dimension here: E2's 2,000 differences
took 87-97 s per fit, 4 x (300 + 700), on the 2-core CPU (E1's 540: 86-112 s)."""


def _ml(model_of: Callable[[Model], Model], name: str):
    def run(model, train, seed, s: Settings):
        return baselines.maximum_likelihood(model_of(model), train, seed, steps=s.ml_steps, learning_rate=s.ml_learning_rate, name=name)

    return run


def _estimators(experiment: str) -> list[Estimator]:
    """Estimators of an experiment, in table order (docs/design.md §7). The paper's DIML and
    DIML_Wrong are maximum-likelihood fits of the neural (E1–E3) or anonymous (E7) class."""
    diml = Estimator(DIML, _ml(neural_model, DIML))
    wrong = Estimator(WRONG, _ml(lambda m: baselines.wrong_learner_model(neural_model(m)), WRONG))
    tabular = Estimator("tabular MAP", lambda m, d, k, s: baselines.tabular_map(m, d, k, **_map_options(s, 4)))
    structured = Estimator(
        "structured MAP", lambda m, d, k, s: _renamed(baselines.structured_map(m, d, k, **_map_options(s, 4)), "structured MAP"), True
    )
    bc = Estimator("joint behaviour cloning", lambda m, d, k, s: baselines.behaviour_cloning(m, d, k, steps=s.bc_steps, hidden=s.bc_hidden), True)
    static = Estimator("static inverse", lambda m, d, k, s: baselines.static_inverse(m, d, k), True)
    neural_svi = Estimator("neural SVI", _bayes("svi", neural_model, "neural SVI"))
    structured_nuts = Estimator("structured NUTS", _bayes("nuts", lambda m: m, "structured NUTS"))
    if experiment == "E1":
        return [diml, wrong, tabular, bc, static, neural_svi, Estimator("tabular NUTS", _tabular_nuts)]
    if experiment == "E2":
        return [diml, wrong, tabular, structured, bc, static, structured_nuts, neural_svi, Estimator("tabular NUTS", _tabular_nuts)]
    if experiment == "E3":
        structured_nuts = Estimator("structured NUTS", _bayes("nuts", lambda m: m, "structured NUTS", E3_NUTS_OPTIONS))
        return [diml, wrong, structured, bc, static, structured_nuts, neural_svi]
    if experiment == "E7":
        return [
            Estimator(DIML_LARGE, _ml(lambda m: m, DIML_LARGE), True),
            Estimator(WRONG_LARGE, _ml(baselines.wrong_learner_model, WRONG_LARGE)),
            Estimator("anonymous SVI", _bayes("svi", lambda m: m, "anonymous SVI")),
            bc,
            static,
        ]
    raise DataError(f"unknown experiment {experiment!r}; choose from {sorted(EXPERIMENTS)}")


def _renamed(estimate: Estimate, name: str) -> Estimate:
    estimate.name = name
    return estimate


# ------------------------------------------------------------------ driver
def _enable_compilation_cache(cache_dir: str | None) -> None:
    """Persistent XLA compilation cache: every fit builds new closures, so without it
    each fit recompiles the same programs (measured: 20 s -> 4 s per small MAP fit)."""
    if not cache_dir:
        return
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(cache_dir))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def release_compiled() -> None:
    """Drop JAX's in-memory compiled programs. Every fit builds new closures, so a long
    run keeps compiling new executables, each holding its own memory mappings; without
    this a full ``reproduce E1 E2 E3 --seeds 3`` aborted after 23 minutes with "LLVM
    ERROR: Unable to allocate section memory" (the kernel's 65,530 mappings per process:
    +720 per quick setting, flat with this call). The persistent cache makes the
    recompilations cheap."""
    jax.clear_caches()


def default_cache_dir() -> str:
    return os.environ.get("BAYES_DIML_JAX_CACHE", str(Path.home() / ".cache" / "bayes_diml" / "jax"))


def _setting_data(setting: Setting, variant: str, seed: int, s: Settings):
    """Model, truth (``draw_truth``, rescaled on the ``scaled`` variant), scale factor and
    simulated data (``s.episodes x s.rounds`` or the setting's sizes, data seed
    ``DATA_SEED_BASE + seed``) of one setting, variant and seed."""
    from bayes_diml.spec import read_spec

    model, spec_truth = read_spec(MODELS / setting.spec)
    truth = draw_truth(model, spec_truth, seed)
    factor = 1.0
    if variant == "scaled":
        factor = unit_scale_factor(model, truth["mechanism"], seed)
        truth = {"mechanism": scale_mechanism(model.mechanism, truth["mechanism"], factor), "learner": truth["learner"]}
    episodes, rounds = s.episodes or setting.episodes, s.rounds or setting.rounds
    data = simulate(model, truth, num_episodes=episodes, num_rounds=rounds, seed=DATA_SEED_BASE + seed)
    return model, truth, factor, data


def _estimate_row(row: dict, estimator: Estimator, model: Model, truth: dict, train, test, seed: int, s: Settings,
                  log, label: str, counterfactual: bool = True) -> dict:
    """Fit one estimator and add its metrics, wall seconds (and NUTS diagnostics) to
    ``row``; a ``SpecError`` marks it skipped and any other error failed, with the reason."""
    start = time.perf_counter()
    try:
        estimate = estimator.run(model, train, seed, s)
        row["wall_seconds"] = float(estimate.info.get("wall_seconds", time.perf_counter() - start))
        fit = estimate.fit
        if "seconds_per_epoch" in estimate.info:
            row["seconds_per_epoch"] = float(estimate.info["seconds_per_epoch"])
        if fit is not None and fit.method in ("map", "svi") and fit.info.get("steps"):
            row["seconds_per_epoch"] = float(fit.info["seconds"]) / float(fit.info["steps"])
        if fit is not None and fit.method == "nuts":
            diagnostics = fit.diagnostics()
            row["max_rhat"] = diagnostics.get("max_rhat")
            row["divergences"] = diagnostics.get("divergences")
        row.update(evaluate_estimate(estimate, model, truth, train, test, seed=seed, settings=s, counterfactual=counterfactual))
        row["status"] = "ok"
    except SpecError as err:
        row.update(status="skipped", reason=str(err))
    except Exception as err:  # a crashed cell stays in the table with its reason
        row.update(status="failed", reason=f"{type(err).__name__}: {err}")
        log(traceback.format_exc())
    row["total_seconds"] = time.perf_counter() - start
    log(f"{label} {estimator.name}: {row['status']} "
        f"rel_error={row.get('rel_error', float('nan')):.4g} diff_mse={row.get('diff_mse', float('nan')):.4g} "
        f"({row['total_seconds']:.1f} s){' ' + row.get('reason', '') if row['status'] != 'ok' else ''}")
    return row


def _run_setting(setting: Setting, experiment: str, variant: str, seed: int, s: Settings, log,
                 only: tuple[str, ...] | None = None) -> list[dict]:
    model, truth, factor, data = _setting_data(setting, variant, seed, s)
    train, test = split_episodes(data)
    rows = []
    for estimator in _estimators(experiment):
        if only is not None and estimator.name not in only:
            continue
        row = {"experiment": experiment, "setting": setting.name, "variant": variant, "seed": seed,
               "estimator": estimator.name, "scale_factor": factor, "episodes": data.num_episodes, "rounds": data.num_rounds}
        if s.quick and not estimator.in_quick:
            row.update(status="skipped", reason="not in --quick")
            rows.append(row)
            continue
        rows.append(_estimate_row(row, estimator, model, truth, train, test, seed, s, log, f"{setting.name} {variant} seed {seed}"))
    return rows


def reproduce(experiments, *, seeds: int = 3, quick: bool = False, out=None, variants=("paper", "scaled"),
              cache_dir: str | None = "default", log=print, estimators: tuple[str, ...] | None = None,
              first_seed: int = 0, overwrite: bool = False) -> dict:
    """Run experiments and write ``paper.json`` and ``paper.md`` into ``out``.

    Args:
        experiments: names from ``EXPERIMENTS`` (``"E1" | "E2" | "E3" | "E7"``).
        seeds: truth draws ``first_seed .. seeds-1`` (0 is the ``models/`` truth).
        first_seed: skip the draws below it (to add seeds to an existing table
            with ``estimators``, whose other seeds' rows are kept).
        quick: tiny data and only the cheap estimators (for CI).
        out: output folder (default ``benchmarks/results``); files are named
            ``paper.json`` / ``paper.md`` (``paper_quick.*`` with ``quick``).
        variants: ``"paper"`` (the published truth scale) and/or ``"scaled"``.
        cache_dir: persistent XLA compilation cache (``"default"``: ``default_cache_dir()``;
            ``None``: off).
        estimators: run only these estimators (names as in the table) and replace their
            rows in an existing ``paper.json`` of ``out`` (other rows are kept).
        overwrite: replace existing ``paper.json`` / ``paper.md`` files (without it, and
            without ``estimators``, existing ones are refused; a folder of that name
            is never replaced).

    Returns:
        The JSON document (``rows``, ``settings``, ``machine``, ``wall_seconds``).
    """
    from bayes_diml.inference.storage import check_output_folder_files, write_text_atomic

    unknown = [e for e in experiments if e not in EXPERIMENTS]
    if unknown:
        raise DataError(f"reproduce: unknown experiment(s) {unknown}; choose from {sorted(EXPERIMENTS)}")
    if not 0 <= first_seed < seeds:
        raise DataError(f"reproduce: first_seed must be in 0..{seeds - 1} (seeds={seeds}), got {first_seed}")
    bad = [v for v in variants if v not in ("paper", "scaled")]
    if bad:
        raise DataError(f"reproduce: unknown variant(s) {bad}; choose from ['paper', 'scaled']")
    _enable_compilation_cache(default_cache_dir() if cache_dir == "default" else cache_dir)
    s = Settings.for_mode(quick)
    out = Path(out) if out is not None else DEFAULT_OUT
    stem = "paper_quick" if quick else "paper"
    check_output_folder_files(out, [f"{stem}.json", f"{stem}.md"], overwrite or estimators is not None)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    rows: list[dict] = []
    kept: list[dict] = []
    history: list[dict] = []
    previous = out / f"{stem}.json"
    if estimators is not None and previous.exists():
        old = json.loads(previous.read_text(encoding="utf-8"))
        rerun = lambda r: (r.get("estimator") in estimators and r.get("experiment") in experiments  # noqa: E731
                           and r.get("variant") in variants and first_seed <= r.get("seed", 0) < seeds)
        kept = [r for r in old.get("rows", []) if not rerun(r)]
        history = _run_history(old)
    rows.extend(kept)
    document = {  # a re-run's table still holds the kept rows: name their experiments and variants too
        "experiments": sorted({r["experiment"] for r in kept} | set(experiments), key=list(EXPERIMENTS).index),
        "seeds": max([seeds] + [r["seed"] + 1 for r in kept]), "quick": quick,
        "variants": [v for v in ("paper", "scaled") if v in variants or any(r["variant"] == v for r in kept)],
        "settings": dataclasses.asdict(s), "machine": _machine(), "rows": rows,
        "notes": "We fit whole episodes (Q restarted at 0 at round 0); the paper trains on random 50-round windows.",
    }
    if kept:
        document["rerun"] = {"estimators": list(estimators), "previous_wall_seconds": history[-1]["wall_seconds"],
                             "earlier_runs": history}
    for experiment in experiments:
        for setting in EXPERIMENTS[experiment]:
            for variant in variants:
                for seed in range(first_seed, seeds):
                    rows.extend(_run_setting(setting, experiment, variant, seed, s, log, estimators))
                    release_compiled()
                    rows.sort(key=lambda r: (_ORDER.get(r["experiment"], 9), r["setting"], r["variant"] != "paper", r["seed"],
                                             [e.name for e in _estimators(r["experiment"])].index(r["estimator"])))
                    document["wall_seconds"] = time.perf_counter() - start
                    write_text_atomic(out / f"{stem}.json", json.dumps(_jsonable(document), indent=1))
                    write_text_atomic(out / f"{stem}.md", markdown_table(rows, document))
    document["wall_seconds"] = time.perf_counter() - start
    write_text_atomic(out / f"{stem}.json", json.dumps(_jsonable(document), indent=1))
    write_text_atomic(out / f"{stem}.md", markdown_table(rows, document))
    return document


_ORDER = {name: i for i, name in enumerate(EXPERIMENTS)}


def _machine() -> dict:
    return {"platform": platform.platform(), "cpu_count": os.cpu_count(), "jax_devices": [str(d) for d in jax.devices()]}


_jsonable = jsonable  # the library's one JSON encoder (NaN and infinity -> null)


# ------------------------------------------------------------------ tables
COLUMNS = [
    ("rel_error", "rel. error", "ours"),
    ("rel_error_in_support", "rel. error (in support)", "ours"),
    ("coverage90", "90% coverage", "ours"),
    ("rhat_differences", "R-hat of Δ", "ours"),
    ("diff_mse", "diff MSE", "paper"),
    ("nll_test", "NLL", "paper"),
    ("nll_test_in_support", "NLL in-support", "paper"),
    ("pp_nll", "pred. NLL", "ours"),
    ("cfkl", "CF-KL", "paper"),
    ("cfkl_in_support", "CF-KL in-support", "paper"),
    ("mse_on", "payoff MSE on", "paper"),
    ("mse_off", "payoff MSE off", "ours"),
    ("wall_seconds", "fit s", "ours"),
    ("seconds_per_epoch", "s/epoch", "ours"),
]


def _run_history(document: dict) -> list[dict]:
    """Every run that wrote ``document``'s rows, oldest first: ``{"estimators", "wall_seconds"}``
    with ``estimators`` ``None`` for the first, full run."""
    rerun = document.get("rerun")
    if not rerun:
        return [{"estimators": None, "wall_seconds": document.get("wall_seconds")}]
    earlier = rerun.get("earlier_runs") or [{"estimators": None, "wall_seconds": rerun.get("previous_wall_seconds")}]
    return [*earlier, {"estimators": rerun["estimators"], "wall_seconds": document.get("wall_seconds")}]


def _wall_text(document: dict) -> str:
    """``"1675 s, then 2340 s re-running structured NUTS, then ..."``."""
    parts = []
    for run in _run_history(document):
        wall = run["wall_seconds"]
        text = f"{wall:.0f} s" if wall is not None else "? s"
        parts.append(text if run["estimators"] is None else f"then {text} re-running {', '.join(run['estimators'])}")
    return ", ".join(parts)


def _cell(values: list[float]) -> str:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return "–"
    mean = float(np.mean(values))
    if len(values) == 1:
        return f"{mean:.4g}"
    return f"{mean:.4g} ± {float(np.std(values, ddof=1)):.2g}"


def markdown_table(rows: list[dict], document: dict | None = None) -> str:
    """One Markdown table per (setting, variant): mean ± sd over seeds per estimator,
    relative error first, the published value beside ``diff MSE`` on the paper variant;
    skipped or crashed estimators keep their row, with the reason."""
    lines = ["# DIML paper reproduction", ""]
    if document:
        lines += [
            f"Experiments {', '.join(document['experiments'])}; seeds 0..{document['seeds'] - 1} "
            f"(seed 0 = the `models/` truth); {'quick subset' if document['quick'] else 'paper sizes'}; "
            f"wall {_wall_text(document)} on {document['machine']['platform']} "
            f"({document['machine']['cpu_count']} CPUs).",
            "",
            "Columns marked (paper) follow the paper's conventions (NLL from round 1, independent own-action "
            "pairs, KL with 1e-12); the others are ours (docs/design.md §6). " + document.get("notes", ""),
            "",
        ]
    keys = []
    for row in rows:
        key = (row["setting"], row["variant"])
        if key not in keys:
            keys.append(key)
    for setting, variant in keys:
        subset = [r for r in rows if r["setting"] == setting and r["variant"] == variant]
        lines.append(f"## {setting}, " + ("the paper's scale" if variant == "paper" else "scaled (true differences rescaled to unit sd)"))
        lines.append("")
        header = ["estimator", "seeds"] + [f"{label} ({kind})" for _, label, kind in COLUMNS]
        if variant == "paper":
            header.insert(header.index("diff MSE (paper)") + 1, "published diff MSE")
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        names = []
        for r in subset:
            if r["estimator"] not in names:
                names.append(r["estimator"])
        for name in names:
            group = [r for r in subset if r["estimator"] == name]
            ok = [r for r in group if r.get("status") == "ok"]
            if not ok:
                reason = group[0].get("reason", group[0].get("status", ""))
                cells = [name, "0"] + [f"{group[0].get('status')}: {reason}".replace("|", "/")] + [""] * (len(header) - 3)
            else:
                cells = [name, str(len(ok))]
                for column, _, _ in COLUMNS:
                    cells.append(_cell([r.get(column) for r in ok]))
                    if column == "diff_mse" and variant == "paper":
                        published = PUBLISHED.get((setting, name), {}).get("diff_mse")
                        cells.append("–" if published is None else f"{published:.4g}")
                bad = [r for r in group if r.get("status") != "ok"]
                if bad:
                    cells[0] += f" ({len(bad)} seed(s) {bad[0].get('status')}: {bad[0].get('reason', '')})".replace("|", "/")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"

