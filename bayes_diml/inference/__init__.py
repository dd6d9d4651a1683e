"""Posterior inference: NUTS, SVI and MAP over a model's unknowns (docs/design.md §5)."""

from .comparison import compare
from .fit import METHODS, fit
from .results import Fit, load_fit

__all__ = ["fit", "Fit", "load_fit", "METHODS", "compare"]
