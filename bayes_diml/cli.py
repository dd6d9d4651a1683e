"""The ``bayes-diml`` command line: a thin layer over the public API.

Every verb reports bad arguments or files in one line on stderr and exits with
status 2, never with a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import DataError

__all__ = ["main"]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def _refuse_existing(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise DataError(f"{path} exists; pass --overwrite to replace it")


# ------------------------------------------------------------------ verbs
def cmd_check(args) -> int:
    from .loading import load_data
    from .spec import read_spec

    model = read_spec(args.spec)[0] if args.spec else None
    data = load_data(args.data, model)
    summary = data.summary()
    print(f"{args.data}: OK")
    for key, value in summary.items():
        print(f"  {key}: {value}")
    if model is not None:
        print(f"  consistent with {args.spec} ({model.mechanism.family}, {model.learner.name})")
    return 0


def cmd_simulate(args) -> int:
    from .simulate import simulate
    from .spec import read_spec

    model, truth = read_spec(args.spec)
    if truth is None:
        raise DataError(f"{args.spec}: has no [mechanism.truth]; simulation needs true parameters")
    out = Path(args.out)
    _refuse_existing(out, args.overwrite)
    data = simulate(model, truth, num_episodes=args.episodes, num_rounds=args.rounds, seed=args.seed)
    if out.suffix.lower() in (".parquet", ".pq"):
        data.to_parquet(out)
    else:
        data.to_csv(out)
    print(f"wrote {out}: {args.episodes} episodes x {args.rounds} rounds x {model.num_agents} agents (seed {args.seed})")
    return 0


# ------------------------------------------------------------------ parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bayes-diml",
        description="Bayesian inverse mechanism learning from the play of learning agents.",
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    p = verbs.add_parser("check", help="validate a data file (and its fit with a spec) and summarise it")
    p.add_argument("data", help="long-format CSV or Parquet: episode,round,agent,action[,payoff]")
    p.add_argument("--spec", help="model spec (TOML) to check the data against")
    p.set_defaults(func=cmd_check)

    p = verbs.add_parser("simulate", help="simulate play from a spec's true parameters")
    p.add_argument("spec", help="model spec (TOML) with [mechanism.truth]")
    p.add_argument("--episodes", type=_positive_int, required=True)
    p.add_argument("--rounds", type=_positive_int, required=True)
    p.add_argument("--seed", type=_nonnegative_int, default=0)
    p.add_argument("--out", required=True, help="output file (.csv or .parquet)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(func=cmd_simulate)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except DataError as err:  # SpecError is a DataError
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
