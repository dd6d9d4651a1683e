"""Sharding the episode axis over devices (data parallelism; ``docs/scaling.md``).

Episodes are independent given the parameters, so the log-likelihood is a sum
of per-episode terms computed by ``vmap`` over episodes:

    log p(data | theta) = sum_e loglik_e(theta)

Placing the episode axis of ``(actions, mask)`` on a 1-D device mesh
(``jax.sharding.NamedSharding`` with ``PartitionSpec("episode")``) lets XLA run
each device's episodes locally and add the partial sums with one all-reduce;
gradients follow the same pattern. The episode count is padded to a multiple of
the device count with dummy episodes whose every entry is masked
(``mask`` True = did not play): they contribute exactly 0 to the likelihood and
to its gradient (``episode_log_likelihood`` sums over unmasked entries only).

With several hosts, call ``jax.distributed.initialize()`` in every process
before anything else; ``jax.devices()`` then lists every host's devices and the
mesh spans them all (each process holds the whole data set and supplies its own
devices' episodes). ``tests/test_distributed.py`` runs two such processes on one
machine (gloo CPU collectives) against one process; ``docs/scaling.md`` gives the
commands, there and on a cluster.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ._types import Array

__all__ = ["EPISODE_AXIS", "use_sharding", "episode_mesh", "episode_sharding", "pad_episodes", "shard_episodes", "shard_padded", "to_host"]

EPISODE_AXIS = "episode"
"""Name of the mesh axis that carries episodes."""


def use_sharding(shard: bool | None) -> bool:
    """Whether to shard: ``None`` = automatically, when more than one device exists."""
    if shard is None:
        return jax.device_count() > 1
    return bool(shard)


@functools.cache
def episode_mesh() -> Mesh:
    """A 1-D mesh over all devices (every host's, after ``jax.distributed.initialize()``)."""
    return Mesh(np.asarray(jax.devices()), (EPISODE_AXIS,))


def episode_sharding(ndim: int = 3) -> NamedSharding:
    """Sharding of an ``(num_episodes, ...)`` array of ``ndim`` axes: episodes split, the rest replicated."""
    return NamedSharding(episode_mesh(), PartitionSpec(EPISODE_AXIS, *([None] * (ndim - 1))))


def pad_episodes(actions, mask, multiple: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad ``(E, T, n)`` actions and mask with fully masked episodes to a multiple of ``multiple``.

    Dummy episodes play action 0 and are masked everywhere, so they add 0 to the
    log-likelihood and its gradient.
    """
    actions = np.asarray(actions, np.int32)
    mask = np.asarray(mask, bool)
    extra = -actions.shape[0] % multiple
    if extra:
        pad = ((0, extra),) + ((0, 0),) * (actions.ndim - 1)
        actions = np.pad(actions, pad)
        mask = np.pad(mask, pad, constant_values=True)
    return actions, mask


def _put(values: np.ndarray) -> Array:
    sharding = episode_sharding(values.ndim)
    # each process supplies the shards of its own devices (works on one host and on several)
    return jax.make_array_from_callback(values.shape, sharding, lambda index: values[index])


def shard_episodes(actions, mask) -> tuple[Array, Array]:
    """``(actions, mask)`` padded to a multiple of the device count and split over the episode mesh.

    Returns:
        ``(actions, mask)`` of shape ``(E', T, n)``, ``E' >= E`` the next multiple of
        ``jax.device_count()``; entries ``E:`` are fully masked dummy episodes.
    """
    actions, mask = pad_episodes(actions, mask, jax.device_count())
    return _put(actions), _put(mask)


def shard_padded(values, fill) -> Array:
    """A per-episode array ``(E, ...)`` (e.g. observed payoffs) padded with ``fill`` to the
    episode count of ``shard_episodes`` and split over the episode mesh like the actions."""
    values = np.asarray(values)
    extra = -values.shape[0] % jax.device_count()
    if extra:
        values = np.pad(values, ((0, extra),) + ((0, 0),) * (values.ndim - 1), constant_values=fill)
    return _put(values)


def to_host(values: Array) -> np.ndarray:
    """A NumPy copy of an array that may be split over several hosts' devices.

    On one host this is ``np.asarray``; with several hosts an episode-sharded array is
    gathered from every process first (``multihost_utils.process_allgather``).
    """
    if not isinstance(values, jax.Array) or values.is_fully_addressable or values.is_fully_replicated:
        return np.asarray(values)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(values, tiled=True))
