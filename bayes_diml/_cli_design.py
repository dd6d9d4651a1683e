"""The ``bayes-diml design`` verb (``cli.py`` routes it here; ``_cli_parser.py`` holds its flags):
search a lever's values for the best design under the posterior (``inference.design``),
write ``design.json`` atomically, record it in ``RUN/designs/`` and print a small table."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .errors import DataError

__all__ = ["cmd_design"]


def cmd_design(args) -> int:
    from ._json import dumps
    from .inference import load_fit
    from .inference.design import design, save_design
    from .inference.storage import check_output_file, write_text_atomic

    out = Path(args.out)
    check_output_file(out, args.overwrite)
    bounds = (_number_or_list("--lower", args.lower), _number_or_list("--upper", args.upper))
    fit = load_fit(args.run)
    result = design(
        fit,
        lever=args.lever,
        bounds=bounds,
        objective=args.objective,
        target=args.target,
        risk=args.risk,
        num_episodes=args.episodes,
        num_rounds=args.rounds,
        seed=args.seed,
        max_draws=args.max_draws,
        num_candidates=args.candidates,
        refinements=args.refinements,
        progress=not args.no_progress,
    )
    write_text_atomic(out, dumps(result))
    for line in table_lines(result):
        print(line)
    print(f"wrote {out}")
    try:  # a copy in the run folder, for `bayes-diml report`
        record = save_design(args.run, result, out.stem, command=["bayes-diml", *args.command_line], overwrite=args.overwrite)
        print(f"recorded in {record.parent}/")
    except OSError as err:  # e.g. a read-only run folder: the result above is complete
        print(f"note: not recorded in {args.run} ({err.strerror or err})", file=sys.stderr)
    return 0


def _number_or_list(flag: str, text: str):
    """``--lower`` / ``--upper``: a number or a JSON list of numbers (never evaluated)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if isinstance(value, bool) or not isinstance(value, (int, float, list)):
        raise DataError(f"{flag} {text!r}: expected a number or a JSON list of numbers, e.g. 0 or [0,0.1,0,0,0]")
    return value


def table_lines(result: dict) -> list[str]:
    """The recommended, status-quo and plug-in designs with the objective's posterior mean
    and band, and the paired differences with P(better)."""
    lever, settings, objective = result["lever"], result["settings"], result["objective"]
    target = f" (target {settings['target']:g})" if settings.get("target") is not None else ""
    lines = [
        f"design of {lever}: objective {settings['objective']}{target}, risk {settings['risk']}; "
        f"{settings['num_draws']} draws x {settings['num_episodes']} episodes x {settings['num_rounds']} rounds, "
        f"{settings['candidates_evaluated']} candidates",
    ]
    rows = [
        (name.replace("_", " ").replace("plug in", "plug-in"), _values(result[name][lever]), objective[name])
        for name in ("recommended", "status_quo", "plug_in")
    ]
    width = max(len(values) for _, values, _ in rows)
    lines.append(f"  {'':<12} {lever:<{width}}  objective: mean [5%, 95%]")
    for name, values, entry in rows:
        lines.append(f"  {name:<12} {values:<{width}}  {entry['mean']:.4g} [{entry['q05']:.4g}, {entry['q95']:.4g}]")
    for label, key in (("status quo", "difference"), ("plug-in", "versus_plug_in")):
        d = objective[key]
        lines.append(f"  recommended - {label}: {d['mean']:+.4g} [{d['q05']:+.4g}, {d['q95']:+.4g}], P(better) = {d['p_better']:.2f}")
    return lines


def _values(values) -> str:
    if isinstance(values, list):
        return "[" + ", ".join(_values(v) for v in values) + "]"
    return f"{values:.4g}"
