"""Exceptions: bad input (raised before anything is traced) and failed fits."""

__all__ = ["DataError", "SpecError", "FitError", "ResourceError", "UncalibratedWarning", "UnidentifiedWarning", "MisfitWarning"]


class DataError(ValueError):
    """Malformed or inconsistent data.

    The message names the file (or source), the row or line, and the column or
    parameter, says what is wrong and what was expected.
    """


class SpecError(DataError):
    """Malformed or inconsistent model specification (``models/*.toml``)."""


class ResourceError(DataError):
    """A program that cannot fit in the memory available, refused before it is built
    (``bayes_diml.resources``). The message names the size and what to change."""


class FitError(RuntimeError):
    """A fit met a non-finite value (NaN or infinity) and stopped.

    The message names the method, the step (or draw) and the parameter(s) whose
    value or gradient was not finite, e.g. ``SVI step 37 of 2000: the gradient
    of 'mechanism.c1' is NaN (loss was finite: -123.4)``; a fit never returns a
    silently non-finite posterior.
    """


class UncalibratedWarning(UserWarning):
    """A fit whose intervals were measured too narrow on this family (or never checked
    against a truth), e.g. SVI on a neural mechanism with a prior over its weights
    (``inference.auto.calibration_warning``). The message gives the measured coverage and
    what to use instead; ``fit(..., accept_uncalibrated=True)`` (``--accept-uncalibrated``)
    silences it.
    """


class UnidentifiedWarning(UserWarning):
    """A counterfactual whose reported play depends on parameters the data do not identify
    (``Mechanism.unidentified_by``), e.g. a congestion toll replaced absolutely while the
    tolls in force are not known, so each draw keeps its prior-only ``c1``. The message
    names the parameter(s) and what to do instead; the result records
    ``"identified": false`` and the names (``CounterfactualResult.unidentified``).
    """


class MisfitWarning(UserWarning):
    """A fit whose conditional posterior predictive checks fail (``inference.ppc``): play
    simulated from the fitted model does not reproduce how the observed choices follow
    the agent's own previous choice, the opponent's, or the previous payoff. The message
    names the failing tables and their tail probabilities; the tables are in the run
    folder's ``diagnostics.json`` (``"ppc"``) and the report.
    """
