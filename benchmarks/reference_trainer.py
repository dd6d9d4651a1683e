"""Seconds per training epoch of the authors' own PyTorch trainer (the reference).

The authors' script (``run_experiments.py`` of An & Du 2026, public on GitHub) is
*not* part of this repository: pass its path. It is imported as a module by path
(its ``__main__`` block does not run) and its own classes are used unmodified:
``DIMLTrainer`` with ``NeuralJointMechanism`` (E1, and E2's neural class),
``CongestionParamMechanism`` (E2's structured class) or ``SymmetricCountMechanism``
(E7), the ``LogitQRule`` learner and ``TrainCfg`` at the paper's settings as its
``main()`` sets them:

* E1-E3: ``TrainCfg(batch_size=32, lr=1e-3, trunc_bptt=50, reg_l2_pay=1e-4)``,
  learner alpha 0.25, beta 3.0, eps 0.06, 60 x 60 episodes, 80% training split;
* E7: ``TrainCfg(batch_size=8, lr=1e-3, trunc_bptt=30, reg_l2_pay=1e-4)``, learner
  alpha 0.20, beta 6.0, eps 0.02, the five (n, A, episodes, rounds) of the paper.

``DIMLTrainer.fit`` times each epoch itself (``time.time()`` around the mini-batch
loop, which calls ``loss.item()`` every batch, so CUDA work is finished when it
reads the clock). The first epoch is a warm-up (CUDA/cuBLAS start-up); the median of
the others is reported. Actions are drawn uniformly at random with the shapes of the
paper's training data: the trainer's cost does not depend on which actions were
played. Runs on CUDA when available, else the CPU.

Usage (prints one JSON object on its last line):
    python benchmarks/reference_trainer.py --script PATH/run_experiments.py --setting E7_n120 [--epochs 3]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import statistics
import sys
import time

SMALL = dict(batch_size=32, lr=1e-3, trunc_bptt=50, reg_l2_pay=1e-4, learner=(0.25, 3.0, 0.06))
LARGE = dict(batch_size=8, lr=1e-3, trunc_bptt=30, reg_l2_pay=1e-4, learner=(0.20, 6.0, 0.02))

# setting -> (mechanism class in the reference, n, A, episodes, rounds, training config)
REFERENCE_SETTINGS = {
    "E1": ("neural", 3, 6, 60, 60, SMALL),
    "E2": ("congestion", 4, 5, 60, 60, SMALL),  # the structured baseline (StructMLE)
    "E2_neural": ("neural", 4, 5, 60, 60, SMALL),  # DIML's neural class on the congestion data
    "E3_neural": ("neural", 3, 7, 60, 60, SMALL),
    "E7_n40": ("count", 40, 10, 24, 30, LARGE),
    "E7_n80": ("count", 80, 20, 24, 30, LARGE),
    "E7_n120": ("count", 120, 25, 24, 30, LARGE),
    "E7_n200": ("count", 200, 30, 20, 30, LARGE),
    "E7_n300": ("count", 300, 40, 16, 25, LARGE),
}
TRAIN_FRACTION = 0.8


def load_reference(path: str):
    """The authors' script as a module (imported by path; nothing of it is copied)."""
    path = os.path.abspath(path)
    spec = importlib.util.spec_from_file_location("diml_reference_run_experiments", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{path}: cannot import")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def time_reference_epoch(script: str, setting: str, epochs: int = 3, device: str = "auto", seed: int = 0) -> dict:
    """Seconds per training epoch of the reference trainer on one setting."""
    import torch

    ref = load_reference(script)
    kind, n, A, episodes, rounds, cfg = REFERENCE_SETTINGS[setting]
    dev = torch.device("cuda" if (device == "auto" and torch.cuda.is_available()) else ("cpu" if device == "auto" else device))
    ref.set_seed(seed)
    alpha, beta, eps = cfg["learner"]
    learner = ref.LogitQRule(n, A, alpha, beta, eps)
    if kind == "neural":
        mech = ref.NeuralJointMechanism(n, A, hidden=128, depth=2)
    elif kind == "congestion":
        mech = ref.CongestionParamMechanism(n, A)
    else:
        mech = ref.SymmetricCountMechanism(n_actions=A, hidden=256, depth=2)
    train_cfg = ref.TrainCfg(
        epochs=epochs,
        batch_size=cfg["batch_size"],
        lr=cfg["lr"],
        trunc_bptt=cfg["trunc_bptt"],
        verbose_every=10**9,
        reg_l2_pay=cfg["reg_l2_pay"],
    )
    trainer = ref.DIMLTrainer(
        mech=mech, learner=learner, n_agents=n, n_actions=A, device=dev, train_cfg=train_cfg, scalable_count=kind == "count"
    )
    train_episodes = max(1, int(TRAIN_FRACTION * episodes))  # as the script's split_train_test
    generator = torch.Generator().manual_seed(seed)
    actions = torch.randint(0, A, (train_episodes, rounds, n), generator=generator).to(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    curves: list[dict] = []
    start = time.perf_counter()
    trainer.fit(actions, tag=f"reference/{setting}", curves=curves)
    total = time.perf_counter() - start
    seconds = [row["epoch_seconds"] for row in curves]
    steady = seconds[1:] or seconds
    batches = -(-train_episodes // cfg["batch_size"])
    return {
        "setting": setting,
        "implementation": "reference (authors' PyTorch DIMLTrainer, unmodified)",
        "mechanism_class": {
            "neural": "NeuralJointMechanism",
            "congestion": "CongestionParamMechanism",
            "count": "SymmetricCountMechanism",
        }[kind],
        "num_agents": n,
        "num_actions": A,
        "train_episodes": train_episodes,
        "rounds": rounds,
        "window": min(rounds, cfg["trunc_bptt"]),
        "batch_size": cfg["batch_size"],
        "optimizer_steps_per_epoch": batches,
        "epochs_run": len(seconds),
        "first_epoch_seconds": seconds[0],
        "seconds_per_epoch": statistics.median(steady),
        "seconds_per_epoch_min": min(steady),
        "wall_seconds": total,
        "data": "uniform random actions with the shapes of the paper's training split",
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "peak_host_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_device_mb": torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None,
        "loadavg": os.getloadavg(),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--script", required=True, help="path to the authors' run_experiments.py")
    parser.add_argument("--setting", required=True, choices=list(REFERENCE_SETTINGS))
    parser.add_argument("--epochs", type=int, default=3, help="epochs to run; the first is a warm-up (default 3)")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda")
    args = parser.parse_args(argv)
    result = time_reference_epoch(args.script, args.setting, args.epochs, args.device)
    sys.stdout.flush()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
