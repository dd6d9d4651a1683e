"""``Fit``: the posterior draws and everything computed from them.

Layering (arviz-stats style): plain arrays in ``Fit`` -> an ArviZ 1.x
``xarray.DataTree`` (``to_arviz``) -> user API (summary, diagnostics, queries,
identifiability, counterfactuals).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._json import dumps
from ..model import Model
from ..priors import Prior

__all__ = [
    "Fit", "load_fit", "draws_params", "thinned_index", "predictive_frequencies", "RHAT_MAX", "ESS_MIN", "CREDIBLE_LEVEL",
    "interval_columns", "FIXED",
]

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


@dataclasses.dataclass(frozen=True, eq=False)
class Fit:
    """Posterior draws of a model fitted to data: a record, built once (by ``fit`` or
    ``load_fit``) and never changed after. The analyses are functions of it
    (``diagnostics.diagnose``, ``queries.payoff_differences``,
    ``identifiability.identifiability_report``, ``counterfactual.counterfactual``,
    ``storage.save_fit``); the methods of the same names are thin aliases.

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
        """Natural parameters of every draw (``draws_params``); ``index`` selects draws."""
        return draws_params(self.model, self.data, self.posterior, index)

    def thinned_index(self, max_draws: int) -> np.ndarray:
        """Flat indices of at most ``max_draws`` draws spread evenly over every chain."""
        return thinned_index(self.posterior, max_draws)

    # ------------------------------------------------------ predictive
    def simulate_frequencies(self, key, max_draws: int = 200, batch_size: int = 16) -> dict:
        """Posterior predictive action frequencies per round (``predictive_frequencies``)."""
        return predictive_frequencies(self.model, self.data, self.posterior, key, max_draws, batch_size)

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
        coords.update(self.model.mechanism.param_coords(d.action_labels))
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
            {"method": self.method, "spec": model_to_toml(self.model), "info": dumps(self.info, indent=None)}
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
        names += [n for n in (self.model.outcomes.parameters if self.model.outcomes else ()) if n in self.posterior]
        return names or list(self.posterior)[:5]

    def summary(self, var_names=None, mark_fixed: bool = False):
        """ArviZ summary of the natural parameters; see ``diagnostics.summary``."""
        from .diagnostics import summary

        return summary(self, var_names=var_names, mark_fixed=mark_fixed)

    def diagnostics(self) -> dict:
        """R-hat, bulk/tail ESS, divergences and E-BFMI, with plain-words warnings."""
        from .diagnostics import diagnose

        return diagnose(self)

    def ppc(self, **options) -> dict:
        """Conditional posterior predictive checks (stay / switch, opponent, outcome); see
        ``bayes_diml.inference.ppc.ppc``."""
        from .ppc import ppc

        return ppc(self, **options)

    def sensitivity(self, var_names=None, threshold: float = 0.05):
        """Power-scaling prior/likelihood sensitivity; see ``diagnostics.sensitivity``."""
        from .diagnostics import sensitivity

        return sensitivity(self, var_names=var_names, threshold=threshold)

    # ------------------------------------------------ derived quantities
    def payoff_differences(self, queries, truth: dict | None = None):
        """Posterior of payoff differences (mean, sd, q05, q95, in_support); with the
        true mechanism parameters also ``truth`` and ``covered``. See
        ``bayes_diml.inference.queries.payoff_differences``."""
        from .queries import payoff_differences

        return payoff_differences(self, queries, truth=truth)

    def identifiability(self, queries=None, *, seed):
        """Identifiability report; see ``bayes_diml.inference.identifiability``."""
        from .identifiability import identifiability_report

        return identifiability_report(self, queries, seed=seed)

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


def _draw_counts(posterior: dict) -> tuple[int, int]:
    """(chains, draws per chain) of a posterior ``{site: (chain, draw, ...)}``."""
    if not posterior:
        return 1, 1
    shape = np.shape(next(iter(posterior.values())))
    return int(shape[0]), int(shape[1])


def draws_params(model: Model, data, posterior: dict, index=None) -> dict:
    """Natural parameters of every draw: ``{"mechanism": {...}, "learner": {...}}``
    (plus ``"initial"``, the learned ``Q_0``, and ``"payoff_sigma"`` where the model
    has them) with a leading flat draw axis (chains concatenated); ``index`` selects draws."""
    chains, draws = _draw_counts(posterior)
    S = chains * draws
    mechanism = {}
    for name, shape in model.mechanism.param_shapes().items():
        mechanism[name] = jnp.asarray(np.reshape(posterior[name], (S, *shape)))
    learner = {}
    if "q0" in model.fixed_learner_params:
        q0 = jnp.asarray(model.fixed_learner_params["q0"])
        learner["q0"] = jnp.broadcast_to(q0, (S, *q0.shape))
    for name in model.learner.param_names:
        if name in posterior:
            learner[name] = jnp.asarray(np.reshape(posterior[name], (S, *np.shape(posterior[name])[2:])))
        else:
            learner[name] = jnp.full((S,), float(model.fixed_learner_params[name]))
    params = {"mechanism": mechanism, "learner": learner}
    if model.learned_initial:
        q0 = np.asarray(posterior["q0"])
        params["initial"] = jnp.asarray(np.reshape(q0, (S, *q0.shape[2:])))
    if "payoff_sigma" in posterior:
        params["payoff_sigma"] = jnp.asarray(np.reshape(posterior["payoff_sigma"], (S,)))
    elif not isinstance(model.payoff_sigma, Prior) and (
        getattr(data, "payoff", None) is not None or getattr(data, "outcome", None) is not None
    ):
        params["payoff_sigma"] = jnp.full((S,), float(model.payoff_sigma))
    if model.outcomes is not None:  # [payoff] outcomes parameters (bayes_diml/outcomes.py)
        params["outcome"] = {n: jnp.asarray(np.reshape(posterior[n], (S,))) for n in model.outcomes.parameters}
    if index is not None:
        params = jax.tree.map(lambda v: v[np.asarray(index)], params)
    return params


def thinned_index(posterior: dict, max_draws: int) -> np.ndarray:
    """Flat indices of at most ``max_draws`` draws of ``posterior`` spread evenly over every chain."""
    chains, draws = _draw_counts(posterior)
    per_chain = max(1, min(draws, math.ceil(max_draws / chains)))
    within = np.unique(np.linspace(0, draws - 1, per_chain).round().astype(int))
    return (np.arange(chains)[:, None] * draws + within[None, :]).reshape(-1)


def predictive_frequencies(model: Model, data, posterior: dict, key, max_draws: int = 200, batch_size: int = 16) -> dict:
    """Posterior predictive action frequencies per round (over episodes and agents).

    For a thinned subset of draws, simulates as many episodes and rounds as the
    data have (everyone present) and returns ``{"action_frequency": (chain,
    draw', round, action), "draw": draw indices}``.
    """
    chains, draws = _draw_counts(posterior)
    index = thinned_index(posterior, max_draws)
    params = draws_params(model, data, posterior, index)
    keys = jax.random.split(key, index.size)
    T, A = data.num_rounds, model.num_actions
    freq = np.asarray(_frequencies(model, params, keys, data.num_episodes, T, batch_size))
    per_chain = index.size // chains
    return {
        "action_frequency": freq.reshape(chains, per_chain, T, A),
        "draw": (index[:per_chain] % draws),
    }


@functools.partial(jax.jit, static_argnames=("model", "num_episodes", "num_rounds", "batch_size"))
def _frequencies(model: Model, params, keys, num_episodes: int, num_rounds: int, batch_size: int):
    """Action frequencies per round of play simulated once per draw (compiled once per
    model and shape: models compare by value)."""
    from ..simulate import simulate_arrays

    def one(args):
        p, k = args
        actions = simulate_arrays(model, p, k, num_episodes, num_rounds)
        return jax.nn.one_hot(actions, model.num_actions).mean(axis=(0, 2))

    return jax.lax.map(one, (params, keys), batch_size=batch_size)


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
