"""Mechanism families (DESIGN §4) and their registry."""

from .anonymous import Anonymous
from .base import Mechanism
from .congestion import Congestion
from .linear import Linear
from .neural import Neural
from .public_goods import PublicGoods
from .tabular import Tabular, joint_index

FAMILIES: dict[str, type[Mechanism]] = {
    cls.family: cls for cls in (Tabular, Congestion, PublicGoods, Neural, Anonymous, Linear)
}
"""Registry: family name (as written in specs) -> class."""

__all__ = [
    "FAMILIES",
    "Mechanism",
    "Tabular",
    "Congestion",
    "PublicGoods",
    "Neural",
    "Anonymous",
    "Linear",
    "joint_index",
]
