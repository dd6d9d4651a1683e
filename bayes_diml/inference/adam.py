"""The package's one Adam loop (optax; Kingma & Ba 2015).

``adam_scan`` runs ``len(keys)`` optimiser steps in one ``lax.scan``: at each step
``value, grad = value_and_grad(loss)(params, key)``, optionally through the non-finite
watch (``watch._Watch``), then ``params <- params + optimizer.update(grad)``. Steps
at or after ``num_active`` leave the parameters and the optimiser state unchanged (a
shorter last block is masked rather than compiled as a second length). MAP, the SVI
ELBO, NUTS's warm start (``_adam_blocks`` over the model's negative log joint) and the
baselines' maximum likelihood and behaviour cloning all step through it.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .potential import _loss_dtype, _potential
from .watch import _raise_if_bad, _site_labeller, _watch, _watch_start

__all__ = ["adam_scan"]


def adam_scan(loss, optimizer, params, state, keys, *, watch=None, first=0, num_active=None):
    """``keys.shape[0]`` steps of ``optimizer`` (an optax transformation, e.g. ``optax.adam``)
    on ``loss(params, key)``, inside a ``lax.scan`` (call it under ``jax.jit``).

    Step ``i`` (0-based) is reported to the watch as step ``first + i + 1``; steps with
    ``i >= num_active`` (when given) change nothing. ``keys`` may be any array with a
    leading step axis (PRNG keys, or indices the loss ignores).

    Returns ``((params, state, watch), losses)``, ``losses`` of shape ``(steps,)``.
    """

    def step(carry, inputs):
        params, state, watch = carry
        i, key = inputs
        value, grad = jax.value_and_grad(loss)(params, key)
        active = True if num_active is None else i < num_active
        if watch is not None:
            watch = _watch(watch, first + i + 1, value, grad, active)
        updates, new_state = optimizer.update(grad, state, params)
        new_params = optax.apply_updates(params, updates)
        if num_active is not None:
            keep = lambda new, old: jnp.where(active, new, old)  # noqa: E731
            new_params, new_state = jax.tree.map(keep, new_params, params), jax.tree.map(keep, new_state, state)
        return (new_params, new_state, watch), value

    steps = jax.tree.leaves(keys)[0].shape[0]
    return jax.lax.scan(step, (params, state, watch), (jnp.arange(steps), keys))


@functools.lru_cache(maxsize=32)
def _adam(learning_rate: float):
    return optax.adam(learning_rate)


@functools.partial(jax.jit, static_argnames=("fn", "optimizer", "block"))
def _map_block(fn, optimizer, block, z, state, watch, first, num_active, keys, actions, mask, payoff=None):
    """``block`` Adam steps on the negative log joint for every restart (leading axis),
    steps ``first + 1 .. first + block``; steps after ``first + num_active`` leave ``z``
    unchanged. Every step's loss and gradient go through the non-finite watch."""

    def run(z, state, watch, key):
        loss = lambda v, k: _potential(fn, v, k, actions, mask, payoff)  # noqa: E731
        return adam_scan(loss, optimizer, z, state, jax.random.split(key, block), watch=watch, first=first, num_active=num_active)

    (z, state, watch), losses = jax.vmap(run)(z, state, watch, keys)
    return z, state, watch, losses


def _adam_blocks(fn, z, key, args, learning_rate: float, steps: int, block: int, stage: str, progress=False, desc="",
                 shrink: bool = True):
    """Adam on the negative log joint from ``z`` (leading restart axis, vmapped), ``steps``
    steps in jitted blocks of ``block`` (``_map_block``; the one optimiser loop of MAP, the
    SVI warm start and the NUTS warm start).

    Every step's loss and gradient are checked inside the loop (``_Watch``); the host
    looks once per block and raises ``FitError`` at the first bad step. ``shrink``: a
    block longer than ``steps`` is cut to ``steps`` (else it keeps its length, the steps
    after ``steps`` masked, and shares its compiled program with longer runs).
    Returns ``(z, losses (restarts, steps))``.
    """
    from tqdm.auto import tqdm

    optimizer = _adam(learning_rate)
    block = max(1, min(block, steps)) if shrink else block
    state = jax.vmap(optimizer.init)(z)
    watch = jax.vmap(lambda v: _watch_start(v, _loss_dtype()))(z)
    label = _site_labeller(fn)
    sites = lambda name, mask: [label(name)]  # noqa: E731
    restarts = jax.tree.leaves(z)[0].shape[0]
    trace = []
    num_blocks = -(-steps // block)
    for b in tqdm(range(num_blocks), desc=desc or stage, disable=not progress, unit=f"x{block} steps"):
        keys = jax.random.split(jax.random.fold_in(key, b), restarts)
        z, state, watch, losses = _map_block(fn, optimizer, block, z, state, watch, b * block, min(block, steps - b * block), keys, *args)
        trace.append(np.asarray(losses))
        _raise_if_bad(watch, stage, steps, sites, restarts=True)
    return z, np.concatenate(trace, axis=1)[:, :steps]
