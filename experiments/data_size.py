"""Data-size study: payoff-difference error against the number of training episodes.

Does the Bayesian posterior mean beat MAP when data are scarce? For one setting of the
paper's experiments (docs/design.md §7; default E2, the congestion game) and each seed:

1. draw the truth and simulate **once** at the paper's sizes, exactly as
   ``experiments.reproduce`` does (``_setting_data``), and split the episodes 80/20
   (``split_episodes``): the 20% test episodes stay the same for every size;
2. for each size ``m`` (default ``3, 6, 12, 24, 48``), fit every chosen estimator on the
   **first** ``m`` training episodes (nested prefixes: the data of a size contain those
   of every smaller size);
3. evaluate each fit on the fixed test episodes with ``reproduce.evaluate_estimate``
   (no counterfactual simulation): the relative payoff-difference error
   ``MSE(Δ_est − Δ_true) / Var(Δ_true)`` (ours, distinct own-action pairs), the paper's
   payoff-difference MSE (``diff_mse``), the 90% interval coverage of the true
   differences (fits with posterior draws), and the fit's wall seconds.

Estimators and their budgets are those of the reproduction table (``reproduce._estimators``,
``Settings``): MAP by Adam with restarts, NUTS 2 chains x (400 warm-up + 400 draws) whose
point estimate is the posterior mean of the differences, and the paper's DIML (neural
maximum likelihood, 200 full-batch Adam steps whatever ``m``). Each row records SHA-256
digests of the training and test arrays it used, so the nesting can be checked.

Writes ``data_size_<setting>[_scaled][_quick].json`` / ``.md`` / ``.png`` into ``out``
(default ``benchmarks/results``). Command line::

    bayes-diml reproduce E2 --data-sizes 3,6,12,24,48 --seeds 3 --variants paper
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from bayes_diml._io import atomic_write
from bayes_diml.errors import DataError
from experiments.reproduce import (
    DEFAULT_OUT,
    DIML,
    DIML_LARGE,
    EXPERIMENTS,
    TRAIN_FRACTION,
    Settings,
    _cell,
    _enable_compilation_cache,
    _estimate_row,
    _estimators,
    _jsonable,
    _machine,
    _setting_data,
    default_cache_dir,
    episode_subset,
    release_compiled,
    split_episodes,
)

__all__ = ["DATA_SIZES", "QUICK_DATA_SIZES", "DATA_SIZE_ESTIMATORS", "data_size_study", "data_size_table",
           "plot_data_size", "trajectories_digest", "output_stem"]

DATA_SIZES = (3, 6, 12, 24, 48)
"""Training episodes per fit (the paper's E1–E3 train on 48 = 80% of 60)."""
QUICK_DATA_SIZES = (2, 4, 8)
"""Sizes under ``quick`` (10 episodes, 8 of them for training)."""

DATA_SIZE_ESTIMATORS: dict[str, tuple[str, ...]] = {
    "E1": ("tabular MAP", "tabular NUTS", DIML),
    "E2": ("structured MAP", "structured NUTS", "tabular MAP", DIML),
    "E3": ("structured MAP", "structured NUTS", DIML),
    "E7": (DIML_LARGE, "anonymous SVI"),
}
"""Default estimators per experiment: MAP against the posterior mean of the same family,
and the paper's DIML."""


def trajectories_digest(data) -> str:
    """SHA-256 of the int32 action codes followed by the boolean mask (C order)."""
    digest = hashlib.sha256(np.ascontiguousarray(data.actions, dtype=np.int32).tobytes())
    digest.update(np.ascontiguousarray(data.mask, dtype=bool).tobytes())
    return digest.hexdigest()


def _setting(name: str):
    for experiment, settings in EXPERIMENTS.items():
        for setting in settings:
            if setting.name == name:
                return experiment, setting
    names = [s.name for settings in EXPERIMENTS.values() for s in settings]
    if name in EXPERIMENTS:
        raise DataError(f"data-size study: {name} has several settings; choose one of {[s.name for s in EXPERIMENTS[name]]}")
    raise DataError(f"data-size study: unknown setting {name!r}; choose from {names}")


def output_stem(setting: str, variant: str = "paper", quick: bool = False) -> str:
    """``data_size_<setting>`` with ``_scaled`` for the scaled variant and ``_quick`` under ``quick``."""
    return f"data_size_{setting}" + ("_scaled" if variant == "scaled" else "") + ("_quick" if quick else "")


def data_size_study(setting: str = "E2", *, seeds: int | Sequence[int] = 1, sizes: Sequence[int] | None = None,
                    estimators: Sequence[str] | None = None, variant: str = "paper", quick: bool = False, out=None,
                    cache_dir: str | None = "default", log=print, overwrite: bool = False) -> dict:
    """Fit each estimator on nested prefixes of the training episodes; write JSON, Markdown, PNG.

    Args:
        setting: a setting name of ``reproduce.EXPERIMENTS`` (``"E1"``, ``"E2"``, ``"E3"``,
            ``"E7_n40_A10"``, ...).
        seeds: a count ``N`` (seeds ``0..N-1``) or the seeds themselves; seed 0 is the
            ``models/`` truth, seed ``s`` the reproduction's draw ``s`` (same data).
        sizes: training episodes per fit, each at most the training split
            (default ``DATA_SIZES``; ``QUICK_DATA_SIZES`` under ``quick``).
        estimators: names as in the reproduction table (default
            ``DATA_SIZE_ESTIMATORS[experiment]``).
        variant: ``"paper"`` (the published truth scale) or ``"scaled"`` (unit-sd differences).
        quick: the reproduction's quick settings (10 episodes x 20 rounds, short fits);
            estimators outside its quick subset are recorded as skipped.
        out: output folder (default ``benchmarks/results``).
        cache_dir: persistent XLA compilation cache (``"default"``: ``default_cache_dir()``).
        overwrite: replace existing output files of the same names (never a folder).

    Returns:
        The JSON document: ``rows`` (one per seed, size and estimator, with ``rel_error``,
        ``diff_mse``, ``coverage90``, ``wall_seconds``, ``train_digest``, ``test_digest``),
        ``sizes``, ``seeds``, ``settings``, ``machine``, ``wall_seconds``, ``files``.
    """
    from bayes_diml.inference.storage import check_output_folder_files, write_text_atomic

    experiment, chosen = _setting(setting)
    if variant not in ("paper", "scaled"):
        raise DataError(f"data-size study: unknown variant {variant!r}; choose from ['paper', 'scaled']")
    seed_list = list(range(seeds)) if isinstance(seeds, (int, np.integer)) else [int(k) for k in seeds]
    if not seed_list or min(seed_list) < 0:
        raise DataError(f"data-size study: seeds must be a positive count or non-negative integers, got {seeds!r}")
    s = Settings.for_mode(quick)
    sizes = tuple(int(m) for m in (sizes or (QUICK_DATA_SIZES if quick else DATA_SIZES)))
    train_episodes = int(round(TRAIN_FRACTION * (s.episodes or chosen.episodes)))  # as split_episodes
    if min(sizes) < 1 or max(sizes) > train_episodes:
        raise DataError(f"data-size study: sizes {list(sizes)} must lie in 1..{train_episodes}, "
                        f"the training episodes of {setting}{' (quick)' if quick else ''}")
    sizes = tuple(sorted(set(sizes)))
    table = {e.name: e for e in _estimators(experiment)}
    names = tuple(estimators or DATA_SIZE_ESTIMATORS[experiment])
    unknown = [name for name in names if name not in table]
    if unknown:
        raise DataError(f"data-size study: unknown estimator(s) {unknown} for {experiment}; choose from {list(table)}")
    _enable_compilation_cache(default_cache_dir() if cache_dir == "default" else cache_dir)
    out = Path(out) if out is not None else DEFAULT_OUT
    stem = output_stem(chosen.name, variant, quick)
    check_output_folder_files(out, [f"{stem}.{kind}" for kind in ("json", "md", "png")], overwrite)
    out.mkdir(parents=True, exist_ok=True)
    files = {kind: str(out / f"{stem}.{kind}") for kind in ("json", "md", "png")}
    rows: list[dict] = []
    document = {
        "experiment": experiment, "setting": chosen.name, "variant": variant, "seeds": seed_list, "sizes": list(sizes),
        "estimators": list(names), "quick": quick, "settings": dataclasses.asdict(s), "machine": _machine(), "rows": rows,
        "files": files,
        "notes": ("Each seed is simulated once at the paper's sizes; the 20% test episodes are fixed and each fit "
                  "uses the first m training episodes. Relative error: MSE(Δ_est − Δ_true)/Var(Δ_true) on test "
                  "contexts; NUTS and SVI are scored by their posterior mean. Fit seconds include compilation "
                  "(persistent XLA cache on unless disabled)."),
    }
    start = time.perf_counter()

    def write() -> None:
        document["wall_seconds"] = time.perf_counter() - start
        write_text_atomic(out / f"{stem}.json", json.dumps(_jsonable(document), indent=1))
        write_text_atomic(out / f"{stem}.md", data_size_table(document))
        _save_figure(plot_data_size(document), out / f"{stem}.png")

    for seed in seed_list:
        model, truth, factor, data = _setting_data(chosen, variant, seed, s)
        train, test = split_episodes(data)
        test_digest = trajectories_digest(test)
        for m in sizes:
            subset = episode_subset(train, slice(0, m))
            digest = trajectories_digest(subset)
            for name in names:
                row = {"experiment": experiment, "setting": chosen.name, "variant": variant, "seed": seed,
                       "estimator": name, "train_episodes": m, "test_episodes": test.num_episodes,
                       "rounds": data.num_rounds, "scale_factor": factor, "train_digest": digest, "test_digest": test_digest}
                if quick and not table[name].in_quick:
                    rows.append({**row, "status": "skipped", "reason": "not in --quick"})
                    continue
                rows.append(_estimate_row(row, table[name], model, truth, subset, test, seed, s, log,
                                          f"{chosen.name} {variant} seed {seed} m={m}", counterfactual=False))
                write()
            release_compiled()
    write()
    return document


# ------------------------------------------------------------------ outputs
def _groups(document: dict):
    """``{estimator: {m: [ok rows]}}`` in the document's estimator and size order."""
    out = {name: {m: [] for m in document["sizes"]} for name in document["estimators"]}
    for row in document["rows"]:
        if row.get("status") == "ok":
            out[row["estimator"]][row["train_episodes"]].append(row)
    return out


def _not_ok(document: dict, name: str, m: int) -> list[dict]:
    return [r for r in document["rows"] if r["estimator"] == name and r["train_episodes"] == m and r.get("status") != "ok"]


def data_size_table(document: dict) -> str:
    """Markdown: relative error (mean ± sd over seeds) by training episodes and estimator,
    then every metric per (estimator, size); skipped or crashed cells keep their reason."""
    groups = _groups(document)
    seeds = document["seeds"]
    lines = [
        f"# Data-size study: {document['setting']}, "
        + ("the paper's scale" if document["variant"] == "paper" else "scaled (true differences rescaled to unit sd)"),
        "",
        f"Seeds {', '.join(map(str, seeds))} (seed 0 = the `models/` truth); "
        f"{'quick settings' if document['quick'] else 'paper sizes'}; test episodes fixed per seed; "
        f"wall {document.get('wall_seconds', float('nan')):.0f} s on {document['machine']['platform']} "
        f"({document['machine']['cpu_count']} CPUs). {document['notes']}",
        "",
        "## Relative payoff-difference error (mean ± sd over seeds)",
        "",
        "| training episodes | " + " | ".join(document["estimators"]) + " |",
        "|" + "---|" * (len(document["estimators"]) + 1),
    ]
    for m in document["sizes"]:
        cells = []
        for name in document["estimators"]:
            ok = groups[name][m]
            bad = _not_ok(document, name, m)
            text = _cell([r.get("rel_error") for r in ok]) if ok else (bad[0].get("status", "–") if bad else "–")
            cells.append(text)
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    columns = [("rel_error", "rel. error"), ("rel_error_in_support", "rel. error (in support)"),
               ("diff_mse", "diff MSE (paper)"), ("coverage90", "90% coverage"), ("nll_test", "NLL (paper)"),
               ("wall_seconds", "fit s"), ("max_rhat", "max R-hat"), ("divergences", "divergences")]
    lines += ["", "## Every metric", "", "| estimator | training episodes | seeds | " + " | ".join(c for _, c in columns) + " |",
              "|" + "---|" * (len(columns) + 3)]
    for name in document["estimators"]:
        for m in document["sizes"]:
            ok = groups[name][m]
            bad = _not_ok(document, name, m)
            if not ok and not bad:
                continue
            label = name
            if bad:
                label += f" ({len(bad)} seed(s) {bad[0].get('status')}: {bad[0].get('reason', '')})".replace("|", "/")
            cells = [_cell([r.get(c) for r in ok]) for c, _ in columns]
            lines.append(f"| {label} | {m} | {len(ok)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_data_size(document: dict) -> Figure:
    """Relative payoff-difference error (log) against training episodes (log), one line per
    estimator (mean over seeds, min–max band with several seeds); right panel: 90% coverage
    of the fits with posterior draws."""
    groups = _groups(document)
    fig = Figure(figsize=(10, 4), layout="constrained")
    ax, ax_cov = fig.subplots(1, 2, sharex=True, gridspec_kw={"width_ratios": [3, 2]})
    any_coverage = False
    for k, name in enumerate(document["estimators"]):
        color = f"C{k % 10}"
        for axis, column in ((ax, "rel_error"), (ax_cov, "coverage90")):
            sizes, mean, low, high = [], [], [], []
            for m in document["sizes"]:
                values = [r[column] for r in groups[name][m] if r.get(column) is not None and math.isfinite(r[column])]
                if values:
                    sizes.append(m)
                    mean.append(np.mean(values))
                    low.append(np.min(values))
                    high.append(np.max(values))
            if not sizes:
                continue
            any_coverage |= axis is ax_cov
            axis.plot(sizes, mean, "o-", color=color, label=name, lw=1.6, ms=4)
            if len(document["seeds"]) > 1:
                axis.fill_between(sizes, low, high, color=color, alpha=0.18, lw=0)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(document["sizes"], [str(m) for m in document["sizes"]])
    ax.minorticks_off()
    ax.set_xlabel("training episodes")
    ax.set_ylabel("relative error  MSE(Δ_est − Δ_true) / Var(Δ_true)")
    seeds = document["seeds"]
    band = f"mean over {len(seeds)} seeds, band min–max" if len(seeds) > 1 else f"seed {seeds[0]}"
    ax.set_title(f"{document['setting']} ({document['variant']} scale): payoff-difference error, {band}", fontsize=9)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    ax_cov.tick_params(labelbottom=True)
    ax_cov.axhline(0.9, color="k", ls=":", lw=0.8)
    ax_cov.set_ylim(0, 1.02)
    ax_cov.set_xlabel("training episodes")
    ax_cov.set_ylabel("90% interval coverage of Δ_true")
    ax_cov.set_title("coverage (fits with posterior draws)" if any_coverage else "no fit with posterior draws", fontsize=9)
    ax_cov.grid(True, alpha=0.3)
    return fig


def _save_figure(fig: Figure, path: Path) -> None:
    atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=110), binary=True)
