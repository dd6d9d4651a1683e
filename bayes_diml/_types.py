"""Type aliases and the fixed dimension names used across the package.

Shapes in docstrings use these names:
``num_episodes`` (E), ``num_rounds`` (T), ``num_agents`` (n), ``num_actions`` (A),
``num_draws`` (S).
"""

from typing import Any

import jax

__all__ = ["Array", "PRNGKey", "Params", "PyTree", "DIMS"]

Array = jax.Array
PRNGKey = jax.Array
PyTree = Any
Params = dict[str, Any]
"""A flat mapping from parameter name to array (mechanism or learner parameters)."""

DIMS = ("episode", "round", "agent", "action")
"""Dimension names used in ArviZ output and data frames."""
