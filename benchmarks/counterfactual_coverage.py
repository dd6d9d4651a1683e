"""Do counterfactual bands hold the truth? (issue 18, point 3)

For each truth draw ``s`` of a game (``E2``: reproduce's congestion game, 4 agents x 5
resources, truth ``experiments.reproduce.draw_truth(model, spec_truth, s)``, 60 x 60
episodes simulated with data seed ``2000 + s`` exactly as ``bayes-diml reproduce``;
``tabular``: a 2-agent x 3-action tabular game, payoffs uniform on [0, 1] from key ``s``,
the same learners, 60 x 60, or with ``--truth prior`` payoffs drawn from the prior the fit
uses, where Bayesian bands are calibrated on average by construction; ``--train-episodes``
fewer for wider posteriors), this study

1. fits NUTS (``bd.fit(method="nuts")``, ``--chains`` x (``--warmup`` + ``--samples``),
   fit seed ``s``) on the simulated play;
2. runs ``bd.counterfactual`` for identified interventions (``E2``: the paper's learner
   shift ``alpha *0.6, beta *1.4, eps *1.5``; a toll increase ``tau += [0.1, 0, 0, 0.05, 0]``;
   ``c2`` replaced by ``[0.08, 0.08, 0.08, 0.08, 0.08]``; ``tabular``: the learner shift
   and ``payoffs += 0.3`` on the first action's rows of agent 0) with ``--cf-episodes``
   simulated episodes per posterior draw (200 draws), 60 rounds;
3. computes the truth the bands claim to hold: the *expected* play of the true mechanism
   under the same intervention, applied here by hand to the true parameters (an independent
   path: no ``_interventions`` code), averaged over ``--truth-episodes`` simulated episodes
   (Monte Carlo sd of a share below 0.004 at 20,000 episodes x 4 agents);
4. scores each 90% band: per-round action shares (60 rounds x A actions), the share of each
   action over the last quarter of the rounds (what ``design``'s ``share:`` objective reads),
   and, where the welfare is identified (congestion), per-round and mean welfare. A band is
   over draws of the mean of ``--cf-episodes`` simulated episodes, so it carries Monte Carlo
   noise beside the posterior's spread; ``share_mc_sd`` gives that noise's size. So the
   per-round shares are also scored against one realisation of the true play with the same
   number of episodes (``realised_share``, fresh seed): the band is exactly a posterior
   predictive interval for that, with no Monte Carlo slack.

A data set's bands move together (one posterior), so the coverage is pooled over truth
draws and its spread is given per draw; the pooled figure's uncertainty is driven by the
number of draws, not of cells. Writes ``--out`` (JSON with the machine, settings, load and
per-draw rows). Usage::

    python benchmarks/counterfactual_coverage.py --game E2 --seeds 0 1 2 3 4 5 6 7 [--load idle]
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
QUANTITIES = ("share", "realised_share", "late_share", "welfare", "mean_welfare")
EPISODES = 60
LEARNER_SHIFT = {"alpha": 0.6, "beta": 1.4, "eps": 1.5}
TABULAR_SPEC = """[game]
agents = 2
actions = 3

[mechanism]
family = "tabular"

[learner]
rule = "logit_q"
alpha = 0.25
beta = 3.0
eps = 0.06
"""


def _game(game: str, seed: int, train_episodes: int, truth_source: str = "uniform"):
    """Model, true parameters and the simulated training play of truth draw ``seed``."""
    import jax

    import bayes_diml as bd
    from experiments import reproduce as rp

    if game == "E2":
        setting = rp.EXPERIMENTS["E2"][0]
        model, truth, _, data = rp._setting_data(setting, "paper", seed, rp.Settings(episodes=train_episodes))
        return model, truth, data
    path = HERE / "results" / "counterfactual_coverage" / "tabular.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(TABULAR_SPEC, encoding="utf-8")
    model, _ = bd.read_spec(path)
    if truth_source == "prior":  # a draw from the fitted prior: Bayesian coverage is then exact on average
        from bayes_diml.calibration import _natural_params, _prior_latents

        mechanism = _natural_params(model, _prior_latents(model, jax.random.key(seed)))["mechanism"]
    else:
        mechanism = model.mechanism.init_params(jax.random.key(seed))
    truth = {"mechanism": {k: np.asarray(v) for k, v in mechanism.items()}, "learner": model.fixed_learner_params}
    data = bd.simulate(model, truth, num_episodes=train_episodes, num_rounds=ROUNDS, seed=2000 + seed)
    return model, truth, data


def _interventions(game: str, model) -> dict:
    """name -> (counterfactual kwargs, function of the true parameters giving the intervened truth)."""

    def shifted_learner(truth):
        learner = {k: np.asarray(v) * LEARNER_SHIFT.get(k, 1.0) for k, v in truth["learner"].items()}
        return {"mechanism": truth["mechanism"], "learner": learner}

    shift = {"learner": {k: f"*{f}" for k, f in LEARNER_SHIFT.items()}}
    if game == "E2":
        toll = np.array([0.1, 0.0, 0.0, 0.05, 0.0])
        c2 = np.full(5, 0.08)

        def toll_up(truth):
            return {"mechanism": {**truth["mechanism"], "tau": np.asarray(truth["mechanism"]["tau"]) + toll},
                    "learner": truth["learner"]}

        def new_c2(truth):
            return {"mechanism": {**truth["mechanism"], "c2": c2}, "learner": truth["learner"]}

        return {"learner_shift": (shift, shifted_learner),
                "toll_increase": ({"mechanism": {"tau": ("+", toll.tolist())}}, toll_up),
                "c2_replaced": ({"mechanism": {"c2": c2.tolist()}}, new_c2)}
    shape = model.mechanism.param_shapes()["payoffs"]
    delta = np.zeros(shape)  # +0.3 to agent 0's payoff wherever agent 0 plays the first action
    joint = np.array(np.unravel_index(np.arange(shape[0]), (model.num_actions,) * model.num_agents)).T
    delta[joint[:, 0] == 0, 0] = 0.3

    def raise_first(truth):
        return {"mechanism": {"payoffs": np.asarray(truth["mechanism"]["payoffs"]) + delta}, "learner": truth["learner"]}

    return {"learner_shift": (shift, shifted_learner),
            "payoff_raise": ({"mechanism": {"payoffs": ("+", delta.tolist())}}, raise_first)}


def _true_play(model, truth, episodes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Expected per-round action shares ``(T, A)`` and welfare ``(T,)`` of the true mechanism."""
    import jax
    import jax.numpy as jnp

    import bayes_diml as bd

    truth = {part: {k: jnp.asarray(v, dtype=jnp.float32) for k, v in values.items()} for part, values in truth.items()}
    play = bd.simulate(model, truth, num_episodes=episodes, num_rounds=ROUNDS, seed=seed)
    actions = np.asarray(play.actions)  # (E, T, n)
    A = model.num_actions
    shares = np.stack([(actions == k).mean(axis=(0, 2)) for k in range(A)], axis=1)
    joint = jnp.asarray(actions.reshape(-1, actions.shape[-1]))
    payoffs = np.asarray(jax.vmap(lambda a: model.mechanism.payoffs(truth["mechanism"], a))(joint))
    welfare = payoffs.sum(axis=-1).reshape(actions.shape[:2]).mean(axis=0)
    return shares, welfare


def _scored(quantity: str, draws: np.ndarray, truth: np.ndarray) -> dict:
    """Cells, cells whose 90% equal-tailed band over draws holds ``truth``, mean band width."""
    lo, hi = np.quantile(draws, 0.05, axis=0), np.quantile(draws, 0.95, axis=0)
    return {f"{quantity}_cells": int(truth.size), f"{quantity}_covered": int(((lo <= truth) & (truth <= hi)).sum()),
            f"{quantity}_mean_width": float((hi - lo).mean())}


def run_seed(game: str, seed: int, args) -> dict:
    import bayes_diml as bd

    model, truth, data = _game(game, seed, args.train_episodes, args.truth)
    start = time.perf_counter()
    fit = bd.fit(model, data, method="nuts", seed=seed, progress=False, num_chains=args.chains,
                 num_warmup=args.warmup, num_samples=args.samples)
    fit_seconds = time.perf_counter() - start
    rows = {}
    for name, (kwargs, apply) in _interventions(game, model).items():
        result = bd.counterfactual(fit, num_episodes=args.cf_episodes, num_rounds=ROUNDS, seed=seed, **kwargs)
        shares, welfare = _true_play(model, apply(truth), args.truth_episodes, 10_000 + seed)
        freq = result.draws["frequency"]  # (S, T, A)
        late = slice(ROUNDS - ROUNDS // 4, ROUNDS)
        row = {"identified": result.identified,
               # Monte Carlo sd of one draw's per-round share from cf-episodes x agents plays
               "share_mc_sd": float(np.sqrt(shares * (1 - shares) / (args.cf_episodes * model.num_agents)).mean())}
        row.update(_scored("share", freq, shares))
        realised, _ = _true_play(model, apply(truth), args.cf_episodes, 20_000 + seed)
        row.update(_scored("realised_share", freq, realised))
        row.update(_scored("late_share", freq[:, late].mean(axis=1), shares[late].mean(axis=0)))
        if result.welfare_identified:
            w = result.draws["welfare"]
            row.update(_scored("welfare", w, welfare))
            row.update(_scored("mean_welfare", w.mean(axis=1, keepdims=True), welfare.mean(keepdims=True)))
        rows[name] = row
    diagnostics = fit.diagnostics()
    return {"seed": seed, "fit_seconds": fit_seconds, "interventions": rows, "max_rhat": diagnostics.get("max_rhat"),
            "divergences": diagnostics.get("divergences")}


def pooled(rows: list[dict]) -> dict:
    """Coverage pooled over draws, per intervention and quantity, with the per-draw spread."""
    out = {}
    names = sorted({name for row in rows for name in row["interventions"]})
    for name in names:
        for quantity in QUANTITIES:
            per = [r["interventions"][name] for r in rows if f"{quantity}_cells" in r["interventions"].get(name, {})]
            if not per:
                continue
            rates = [p[f"{quantity}_covered"] / p[f"{quantity}_cells"] for p in per]
            out[f"{name}/{quantity}"] = {
                "coverage": sum(p[f"{quantity}_covered"] for p in per) / sum(p[f"{quantity}_cells"] for p in per),
                "per_draw": rates, "draws": len(per),
                "sd_between_draws": float(np.std(rates, ddof=1)) if len(rates) > 1 else None}
    every = [p for r in rows for p in r["interventions"].values()]
    for quantity in QUANTITIES:
        cells = sum(p.get(f"{quantity}_cells", 0) for p in every)
        if cells:
            out[f"all/{quantity}"] = {"coverage": sum(p.get(f"{quantity}_covered", 0) for p in every) / cells}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--game", choices=["E2", "tabular"], default="E2")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(8)))
    parser.add_argument("--train-episodes", type=int, default=EPISODES)
    parser.add_argument("--truth", choices=["uniform", "prior"], default="uniform",
                        help="tabular truths: payoffs uniform on [0, 1], or a draw from the fitted prior")
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--cf-episodes", type=int, default=400)
    parser.add_argument("--truth-episodes", type=int, default=20_000)
    parser.add_argument("--load", default="not stated")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    from experiments import reproduce as rp

    suffix = "_prior" if args.truth == "prior" else ""
    out = Path(args.out or HERE / "results" / "counterfactual_coverage" / f"{args.game}_{args.train_episodes}x{ROUNDS}{suffix}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in args.seeds:
        rows.append(run_seed(args.game, seed, args))
        print(json.dumps(rows[-1]), flush=True)
        document = {"game": args.game, "settings": {k: v for k, v in vars(args).items() if k != "out"},
                    "machine": rp._machine(), "command": " ".join(sys.argv), "rows": rows, "pooled": pooled(rows)}
        out.write_text(json.dumps(rp._jsonable(document), indent=1), encoding="utf-8")
    print(json.dumps(document["pooled"], indent=1))


if __name__ == "__main__":
    main()
