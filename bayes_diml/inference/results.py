"""``Fit``: the posterior draws and everything computed from them.

Layering (arviz-stats style): plain arrays in ``Fit`` -> an ArviZ 1.x
``xarray.DataTree`` (``to_arviz``) -> user API (summary, diagnostics, queries,
identifiability, counterfactuals).
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ..model import Model
from ..priors import Prior

__all__ = ["Fit", "load_fit", "RHAT_MAX", "ESS_MIN", "CREDIBLE_LEVEL", "interval_columns", "FIXED"]

CREDIBLE_LEVEL = 0.90
"""Mass of every credible interval the package reports, set once here: the summary
(``eti90_lb``, ``eti90_ub``), payoff differences and counterfactual bands (``q05``,
``q95``), the posterior predictive band, the forest plot and the report. All are
equal-tailed."""

FIXED = "fixed"
"""What a run folder's ``summary.csv`` and the report show instead of ESS, R-hat and MCSE
for an entry that does not vary over the draws (pinned by the gauge)."""


def interval_columns(level: float = CREDIBLE_LEVEL) -> tuple[str, str]:
    """Names of the lower and upper bound columns of an equal-tailed interval of mass
    ``level``: its quantiles in percent, ``("q05", "q95")`` at 0.90."""
    tail = (1 - level) / 2
    return f"q{round(tail * 100):02d}", f"q{round((1 - tail) * 100):02d}"

RHAT_MAX = 1.01
"""R-hat above this is reported as a convergence warning (Vehtari et al. 2021)."""
ESS_MIN = 400
"""Bulk or tail ESS below this is reported as too few effective draws (Vehtari et al. 2021)."""


@dataclasses.dataclass(eq=False)
class Fit:
    """Posterior draws of a model fitted to data.

    Attributes:
        model: the fitted model; data: the ``Trajectories``; method: ``nuts|svi|map``.
        posterior: site name -> array ``(chain, draw, ...)`` (sampled coordinates
            and natural parameters).
        sample_stats: NUTS statistics ``(chain, draw)`` or ``None``.
        info: settings, timings, seed and method-specific results.
        log_likelihood: per-episode log-likelihood ``(chain, draw, episode)``.
        posterior_predictive: ``{"action_frequency": (chain, draw', round, action),
            "draw": (draw',)}``, simulated on a thinned subset of draws.
    """

    model: Model
    data: Any
    method: str
    posterior: dict[str, np.ndarray]
    sample_stats: dict[str, np.ndarray] | None
    info: dict[str, Any]
    log_likelihood: np.ndarray | None = None
    posterior_predictive: dict[str, np.ndarray] | None = None

    # ------------------------------------------------------------ shapes
    @property
    def num_chains(self) -> int:
        return int(next(iter(self.posterior.values())).shape[0]) if self.posterior else 1

    @property
    def num_draws(self) -> int:
        return int(next(iter(self.posterior.values())).shape[1]) if self.posterior else 1

    @property
    def num_total_draws(self) -> int:
        return self.num_chains * self.num_draws

    def params_draws(self, index=None) -> dict:
        """Natural parameters of every draw: ``{"mechanism": {...}, "learner": {...}}``
        (plus ``"initial"``, the learned ``Q_0``, and ``"payoff_sigma"`` where the model
        has them) with a leading flat draw axis (chains concatenated); ``index`` selects draws."""
        S = self.num_total_draws
        mechanism = {}
        for name, shape in self.model.mechanism.param_shapes().items():
            mechanism[name] = jnp.asarray(np.reshape(self.posterior[name], (S, *shape)))
        learner = {}
        if "q0" in self.model.fixed_learner_params:
            q0 = jnp.asarray(self.model.fixed_learner_params["q0"])
            learner["q0"] = jnp.broadcast_to(q0, (S, *q0.shape))
        for name in self.model.learner.param_names:
            if name in self.posterior:
                learner[name] = jnp.asarray(np.reshape(self.posterior[name], (S, *np.shape(self.posterior[name])[2:])))
            else:
                learner[name] = jnp.full((S,), float(self.model.fixed_learner_params[name]))
        params = {"mechanism": mechanism, "learner": learner}
        if self.model.learned_initial:
            q0 = np.asarray(self.posterior["q0"])
            params["initial"] = jnp.asarray(np.reshape(q0, (S, *q0.shape[2:])))
        if "payoff_sigma" in self.posterior:
            params["payoff_sigma"] = jnp.asarray(np.reshape(self.posterior["payoff_sigma"], (S,)))
        elif not isinstance(self.model.payoff_sigma, Prior) and getattr(self.data, "payoff", None) is not None:
            params["payoff_sigma"] = jnp.full((S,), float(self.model.payoff_sigma))
        if index is not None:
            params = jax.tree.map(lambda v: v[np.asarray(index)], params)
        return params

    def thinned_index(self, max_draws: int) -> np.ndarray:
        """Flat indices of at most ``max_draws`` draws spread evenly over every chain."""
        per_chain = max(1, min(self.num_draws, math.ceil(max_draws / self.num_chains)))
        within = np.unique(np.linspace(0, self.num_draws - 1, per_chain).round().astype(int))
        return (np.arange(self.num_chains)[:, None] * self.num_draws + within[None, :]).reshape(-1)

    # ------------------------------------------------------ predictive
    def simulate_frequencies(self, key, max_draws: int = 200, batch_size: int = 16) -> dict:
        """Posterior predictive action frequencies per round (over episodes and agents).

        For a thinned subset of draws, simulates as many episodes and rounds as the
        data have (everyone present) and returns ``{"action_frequency": (chain,
        draw', round, action), "draw": draw indices}``.
        """
        from ..simulate import simulate_arrays

        index = self.thinned_index(max_draws)
        params = self.params_draws(index)
        E, T = self.data.num_episodes, self.data.num_rounds
        A = self.model.num_actions
        keys = jax.random.split(key, index.size)
        model = self.model

        @jax.jit
        def frequencies(params, keys):
            def one(args):
                p, k = args
                actions = simulate_arrays(model, p, k, E, T)
                return jax.nn.one_hot(actions, A).mean(axis=(0, 2))

            return jax.lax.map(one, (params, keys), batch_size=batch_size)

        freq = np.asarray(frequencies(params, keys))
        per_chain = index.size // self.num_chains
        return {
            "action_frequency": freq.reshape(self.num_chains, per_chain, T, A),
            "draw": (index[:per_chain] % self.num_draws),
        }

    def observed_frequencies(self) -> np.ndarray:
        """Observed action frequencies per round over present entries, ``(round, action)``."""
        onehot = np.eye(self.model.num_actions)[self.data.actions] * (~self.data.mask)[..., None]
        counts = onehot.sum(axis=(0, 2))
        present = (~self.data.mask).sum(axis=(0, 2))[:, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(present > 0, counts / np.maximum(present, 1), np.nan)

    # ----------------------------------------------------------- ArviZ
    def _dims(self) -> dict[str, list[str]]:
        n, A = self.model.num_agents, self.model.num_actions
        dims = {}
        for name, values in self.posterior.items():
            shape = np.shape(values)[2:]
            if shape == (A,):
                dims[name] = ["action"]
            elif shape == (n,):
                dims[name] = ["agent"]
            elif name == "payoffs" and shape == (A**n, n):
                dims[name] = ["joint", "agent"]
        return dims

    def coords(self) -> dict[str, list]:
        """Labels of each dimension, from the data: episodes, rounds, agents, actions, and
        for a tabular mechanism the joint action of each table row (``"high low"``)."""
        d = self.data
        coords = {
            "episode": list(d.episode_labels),
            "round": list(range(d.first_round, d.first_round + d.num_rounds)),
            "agent": list(d.agent_labels),
            "action": list(d.action_labels),
        }
        if self.model.mechanism.family == "tabular":
            from ..mechanisms.tabular import joint_labels

            coords["joint"] = joint_labels(self.model.num_agents, self.model.num_actions, d.action_labels)
        return coords

    def entry_labels(self, name: str, shape) -> list[str]:
        """One label per entry of a parameter array (C order), as ``summary()`` shows them:
        ``tau[low]``, ``payoffs[high low, bob]`` (the data's labels on the axes of
        ``_dims``), indices on unlabelled axes (``w0[3, 1]``), ``name`` for a scalar."""
        shape = tuple(int(k) for k in shape)
        if not shape:
            return [name]
        coords = self.coords()
        dims = self._dims().get(name, [])
        axes = []
        for axis, size in enumerate(shape):
            labels = coords.get(dims[axis]) if len(dims) == len(shape) else None
            axes.append([str(x) for x in labels] if labels is not None and len(labels) == size else [str(k) for k in range(size)])
        return [f"{name}[{', '.join(axes[a][k] for a, k in enumerate(index))}]" for index in np.ndindex(*shape)]

    def to_arviz(self):
        """The fit as an ArviZ 1.x ``xarray.DataTree``.

        Groups: posterior, sample_stats (NUTS), log_likelihood (``actions``, dims
        chain, draw, episode; with observed payoffs it includes their density),
        log_prior (one variable per sampled site, dims chain, draw), posterior_predictive (``action_frequency``, dims
        chain, draw, round, action), observed_data (actions, mask, action
        frequencies) and constant_data (fixed learner parameters; the spec in attrs).
        """
        import xarray as xr

        from ..spec import model_to_toml

        coords = self.coords()
        tree = xr.DataTree()
        tree.attrs.update(
            {"method": self.method, "spec": model_to_toml(self.model), "info": json.dumps(_jsonable(self.info))}
        )
        tree["posterior"] = _group("posterior", self.posterior, self._dims(), coords)
        if self.sample_stats is not None:
            tree["sample_stats"] = _group("sample_stats", self.sample_stats, {}, coords)
        if self.log_likelihood is not None:
            tree["log_likelihood"] = _group("log_likelihood", {"actions": self.log_likelihood}, {"actions": ["episode"]}, coords)
        if self.posterior_predictive is not None:
            pp = self.posterior_predictive
            tree["posterior_predictive"] = _group(
                "posterior_predictive",
                {"action_frequency": pp["action_frequency"]},
                {"action_frequency": ["round", "action"]},
                {**coords, "draw": [int(d) for d in np.asarray(pp["draw"])]},
            )
        tree["observed_data"] = _group(
            "observed_data",
            {"actions": self.data.actions, "mask": self.data.mask, "action_frequency": self.observed_frequencies()},
            {"actions": ["episode", "round", "agent"], "mask": ["episode", "round", "agent"], "action_frequency": ["round", "action"]},
            coords,
        )
        log_prior = self.log_prior_draws()
        if log_prior:
            tree["log_prior"] = _group("log_prior", log_prior, {}, coords)
        fixed = {k: np.asarray(v) for k, v in self.model.fixed_learner_params.items()}
        tree["constant_data"] = _group("constant_data", fixed or {"num_actions": np.asarray(self.model.num_actions)}, {}, coords)
        return tree

    def log_prior_draws(self) -> dict[str, np.ndarray]:
        """Log prior density of every draw per sampled site, ``{site: (chain, draw)}``."""
        from .numpyro_model import draws_log_prior, observed_payoffs

        return draws_log_prior(
            self.model, self.posterior, self.data.num_episodes, observed_payoffs(self.data) is not None
        )

    # ------------------------------------------------------- summaries
    def summary_variables(self) -> list[str]:
        """Natural mechanism parameters and unknown learner parameters (small ones first)."""
        names = [n for n in self.model.mechanism.param_shapes() if np.prod(self.model.mechanism.param_shapes()[n]) <= 500]
        names += [n for n in self.model.learner_priors]
        names += [f"{n}_{part}" for n in self.model.per_agent for part in ("mean", "spread")]
        names += [n for n in ("q0_spread", "payoff_sigma") if n in self.posterior]
        return names or list(self.posterior)[:5]

    def summary(self, var_names=None, mark_fixed: bool = False):
        """ArviZ summary of the natural parameters with ``CREDIBLE_LEVEL`` equal-tailed
        intervals (columns ``eti90_lb``, ``eti90_ub``).

        Numbers, not strings; entries that do not vary over the draws (pinned at 0 by
        the gauge) have no ESS, R-hat or MCSE: NaN there, or the word ``FIXED``
        ("fixed") with ``mark_fixed`` (as in a run folder's ``summary.csv``).
        """
        import arviz as az

        with np.errstate(invalid="ignore", divide="ignore"):  # gauge-pinned entries are constant: 0 / 0, marked below
            table = az.summary(
                self.to_arviz(), var_names=var_names or self.summary_variables(), round_to="none",
                ci_prob=CREDIBLE_LEVEL, ci_kind="eti",
            )
        table = pd.DataFrame(table)
        fixed = np.zeros(len(table), bool)
        if {"sd", "mean"} <= set(table.columns) and self.num_total_draws > 1:  # one MAP draw: nothing is "fixed"  # constant over the draws, up to float rounding of the sd
            fixed = table["sd"].to_numpy(float) <= 1e-9 * np.abs(table["mean"].to_numpy(float))
        if fixed.any():
            columns = [c for c in ("ess_bulk", "ess_tail", "r_hat", "mcse_mean", "mcse_sd") if c in table.columns]
            if mark_fixed:
                table[columns] = table[columns].astype(object)
            table.loc[fixed, columns] = FIXED if mark_fixed else np.nan
        return table

    def diagnostics(self) -> dict:
        """R-hat, bulk/tail ESS, divergences and E-BFMI, with plain-words warnings."""
        from .diagnostics import diagnose

        return diagnose(self)

    def sensitivity(self, var_names=None, threshold: float = 0.05):
        """Which quantities the prior dominates: power-scaling sensitivity.

        Power-scales the prior and the likelihood, ``p(theta)^a`` and ``p(y | theta)^a``
        for ``a`` near 1, and measures how far each posterior marginal moves (the
        cumulative Jensen-Shannon distance per unit of ``log a``), by importance
        weighting the draws without refitting (Kallioinen, Paananen, Bürkner &
        Vehtari 2024, Stat Comput 34:57; ArviZ ``psense_summary``).

        Args:
            var_names: posterior variables (default ``summary_variables()``).
            threshold: sensitivity above which a component counts as influential.

        Returns:
            DataFrame indexed by variable with columns ``prior``, ``likelihood``
            (sensitivities), ``diagnosis`` (ArviZ's) and ``meaning`` (plain words):
            a prior sensitivity above ``threshold`` with a weak likelihood sensitivity
            means the prior, not the data, determines that quantity.
        """
        import logging

        import arviz_stats

        tree = self.to_arviz()
        if "log_prior" not in tree.children or "log_likelihood" not in tree.children:
            raise ValueError("sensitivity needs the log_prior and log_likelihood groups (a fit with unknowns)")
        names = var_names or self.summary_variables()
        logger = logging.getLogger("arviz_stats")
        level = logger.level
        logger.setLevel(logging.ERROR)  # the plain-words column below replaces ArviZ's generic warning
        try:
            table = arviz_stats.psense_summary(tree, var_names=names, threshold=threshold, round_to=6)
        finally:
            logger.setLevel(level)

        def meaning(row) -> str:
            if row["prior"] >= threshold and row["likelihood"] >= threshold:
                return "prior and data disagree: the prior pulls against the data"
            if row["prior"] >= threshold:
                return "the prior dominates: the data say little about this quantity"
            if row["likelihood"] >= threshold:
                return "the data dominate"
            return "neither scaling moves it noticeably"

        table["meaning"] = table.apply(meaning, axis=1)
        return table

    # ------------------------------------------------ derived quantities
    def payoff_differences(self, queries, truth: dict | None = None):
        """Posterior of payoff differences (mean, sd, q05, q95, in_support); with the
        true mechanism parameters also ``truth`` and ``covered``. See
        ``bayes_diml.inference.queries.payoff_differences``."""
        from .queries import payoff_differences

        return payoff_differences(self, queries, truth=truth)

    def identifiability(self, queries=None):
        """Identifiability report; see ``bayes_diml.inference.identifiability``."""
        from .identifiability import identifiability_report

        return identifiability_report(self, queries)

    def counterfactual(self, *, mechanism=None, learner=None, num_episodes, num_rounds, seed, max_draws=200):
        """Credible counterfactual play; see ``bayes_diml.inference.counterfactual``."""
        from .counterfactual import counterfactual

        return counterfactual(
            self, mechanism=mechanism, learner=learner, num_episodes=num_episodes, num_rounds=num_rounds,
            seed=seed, max_draws=max_draws,
        )

    # --------------------------------------------------------- storage
    def save(self, directory, overwrite: bool = False) -> Path:
        """Write the fit to a run folder of plain files (netCDF, CSV, JSON, TOML).

        Written to a temporary folder and renamed into place, so an interrupted
        save leaves no half-written folder.
        """
        from .storage import save_fit

        return save_fit(self, directory, overwrite=overwrite)


def load_fit(directory) -> Fit:
    """Read a run folder written by ``Fit.save`` (no pickle anywhere)."""
    from .storage import load_fit as _load

    return _load(directory)


def _group(name: str, variables: dict, dims: dict, coords: dict):
    """One DataTree group built by ``arviz.from_dict`` (dims given per group)."""
    import arviz as az

    used = {d for v in dims.values() for d in v} | {"draw"}
    with warnings.catch_warnings():  # the dims are named, so ArviZ's guess "chain longer than draw" is noise
        warnings.filterwarnings("ignore", message="Found chain dimension to be longer than draw dimension")
        tree = az.from_dict(
            {name: {k: np.asarray(v) for k, v in variables.items()}},
            coords={k: v for k, v in coords.items() if k in used},
            dims=dims,
        )
    return tree[name]


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    return value
