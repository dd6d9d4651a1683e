"""The network code shared by the neural and anonymous families: action embeddings
followed by a dense stack."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax

from .._types import Params, PRNGKey
from .base import Mechanism
from .layers import dense_stack_shapes, init_dense_stack, sample_network
from .options import positive_int_list

__all__ = ["NetworkMechanism"]


def refuse_weight_space(options: dict, where: str, function_class: str, network_class: str) -> None:
    """A function-space mechanism's ``check_prior_options``: refuse ``space = "weights"`` in
    one line (that prior is the network's own class)."""
    from ..errors import SpecError
    from .neural import prior_space

    if "space" in options and prior_space(options, where) != "function":
        raise SpecError(
            f"{where}: space = \"weights\" is the weight-space {network_class} mechanism, but this model holds "
            f"{function_class}; build {network_class}(...) instead, or drop 'space'"
        )


def _prior_where(where: str) -> str:
    """``"spec.toml [mechanism]"`` -> ``"spec.toml [mechanism.prior]"``."""
    return where[:-1] + ".prior]" if where.endswith("[mechanism]") else where


@dataclasses.dataclass(frozen=True, eq=False)
class NetworkMechanism(Mechanism):
    """Base of the families whose payoff is a network over action embeddings.

    Parameters: ``embed`` (shape ``embed_shape()``) and dense layers ``w{l}``,
    ``b{l}`` mapping ``layer_sizes()[0] -> hidden... -> layer_sizes()[-1]``.
    Subclasses give ``embed_shape``, ``layer_sizes``, ``embed_bounds`` and the
    payoff functions; the parameters, their prior (``sample_network``), their
    initialisation, the spec keys ``hidden`` and ``embed_dim`` and the output
    scaling are common.

    Gauge: the output layer's bias adds the same constant to every own action, so
    it is pinned at 0 when the gauge is fixed (see ``sample_network``).
    """

    hidden: tuple[int, ...] = ()
    embed_dim: int | None = None

    embed_bounds: ClassVar[tuple[int, int]] = (1, 1)
    """The default embedding size is ``num_actions`` clipped to these bounds."""

    prior_options = frozenset({"weight_scale", "output_scale"})
    prior_numbers = frozenset({"weight_scale", "output_scale"})
    spec_options = frozenset({"hidden", "embed_dim"})

    @property
    def embedding_size(self) -> int:
        low, high = self.embed_bounds
        return self.embed_dim or min(high, max(low, self.num_actions))

    @classmethod
    def function_space_class(cls) -> type[Mechanism] | None:
        """The mechanism a spec with ``[mechanism.prior] space = "function"`` is read into
        (``NeuralFunction``, ``AnonymousFunction``); ``None``: the family has no such space."""
        return None

    @classmethod
    def from_spec(cls, section, num_agents, num_actions, where="[mechanism]", base_dir="."):
        """This family, or its ``function_space_class`` when ``[mechanism.prior] space =
        "function"``."""
        from .neural import prior_space

        function_class = cls.function_space_class()
        if function_class is not None and prior_space(section.get("prior", {}), _prior_where(where)) == "function":
            return function_class.from_spec(section, num_agents, num_actions, where, base_dir)
        return super().from_spec(section, num_agents, num_actions, where, base_dir)

    def check_prior_options(self, options, where="[mechanism.prior]"):
        """The prior keys, and ``space = "weights"`` (or none): a model with ``space =
        "function"`` holds the ``function_space_class``, which ``read_spec`` builds."""
        from ..errors import SpecError
        from .neural import prior_space

        function_class = self.function_space_class()
        if function_class is not None and prior_space(options, where) == "function":
            raise SpecError(
                f"{where}: space = \"function\" is the {function_class.__name__} mechanism, but this model holds the "
                f"weight-space {type(self).__name__}; build {function_class.__name__}(...) (read_spec does) or drop 'space'"
            )
        super().check_prior_options(options, where)

    def embed_shape(self) -> tuple[int, ...]:
        """Shape of the ``embed`` parameter."""
        raise NotImplementedError

    def layer_sizes(self) -> list[int]:
        """Widths of the dense stack, input to output."""
        raise NotImplementedError

    def param_shapes(self):
        shapes = {"embed": self.embed_shape()}
        shapes.update(dense_stack_shapes("", self.layer_sizes()))
        return shapes

    def init_params(self, key: PRNGKey) -> Params:
        k_embed, k_net = jax.random.split(key)
        params = {"embed": jax.random.normal(k_embed, self.embed_shape())}
        params.update(init_dense_stack(k_net, "", self.layer_sizes()))
        return params

    def sample_prior(self, options, fix_gauge):
        """See ``sample_network``: standard-normal embeddings, ``Normal(0, weight_scale /
        sqrt(fan_in))`` weights (output layer times ``output_scale``), output bias
        pinned at 0 when the gauge is fixed."""
        return sample_network(self.embed_shape(), self.layer_sizes(), options, fix_gauge)

    def output_params(self):
        """The output layer's weights and bias."""
        last = len(self.layer_sizes()) - 2
        return (f"w{last}", f"b{last}")

    # ------------------------------------------------------------------- spec
    @classmethod
    def spec_kwargs(cls, section, where, base_dir):
        """``hidden`` (list of positive integers) and ``embed_dim`` (positive integer)."""
        from ..errors import SpecError

        kwargs = {}
        if "hidden" in section:
            kwargs["hidden"] = positive_int_list(section["hidden"], "hidden", where)
        if "embed_dim" in section:
            value = section["embed_dim"]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SpecError(f"{where}: 'embed_dim' must be a positive integer, got {value!r}")
            kwargs["embed_dim"] = value
        return kwargs

    def spec_table(self):
        table, files = super().spec_table()
        table["hidden"] = list(self.hidden)
        if self.embed_dim is not None:
            table["embed_dim"] = self.embed_dim
        return table, files
