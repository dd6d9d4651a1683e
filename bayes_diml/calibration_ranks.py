"""The statistics of simulation-based calibration (``calibration.sbc``): ranks of the
true values among posterior draws, tests of their uniformity, and the study's result
record (``SBCResult``, with its rank histograms). Plain NumPy and SciPy: nothing here
fits or simulates.

If the posterior draws are exact, each rank ``r = #{l : f(theta_l) < f(theta~)}`` is
uniform on ``{0, ..., L}`` (Talts, Betancourt, Simpson, Vehtari & Gelman 2018,
"Validating Bayesian inference algorithms with simulation-based calibration",
arXiv:1804.06788, Theorem 1).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd

from .errors import DataError

__all__ = [
    "SBCResult",
    "normalised_ranks",
    "rank_statistics",
    "uniformity_test",
    "default_num_bins",
    "distinct_quantities",
    "break_ties",
    "bonferroni",
]


# ------------------------------------------------------------------ ranks and tests (plain NumPy)
def rank_statistics(draws: np.ndarray, truth: np.ndarray, *, seed) -> np.ndarray:
    """SBC ranks of the truths among posterior draws, ties broken at random.

    ``r = #{l : x_l < x~} + U``, ``U`` uniform on ``{0, ..., #{l : x_l = x~}}``
    (Talts et al. 2018, §4.1: randomised ranks keep exact uniformity when draws
    can equal the truth).

    Args:
        draws: ``(..., num_draws, num_quantities)``.
        truth: ``(..., num_quantities)``.
        seed: seeds the NumPy generator that breaks ties (an int or a sequence of ints; required).

    Returns:
        int ranks ``(..., num_quantities)`` in ``{0, ..., num_draws}``.
    """
    draws, truth = np.asarray(draws), np.asarray(truth)
    if draws.shape[:-2] + draws.shape[-1:] != truth.shape:
        raise DataError(f"draws {draws.shape} and truth {truth.shape}: expected (..., L, Q) and (..., Q)")
    less = np.sum(draws < truth[..., None, :], axis=-2)
    equal = np.sum(draws == truth[..., None, :], axis=-2)
    return break_ties(less, equal, seed)


def break_ties(less: np.ndarray, equal: np.ndarray, seed) -> np.ndarray:
    """Randomised ranks ``less + U``, ``U`` uniform on ``{0, ..., equal}`` (``rank_statistics``)."""
    rng = np.random.default_rng(seed)
    return (less + np.floor(rng.random(less.shape) * (equal + 1))).astype(np.int64)


def default_num_bins(num_datasets: int, num_draws: int) -> int:
    """Bins of the rank histogram: the largest divisor ``B`` of ``L + 1`` with
    ``2 <= B <= max(2, N // 10)`` (equal bins, >= 10 expected counts per bin, the
    chi-square approximation's comfort zone); ``max(2, N // 10)`` unequal bins when
    ``L + 1`` has no such divisor."""
    cap = max(2, min(num_datasets // 10, num_draws + 1))
    divisors = [b for b in range(2, cap + 1) if (num_draws + 1) % b == 0]
    return divisors[-1] if divisors else cap


def _bin_edges(num_draws: int, num_bins: int) -> np.ndarray:
    """Integer bin edges over the rank values ``0..L``: bin ``b`` holds ``edges[b] <= r < edges[b+1]``."""
    return np.round(np.linspace(0, num_draws + 1, num_bins + 1)).astype(int)


def uniformity_test(ranks: np.ndarray, num_draws: int, num_bins: int | None = None, *, seed) -> dict[str, np.ndarray]:
    """Tests of discrete uniformity of SBC ranks, one per quantity (column).

    * Chi-square on ``B`` binned ranks: ``X2 = sum_b (O_b - E_b)^2 / E_b``,
      ``E_b = N * (#rank values in bin b) / (L + 1)``, against chi-square(``B - 1``)
      (Pearson; Talts et al. 2018 §4.2 use the binned histogram).
    * Kolmogorov-Smirnov on randomised normalised ranks ``u = (r + V) / (L + 1)``,
      ``V ~ U(0, 1)``: exactly ``U(0, 1)`` under the null when ``r`` is uniform on
      ``{0..L}``, so the continuous KS distribution applies (``scipy.stats.kstest``).

    Args:
        ranks: ``(num_datasets, num_quantities)`` ints in ``{0..L}``.
        num_draws: ``L``.
        num_bins: ``B`` (default ``default_num_bins``).
        seed: seeds the jitter of the KS test (an int or a sequence of ints; required).

    Returns:
        dict of ``(num_quantities,)`` arrays: ``chi2``, ``p_chi2``, ``ks``, ``p_ks``,
        and the scalar ``num_bins``.
    """
    from scipy import stats

    ranks = np.asarray(ranks)
    if ranks.ndim != 2:
        raise DataError(f"ranks must be (num_datasets, num_quantities), got shape {ranks.shape}")
    if ranks.size and (ranks.min() < 0 or ranks.max() > num_draws):
        raise DataError(f"ranks must lie in 0..{num_draws}")
    N = ranks.shape[0]
    B = default_num_bins(N, num_draws) if num_bins is None else int(num_bins)
    if not 2 <= B <= num_draws + 1:
        raise DataError(f"num_bins must be in 2..{num_draws + 1}, got {B}")
    edges = _bin_edges(num_draws, B)
    expected = N * np.diff(edges) / (num_draws + 1)
    observed = np.stack([np.histogram(ranks[:, q], bins=edges)[0] for q in range(ranks.shape[1])], axis=0)
    chi2 = np.sum((observed - expected) ** 2 / expected, axis=1)
    p_chi2 = stats.chi2.sf(chi2, B - 1)
    u = (ranks + np.random.default_rng(seed).random(ranks.shape)) / (num_draws + 1)
    ks = np.array([stats.kstest(u[:, q], "uniform") for q in range(ranks.shape[1])]).reshape(-1, 2)
    return {"chi2": chi2, "p_chi2": p_chi2, "ks": ks[:, 0], "p_ks": ks[:, 1], "num_bins": B, "counts": observed, "edges": edges}


def distinct_quantities(true_values: np.ndarray, rtol: float = 1e-5) -> np.ndarray:
    """Indices of the first of each group of equal quantities, ``(Q',)``.

    Two quantities are equal when their true values agree in every dataset up to
    ``rtol`` (a tabular payoff difference against the pinned baseline is a sampled
    entry itself; symmetric agents share differences). The tolerance absorbs the
    last-bit differences that compiled arithmetic leaves between the two routes.
    """
    values = np.asarray(true_values, float)
    keep: list[int] = []
    for q in range(values.shape[1]):
        if not any(np.allclose(values[:, q], values[:, k], rtol=rtol, atol=rtol) for k in keep):
            keep.append(q)
    return np.asarray(keep, int)


def bonferroni(p_values: np.ndarray, true_values: np.ndarray) -> float:
    """``min(1, Q' min_q p_q)`` over the ``Q'`` distinct quantities (``distinct_quantities``):
    equal quantities are the same test and count once."""
    if not len(p_values):
        return 1.0
    first = distinct_quantities(true_values)
    return float(min(1.0, len(first) * float(np.min(p_values[first]))))


def normalised_ranks(ranks: np.ndarray, num_draws: int) -> np.ndarray:
    """``r / L`` in ``[0, 1]``; mean 0.5 and sd ``sqrt((L + 2) / (12 L))`` under uniformity."""
    return np.asarray(ranks) / num_draws


# ------------------------------------------------------------------ the result
@dataclasses.dataclass(frozen=True, eq=False)
class SBCResult:
    """Ranks and uniformity tests of a simulation-based calibration study.

    Attributes:
        ranks: int ``(num_datasets, num_quantities)``, values in ``{0..num_draws}``.
        quantities: names of the scalar quantities (columns of ``ranks``).
        kinds: ``"parameter"`` (an entry of a sampled latent site) or
            ``"difference"`` (an identified payoff difference), per quantity.
        num_draws: ``L``, thinned posterior draws per dataset.
        true_values: ``(num_datasets, num_quantities)`` prior draws of the quantities.
        num_bins: bins of the chi-square test and the histograms.
        chi2, p_values: chi-square statistic and p-value per quantity.
        ks, ks_p_values: KS statistic and p-value (randomised normalised ranks).
        combined_p_value: Bonferroni over quantities of the chi-square p-values,
            ``min(1, Q * min_q p_q)``, ``Q`` counting distinct quantities only
            (equal true values in every dataset count once, ``distinct_quantities``): the probability,
            under calibration, that at least one of the ``Q`` tests looks this
            extreme is at most this (valid whatever the dependence between
            quantities, conservative when they are correlated).
        divergences: post-warmup divergent transitions per dataset (NUTS; zeros
            for SVI).
        settings: the study's settings (method, sizes, seed, queries).
        wall_seconds: total wall time (compilation included).
    """

    ranks: np.ndarray
    quantities: tuple[str, ...]
    kinds: tuple[str, ...]
    num_draws: int
    true_values: np.ndarray
    num_bins: int
    chi2: np.ndarray
    p_values: np.ndarray
    ks: np.ndarray
    ks_p_values: np.ndarray
    combined_p_value: float
    divergences: np.ndarray
    settings: dict[str, Any]
    wall_seconds: float

    @property
    def num_datasets(self) -> int:
        return int(self.ranks.shape[0])

    @property
    def normalised_ranks(self) -> np.ndarray:
        """``ranks / L`` (see ``normalised_ranks``)."""
        return normalised_ranks(self.ranks, self.num_draws)

    def to_frame(self) -> pd.DataFrame:
        """One row per quantity: ``quantity, kind, mean_rank`` (normalised, 0.5 under
        calibration), ``chi2, p_chi2, ks, p_ks``."""
        return pd.DataFrame(
            {
                "quantity": list(self.quantities),
                "kind": list(self.kinds),
                "mean_rank": self.normalised_ranks.mean(axis=0),
                "chi2": self.chi2,
                "p_chi2": self.p_values,
                "ks": self.ks,
                "p_ks": self.ks_p_values,
            }
        )

    def verdict(self, level: float = 0.01) -> str:
        """One line: calibrated or not at ``level`` (combined Bonferroni p-value)."""
        ok = self.combined_p_value > level
        return (
            f"SBC over {self.num_datasets} datasets, {len(self.quantities)} quantities, L = {self.num_draws}: "
            f"combined p = {self.combined_p_value:.3g} ({'no evidence of miscalibration' if ok else 'MISCALIBRATED'} "
            f"at {level}); {int(np.sum(self.divergences))} divergences"
        )

    def plot(self, quantities=None, max_panels: int = 24, columns: int = 4, title: str | None = None):
        """Rank histograms with the 99% band of a uniform histogram.

        Each bin count of ``N`` uniform ranks is Binomial(``N``, ``p_b``); the grey
        band spans its 0.5% and 99.5% quantiles (Talts et al. 2018, Fig. 3).

        Args:
            quantities: names to show (default: the first ``max_panels`` distinct
                quantities; a tabular difference against the pinned baseline
                duplicates a sampled entry).
        Returns:
            a matplotlib ``Figure``.
        """
        from matplotlib.figure import Figure
        from scipy import stats

        if quantities is None:  # distinct quantities (a duplicate has the same truths everywhere)
            quantities = [self.quantities[q] for q in distinct_quantities(self.true_values)][:max_panels]
        names = list(quantities)
        unknown = [q for q in names if q not in self.quantities]
        if unknown:
            raise DataError(f"unknown quantities {unknown}; known: {list(self.quantities)}")
        edges = _bin_edges(self.num_draws, self.num_bins)
        prob = np.diff(edges) / (self.num_draws + 1)
        lo = stats.binom.ppf(0.005, self.num_datasets, prob)
        hi = stats.binom.ppf(0.995, self.num_datasets, prob)
        rows = -(-len(names) // columns)
        cols = min(columns, len(names))
        fig = Figure(figsize=(2.6 * cols, 2.0 * rows + 0.6), layout="constrained")
        axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
        for ax, name in zip(axes, names):
            q = self.quantities.index(name)
            counts = np.histogram(self.ranks[:, q], bins=edges)[0]
            ax.stairs(counts, edges, fill=True, color="C0", alpha=0.75, zorder=2)
            ax.fill_between(edges, np.r_[lo, lo[-1]], np.r_[hi, hi[-1]], step="post", color="0.5", alpha=0.3, lw=0, zorder=3)
            ax.axhline(self.num_datasets / self.num_bins, color="k", lw=0.6, ls=":")
            ax.set_title(f"{name}\np = {self.p_values[q]:.2g}", fontsize=7)
            ax.set_xlim(0, self.num_draws + 1)
            ax.tick_params(labelsize=6)
        for ax in axes[len(names):]:
            ax.set_visible(False)
        fig.suptitle(
            title
            or f"SBC rank histograms ({self.num_datasets} datasets, L = {self.num_draws}; grey: 99% band of uniform); "
            f"combined p = {self.combined_p_value:.2g}",
            fontsize=9,
        )
        return fig
