"""The non-finite watch of the optimisers and the draw checks.

None of the runners returns a silently non-finite posterior: the optimisers (MAP, the
SVI ELBO, NUTS's Adam warm start) track, inside their jitted loops, the first step whose
loss or gradient is not finite (``_Watch``) and stop there with a ``FitError`` naming the
step and the parameters; NUTS checks its initial point and its draws (``_check_draws``;
``potential._check_start``).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.infer.util import log_density

from ..errors import FitError


class _Watch(NamedTuple):
    """The first non-finite step of an optimiser, tracked inside its jitted loop.

    ``step`` is -1 while every loss and gradient so far was finite; after that it
    holds the first bad step (1-based), ``loss`` the loss there, and ``nan`` /
    ``inf`` the gradient's NaN / infinite entries there (PyTrees of bools).
    """

    step: Any
    loss: Any
    nan: Any
    inf: Any


def _watch_start(params, loss_dtype) -> _Watch:
    false = jax.tree.map(lambda p: jnp.zeros(jnp.shape(p), bool), params)
    return _Watch(jnp.int32(-1), jnp.zeros((), loss_dtype), false, false)


def _watch(watch: _Watch, step, loss, grads, active=True) -> _Watch:
    """Record ``step`` if it is the first whose loss or gradient is not finite."""
    nan = jax.tree.map(jnp.isnan, grads)
    inf = jax.tree.map(jnp.isinf, grads)
    bad = [jnp.any(n | i) for n, i in zip(jax.tree.leaves(nan), jax.tree.leaves(inf))]
    fine = jnp.isfinite(loss) & ~jnp.any(jnp.stack(bad)) if bad else jnp.isfinite(loss)
    first = (watch.step < 0) & ~fine & active
    pick = lambda new, old: jnp.where(first, new, old)  # noqa: E731
    return _Watch(
        pick(jnp.asarray(step, jnp.int32), watch.step),
        pick(loss, watch.loss),
        jax.tree.map(pick, nan, watch.nan),
        jax.tree.map(pick, inf, watch.inf),
    )


def _site_labeller(fn):
    """``site name -> 'mechanism.NAME'`` or ``'learner.NAME'`` for ``partial(numpyro_model, model)``."""
    model = fn.args[0] if isinstance(fn, functools.partial) and fn.args else None
    if not hasattr(model, "learner_priors"):
        return lambda name: name
    learner = set(model.learner_priors)
    return lambda name: f"learner.{name}" if name in learner else f"mechanism.{name}"


def _describe(value) -> str:
    value = float(value)
    return "NaN" if np.isnan(value) else ("infinite" if np.isinf(value) else f"finite: {value:.6g}")


def _failure(where: str, loss, bad: dict[str, str], hint: str = "") -> FitError:
    """``FitError`` for a step whose loss or gradient was not finite.

    ``bad``: parameter label -> ``"NaN"`` or ``"infinite"`` (its gradient).
    """
    if bad:
        names = ", ".join(f"'{name}'" for name in bad)
        kind = "NaN" if "NaN" in bad.values() else "infinite"
        what = f"the gradient of {names} is {kind}" if len(bad) == 1 else f"the gradients of {names} are {kind}"
        message = f"{where}: {what} (loss was {_describe(loss)})"
    else:
        message = f"{where}: the loss is {_describe(loss).split(':')[0]} (its gradient is finite)"
    hint = hint or "try tighter priors, float64 (--x64), or a smaller learning_rate (an option of fit() in Python)"
    return FitError(f"{message}; the fit stopped ({hint})")


def _bad_gradients(nan: dict, inf: dict, sites) -> dict[str, str]:
    """Label -> kind for every parameter with a non-finite gradient entry.

    ``sites(name, mask)`` maps a gradient leaf to the model sites it belongs to.
    """
    bad: dict[str, str] = {}
    for name in nan:
        is_nan, is_inf = np.asarray(nan[name]), np.asarray(inf[name])
        for label in sites(name, is_nan | is_inf) if (is_nan.any() or is_inf.any()) else ():
            if bad.get(label) != "NaN":
                bad[label] = "NaN" if is_nan.any() else "infinite"
    return bad


def _raise_if_bad(watch: _Watch, stage: str, total: int, sites, restarts: bool = False) -> None:
    """Raise ``FitError`` if the watch (leading restart axis if ``restarts``) saw a bad step."""
    step = np.atleast_1d(np.asarray(watch.step))
    if not np.any(step >= 0):
        return
    which = int(np.argmin(np.where(step >= 0, step, np.iinfo(np.int32).max)))
    pick = (lambda tree: jax.tree.map(lambda v: np.asarray(v)[which], tree)) if restarts else (lambda tree: tree)
    where = f"{stage} step {int(step[which])} of {total}" + (f" (restart {which})" if restarts and step.size > 1 else "")
    loss = np.asarray(watch.loss).reshape(-1)[which]
    raise _failure(where, loss, _bad_gradients(pick(watch.nan), pick(watch.inf), sites))


def _check_draws(stage: str, posterior: dict, potential_energy, fn, args, latents) -> None:
    """``FitError`` naming the parameter and the (chain, draw) of the first non-finite draw,
    or the parameters whose gradient is not finite where the potential energy is not."""
    label = _site_labeller(fn)
    for name, values in posterior.items():
        values = np.asarray(values)
        if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
            chain, draw = (int(i) for i in np.argwhere(~np.isfinite(values.reshape(*values.shape[:2], -1)).any(-1))[0])
            kind = "NaN" if np.isnan(values[chain, draw]).any() else "infinite"
            raise FitError(
                f"{stage}: parameter '{label(name)}' is {kind} at draw {draw} of chain {chain}; the fit stopped "
                "(try tighter priors, a higher target_accept, or float64 (--x64))"
            )
    if potential_energy is None:
        return
    potential_energy = np.asarray(potential_energy)
    if np.all(np.isfinite(potential_energy)):
        return
    chain, draw = (int(i) for i in np.argwhere(~np.isfinite(potential_energy))[0])
    values = {k: jnp.asarray(posterior[k][chain, draw]) for k in latents}
    grads = jax.grad(lambda v: log_density(fn, args, {}, v)[0])(values)
    bad = _bad_gradients(jax.tree.map(jnp.isnan, grads), jax.tree.map(jnp.isinf, grads), lambda n, m: [label(n)])
    raise _failure(f"{stage} draw {draw} of chain {chain}", potential_energy[chain, draw], bad, "the log density is not finite at an accepted draw")


def _guide_sites(auto, label):
    """Guide parameter name (and its non-finite mask) -> the model sites it belongs to."""

    def sites(name, mask):
        for suffix in ("_auto_loc", "_auto_scale"):
            if name.endswith(suffix):
                return [label(name[: -len(suffix)])]
        unpack = getattr(auto, "_unpack_latent", None)
        mask = np.asarray(mask)
        if unpack is not None and mask.ndim >= 1:  # a flat latent vector (lowrank): split it by site
            try:
                parts = unpack(jnp.asarray(mask.reshape(mask.shape[0], -1).any(axis=1), jnp.float32))
                return [label(site) for site, flags in parts.items() if np.any(np.asarray(flags))]
            except (ValueError, TypeError):
                pass
        return [f"{name} (guide)"]

    return sites
