"""Write the true parameters of the paper's environments into ``models/`` (run once).

The truths are drawn with NumPy (``default_rng``), from the paper's
distributions (docs/design.md §6): congestion ``c1 ~ U[0.1, 0.4]``, ``c2 ~ U[0.05, 0.15]``,
``tau ~ U[0, 0.2]``; networks at PyTorch's default initialisation (dense layers
``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, embeddings ``N(0, 1)``). Network weights
are stored in ``.npz`` files beside the specs, never regenerated from a seed.

Usage: ``python models/generate_truths.py`` (from the repository root).
"""

from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
E7_SIZES = [(40, 10, 24, 30), (80, 20, 24, 30), (120, 25, 24, 30), (200, 30, 20, 30), (300, 40, 16, 25)]


def dense_stack(rng, prefix, sizes):
    params = {}
    for layer, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        bound = 1.0 / np.sqrt(fan_in)
        params[f"{prefix}w{layer}"] = rng.uniform(-bound, bound, (fan_in, fan_out)).astype(np.float32)
        params[f"{prefix}b{layer}"] = rng.uniform(-bound, bound, (fan_out,)).astype(np.float32)
    return params


def fmt(values):
    return "[" + ", ".join(f"{v:.4f}" for v in values) + "]"


def main():
    # E1: neural joint truth, 3 agents, 6 actions, embedding min(24, max(6, A)) = 6.
    rng = np.random.default_rng(1)
    n, A, E = 3, 6, 6
    e1 = {"embed": rng.standard_normal((n, A, E)).astype(np.float32)}
    e1.update(dense_stack(rng, "", [n * E, 128, 128, n]))
    np.savez(HERE / "e1_neural_truth.npz", **e1)

    # E2: congestion with tolls.
    rng = np.random.default_rng(2)
    c1, c2, tau = rng.uniform(0.1, 0.4, 5), rng.uniform(0.05, 0.15, 5), rng.uniform(0.0, 0.2, 5)
    print("E2 congestion truth:\n c1 =", fmt(c1), "\n c2 =", fmt(c2), "\n tau =", fmt(tau))

    # E3: public goods (scale 1, k 2, cost 0.8) + subsidy net 2 -> 64 -> 1.
    rng = np.random.default_rng(3)
    e3 = {"scale": np.float32(1.0), "k": np.float32(2.0), "cost": np.float32(0.8)}
    e3.update(dense_stack(rng, "sub_", [2, 64, 1]))
    np.savez(HERE / "e3_public_goods_truth.npz", **e3)

    # E7: anonymous count MLPs, embedding min(32, max(12, A)), two ReLU layers of 256.
    for n, A, _, _ in E7_SIZES:
        rng = np.random.default_rng(7_000 + n)
        E = min(32, max(12, A))
        e7 = {"embed": rng.standard_normal((A, E)).astype(np.float32)}
        e7.update(dense_stack(rng, "", [E + A, 256, 256, 1]))
        np.savez(HERE / f"e7_n{n}_a{A}_truth.npz", **e7)


if __name__ == "__main__":
    main()
