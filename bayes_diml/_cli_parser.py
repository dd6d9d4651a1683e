"""The argument parser of the ``bayes-diml`` command line (``cli.py`` holds the verbs and ``main``).

One small function per verb adds its subparser; ``build_parser`` adds them in the
order of ``VERBS`` (the order ``--help`` lists them) and sets each verb's ``func``
to the command that ``cli.py`` passes for it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping

__all__ = ["build_parser", "VERBS"]


# ------------------------------------------------------------------ argument types
def _int_at_least(minimum: int, what: str):
    """An argparse type: an integer >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected a {what} integer, got {text!r}")
        return value

    return parse


_positive_int = _int_at_least(1, "positive")
_nonnegative_int = _int_at_least(0, "non-negative")


def _sizes(text: str) -> tuple[int, ...]:
    """An argparse type: comma-separated positive integers (``3,6,12,24,48``)."""
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers such as 3,6,12,24,48, got {text!r}")
    return sizes


# ------------------------------------------------------------------ arguments of several verbs
def _run(p, help: str = "run folder written by 'fit'") -> None:
    p.add_argument("run", help=help)


def _episodes_and_rounds(p) -> None:
    p.add_argument("--episodes", type=_positive_int, required=True)
    p.add_argument("--rounds", type=_positive_int, required=True)


def _seed(p, help: str | None = None) -> None:
    p.add_argument("--seed", type=_nonnegative_int, default=0, help=help)


def _overwrite(p, help: str | None = None) -> None:
    p.add_argument("--overwrite", action="store_true", help=help)


# ------------------------------------------------------------------ the parser
def build_parser(commands: Mapping[str, Callable]) -> argparse.ArgumentParser:
    """The parser of every verb of ``VERBS``; ``commands[verb]`` becomes its ``func``."""
    parser = argparse.ArgumentParser(
        prog="bayes-diml",
        description="Bayesian inverse mechanism learning from the play of learning agents.",
    )
    parser.add_argument(
        "--x64",
        action="store_true",
        help="compute in float64 (JAX's x64 mode) for this command; default float32",
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb, add in VERBS:
        add(verbs).set_defaults(func=commands[verb])
    return parser


# ------------------------------------------------------------------ one function per verb
def _check(verbs) -> argparse.ArgumentParser:
    p = verbs.add_parser("check", help="validate a data file (and its fit with a spec) and summarise it")
    p.add_argument("data", help="long-format CSV or Parquet: episode,round,agent,action[,payoff]")
    p.add_argument("--spec", help="model spec (TOML) to check the data against")
    return p


def _simulate(verbs) -> argparse.ArgumentParser:
    p = verbs.add_parser("simulate", help="simulate play from a spec's true parameters")
    p.add_argument("spec", help="model spec (TOML) with [mechanism.truth]")
    _episodes_and_rounds(p)
    _seed(p)
    p.add_argument("--out", required=True, help="output file (.csv or .parquet)")
    _overwrite(p, "replace an existing output")
    return p


def _fit(verbs) -> argparse.ArgumentParser:
    p = verbs.add_parser("fit", help="fit a model to data and write a run folder")
    p.add_argument("spec", help="model spec (TOML)")
    p.add_argument("--data", required=True, help="long-format CSV or Parquet")
    p.add_argument(
        "--method", choices=("auto", "nuts", "svi", "map", "laplace_grid"), default="auto",
        help="inference method (default auto: NUTS for tabular and structured families and the neural function-space "
             "prior, the Laplace grid for the anonymous function-space prior, low-rank SVI for networks with a prior "
             "over their weights; the run says which ran and why)",
    )
    p.add_argument("--out", required=True, help="run folder to create")
    _seed(p)
    p.add_argument("--chains", type=_positive_int, help="NUTS chains (default 4; with auto, what it picks)")
    p.add_argument("--warmup", type=_positive_int, help="NUTS warmup iterations (default 500; with auto, what it picks)")
    p.add_argument("--samples", type=_positive_int,
                   help="draws per chain (NUTS) or from the guide (SVI) (default 500; with auto, what it picks)")
    p.add_argument("--steps", type=_positive_int, help="SVI / MAP optimisation steps (default 2000)")
    p.add_argument("--accept-uncalibrated", action="store_true",
                   help="run SVI on a neural (weight-space) or anonymous mechanism without the warning that its "
                        "intervals were measured too narrow")
    _overwrite(p, "replace an existing run folder written by bayes-diml (never any other folder or file)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _query(verbs) -> argparse.ArgumentParser:
    p = verbs.add_parser("query", help="posterior of payoff differences for query rows")
    _run(p)
    p.add_argument("--queries", required=True, help="CSV with columns agent,action,baseline,joint")
    p.add_argument("--out", required=True, help="answers CSV")
    _overwrite(p)
    return p


def _counterfactual(verbs) -> argparse.ArgumentParser:
    p = verbs.add_parser("counterfactual", help="credible play under a changed mechanism or learner")
    _run(p)
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="mechanism.NAME=VALUE (replace), mechanism.NAME+=VALUE or mechanism.NAME*=VALUE (change "
                        "each draw's value), the same for learner.NAME (a number or a [list]); learner.NAME=\"*0.6\" "
                        "also scales")
    _episodes_and_rounds(p)
    _seed(p)
    p.add_argument("--max-draws", type=_positive_int, default=200,
                   help="posterior draws simulated, spread evenly over chains (default 200)")
    p.add_argument("--out", required=True, help="output CSV (a PNG is written beside it; both are also recorded in RUN/counterfactuals/)")
    _overwrite(p)
    return p


def _design(verbs) -> argparse.ArgumentParser:
    p = verbs.add_parser("design", help="the lever values that maximise a posterior expected objective of simulated play")
    _run(p)
    p.add_argument("--lever", required=True, help="the mechanism parameter to set, e.g. tau (declared known in [mechanism.known])")
    p.add_argument("--lower", required=True, help="lower bound: a number or a JSON list, one value per entry of the lever")
    p.add_argument("--upper", required=True, help="upper bound: a number or a JSON list")
    p.add_argument("--objective", default="welfare",
                   help="welfare, net_welfare (without the transfers the lever pays or charges) or share:ACTION "
                        "(the share of plays on ACTION over the last quarter of rounds) (default welfare)")
    p.add_argument("--target", type=float, default=None, help="with share:ACTION: aim at this share (-(share - X)^2)")
    p.add_argument("--risk", default="mean", help="mean, or cvar:q (the mean of the worst q share of draws) (default mean)")
    _episodes_and_rounds(p)
    _seed(p)
    p.add_argument("--max-draws", type=_positive_int, default=200, help="posterior draws, spread evenly over chains (default 200)")
    p.add_argument("--candidates", type=_positive_int, default=32, help="candidates per compiled batch (default 32)")
    p.add_argument("--refinements", type=_nonnegative_int, default=4, help="rounds of local refinement (default 4)")
    p.add_argument("--out", required=True, help="output JSON (also recorded in RUN/designs/)")
    _overwrite(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _report(verbs) -> argparse.ArgumentParser:
    p = verbs.add_parser("report", help="write RUN/report.html: one self-contained page on a run folder")
    _run(p, "run folder written by 'fit' or 'demo'")
    _overwrite(p, "replace an existing RUN/report.html (a file only)")
    return p


def _compare(verbs) -> argparse.ArgumentParser:
    p = verbs.add_parser("compare", help="rank run folders of the same data by PSIS-LOO over episodes")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders written by 'fit' (at least two)")
    p.add_argument("--out", default="compare.csv", help="comparison table CSV (default compare.csv)")
    _overwrite(p, "replace an existing output")
    return p


def _reproduce(verbs) -> argparse.ArgumentParser:
    p = verbs.add_parser(
        "reproduce", help="the DIML paper's experiments with baselines and Bayesian fits",
        description="Without --data-sizes: the reproduction table, benchmarks/results/paper.json and paper.md. "
                    "With --data-sizes M1,M2,...: the data-size study instead (experiments/data_size.py): per seed one "
                    "simulation at the paper's sizes, a fixed 20% test split, each estimator fitted on the first M "
                    "training episodes; writes data_size_<setting>[_scaled][_quick].json, .md and .png "
                    "(relative payoff-difference error against training episodes).",
    )
    p.add_argument("experiments", nargs="+", choices=("E1", "E2", "E3", "E7"), metavar="{E1,E2,E3,E7}")
    p.add_argument("--seeds", type=_positive_int, default=3, help="truth draws per experiment (seed 0 = models/ truth)")
    p.add_argument("--first-seed", type=int, default=0, metavar="S",
                   help="start at truth draw S (with --estimator: add seeds S..N-1 to an existing table)")
    p.add_argument("--quick", action="store_true", help="tiny data and the cheap estimators only (CI)")
    p.add_argument("--variants", default=None,
                   help="comma-separated: paper, scaled (default both; paper only with --data-sizes)")
    p.add_argument("--out", default=None, help="output folder (default benchmarks/results of the checkout)")
    p.add_argument("--no-cache", action="store_true", help="no persistent XLA compilation cache")
    _overwrite(p, "replace existing result files of the same names in --out (never a folder)")
    p.add_argument("--estimator", dest="estimators", action="append", metavar="NAME",
                   help="run only this estimator (repeatable) and replace its rows in an existing paper.json; "
                        "with --data-sizes, the estimators of the study (default: MAP, NUTS and DIML of the experiment)")
    p.add_argument("--data-sizes", type=_sizes, default=None, metavar="M1,M2,...",
                   help="run the data-size study with these training-episode counts, e.g. 3,6,12,24,48 "
                        "(at most the training split: 48 for E1-E3, 8 with --quick)")
    return p


def _evaluate(verbs) -> argparse.ArgumentParser:
    p = verbs.add_parser("evaluate", help="held-out predictive NLL (and payoff-difference errors) of a fitted run")
    _run(p)
    p.add_argument("--data", required=True, help="held-out data (CSV or Parquet)")
    p.add_argument("--spec", help="spec with [mechanism.truth]: adds the payoff-difference metrics")
    _seed(p, "seed of the query sample")
    return p


def _demo(verbs) -> argparse.ArgumentParser:
    p = verbs.add_parser("demo", help="simulate the embedded congestion game, fit it, compare with the truth")
    p.add_argument("--out", default="bayes-diml-demo", help="run folder to create (default bayes-diml-demo)")
    _seed(p)
    _overwrite(p, "replace an existing run folder written by bayes-diml")
    p.add_argument("--no-progress", action="store_true")
    return p


def _bench(verbs) -> argparse.ArgumentParser:
    p = verbs.add_parser(
        "bench",
        help="speed benchmark: seconds per epoch, compile time, memory (benchmarks/speed.py; --help there)",
        add_help=False,
    )
    p.add_argument("options", nargs=argparse.REMAINDER, help="passed to benchmarks/speed.py, e.g. --quick --settings E1 E2")
    return p


VERBS = (
    ("check", _check),
    ("simulate", _simulate),
    ("fit", _fit),
    ("query", _query),
    ("counterfactual", _counterfactual),
    ("design", _design),
    ("report", _report),
    ("compare", _compare),
    ("reproduce", _reproduce),
    ("evaluate", _evaluate),
    ("demo", _demo),
    ("bench", _bench),
)
"""(verb, the function adding its subparser), in the order ``--help`` lists them."""
