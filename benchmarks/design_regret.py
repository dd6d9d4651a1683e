"""Does the recommended design deliver, on the true mechanism? (issue 18, point 5)

For each E2 truth draw ``s`` (reproduce's congestion game, 4 agents x 5 resources, truth
``experiments.reproduce.draw_truth(model, spec_truth, s)``, 60 x 60 training episodes with
data seed ``2000 + s`` exactly as ``bayes-diml reproduce``), with the tolls in force declared
known (``[mechanism.known] tau = <the true tolls>``: the status quo), this study

1. fits NUTS (``--chains`` x (``--warmup`` + ``--samples``), fit seed ``s``);
2. runs ``bd.design`` over ``tau`` in ``[--lower, --upper]`` for each objective
   (``net_welfare``; ``share:0`` with ``target = --target``), ``--design-episodes`` x 60
   rounds per draw and candidate, 200 draws: the recommended, status-quo and plug-in designs;
3. finds the oracle design: the same search (``_design_search.search`` over ``evaluate``)
   with every draw replaced by the truth (``--oracle-candidates`` / ``--oracle-refinements``
   give it a larger budget than the design's; ``--reuse`` recomputes only the oracle and
   the true objectives of an earlier run's designs);
4. scores every design on the true mechanism by an independent path: ``bd.simulate`` of
   the truth with the design's tolls (``--truth-episodes`` episodes, fresh seed), the
   objective computed here in NumPy from the simulated actions (net welfare: minus the
   agents' total congestion cost ``sum_k c1_k L_k**2 + c2_k L_k**3`` per round; share: the
   share of plays on action 0 over the last 15 rounds, ``-(share - target)**2``), with the
   Monte Carlo standard error over episodes;
5. reports the share of the oracle's improvement over the status quo that the
   recommendation (and the plug-in design) achieves, with whether the oracle's improvement
   is within two Monte Carlo errors (then the share is noise and is flagged).

Writes ``--out`` (JSON: machine, settings, load, rows, summary). Usage::

    python benchmarks/design_regret.py --seeds 0 1 2 3 4 5 [--load "idle"]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

ROUNDS = 60
OBJECTIVES = ("net_welfare", "share")


def _data(seed: int, folder: Path):
    """The known-toll model, the truth and the training play of truth draw ``seed``."""
    import bayes_diml as bd
    from experiments import reproduce as rp

    setting = rp.EXPERIMENTS["E2"][0]
    plain, truth, _, data = rp._setting_data(setting, "paper", seed, rp.Settings())
    text = (rp.MODELS / setting.spec).read_text(encoding="utf-8").split("[mechanism.truth]")[0]
    learner = (rp.MODELS / setting.spec).read_text(encoding="utf-8").split("[learner]")[1]
    tau = ", ".join(f"{v:.6f}" for v in np.asarray(truth["mechanism"]["tau"]))
    path = folder / f"e2_known_{seed}.toml"
    path.write_text(f"{text}[mechanism.known]\ntau = [{tau}]\n\n[learner]{learner}", encoding="utf-8")
    model, _ = bd.read_spec(path)
    return model, truth, data


def _true_objective(model, truth, tau, objective: str, target: float, episodes: int, seed: int) -> tuple[float, float]:
    """(mean, Monte Carlo standard error) of the objective on the true mechanism with tolls ``tau``."""
    import jax.numpy as jnp

    import bayes_diml as bd

    mech = {k: jnp.asarray(v, jnp.float32) for k, v in truth["mechanism"].items()}
    mech["tau"] = jnp.asarray(tau, jnp.float32)
    learner = {k: jnp.asarray(v, jnp.float32) for k, v in truth["learner"].items()}
    actions = np.asarray(bd.simulate(model, {"mechanism": mech, "learner": learner}, num_episodes=episodes,
                                     num_rounds=ROUNDS, seed=seed).actions)  # (E, T, n)
    if objective == "share":
        last = actions[:, -(ROUNDS // 4):, :]
        per_episode = (last == 0).mean(axis=(1, 2))
        share = per_episode.mean()
        se = per_episode.std(ddof=1) / np.sqrt(episodes)
        return float(-(share - target) ** 2), float(2 * abs(share - target) * se)  # delta method
    c1, c2 = (np.asarray(truth["mechanism"][k], np.float64) for k in ("c1", "c2"))
    loads = np.stack([(actions == k).sum(axis=-1) for k in range(model.num_actions)], axis=-1)  # (E, T, A)
    cost = (c1 * loads**2 + c2 * loads**3).sum(axis=-1)  # sum_i c1 L + c2 L^2 over agents
    per_episode = -cost.mean(axis=1)
    return float(per_episode.mean()), float(per_episode.std(ddof=1) / np.sqrt(episodes))


def _oracle(model, truth, objective: str, target: float, args, seed: int) -> np.ndarray:
    """The design ``bd.design``'s search finds when every draw is the truth."""
    import jax

    from bayes_diml.inference._design_search import Score, evaluate, search

    S = args.oracle_draws
    params = {part: {k: np.broadcast_to(np.asarray(v, np.float32), (S, *np.shape(v))) for k, v in values.items()}
              for part, values in truth.items()}
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(jax.random.key(30_000 + seed), np.arange(S, dtype=np.uint32))
    score = Score("share", 0, target) if objective == "share" else Score("net_welfare")

    def batch(flat):
        return evaluate(model, params, "tau", flat.reshape(-1, model.num_actions), keys, score, args.design_episodes,
                        ROUNDS).mean(axis=1)

    lower = np.full(model.num_actions, args.lower)
    upper = np.full(model.num_actions, args.upper)
    start = [np.asarray(truth["mechanism"]["tau"], np.float64)]
    best, _, _ = search(batch, lower, upper, start, args.oracle_candidates or args.candidates,
                        args.oracle_refinements if args.oracle_refinements is not None else args.refinements,
                        np.random.default_rng(50_000 + seed))
    return best


def run_seed(seed: int, args, folder: Path, previous: dict | None = None) -> dict:
    """One truth draw; with ``previous`` (its row of an earlier run, ``--reuse``) the fit and the
    designs are taken from it and only the oracle and the true objectives are computed again."""
    import bayes_diml as bd

    model, truth, data = _data(seed, folder)
    start = time.perf_counter()
    fit = None
    if previous is None:
        fit = bd.fit(model, data, method="nuts", seed=seed, progress=False, num_chains=args.chains,
                     num_warmup=args.warmup, num_samples=args.samples, ppc=False)
    row = {"seed": seed, "fit_seconds": previous["fit_seconds"] if previous else time.perf_counter() - start,
           "objectives": {}}
    for objective in OBJECTIVES:
        name = "share:0" if objective == "share" else objective
        start = time.perf_counter()
        if previous is None:
            result = bd.design(fit, lever="tau", bounds=(args.lower, args.upper), objective=name,
                               target=args.target if objective == "share" else None,
                               num_episodes=args.design_episodes, num_rounds=ROUNDS, seed=seed,
                               num_candidates=args.candidates, refinements=args.refinements)
            design_seconds = time.perf_counter() - start
        else:
            old = previous["objectives"][name]
            result = {**{k: {"tau": old["designs"][k]} for k in ("recommended", "status_quo", "plug_in")},
                      "objective": old["posterior"]}
            design_seconds = old["design_seconds"]
        designs = {k: np.asarray(result[k]["tau"], np.float64) for k in ("recommended", "status_quo", "plug_in")}
        designs["oracle"] = _oracle(model, truth, objective, args.target, args, seed)
        true = {k: _true_objective(model, truth, v, objective, args.target, args.truth_episodes, 40_000 + seed)
                for k, v in designs.items()}
        gain = true["oracle"][0] - true["status_quo"][0]
        noise = 2 * np.hypot(true["oracle"][1], true["status_quo"][1])
        row["objectives"][name] = {
            "design_seconds": design_seconds,
            "designs": {k: v.tolist() for k, v in designs.items()},
            "true": {k: {"mean": m, "mc_se": se} for k, (m, se) in true.items()},
            "posterior": result["objective"],
            "oracle_gain": gain, "oracle_gain_within_mc": bool(abs(gain) <= noise),
            "share_of_oracle_gain": {k: (true[k][0] - true["status_quo"][0]) / gain if gain else None
                                     for k in ("recommended", "plug_in")},
        }
    return row


def summary(rows: list[dict]) -> dict:
    out = {}
    for name in {n for r in rows for n in r["objectives"]}:
        entries = [r["objectives"][name] for r in rows if name in r["objectives"]]
        clear = [e for e in entries if not e["oracle_gain_within_mc"]]
        for which in ("recommended", "plug_in"):
            shares = [e["share_of_oracle_gain"][which] for e in clear]
            out[f"{name}/{which}"] = {"mean_share_of_oracle_gain": float(np.mean(shares)) if shares else None,
                                      "per_draw": shares, "draws_used": len(clear), "draws_within_mc": len(entries) - len(clear)}
        wins = [e["true"]["recommended"]["mean"] - e["true"]["plug_in"]["mean"] for e in entries]
        out[f"{name}/recommended_minus_plug_in"] = {"mean": float(np.mean(wins)), "per_draw": wins}
        out[f"{name}/design_seconds"] = [e["design_seconds"] for e in entries]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(6)))
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--lower", type=float, default=0.0)
    parser.add_argument("--upper", type=float, default=0.6)
    parser.add_argument("--target", type=float, default=0.1)
    parser.add_argument("--design-episodes", type=int, default=10)
    parser.add_argument("--candidates", type=int, default=32)
    parser.add_argument("--refinements", type=int, default=4)
    parser.add_argument("--oracle-draws", type=int, default=200)
    parser.add_argument("--oracle-candidates", type=int, default=None, help="default: --candidates")
    parser.add_argument("--oracle-refinements", type=int, default=None, help="default: --refinements")
    parser.add_argument("--reuse", action="store_true",
                        help="take fits and designs from --out's rows; recompute the oracle and the true objectives")
    parser.add_argument("--truth-episodes", type=int, default=20_000)
    parser.add_argument("--load", default="not stated")
    parser.add_argument("--out", default=str(HERE / "results" / "design_regret.json"))
    args = parser.parse_args()
    import tempfile

    from experiments import reproduce as rp

    rows = []
    previous = {r["seed"]: r for r in json.loads(Path(args.out).read_text())["rows"]} if args.reuse else {}
    with tempfile.TemporaryDirectory() as folder:
        for seed in args.seeds:
            rows.append(run_seed(seed, args, Path(folder), previous.get(seed) if args.reuse else None))
            print(json.dumps(rp._jsonable(rows[-1])), flush=True)
            document = {"settings": {k: v for k, v in vars(args).items() if k != "out"}, "machine": rp._machine(),
                        "command": " ".join(sys.argv), "rows": rows, "summary": summary(rows)}
            Path(args.out).write_text(json.dumps(rp._jsonable(document), indent=1), encoding="utf-8")
    print(json.dumps(rp._jsonable(document["summary"]), indent=1))


if __name__ == "__main__":
    main()
