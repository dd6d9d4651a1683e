"""Full run folders, as written by ``bayes-diml fit`` and ``bayes-diml demo``.

    RUN/posterior.nc  fit.json  spec.toml  data.csv     (Fit.save: enough to reload)
    RUN/summary.csv          ArviZ summary of the natural parameters ("fixed": pinned by the gauge)
    RUN/diagnostics.json     R-hat, ESS, divergences, E-BFMI, warnings, and "ppc": the
                             conditional posterior predictive checks (tables, misfit; ``inference.ppc``)
    RUN/identifiability.csv  contraction per parameter and difference, Fisher directions
    RUN/payoff_differences.csv  posterior of sampled in-support differences
    RUN/provenance.json      versions, seed, command line, SHA-256 of the data, machine
    RUN/rank_trace.png  payoff_differences.png  posterior_predictive.png

Everything is written into a temporary folder renamed into place at the end.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
from importlib import metadata
from pathlib import Path

import pandas as pd

from ._json import dumps
from .errors import DataError

__all__ = ["save_run", "provenance"]

FOREST_ROWS = 30
"""Rows of the payoff-difference table shown in the forest plot (the CSV has them all)."""

_PACKAGES = ("bayes_diml", "jax", "jaxlib", "numpyro", "optax", "arviz", "arviz-base", "arviz-stats", "xarray", "numpy", "pandas")


def _sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def provenance(fit, data_path=None, argv=None) -> dict:
    """Versions, seed, command line, data hash and machine of a fit."""
    import jax

    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "versions": versions,
        "python": sys.version.split()[0],
        "seed": fit.info.get("seed"),
        "method": fit.method,
        "command_line": list(sys.argv if argv is None else argv),
        "data_file": None if data_path is None else str(data_path),
        "data_sha256": None if data_path is None else _sha256(data_path),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.machine(),
            "cpu_count": os.cpu_count(),
            "jax_devices": [str(d) for d in jax.devices()],
        },
    }


def save_run(fit, directory, *, overwrite=False, data_path=None, queries=None, truth=None, argv=None) -> dict:
    """Write the full run folder atomically; returns the computed results.

    Args:
        fit: a ``Fit``.
        directory: the run folder (refused if it exists unless ``overwrite``).
        data_path: the data file (for its SHA-256 in provenance.json).
        queries: payoff-difference queries to report (default: 20 random
            in-support contexts of the data).
        truth: true mechanism parameters, if known (adds truth / covered columns).

    Returns:
        ``{"differences": DataFrame, "diagnostics": dict, "identifiability": report}``.
    """
    from .inference.queries import sample_queries
    from .inference.storage import atomic_folder, write_run_files
    from .plots import plot_payoff_differences, plot_posterior_predictive, plot_rank_trace

    if queries is None:
        try:
            queries = sample_queries(fit.data, 20, seed=0)
        except DataError:  # no round in which every agent played: no joint-action context to ask about
            queries = pd.DataFrame({"agent": [], "action": [], "baseline": [], "joint": []})
    if len(queries):
        differences = fit.payoff_differences(queries, truth=truth)
    else:
        differences = pd.DataFrame(columns=["agent", "action", "baseline", "joint", "mean", "sd", "q05", "q95", "in_support"])
    diagnostics = fit.diagnostics()
    report = fit.identifiability(queries, seed=0)
    with atomic_folder(directory, overwrite) as tmp:
        tmp = Path(tmp)
        write_run_files(fit, tmp)
        fit.summary(mark_fixed=True).to_csv(tmp / "summary.csv")
        (tmp / "diagnostics.json").write_text(dumps(diagnostics), encoding="utf-8")
        report.to_frame().to_csv(tmp / "identifiability.csv", index=False)
        differences.to_csv(tmp / "payoff_differences.csv", index=False)
        (tmp / "provenance.json").write_text(dumps(provenance(fit, data_path, argv)), encoding="utf-8")
        for name, figure in (
            ("rank_trace.png", plot_rank_trace(fit)),
            ("payoff_differences.png", plot_payoff_differences(differences.head(FOREST_ROWS))),
            ("posterior_predictive.png", plot_posterior_predictive(fit)),
        ):
            figure.savefig(tmp / name, dpi=110)
    return {"differences": differences, "diagnostics": diagnostics, "identifiability": report}

