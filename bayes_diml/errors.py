"""Exceptions raised on bad input, before anything is traced."""

__all__ = ["DataError", "SpecError"]


class DataError(ValueError):
    """Malformed or inconsistent data.

    The message names the file (or source), the row or line, and the column or
    parameter, says what is wrong and what was expected.
    """


class SpecError(DataError):
    """Malformed or inconsistent model specification (``models/*.toml``)."""
