"""Prior distributions written in specs as inline tables, e.g. ``{dist = "beta", a = 2, b = 5}``."""

from __future__ import annotations

import dataclasses
import difflib
import math

from .errors import SpecError

__all__ = ["Prior", "PRIOR_FAMILIES", "Interval", "Domain"]

PRIOR_FAMILIES: dict[str, tuple[str, ...]] = {
    "normal": ("loc", "scale"),
    "lognormal": ("loc", "scale"),
    "halfnormal": ("scale",),
    "beta": ("a", "b"),
    "gamma": ("concentration", "rate"),
    "uniform": ("low", "high"),
    "exponential": ("rate",),
}
"""Prior family -> its parameter names (all must be given)."""

_POSITIVE = {"scale", "a", "b", "concentration", "rate"}


def _number(x: float) -> str:
    """``2`` for 2.0, ``0.3`` for 0.3, ``inf`` / ``-inf``: numbers in messages and suggestions."""
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(float(x))


@dataclasses.dataclass(frozen=True)
class Interval:
    """A real interval with open or closed ends (an infinite end is open), e.g. ``(0, 1]``."""

    low: float = -math.inf
    high: float = math.inf
    low_closed: bool = False
    high_closed: bool = False

    def __str__(self) -> str:
        return (
            f"{'[' if self.low_closed else '('}{_number(self.low)}, "
            f"{_number(self.high)}{']' if self.high_closed else ')'}"
        )

    def contains(self, value):
        """Elementwise: whether ``value`` (a number or NumPy array) lies in the interval."""
        above = (value >= self.low) if self.low_closed else (value > self.low)
        below = (value <= self.high) if self.high_closed else (value < self.high)
        return above & below

    def includes(self, other: "Interval") -> bool:
        """Whether ``other`` is a subset of this interval."""
        lower = other.low > self.low or (other.low == self.low and (self.low_closed or not other.low_closed))
        upper = other.high < self.high or (other.high == self.high and (self.high_closed or not other.high_closed))
        return lower and upper

    def rule(self) -> str:
        """``> 0``, ``>= 1`` for half-lines, else ``in (0, 1]``."""
        if math.isinf(self.high) and not math.isinf(self.low):
            return f"{'>=' if self.low_closed else '>'} {_number(self.low)}"
        return f"in {self}"


@dataclasses.dataclass(frozen=True)
class Domain:
    """The domain of a constrained parameter, and a prior inside it (for messages).

    ``note`` says why the domain is what it is (appended to the fixed-value message).
    """

    interval: Interval
    suggestion: "Prior"
    note: str = ""

    def describe(self) -> str:
        """``in (0, 1]``, ``> 0``, ``>= 1 (so that ...)``."""
        return self.interval.rule() + (f" ({self.note})" if self.note else "")

    def check_prior(self, prior: "Prior", name: str, where: str) -> None:
        """Raise ``SpecError`` (one line, naming ``name``, the domain and a prior that fits)
        unless ``prior``'s support lies inside the domain."""
        if not self.interval.includes(prior.support):
            raise SpecError(
                f"{where}: prior {prior} has support {prior.support}, outside {name}'s domain {self.interval}; "
                f"use e.g. {name} = {self.suggestion.to_inline()}"
            )


@dataclasses.dataclass(frozen=True)
class Prior:
    """A named distribution with its parameters (plain numbers, never code)."""

    dist: str
    args: tuple[tuple[str, float], ...]

    @classmethod
    def parse(cls, table: dict, where: str) -> "Prior":
        """Validate an inline table; ``where`` names the spec key for messages."""
        if not isinstance(table, dict) or "dist" not in table:
            raise SpecError(f"{where}: a prior is an inline table with a 'dist' key, e.g. {{dist = \"beta\", a = 2, b = 5}}")
        dist = table["dist"]
        if dist not in PRIOR_FAMILIES:
            close = difflib.get_close_matches(str(dist), PRIOR_FAMILIES, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise SpecError(f"{where}: unknown prior dist '{dist}'{hint}; known: {sorted(PRIOR_FAMILIES)}")
        names = PRIOR_FAMILIES[dist]
        given = {k: v for k, v in table.items() if k != "dist"}
        missing = [n for n in names if n not in given]
        extra = [k for k in given if k not in names]
        if missing or extra:
            raise SpecError(f"{where}: prior '{dist}' takes {list(names)}; missing {missing}, unexpected {extra}")
        args = []
        for name in names:
            value = given[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise SpecError(f"{where}: prior parameter '{name}' must be a finite number, got {value!r}")
            if name in _POSITIVE and value <= 0:
                raise SpecError(f"{where}: prior parameter '{name}' must be > 0, got {value}")
            args.append((name, float(value)))
        if dist == "uniform" and args[0][1] >= args[1][1]:
            raise SpecError(f"{where}: uniform prior needs low < high")
        return cls(dist, tuple(args))

    @property
    def kwargs(self) -> dict[str, float]:
        return dict(self.args)

    @property
    def support(self) -> Interval:
        """Where the draws lie: an open interval, also for ``uniform``.

        NumPyro samples each site on the unconstrained scale and maps it through
        ``biject_to(support)`` (exp, a sigmoid, a scaled sigmoid), whose image is the
        open interval; each end point has probability zero under every family here.
        """
        kw = self.kwargs
        if self.dist == "normal":
            return Interval()
        if self.dist == "beta":
            return Interval(0.0, 1.0)
        if self.dist == "uniform":
            return Interval(kw["low"], kw["high"])
        return Interval(0.0)  # lognormal, halfnormal, gamma, exponential

    def __str__(self) -> str:
        """``normal(loc=0.3, scale=1.0)``."""
        return f"{self.dist}({', '.join(f'{k}={v!r}' for k, v in self.args)})"

    def to_inline(self) -> str:
        """The TOML inline table, ``{dist = "beta", a = 2, b = 5}``."""
        return "{" + ", ".join([f'dist = "{self.dist}"', *(f"{k} = {_number(v)}" for k, v in self.args)]) + "}"

    def to_numpyro(self):
        """The ``numpyro.distributions`` object."""
        import numpyro.distributions as dist

        kw = self.kwargs
        return {
            "normal": lambda: dist.Normal(kw.get("loc"), kw.get("scale")),
            "lognormal": lambda: dist.LogNormal(kw.get("loc"), kw.get("scale")),
            "halfnormal": lambda: dist.HalfNormal(kw.get("scale")),
            "beta": lambda: dist.Beta(kw.get("a"), kw.get("b")),
            "gamma": lambda: dist.Gamma(kw.get("concentration"), kw.get("rate")),
            "uniform": lambda: dist.Uniform(kw.get("low"), kw.get("high")),
            "exponential": lambda: dist.Exponential(kw.get("rate")),
        }[self.dist]()

    def to_toml(self) -> dict:
        return {"dist": self.dist, **self.kwargs}
