"""Dense layers for the network families (neural, anonymous, the public-goods subsidy):
the forward pass, PyTorch-default initialisation (the paper's random truths) and the
Normal priors over weights and biases, with the output bias pinned by the gauge."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .._types import Array, Params, PRNGKey
from .options import positive_number

__all__ = [
    "mlp",
    "torch_default_dense",
    "dense_stack_shapes",
    "init_dense_stack",
    "sample_dense_stack",
    "sample_network",
]


def mlp(params: Params, prefix: str, x: Array, num_layers: int, activation) -> Array:
    """Dense layers ``{prefix}w{l}``, ``{prefix}b{l}``; activation on all but the last."""
    for layer in range(num_layers):
        x = x @ params[f"{prefix}w{layer}"] + params[f"{prefix}b{layer}"]
        if layer < num_layers - 1:
            x = activation(x)
    return x


def torch_default_dense(key: PRNGKey, fan_in: int, fan_out: int) -> tuple[Array, Array]:
    """A dense layer at PyTorch's default initialisation: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

    The paper's random true networks are drawn this way (docs/design.md §6).
    """
    bound = 1.0 / np.sqrt(fan_in)
    kw, kb = jax.random.split(key)
    w = jax.random.uniform(kw, (fan_in, fan_out), minval=-bound, maxval=bound)
    b = jax.random.uniform(kb, (fan_out,), minval=-bound, maxval=bound)
    return w, b


def dense_stack_shapes(prefix: str, sizes: list[int]) -> dict[str, tuple[int, ...]]:
    """Parameter shapes of dense layers mapping ``sizes[0] -> ... -> sizes[-1]``."""
    shapes: dict[str, tuple[int, ...]] = {}
    for layer, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        shapes[f"{prefix}w{layer}"] = (fan_in, fan_out)
        shapes[f"{prefix}b{layer}"] = (fan_out,)
    return shapes


def init_dense_stack(key: PRNGKey, prefix: str, sizes: list[int]) -> Params:
    """PyTorch-default initialisation of a dense stack (see ``dense_stack_shapes``)."""
    params: Params = {}
    keys = jax.random.split(key, len(sizes) - 1)
    for layer, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        params[f"{prefix}w{layer}"], params[f"{prefix}b{layer}"] = torch_default_dense(keys[layer], fan_in, fan_out)
    return params


def sample_dense_stack(
    prefix: str, sizes: list[int], scale: float, drop_last_bias: bool, output_scale: float = 1.0
) -> Params:
    """Normal(0, scale / sqrt(fan_in)) priors on a dense stack's weights and biases
    (the output layer's multiplied by ``output_scale``: the prior payoff scale).

    With ``drop_last_bias`` the output bias is fixed at zero: it shifts every
    action's payoff alike, which no full-information learner can see (the gauge).
    """
    import numpyro
    import numpyro.distributions as dist

    params: Params = {}
    num_layers = len(sizes) - 1
    for layer, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        s = scale / np.sqrt(fan_in) * (output_scale if layer == num_layers - 1 else 1.0)
        params[f"{prefix}w{layer}"] = numpyro.sample(
            f"{prefix}w{layer}", dist.Normal(0.0, s).expand((fan_in, fan_out)).to_event(2)
        )
        if drop_last_bias and layer == num_layers - 1:
            params[f"{prefix}b{layer}"] = numpyro.deterministic(f"{prefix}b{layer}", jnp.zeros((fan_out,)))
        else:
            params[f"{prefix}b{layer}"] = numpyro.sample(
                f"{prefix}b{layer}", dist.Normal(0.0, s).expand((fan_out,)).to_event(1)
            )
    return params


def sample_network(embed_shape: tuple[int, ...], sizes: list[int], options: dict, fix_gauge: bool) -> Params:
    """Prior of an embedding + dense network (neural and anonymous families).

    ``embed ~ Normal(0, 1)``; weights and biases ``~ Normal(0, weight_scale /
    sqrt(fan_in))``, the output layer's times ``output_scale``; the output bias
    pinned at 0 when the gauge is fixed (it shifts every action's payoff alike).
    """
    import numpyro
    import numpyro.distributions as dist

    params: Params = {
        "embed": numpyro.sample("embed", dist.Normal(0.0, 1.0).expand(embed_shape).to_event(len(embed_shape)))
    }
    params.update(
        sample_dense_stack(
            "", sizes, positive_number(options, "weight_scale", 1.0), fix_gauge,
            positive_number(options, "output_scale", 1.0),
        )
    )
    return params
