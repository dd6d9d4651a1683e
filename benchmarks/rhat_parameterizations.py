"""R-hat of the neural function-space posterior under three ways of writing its
hierarchical payoff scale (issue 17; docs/results.md, "R-hat of the differences").

The shipped prior (``NeuralFunction``) is non-centred: ``z ~ N(0, I_r)``, ``d = s L z``,
``log s ~ N(log output_scale, 1)``. This script runs ``coverage_neural.py`` with
``NeuralFunction.sample_prior`` replaced by one of (``--form``):

* ``centered``: ``u | s ~ N(0, s^2 I_r)``, ``d = L u`` (sites ``payoff_scale``, ``function_coords``);
* ``marginal``: the same ``u`` with ``s`` integrated out (``LogNormalScaleMixture``
  below: adaptive Gauss-Hermite over ``t = log s``; only ``function_coords`` is
  sampled, ``payoff_scale`` is the deterministic ``E[s | u]``);
* ``shipped``: no change (the same command as ``coverage_neural.py``).

The three have the same posterior over the payoff table; only NUTS's geometry differs.
Usage (the rest of the arguments go to ``coverage_neural.py``)::

    python benchmarks/rhat_parameterizations.py --form centered --experiment E1 --variant scaled \
        --seeds 0 --no-ml --chains 4 --warmup 300 --samples 700 --out-dir /tmp/centered

``LogNormalScaleMixture``: ``p(u) = ∫ N(u; 0, e^{2t} I_r) N(t; mu, sigma) dt = ∫ e^{g(t)} dt``,
``g(t) = -r t - q e^{-2t}/2 - (t - mu)^2/(2 sigma^2) + const``, ``q = |u|^2``; ``g`` is strictly
concave, its mode is found by Newton's method from ``log(q/r)/2`` and the integral is
adaptive Gauss-Hermite quadrature there (Liu & Pierce 1994, Biometrika 81(3), 624-629).
Checked against SciPy's ``quad`` for r = 1 ... 2,000: equal to float32 precision.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.distributions import Distribution, constraints
from numpyro.distributions.util import promote_shapes

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

QUADRATURE_NODES = 24
"""Gauss–Hermite nodes of the integral over the log scale."""

NEWTON_STEPS = 8
"""Newton steps to the mode of ``g`` from ``log(q / r) / 2``. The start is off by about
``sigma**2 (t - mu) / (2 r sigma**2 + 1)`` and the steps converge quadratically; 8 reach
float precision for ``r >= 1`` (the quadrature does not need the exact mode)."""

_TINY = 1e-30


def _g_terms(t, q, r, mu, sigma):
    """``g(t)`` without its constant, ``g'(t)`` and ``g''(t)``."""
    e = q * jnp.exp(-2.0 * t)
    z = (t - mu) / sigma
    return -r * t - 0.5 * e - 0.5 * z**2, -r + e - z / sigma, -2.0 * e - 1.0 / sigma**2


class LogNormalScaleMixture(Distribution):
    """``u in R^r`` with ``u | s ~ N(0, s² I_r)``, ``log s ~ N(loc, scale)``; ``s`` integrated out.

    ``sample`` draws ``s`` then ``u``; ``log_prob`` is the adaptive Gauss–Hermite integral
    of the module docstring; ``conditional_scale_mean(u)`` is ``E[s | u]`` by the same
    rule (the posterior mean of ``s`` is the posterior mean of this)."""

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.real_vector
    reparametrized_params = ["loc", "scale"]

    def __init__(self, loc, scale, dim: int, *, validate_args=None):
        self.loc, self.scale = promote_shapes(loc, scale)
        self.dim = int(dim)
        batch_shape = jax.lax.broadcast_shapes(jnp.shape(loc), jnp.shape(scale))
        super().__init__(batch_shape=batch_shape, event_shape=(self.dim,), validate_args=validate_args)

    def sample(self, key, sample_shape=()):
        k_scale, k_coords = jax.random.split(key)
        shape = sample_shape + self.batch_shape
        log_s = self.loc + self.scale * jax.random.normal(k_scale, shape)
        return jnp.exp(log_s)[..., None] * jax.random.normal(k_coords, shape + self.event_shape)

    def _nodes(self, value):
        """``(t_k, log weight_k + g(t_k))`` of the quadrature, ``g`` without its constant."""
        r, mu, sigma = float(self.dim), jnp.asarray(self.loc), jnp.asarray(self.scale)
        q = jnp.maximum(jnp.sum(value**2, axis=-1), _TINY)
        t = 0.5 * jnp.log(q / r)
        for _ in range(NEWTON_STEPS):
            _, d1, d2 = _g_terms(t, q, r, mu, sigma)
            t = t - d1 / d2
        tau = jnp.sqrt(-1.0 / _g_terms(t, q, r, mu, sigma)[2])
        x, w = np.polynomial.hermite.hermgauss(QUADRATURE_NODES)
        nodes = t[..., None] + np.sqrt(2.0) * tau[..., None] * x
        g = _g_terms(nodes, q[..., None], r, jnp.expand_dims(mu, -1), jnp.expand_dims(sigma, -1))[0]
        return nodes, np.log(w) + x**2 + g + jnp.log(np.sqrt(2.0) * tau)[..., None]

    def log_prob(self, value):
        _, terms = self._nodes(value)
        constant = -0.5 * self.dim * np.log(2 * np.pi) - jnp.log(self.scale * np.sqrt(2 * np.pi))
        return jax.nn.logsumexp(terms, axis=-1) + constant

    def conditional_scale_mean(self, value):
        """``E[s | u]``: the same quadrature with ``e^t`` as the integrand's extra factor."""
        nodes, terms = self._nodes(value)
        return jnp.exp(jax.nn.logsumexp(terms + nodes, axis=-1) - jax.nn.logsumexp(terms, axis=-1))


def _sample_prior(form: str):
    """``NeuralFunction.sample_prior`` written in ``form`` (``centered`` or ``marginal``)."""
    from bayes_diml.mechanisms.options import positive_number

    def sample_prior(self, options, fix_gauge):
        import numpyro
        import numpyro.distributions as dist

        factor = jnp.asarray(self.prior_factor(options, fix_gauge))
        loc = float(np.log(positive_number(options, "output_scale", 1.0)))
        if form == "centered":
            scale = numpyro.sample("payoff_scale", dist.LogNormal(loc, 1.0))
            coords = numpyro.sample("function_coords", dist.Normal(0.0, scale).expand((factor.shape[1],)).to_event(1))
        else:
            prior = LogNormalScaleMixture(loc, 1.0, factor.shape[1])
            coords = numpyro.sample("function_coords", prior)
            numpyro.deterministic("payoff_scale", prior.conditional_scale_mean(coords))
        rows, agents = self.free_entries(fix_gauge)
        table = jnp.zeros(self.param_shapes()["payoffs"]).at[rows, agents].set(factor @ coords)
        return {"payoffs": numpyro.deterministic("payoffs", table)}

    return sample_prior


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--form", choices=["centered", "marginal", "shipped"], required=True)
    args, rest = parser.parse_known_args(argv)
    import coverage_neural

    from bayes_diml.mechanisms.neural_function import NeuralFunction

    if args.form != "shipped":
        NeuralFunction.sample_prior = _sample_prior(args.form)
    return coverage_neural.main(rest)


if __name__ == "__main__":
    sys.exit(main())
