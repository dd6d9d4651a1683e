"""Prior distributions written in specs as inline tables, e.g. ``{dist = "beta", a = 2, b = 5}``."""

from __future__ import annotations

import dataclasses
import difflib
import math

from .errors import SpecError

__all__ = ["Prior", "PRIOR_FAMILIES"]

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
