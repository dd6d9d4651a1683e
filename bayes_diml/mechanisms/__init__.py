"""Mechanism families (docs/design.md §4) and their registry."""

from .anonymous import Anonymous
from .anonymous_function import AnonymousFunction
from .base import Mechanism
from .congestion import Congestion
from .linear import Linear
from .network import NetworkMechanism
from .neural import Neural
from .neural_function import NeuralFunction
from .public_goods import PublicGoods
from .tabular import Tabular, joint_index

FAMILIES: dict[str, type[Mechanism]] = {
    cls.family: cls for cls in (Tabular, Neural, Congestion, Anonymous, PublicGoods, Linear)
}
"""Registry: family name (as written in specs) -> class. Adding a family is one module
with its class (everything it needs lives there, see ``Mechanism``) and one entry here.
Joint families first, then the count-based ones; messages list families in this order.
``NeuralFunction`` is the ``neural`` family read with ``[mechanism.prior] space =
"function"`` (``Neural.from_spec`` returns it), so it has no entry of its own; so is
``AnonymousFunction`` for the ``anonymous`` family."""

__all__ = [
    "FAMILIES",
    "Mechanism",
    "NetworkMechanism",
    "Tabular",
    "Congestion",
    "PublicGoods",
    "Neural",
    "NeuralFunction",
    "Anonymous",
    "AnonymousFunction",
    "Linear",
    "joint_index",
]
