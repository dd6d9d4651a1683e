"""The ``bayes-diml`` command line: a thin layer over the public API.

Every verb reports bad arguments or files, and a fit that met NaN
(``FitError``), in one line on stderr and exits with status 2, never with a
traceback. Any other (unexpected) exception is written whole to a log file and
reported in one line naming it, exit status 1. Ctrl-C exits with status 130 and
one line; outputs are written atomically, so an interrupted verb leaves nothing
half-written (and, with ``--overwrite``, the old output as it was).
``--overwrite`` replaces only what a verb writes: a run folder this package
wrote (``fit``, ``demo``), or a file (the other verbs), never anything else
(``inference.storage.check_run_folder`` / ``check_output_file``).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from . import _cli_design, _cli_parser
from .errors import DataError, FitError, MisfitWarning, UncalibratedWarning, UnidentifiedWarning

__all__ = ["main"]


def _check_out_file(path: Path, overwrite: bool) -> None:
    """A one-file output: new, or an existing file with ``--overwrite`` (never a folder)."""
    from .inference.storage import check_output_file

    check_output_file(path, overwrite)


def _check_out_folder(path: Path, overwrite: bool) -> None:
    """A run-folder output: new, or a run folder this package wrote with ``--overwrite``."""
    from .inference.storage import check_run_folder

    check_run_folder(path, overwrite)


# ------------------------------------------------------------------ verbs
def cmd_check(args) -> int:
    from .loading import load_data
    from .spec import read_spec

    model, truth = read_spec(args.spec) if args.spec else (None, None)
    data = load_data(args.data, model)
    if model is not None:  # the refusals of `fit`, so that what check passes, fit accepts
        from .inference.fit import check_fit_inputs

        check_fit_inputs(model, data, source=str(args.data))
    summary = data.summary()
    print(f"{args.data}: OK")
    for key, value in summary.items():
        print(f"  {key}: {value}")
    if model is not None:
        print(f"  consistent with {args.spec} ({model.mechanism.family}, {model.learner.name})")
        labels = model.action_labels if model.action_labels is not None else data.action_labels
        agents = model.agent_labels if model.agent_labels is not None else data.agent_labels
        lines = model.mechanism.truth_lines(truth["mechanism"], labels, agents) if truth is not None else []
        if lines:
            print(f"  [mechanism.truth] {lines[0]}")
            for line in lines[1:]:
                print(f"    {line}")
    return 0


def cmd_simulate(args) -> int:
    from .simulate import simulate
    from .spec import read_spec

    model, truth = read_spec(args.spec)
    if truth is None:
        raise DataError(f"{args.spec}: has no [mechanism.truth]; simulation needs true parameters")
    try:
        model.learner_values(truth["learner"])
    except DataError as err:
        raise DataError(f"{args.spec}: {err}") from None
    out = Path(args.out)
    _check_out_file(out, args.overwrite)
    data = simulate(model, truth, num_episodes=args.episodes, num_rounds=args.rounds, seed=args.seed)
    if out.suffix.lower() in (".parquet", ".pq"):
        data.to_parquet(out)
    else:
        data.to_csv(out)
    print(f"wrote {out}: {args.episodes} episodes x {args.rounds} rounds x {model.num_agents} agents (seed {args.seed})")
    return 0


_FIT_FLAGS = {  # flag's attribute -> (fit option, default with an explicit --method)
    "chains": ("num_chains", 4),
    "warmup": ("num_warmup", 500),
    "samples": ("num_samples", 500),
    "steps": ("steps", 2000),
}
_METHOD_FLAGS = {"nuts": ("chains", "warmup", "samples"), "svi": ("steps", "samples"), "map": ("steps",),
                 "laplace_grid": ("samples",)}


def _method_options(args) -> dict:
    """The fit's options from the flags: with an explicit method, its flags (given or
    their defaults); with ``auto``, only the flags given (``fit`` drops those the chosen
    method does not take, and the rule's own settings fill the rest)."""
    options = {"progress": not args.no_progress}
    for flag in _METHOD_FLAGS.get(args.method, tuple(_FIT_FLAGS)):
        name, default = _FIT_FLAGS[flag]
        value = getattr(args, flag)
        if value is not None or args.method != "auto":
            options[name] = default if value is None else value
    return options


def _uncalibrated_printer(previous):
    """A ``warnings.showwarning`` for ``fit`` and ``counterfactual``: an ``UncalibratedWarning``,
    ``UnidentifiedWarning`` or ``MisfitWarning`` as one ``warning: ...`` line on stderr, any other warning
    passed to ``previous``."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if issubclass(category, (UncalibratedWarning, UnidentifiedWarning, MisfitWarning)):
            print(f"warning: {message}", file=sys.stderr, flush=True)
        else:
            previous(message, category, filename, lineno, file, line)

    return show


def cmd_fit(args) -> int:
    from .errors import UncalibratedWarning
    from .inference import fit
    from .loading import load_data
    from .run_folder import save_run
    from .spec import read_spec

    model, _ = read_spec(args.spec)
    out = Path(args.out)
    _check_out_folder(out, args.overwrite)
    data = load_data(args.data, model)
    with warnings.catch_warnings():
        warnings.simplefilter("always", UncalibratedWarning)
        warnings.showwarning = _uncalibrated_printer(warnings.showwarning)
        result = fit(
            model, data, method=args.method, seed=args.seed, accept_uncalibrated=args.accept_uncalibrated,
            **_method_options(args),
        )
    saved = save_run(result, out, overwrite=args.overwrite, data_path=args.data)
    print(f"wrote {out}/ ({result.method}, {result.info['wall_seconds']:.1f} s)")
    print(_method_line(result.info))
    _print_verdicts(saved)
    return 0


def _method_line(info: dict) -> str:
    """Which method ran and why, in one line."""
    if info.get("method_requested") == "auto":
        return f"method: {info.get('method')} (chosen by --method auto: {info.get('method_reason', '')})"
    return f"method: {info.get('method')} (as requested with --method)"


def _print_verdicts(saved) -> None:
    diagnostics = saved["diagnostics"]
    if diagnostics["warnings"]:
        print("diagnostics:")
        for warning in diagnostics["warnings"]:
            print(f"  - {warning}")
    else:
        print(
            f"diagnostics: OK (max R-hat {diagnostics['max_rhat']:.3f}, min ESS {diagnostics['min_ess_bulk']:.0f}, "
            f"{diagnostics['divergences']} divergences)"
        )
    print(saved["identifiability"].verdict())


def cmd_query(args) -> int:
    from .inference import load_fit

    out = Path(args.out)
    _check_out_file(out, args.overwrite)
    answers = load_fit(args.run).payoff_differences(args.queries)
    from .inference.storage import write_text_atomic

    write_text_atomic(out, answers.to_csv(index=False))
    print(f"wrote {out}: {len(answers)} payoff differences")
    return 0


def _parse_set(items) -> tuple[dict, dict]:
    """``--set mechanism.tau=[...]`` / ``--set learner.beta=4.2`` as TOML literals (never evaluated).

    ``NAME=VALUE`` replaces the parameter in every draw; ``NAME+=VALUE`` and ``NAME*=VALUE``
    change each draw's value element-wise (``("+", value)`` / ``("*", value)`` in Python);
    ``learner.NAME=*0.6`` (or ``"*0.6"``) still scales a learner parameter."""
    import json
    import tomllib

    mechanism, learner = {}, {}
    for item in items or []:
        if "=" not in item:
            raise DataError(f"--set {item!r}: expected KEY=VALUE, e.g. mechanism.tau=[0.3,0,0,0,0] or learner.beta=4.2")
        key, text = item.split("=", 1)
        op = "="
        if key.rstrip().endswith(("+", "*")):  # mechanism.tau+=[...], learner.beta*=1.4
            op, key = key.rstrip()[-1], key.rstrip()[:-1]
        elif text.strip().startswith("*"):  # the shell ate the quotes of "*0.6"
            text = '"' + text.strip() + '"'
        scope, _, name = key.strip().partition(".")
        if scope not in ("mechanism", "learner") or not name:
            raise DataError(f"--set {item!r}: the key must be mechanism.NAME or learner.NAME")
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                raise DataError(f"--set {item!r}: the value is not a TOML/JSON literal (numbers, [lists], \"*0.6\")") from None
        if op != "=" and isinstance(value, str):
            raise DataError(f"--set {item!r}: after {op}= give numbers (a number or a [list]), not a string")
        target = mechanism if scope == "mechanism" else learner
        if name in target:
            raise DataError(f"--set {key.strip()} is given twice; give each parameter once")
        target[name] = value if op == "=" else (op, value)
    return mechanism, learner


def cmd_counterfactual(args) -> int:
    from .inference import load_fit
    from .inference.storage import write_text_atomic
    from .report import save_counterfactual

    out = Path(args.out)
    _check_out_file(out, args.overwrite)
    _check_out_file(out.with_suffix(".png"), args.overwrite)
    mechanism, learner = _parse_set(args.set)
    fit = load_fit(args.run)
    with warnings.catch_warnings():  # an UnidentifiedWarning as one 'warning: ...' line on stderr
        warnings.simplefilter("always", UnidentifiedWarning)
        warnings.showwarning = _uncalibrated_printer(warnings.showwarning)
        result = fit.counterfactual(
            mechanism=mechanism or None,
            learner=learner or None,
            num_episodes=args.episodes,
            num_rounds=args.rounds,
            seed=args.seed,
            max_draws=args.max_draws,
        )
    write_text_atomic(out, result.to_frame().to_csv(index=False))
    figure = out.with_suffix(".png")
    result.plot().savefig(figure, dpi=110)
    print(f"wrote {out} and {figure}")
    try:  # a copy in the run folder, for `bayes-diml report`
        record = save_counterfactual(
            args.run, result, out.stem, command=["bayes-diml", *args.command_line], overwrite=args.overwrite
        )
        print(f"recorded in {record.parent}/ for 'bayes-diml report'")
    except OSError as err:  # e.g. a read-only run folder: the result above is complete
        print(f"note: not recorded in {args.run} ({err.strerror or err})", file=sys.stderr)
    return 0


def cmd_report(args) -> int:
    from .report import write_report

    print(f"wrote {write_report(args.run, overwrite=args.overwrite)}")
    return 0


def cmd_compare(args) -> int:
    import warnings

    from .inference.comparison import compare

    out = Path(args.out)
    _check_out_file(out, args.overwrite)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = compare(args.runs)
    import pandas as pd

    with pd.option_context("display.max_columns", None, "display.width", 200):
        print(table.round(2).to_string())
    for message in table.attrs.get("warnings", []):
        print(f"warning: {message}")
    from .inference.storage import write_text_atomic

    write_text_atomic(out, table.to_csv(index_label="model"))
    print(f"wrote {out}")
    return 0


def _experiments(module: str):
    """``experiments.<module>`` of the source checkout beside this installation: the paper
    study is not part of the library (nor of a wheel)."""
    import importlib

    root = Path(__file__).resolve().parents[1]
    if not (root / "experiments" / f"{module}.py").is_file():
        raise DataError(
            "reproduce runs experiments/ of a source checkout (the paper study, not part of the library); "
            f"none beside this installation ({root}): clone the repository and install it with pip -e"
        )
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    found = importlib.import_module(f"experiments.{module}")
    if Path(found.__file__).resolve().parent != root / "experiments":
        raise DataError(f"reproduce: experiments.{module} was imported from {found.__file__}, not from the checkout {root}")
    return found


def cmd_reproduce(args) -> int:
    study = _experiments("reproduce")

    if args.data_sizes is not None:
        return _data_size_study(args)
    variants = args.variants or "paper,scaled"
    document = study.reproduce(
        args.experiments, seeds=args.seeds, quick=args.quick, out=args.out, variants=tuple(variants.split(",")),
        cache_dir=None if args.no_cache else "default",
        estimators=tuple(args.estimators) if args.estimators else None, first_seed=args.first_seed,
        overwrite=args.overwrite,
    )
    out = Path(args.out) if args.out else study.DEFAULT_OUT
    stem = "paper_quick" if args.quick else "paper"
    failed = sum(r.get("status") == "failed" for r in document["rows"])
    print(f"wrote {out / (stem + '.json')} and {out / (stem + '.md')} ({document['wall_seconds']:.0f} s, {failed} failed cells)")
    return 0


def _data_size_study(args) -> int:
    """``reproduce --data-sizes``: the data-size study of each setting of each experiment."""
    study = _experiments("data_size")
    registry = _experiments("reproduce").EXPERIMENTS

    for experiment in args.experiments:
        for setting in registry[experiment]:
            for variant in (args.variants or "paper").split(","):
                document = study.data_size_study(
                    setting.name, seeds=args.seeds, sizes=args.data_sizes, estimators=args.estimators, variant=variant,
                    quick=args.quick, out=args.out, cache_dir=None if args.no_cache else "default",
                    overwrite=args.overwrite,
                )
                failed = sum(r.get("status") == "failed" for r in document["rows"])
                files = document["files"]
                print(f"wrote {files['json']}, {files['md']} and {files['png']} ({document['wall_seconds']:.0f} s, {failed} failed cells)")
    return 0


def cmd_evaluate(args) -> int:
    from .evaluation import evaluate_run
    from .inference import load_fit
    from .loading import load_data

    fit = load_fit(args.run)
    data = load_data(args.data, fit.model)  # here, for its own round labels
    result = evaluate_run(fit, data, spec=args.spec, seed=args.seed)
    first = data.first_round
    print(f"held-out predictive NLL per agent-round: {result['pp_nll']:.4f} (posterior predictive, whole episodes)")
    print(
        f"  teacher-forced NLL per agent-round: {result['nll']:.4f} (every round); {result['nll_test']:.4f} "
        f"(the first round, round {first}, left out: the paper's)"
    )
    if args.spec:
        print(f"payoff differences vs the truth in {args.spec}:")
        for key in ("rel_error", "rel_error_in_support", "diff_mse", "coverage90", "support_share", "cfkl"):
            if key in result:
                print(f"  {key}: {result[key]:.4g}")
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(out=args.out, seed=args.seed, progress=not args.no_progress, overwrite=args.overwrite)


def cmd_bench(args) -> int:
    """Runs benchmarks/speed.py with every argument after ``bench`` untouched (``main``
    routes them here before argparse, which would take ``--help`` for itself)."""
    import subprocess

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "speed.py"
    if not script.is_file():
        raise DataError(
            "bench runs benchmarks/speed.py of a source checkout (it reads the specs in models/); "
            f"none beside this installation ({script.parent.parent}): clone the repository and install it with pip -e"
        )
    return subprocess.call([sys.executable, str(script), *args.options])


# ------------------------------------------------------------------ parser
COMMANDS = {
    "check": cmd_check,
    "simulate": cmd_simulate,
    "fit": cmd_fit,
    "query": cmd_query,
    "counterfactual": cmd_counterfactual,
    "design": _cli_design.cmd_design,
    "report": cmd_report,
    "compare": cmd_compare,
    "reproduce": cmd_reproduce,
    "evaluate": cmd_evaluate,
    "demo": cmd_demo,
    "bench": cmd_bench,
}
"""The function each verb runs (with the parsed arguments); its parser is in ``_cli_parser.py``."""


def build_parser() -> argparse.ArgumentParser:
    """The parser of every verb (``_cli_parser.py``), each running its ``cmd_*`` function."""
    return _cli_parser.build_parser(COMMANDS)


def main(argv=None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    verb_at = next((i for i, token in enumerate(argv) if token != "--x64"), len(argv))
    if argv[verb_at : verb_at + 1] == ["bench"]:
        args = argparse.Namespace(x64=False, options=argv[verb_at + 1 :], func=cmd_bench)
    else:
        args = parser.parse_args(argv)
    args.command_line = argv
    try:
        if args.x64:
            import jax

            with jax.enable_x64(True):
                return args.func(args)
        return args.func(args)
    except (DataError, FitError) as err:  # SpecError is a DataError
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        where = f"{err.filename}: " if getattr(err, "filename", None) else ""
        print(f"error: {where}{err.strerror or err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # outputs are atomic: the old ones stay, no new half-written ones
        done = f"{err.args[0]}" if err.args else "nothing was written"
        print(f"interrupted; {done}", file=sys.stderr)
        return 130
    except Exception as err:  # a bug: the whole traceback to a file, one line here
        log = _crash_log(argv)
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        print(
            f"error: unexpected {type(err).__name__}{': ' + first[:200] if first else ''}; this is a bug in "
            f"bayes-diml, the full traceback is in {log} (please attach it to a bug report)",
            file=sys.stderr,
        )
        return 1


def _crash_log(argv) -> str:
    """Write the current exception's traceback (and the command line) to a new file in
    the system's temporary folder; return its path."""
    import platform
    import tempfile
    import traceback

    fd, path = tempfile.mkstemp(prefix="bayes-diml-error-", suffix=".log")
    with open(fd, "w", encoding="utf-8") as handle:
        handle.write(f"command: bayes-diml {' '.join(argv)}\n")
        handle.write(f"python {sys.version.split()[0]} on {platform.platform()}\n\n")
        handle.write(traceback.format_exc())
    return path


if __name__ == "__main__":
    sys.exit(main())
