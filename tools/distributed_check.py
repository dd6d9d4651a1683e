"""One process of a multi-process (several hosts) check of episode sharding.

Every process runs this same script with the same data and seed; with
``--num-processes N`` the episode axis is split over the devices of all ``N``
processes (``jax.distributed``). It prints (and writes with ``--out``) one JSON
object: per-episode log-likelihoods, the total, its gradient with respect to the
mechanism parameters and the posterior means of a short SVI fit. Running it once
with ``--num-processes 1 --no-shard`` gives the single-process reference
(``tests/test_distributed.py`` compares the two; ``docs/scaling.md`` shows the
commands, on one machine and on a cluster).

Two processes on one machine (CPU, gloo collectives), in two shells::

    python tools/distributed_check.py --coordinator 127.0.0.1:12355 --num-processes 2 --process-id 0
    python tools/distributed_check.py --coordinator 127.0.0.1:12355 --num-processes 2 --process-id 1

On a cluster, leave the three options out under SLURM (``srun``; JAX reads
``SLURM_*``) or give them from the launcher's environment (Kubernetes indexed jobs).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

NUM_EPISODES = 7  # odd: with two processes the sharded path pads one masked episode
NUM_ROUNDS = 12


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--coordinator", help="host:port of process 0 (omit under SLURM: detected)")
    parser.add_argument("--num-processes", type=int)
    parser.add_argument("--process-id", type=int)
    parser.add_argument("--no-shard", action="store_true", help="single-process reference: do not shard")
    parser.add_argument("--timeout", type=int, default=120, help="seconds to wait for the other processes")
    parser.add_argument("--svi-steps", type=int, default=60)
    parser.add_argument("--out", help="write the JSON here as well")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax

    distributed = args.num_processes is None or args.num_processes > 1
    if distributed:
        # CPU collectives across processes (the default on recent JAX; explicit here)
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=args.coordinator,
            num_processes=args.num_processes,
            process_id=args.process_id,
            initialization_timeout=args.timeout,
            heartbeat_timeout_seconds=max(10, args.timeout // 2),
            shutdown_timeout_seconds=args.timeout,
        )

    import jax.numpy as jnp
    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import bayes_diml as bd
    from bayes_diml.learners import logit_q
    from bayes_diml.likelihood import log_likelihood, log_likelihood_per_episode
    from bayes_diml.mechanisms import Congestion
    from bayes_diml.model import Model
    from bayes_diml.sharding import to_host

    shard = not args.no_shard
    learner = {"alpha": 0.3, "beta": 3.0, "eps": 0.05}
    truth = {"c1": [0.2, 0.3, 0.1], "c2": [0.1, 0.05, 0.12], "tau": [0.1, 0.0, 0.2]}
    model = Model(Congestion(num_agents=3, num_actions=3), logit_q, learner)
    params = {"mechanism": {k: jnp.asarray(v, jnp.float32) for k, v in truth.items()},
              "learner": {k: jnp.float32(v) for k, v in learner.items()}}
    # the same data in every process (same seed); each process supplies its devices' episodes
    data = bd.simulate(model, params, num_episodes=NUM_EPISODES, num_rounds=NUM_ROUNDS, seed=5)
    actions, mask = np.asarray(data.actions), np.asarray(data.mask).copy()
    mask[2, 7:] = True  # a shorter episode
    mask[4, 3, 1] = True  # an absent agent
    pair = (actions, mask)

    per_episode = log_likelihood_per_episode(model, params, pair, shard=shard)
    value, grad = jax.value_and_grad(lambda p: log_likelihood(model, p, pair, shard=shard))(params)
    fit = bd.fit(model, data, method="svi", seed=11, shard=shard, steps=args.svi_steps, map_steps=args.svi_steps // 2,
                 num_samples=40, progress=False, posterior_predictive_draws=4)
    out = {
        "process_index": jax.process_index(),
        "process_count": jax.process_count(),
        "device_count": jax.device_count(),
        "local_device_count": jax.local_device_count(),
        "sharded": bool(fit.info["sharded"]),
        "per_episode": to_host(per_episode).tolist(),
        "total": float(to_host(value)),
        "grad": {k: to_host(v).tolist() for k, v in grad["mechanism"].items()},
        "svi_mean": {k: np.asarray(v).mean(axis=(0, 1)).tolist() for k, v in fit.posterior.items()},
        "fit_log_likelihood": np.asarray(fit.log_likelihood).tolist(),
    }
    text = json.dumps(out)
    print(text, flush=True)
    if args.out:
        Path(args.out).write_text(text + "\n")
    if distributed:
        jax.distributed.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
