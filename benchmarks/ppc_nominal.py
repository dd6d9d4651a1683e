"""Does the misfit flag fire on human play, and only at its nominal rate on play the model made? (issue 20)

Data: Wang, Xu & Zhou (2014), "Social cycling and conditional responses in the
rock-paper-scissors game", Scientific Reports 4:5830 (``notebooks/data/wxz2014_rps.csv.gz``):
each player one episode of 300 rounds with two agents, the player (modelled) and the opponent
matched that round (``[game] modelled = ["player"]``: context, replayed as observed).

1. Fit logit-Q (tabular payoffs, ``alpha ~ Beta(2, 5)``, ``beta = 1``, ``eps = 0``) by NUTS,
   ``--chains`` x (``--warmup`` + ``--samples``), and run ``bd.ppc`` on it: the real data's
   tables, p-values and misfit flag.
2. Take the posterior mean as a known model and simulate ``--datasets`` data sets of the same
   sizes from it (the player learns; the opponent replays the observed choices), then check
   each with ``ppc_from_params`` at that known model (``--replicates`` replicates): observed
   and replicated tables are then exchangeable, so misfit (some table's p < 0.01 / k) has
   probability at most 0.01, and each table's p is uniform (Monte Carlo p-values).

Writes ``--out`` (JSON: machine, settings, load, the real data's check, the share of simulated
data sets flagged with its binomial bound). Usage::

    python benchmarks/ppc_nominal.py [--datasets 40] [--load idle]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT / "notebooks" / "data" / "wxz2014_rps.csv.gz"
NAMES = {"r": "rock", "p": "paper", "s": "scissors"}
SPEC = """[game]
agents = 2
actions = 3
action_labels = ["rock", "paper", "scissors"]
agent_labels = ["opponent", "player"]
modelled = ["player"]

[mechanism]
family = "tabular"

[learner]
rule = "logit_q"
alpha = {dist = "beta", a = 2, b = 5}
beta = 1.0
eps = 0.0
"""


def long_table(players: int, rounds: int):
    """The WXZ table in the package's long format: one row per (player, round, agent)."""
    import pandas as pd

    raw = pd.read_csv(DATA)
    raw = raw[raw["id"].isin(sorted(raw["id"].unique())[:players]) & (raw["period"] <= rounds)]
    episode = raw["id"].map("p{:02d}".format)
    rows = [pd.DataFrame({"episode": episode, "round": raw["period"], "agent": agent, "action": raw[column].map(NAMES)})
            for agent, column in (("player", "choice"), ("opponent", "other.choice"))]
    return pd.concat(rows).sort_values(["episode", "round", "agent"], ignore_index=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--players", type=int, default=72)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--datasets", type=int, default=40)
    parser.add_argument("--replicates", type=int, default=400)
    parser.add_argument("--load", default="not stated")
    parser.add_argument("--out", default=str(HERE / "results" / "ppc_nominal.json"))
    args = parser.parse_args()
    import jax
    import jax.numpy as jnp
    from scipy import stats

    import bayes_diml as bd
    from bayes_diml.inference.ppc import ppc_from_params
    from bayes_diml.inference.results import draws_params
    from bayes_diml.simulate import simulate_arrays
    from experiments import reproduce as rp

    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "spec.toml").write_text(SPEC, encoding="utf-8")
        long_table(args.players, args.rounds).to_csv(Path(folder) / "play.csv", index=False)
        model, _ = bd.read_spec(Path(folder) / "spec.toml")
        data = bd.load_data(Path(folder) / "play.csv", model)
    start = time.perf_counter()
    fit = bd.fit(model, data, method="nuts", seed=0, num_chains=args.chains, num_warmup=args.warmup,
                 num_samples=args.samples, progress=False, ppc=False)
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    real = bd.ppc(fit, seed=0)
    real_seconds = time.perf_counter() - start
    params = draws_params(model, fit.data, fit.posterior)
    known = jax.tree.map(lambda v: jnp.mean(v, axis=0, keepdims=True), params)
    one = jax.tree.map(lambda v: v[0], known)
    rows = []
    for k in range(args.datasets):
        actions = simulate_arrays(model, one, jax.random.key(100 + k), data.num_episodes, data.num_rounds,
                                  replay=jnp.asarray(data.actions))
        simulated = bd.Trajectories.from_arrays(np.asarray(actions), num_actions=3, agent_labels=data.agent_labels,
                                                action_labels=data.action_labels)
        check = ppc_from_params(model, simulated, known, seed=k, num_replicates=args.replicates)
        rows.append({"misfit": check["misfit"], "p": {t: v["p"] for t, v in check["tables"].items()}})
        print(json.dumps(rows[-1]), flush=True)
    flagged = sum(r["misfit"] for r in rows)
    tables = sorted(rows[0]["p"])
    document = {
        "machine": rp._machine(), "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "command": " ".join(sys.argv), "fit_seconds": fit_seconds, "ppc_seconds": real_seconds,
        "fit_diagnostics": {k: fit.diagnostics().get(k) for k in ("max_rhat", "divergences", "min_ess_bulk")},
        "real": {"misfit": real["misfit"], "failing": real["failing"],
                 "p": {t: v["p"] for t, v in real["tables"].items()},
                 "stay": real["tables"]["own_previous"]["stay"]},
        "simulated": {
            "datasets": len(rows), "flagged": flagged,
            # P(Binomial(n, 0.01) >= flagged): small means flagged more often than nominal
            "p_flagged_at_least": float(stats.binom.sf(flagged - 1, len(rows), 0.01)) if flagged else 1.0,
            "share_p_below_0.05": {t: float(np.mean([r["p"][t] < 0.05 for r in rows])) for t in tables},
            "ks_uniform_p": {t: float(stats.kstest([r["p"][t] for r in rows], "uniform").pvalue) for t in tables},
            "rows": rows,
        },
    }
    Path(args.out).write_text(json.dumps(rp._jsonable(document), indent=1), encoding="utf-8")
    print(json.dumps(rp._jsonable({k: document[k] for k in ("real", "fit_seconds")}), indent=1))
    print(json.dumps({k: v for k, v in document["simulated"].items() if k != "rows"}, indent=1))


if __name__ == "__main__":
    main()
