"""Seeds and keys: public entry points take an int seed or a JAX key."""

from __future__ import annotations

import jax
import numpy as np

from ._types import PRNGKey

__all__ = ["as_key"]


def as_key(seed) -> PRNGKey:
    """An int seed becomes ``jax.random.key(seed)``; a JAX key is returned as is."""
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return jax.random.key(int(seed))
    if isinstance(seed, jax.Array):
        if jax.dtypes.issubdtype(seed.dtype, jax.dtypes.prng_key):
            return seed
        if seed.dtype == np.uint32 and seed.shape == (2,):  # legacy raw PRNGKey
            return jax.random.wrap_key_data(seed)
    raise TypeError(f"seed must be an int or a JAX random key, got {type(seed).__name__}")
