"""The documentation's code runs as written (issue 15).

Documents: ``README.md``, ``models/README.md``, ``notebooks/README.md``, ``docs/*.md`` and the
markdown cells of ``notebooks/*.ipynb`` (plus the ``!`` shell lines and ``%%bash`` cells of
their code cells, parsed only; the code cells themselves are executed by
``tests/test_notebooks.py``).

What is extracted (``extract_blocks``)
--------------------------------------
* fenced blocks (```` ```lang ````), their kind taken from the info string;
* indented code blocks (4+ spaces after a blank line, not inside a list): a *shell* block
  when every command line starts with a program (``bayes-diml``, ``python``, ``bash``, ...),
  else *text*;
* inline code spans that start with ``bayes-diml`` or ``python benchmarks/...`` (commands
  quoted in prose), and ``$ bayes-diml ...`` lines inside ``text`` blocks (shown sessions).

A fenced block of any other kind than those below fails ``test_every_block_has_a_known_kind``,
so a new kind needs a decision here: nothing is skipped silently.

What each kind gets
-------------------
``python``
    Executed as written (``exec`` of the block's text, a fresh namespace, ``__name__ ==
    "__main__"``), each block in its own temporary working folder holding the files blocks
    name: ``models/`` (a link to the repository's), ``play.csv`` (16 episodes x 30 rounds
    simulated by ``bd.simulate`` from ``models/e2_congestion.toml``), ``q.csv`` (5 queries
    from ``bayes_diml.inference.queries.sample_queries`` on it) and ``spec.toml`` (a copy of
    ``models/e2_congestion.toml``). Declared substitutions, both by monkeypatching:

    1. ``bayes_diml.fit`` is wrapped so that NUTS runs at most 2 chains x (30 warmup + 50
       draws), SVI at most 200 steps and 100 draws, and MAP at most 200 steps (``auto``:
       the NUTS and SVI caps, of which ``fit`` keeps those of the method it picks), without
       progress bars; every other argument passes unchanged. Why: a fit at the documented
       sizes takes minutes on CI's 2 cores, and what a block must show is that it runs.
    2. ``jax.distributed.initialize`` is a no-op: it needs a multi-process launcher; the
       block then runs as process 0 of 1.

``bash`` / ``sh`` / ``shell`` / ``console`` (and shell indented blocks, inline commands)
    Each simple command (continuation lines joined, comments dropped, split at ``&&``,
    ``||``, ``;``, ``|``; leading ``VAR=value`` assignments dropped) is classified:

    * ``bayes-diml ...`` (also ``.venv/bin/bayes-diml``, ``python -m bayes_diml``): parsed
      with the real parser, ``build_parser().parse_args``, so a missing required flag or an
      unknown flag fails. Two written conventions are honoured: ``...`` marks elided
      arguments (then the verb and every flag written must exist, nothing more is checked)
      and ``[--flag VALUE]`` marks an optional part (parsed without the brackets). An inline
      span that is only ``bayes-diml VERB`` or ``bayes-diml VERB --flag ...`` (option names,
      no values) names a verb in prose: the verb and the options must exist. ``bench``
      is routed by ``cli.main`` past argparse (its arguments belong to
      ``benchmarks/speed.py``): only the verb is checked.
    * a script of this repository (``python benchmarks/speed.py ...``, ``bash
      benchmarks/gpu_run.sh``): the file must exist.
    * anything else (``python3 -m venv``, ``pip``, ``cd``, ``jupyter``, a user's own
      script): shell-only, ignored by rule.

    Shell blocks (fenced or indented) are then executed end to end (``test_shell_block_runs``), in the
    order written, in a fresh temporary folder with ``models/`` linked, by calling
    ``bayes_diml.cli.main`` in-process: ``check``, ``simulate``, ``fit``, ``query``,
    ``counterfactual``, ``report``, ``compare`` and ``evaluate``, each with exit status 0
    and its outputs present. Parse-only (declared): ``reproduce``, ``bench``, ``demo`` and
    ``design`` (minutes to hours), elided commands, and any command reading an output of a
    parse-only command. Declared substitutions: ``fit`` gets ``--chains 2 --warmup 30
    --samples 50`` (NUTS: 100 draws, the least ``compare`` accepts), ``--steps 200
    --samples 100`` (SVI) or ``--steps 200`` (MAP) (``--method auto``, the default: all of
    them), each only where the written (or default) value is larger, and ``--no-progress``. Inputs no
    command of the block writes are prepared on first use (``RECIPES``): ``q.csv`` (5
    sampled queries), ``test.csv`` (4 x 20 simulated held-out episodes), ``run_a`` and
    ``run_b`` (copies of the block's ``run``); any other missing input fails the test.
    Every run folder written by ``fit`` must hold exactly the files the README's
    run-folder paragraph lists (plus PNG plots).

``toml``
    Parsed with ``tomllib``. A full spec (``[mechanism]`` and ``[learner]`` tables) is
    written to a file and read with ``bd.read_spec``. A fragment is merged (table by table,
    the fragment's keys winning) over a base spec and built with
    ``bayes_diml.spec.parse_spec``, so its keys and values are checked too. The base is
    the document's first full spec of the fragment's family (``[mechanism] family``, or
    ``tabular`` for a ``[mechanism.truth] payoffs`` fragment; any family when it implies
    none); a tabular payoffs fragment without such a spec gets the smallest tabular spec
    that fits it (n and A from the array's shape or the joint-action keys, ``logit_q``
    with fixed parameters; ``_tabular_base``).

``text`` and other output-only kinds (``text``, ``output``, ``math``, none given)
    Ignored by kind, except ``$ bayes-diml`` command lines inside them (parsed, above).

Blocks that run NUTS (a python block calling ``fit(`` with ``"nuts"``, or an executed
``bayes-diml fit`` with ``--method nuts`` or ``auto``) are marked ``slow``: 20-60 s each on a shared 2-core CPU,
mostly compilation. The SVI blocks take 5-15 s, the rest of this file a few seconds.
``python tests/test_docs.py`` prints what is checked where.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
import shutil
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "models" / "e2_congestion.toml"

MARKDOWN_FILES = sorted(
    [REPO / "README.md", REPO / "models" / "README.md", REPO / "notebooks" / "README.md", *(REPO / "docs").glob("*.md")]
)
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))

PYTHON_KINDS = {"python", "py"}
SHELL_KINDS = {"bash", "sh", "shell", "console"}
TOML_KINDS = {"toml"}
TEXT_KINDS = {"text", "output", "math", ""}

EXECUTED_VERBS = {"check", "simulate", "fit", "query", "counterfactual", "report", "compare", "evaluate"}
PARSE_ONLY_VERBS = {  # verb -> why it is only parsed
    "reproduce": "reproduce runs the paper's experiments (minutes to hours)",
    "bench": "bench runs the speed benchmarks (minutes)",
    "demo": "demo fits the embedded game at full size (minutes)",
    "design": "design needs a run with known tolls and searches 200 draws' play (a minute); tests/test_design.py runs it",
}

# Caps on what a fit costs here (declared in the module docstring).
NUTS_CAP = {"num_chains": 2, "num_warmup": 30, "num_samples": 50}
SVI_CAP = {"steps": 200, "num_samples": 100}
MAP_CAP = {"steps": 200}
CLI_FIT_CAP = {
    "nuts": {"--chains": ("chains", 2), "--warmup": ("warmup", 30), "--samples": ("samples", 50)},
    "svi": {"--steps": ("steps", 200), "--samples": ("samples", 100)},
    "map": {"--steps": ("steps", 200)},
}
CLI_FIT_CAP["auto"] = {**CLI_FIT_CAP["nuts"], **CLI_FIT_CAP["svi"]}  # what auto picks takes its own flags


# ------------------------------------------------------------------ extraction
@dataclass
class Block:
    doc: str  # path relative to the repository (with [cell N] for notebooks)
    line: int  # 1-based line of the block's first content line (in the file or cell)
    kind: str  # fenced: info string (lower case); else indented, inline, session ($ lines), bang (notebook !)
    text: str

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"

    @property
    def id(self) -> str:
        return f"{self.where}:{self.kind or 'plain'}"


_FENCE = re.compile(r"^( {0,3})(`{3,}|~{3,})\s*([^\s`]*)")
_LIST_ITEM = re.compile(r"^\s*([*+-]|\d+[.)])\s")
_INLINE = re.compile(r"(?<!`)`([^`]+)`(?!`)")
_INLINE_COMMAND = re.compile(r"^(\S*/)?(bayes-diml|python3?)(\s|$)")


def _markdown_blocks(text: str, doc: str, prose_out: list[str] | None = None) -> list[Block]:
    """Fenced and indented code blocks, and inline command spans, of one markdown text
    (its other lines, the prose, are appended to ``prose_out`` when given)."""
    lines = text.splitlines()
    blocks: list[Block] = []
    prose: list[tuple[int, str]] = []  # (line, text) outside code blocks, for inline spans
    i = 0
    previous_blank, last_text = True, ""
    while i < len(lines):
        line = lines[i]
        fence = _FENCE.match(line)
        if fence:
            indent, marker, info = len(fence.group(1)), fence.group(2), fence.group(3).lower()
            body, j = [], i + 1
            while j < len(lines) and not re.match(rf"^ {{0,3}}{marker[0]}{{{len(marker)},}}\s*$", lines[j]):
                body.append(lines[j][indent:] if lines[j][:indent].strip() == "" else lines[j].lstrip())
                j += 1
            blocks.append(Block(doc, i + 2, info, "\n".join(body) + "\n"))
            i, previous_blank, last_text = j + 1, False, ""
            continue
        indented = len(line) - len(line.lstrip(" ")) >= 4 and line.strip()
        in_list = bool(_LIST_ITEM.match(last_text)) or last_text[:1].isspace()
        if indented and previous_blank and not in_list:
            body, j = [], i
            while j < len(lines) and (not lines[j].strip() or lines[j].startswith("    ")):
                body.append(lines[j][4:])
                j += 1
            while body and not body[-1].strip():
                body.pop()
            text_ = "\n".join(body) + "\n"
            blocks.append(Block(doc, i + 1, "indented", text_))
            i, previous_blank, last_text = i + len(body), False, lines[i + len(body) - 1]
            continue
        prose.append((i + 1, line))
        previous_blank = not line.strip()
        if line.strip():
            last_text = line
        i += 1
    # inline spans may wrap over a line break: search paragraph by paragraph
    paragraph: list[tuple[int, str]] = []
    for number, line in [*prose, (0, "")]:
        if line.strip():
            paragraph.append((number, line))
            continue
        if paragraph:
            joined = "\n".join(text for _, text in paragraph)
            for match in _INLINE.finditer(joined):
                span = " ".join(match.group(1).split())
                if _INLINE_COMMAND.match(span):
                    line_no = paragraph[0][0] + joined[: match.start()].count("\n")
                    blocks.append(Block(doc, line_no, "inline", span + "\n"))
        paragraph = []
    if prose_out is not None:
        prose_out += [text for _, text in prose]
    for block in [b for b in blocks if b.kind in TEXT_KINDS]:  # shown sessions: "$ bayes-diml ..."
        for k, line in enumerate(block.text.splitlines()):
            if re.match(r"^\$ (\S*/)?bayes-diml(\s|$)", line):
                blocks.append(Block(doc, block.line + k, "session", line[2:] + "\n"))
    return blocks


def extract_blocks() -> list[Block]:
    blocks: list[Block] = []
    for path in MARKDOWN_FILES:
        blocks += _markdown_blocks(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)))
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        for index, cell in enumerate(nb.cells):
            doc = f"{path.relative_to(REPO)}[cell {index}]"
            if cell.cell_type == "markdown":
                blocks += _markdown_blocks(cell.source, doc)
            elif cell.cell_type == "code" and re.match(r"%%(bash|sh)\b", cell.source):
                blocks.append(Block(doc, 2, "bang", cell.source.split("\n", 1)[-1]))
            elif cell.cell_type == "code":
                for k, line in enumerate(cell.source.splitlines()):
                    if line.lstrip().startswith("!"):
                        blocks.append(Block(doc, k + 1, "bang", line.lstrip()[1:] + "\n"))
    return blocks


BLOCKS = extract_blocks()


def _is_shell_text(text: str) -> bool:
    """An indented block whose every command line starts with a program."""
    commands = shell_commands(text)
    return bool(commands) and all(c.program is not None for c in commands)


def block_kind(block: Block) -> str:
    """One of python, shell, toml, text, or unknown."""
    if block.kind in PYTHON_KINDS:
        return "python"
    if block.kind in SHELL_KINDS or block.kind in ("inline", "session", "bang"):
        return "shell"
    if block.kind in TOML_KINDS:
        return "toml"
    if block.kind == "indented":
        try:
            return "shell" if _is_shell_text(block.text) else "text"
        except ValueError:  # shlex: not shell at all (unbalanced quotes in prose or math)
            return "text"
    if block.kind in TEXT_KINDS:
        return "text"
    return "unknown"


# ------------------------------------------------------------------ shell commands
_PROGRAM = re.compile(r"^(\S*/)?(bayes-diml|python3?|bash|sh|pip3?|cd|jupyter|jupyter-\w+|pytest|git)$")
_SEPARATORS = {"&&", "||", ";", "|"}
_REPO_FOLDERS = {p.name for p in REPO.iterdir() if p.is_dir() and not p.name.startswith(".")}


@dataclass
class Command:
    line: int  # 0-based line within the block
    tokens: list[str]  # without leading VAR=value assignments
    program: str | None = field(default=None)  # basename of a known program, else None

    @property
    def text(self) -> str:
        return shlex.join(self.tokens)

    @property
    def cli_argv(self) -> list[str] | None:
        """The arguments after ``bayes-diml`` when this calls the CLI, else None."""
        if self.program == "bayes-diml":
            return self.tokens[1:]
        if self.program and self.program.startswith("python") and self.tokens[1:3] == ["-m", "bayes_diml"]:
            return self.tokens[3:]
        return None

    @property
    def repo_script(self) -> str | None:
        """A script of this repository run by python or bash (``benchmarks/speed.py``)."""
        if self.program not in ("python", "python3", "bash", "sh") or "-m" in self.tokens[1:]:
            return None
        script = next((t for t in self.tokens[1:] if not t.startswith("-")), None)
        if script and Path(script).parts and Path(script).parts[0] in _REPO_FOLDERS:
            return script
        return None


def shell_commands(text: str) -> list[Command]:
    """Simple commands of a shell text: continuations joined, comments dropped, split at
    ``&&``/``||``/``;``/``|``, ``$`` prompts and ``VAR=value`` prefixes removed."""
    logical: list[tuple[int, str]] = []
    buffer, start = "", None
    for number, line in enumerate(text.splitlines()):
        start = number if start is None else start
        stripped = line.rstrip()
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        logical.append((start, buffer + line))
        buffer, start = "", None
    if buffer:
        logical.append((start, buffer))
    commands = []
    for number, line in logical:
        line = line.strip().removeprefix("$ ")
        tokens = shlex.split(line, comments=True)
        current: list[str] = []
        for token in [*tokens, "&&"]:
            if token not in _SEPARATORS:
                current.append(token)
                continue
            while current and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", current[0]):
                current = current[1:]
            if current:
                match = _PROGRAM.match(current[0])
                commands.append(Command(number, current, match.group(2) if match else None))
            current = []
    return commands


# ------------------------------------------------------------------ the CLI's parser
def _parser() -> argparse.ArgumentParser:
    from bayes_diml.cli import build_parser

    return build_parser()


def _verbs(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _strip_optional_brackets(argv: list[str]) -> list[str]:
    """``[--spec SPEC]`` (an optional part, written as in a usage line) -> ``--spec SPEC``."""
    out, inside = [], False
    for token in argv:
        if token.startswith("[-"):
            token, inside = token[1:], True
        if inside and token.endswith("]"):
            token, inside = token[:-1], False
        out.append(token)
    return out


@dataclass
class Parsed:
    mode: str  # "full", "elided", "verb", "bench"
    verb: str
    namespace: argparse.Namespace | None


def parse_cli(argv: list[str], inline: bool = False) -> Parsed:
    """Check ``bayes-diml ARGV`` against the real parser; raise AssertionError with
    argparse's message when it would refuse it."""
    parser = _parser()
    verbs = _verbs(parser)
    verb_at = next((i for i, t in enumerate(argv) if not t.startswith("-")), len(argv))
    for flag in argv[:verb_at]:
        assert flag in parser._option_string_actions, f"unknown option {flag!r} before the verb"
    assert verb_at < len(argv), "no verb"
    verb = argv[verb_at]
    assert verb in verbs, f"unknown verb {verb!r}; verbs: {sorted(verbs)}"
    if verb == "bench":  # cli.main passes everything after it to benchmarks/speed.py
        assert (REPO / "benchmarks" / "speed.py").is_file()
        return Parsed("bench", verb, None)
    argv = _strip_optional_brackets(argv)
    rest = argv[verb_at + 1 :]
    reference = inline and all(t.startswith("--") for t in rest)  # prose naming a verb (and options)
    if reference or "..." in argv:  # or elided arguments: the verb and the flags written must exist
        sub = verbs[verb]
        for token in rest:
            if token.startswith("--"):
                flag = token.split("=", 1)[0]
                assert flag in sub._option_string_actions, f"{verb}: unknown option {flag!r}"
        return Parsed("verb" if reference else "elided", verb, None)
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            namespace = parser.parse_args(argv)
    except SystemExit:
        raise AssertionError(f"bayes-diml {shlex.join(argv)}: {stderr.getvalue().strip()}") from None
    return Parsed("full", verb, namespace)


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """A folder with the files python blocks name (see the module docstring)."""
    import bayes_diml as bd
    from bayes_diml.inference.queries import sample_queries

    folder = tmp_path_factory.mktemp("docs_files")
    model, truth = bd.read_spec(SPEC)
    data = bd.simulate(model, truth, num_episodes=16, num_rounds=30, seed=1)
    data.to_csv(folder / "play.csv")
    sample_queries(data, 5, seed=0).to_csv(folder / "q.csv", index=False)
    shutil.copy(SPEC, folder / "spec.toml")
    return folder


def _workdir(tmp_path: Path, prepared: Path | None = None) -> Path:
    work = tmp_path / "work"
    if prepared is not None:
        shutil.copytree(prepared, work)
    else:
        work.mkdir()
    try:
        (work / "models").symlink_to(REPO / "models", target_is_directory=True)
    except OSError:  # no symlinks (some Windows setups)
        shutil.copytree(REPO / "models", work / "models")
    return work


def _capped_fit(original):
    def fit(model, data, method="auto", *, seed, **options):  # seed: required, as in bd.fit
        caps = {"nuts": NUTS_CAP, "svi": SVI_CAP, "map": MAP_CAP, "auto": {**NUTS_CAP, **SVI_CAP}}.get(method, {})
        for key, cap in caps.items():
            options[key] = min(options.get(key, cap), cap)
        options.setdefault("progress", False)
        return original(model, data, method, seed=seed, **options)

    fit.__doc__ = original.__doc__
    return fit


# ------------------------------------------------------------------ inventory tests
def _blocks(kind: str) -> list[Block]:
    return [b for b in BLOCKS if block_kind(b) == kind]


def test_extraction_finds_the_blocks():
    kinds = {k: len(_blocks(k)) for k in ("python", "shell", "toml", "text")}
    assert kinds["python"] >= 3 and kinds["shell"] >= 5 and kinds["toml"] >= 2, kinds
    docs = {b.doc.split("[")[0] for b in BLOCKS}
    assert {"README.md", "models/README.md", "docs/scaling.md", "docs/results.md"} <= docs


def test_every_block_has_a_known_kind():
    unknown = [b.id for b in BLOCKS if block_kind(b) == "unknown"]
    assert not unknown, f"fenced blocks of a kind this test does not handle: {unknown}"


def test_no_command_outside_code():
    """A ``bayes-diml VERB`` written in prose without backticks would escape these checks."""
    verbs = "|".join(sorted(_verbs(_parser())))
    pattern = re.compile(rf"bayes-diml\s+(--x64\s+)?({verbs})\b")
    sources = [(str(p.relative_to(REPO)), p.read_text(encoding="utf-8")) for p in MARKDOWN_FILES]
    for path in NOTEBOOKS:
        for index, cell in enumerate(nbformat.read(path, as_version=4).cells):
            if cell.cell_type == "markdown":
                sources.append((f"{path.relative_to(REPO)}[cell {index}]", cell.source))
    found = []
    for doc, text in sources:
        prose: list[str] = []
        _markdown_blocks(text, doc, prose)
        outside = re.sub(r"(?<!`)`[^`]+`(?!`)", "", "\n".join(prose))
        found += [f"{doc}: ...{outside[max(0, m.start() - 30) : m.end() + 30]}..." for m in pattern.finditer(outside)]
    assert not found, f"bayes-diml commands outside code spans or blocks: {found}"


# ------------------------------------------------------------------ shell: parse
SHELL_BLOCKS = _blocks("shell")


@pytest.mark.parametrize("block", SHELL_BLOCKS, ids=[b.id for b in SHELL_BLOCKS])
def test_shell_commands_parse(block):
    commands = shell_commands(block.text)
    assert commands, f"{block.where}: no command found"
    for command in commands:
        where = f"{block.doc}:{block.line + command.line}: {command.text}"
        argv = command.cli_argv
        if argv is not None:
            try:
                parse_cli(argv, inline=block.kind == "inline")
            except AssertionError as err:
                raise AssertionError(f"{where}\n  {err}") from None
        elif command.repo_script is not None:
            assert (REPO / command.repo_script).is_file(), f"{where}: {command.repo_script} does not exist"


def test_parse_check_can_fail():
    """The check refuses what the issue named: query without its required --out."""
    with pytest.raises(AssertionError, match="--out"):
        parse_cli(shlex.split("query run --queries q.csv"))
    with pytest.raises(AssertionError, match="unknown option"):
        parse_cli(shlex.split("fit spec.toml --data play.csv --out run --no-such-flag ..."))
    parse_cli(shlex.split("query run --queries q.csv --out answers.csv"))


def test_dropping_a_required_option_fails():
    """Every command of the docs that is parsed in full fails the check once one of its
    required options (e.g. ``query --out``) is removed: the check can fail on each."""
    verbs, mutated = _verbs(_parser()), 0
    for block in SHELL_BLOCKS:
        for command in shell_commands(block.text):
            argv = command.cli_argv
            if argv is None or parse_cli(argv, inline=block.kind == "inline").mode != "full":
                continue
            verb = next(t for t in argv if not t.startswith("-"))
            required = [a for a in verbs[verb]._actions if a.required and a.option_strings]
            for action in required:
                at = next(i for i, t in enumerate(argv) if t in action.option_strings)
                broken = argv[:at] + argv[at + 2 :]
                with pytest.raises(AssertionError, match="required"):
                    parse_cli(broken)
                mutated += 1
    assert mutated >= 10, mutated


# ------------------------------------------------------------------ shell: execute
def _sample_queries(work: Path, target: Path) -> None:
    import bayes_diml as bd
    from bayes_diml.inference.queries import sample_queries

    model, truth = bd.read_spec(SPEC)
    data = bd.simulate(model, truth, num_episodes=2, num_rounds=10, seed=7)
    sample_queries(data, 5, seed=0).to_csv(target, index=False)


def _held_out(work: Path, target: Path) -> None:
    import bayes_diml as bd

    model, truth = bd.read_spec(SPEC)
    bd.simulate(model, truth, num_episodes=4, num_rounds=20, seed=99).to_csv(target)


def _copy_of_run(work: Path, target: Path) -> None:
    assert (work / "run").is_dir(), f"{target.name}: prepared as a copy of 'run', which the block did not write"
    shutil.copytree(work / "run", target)


RECIPES = {"q.csv": _sample_queries, "test.csv": _held_out, "run_a": _copy_of_run, "run_b": _copy_of_run}

INPUTS = {  # verb -> namespace attributes naming files it reads
    "check": ("data", "spec"),
    "simulate": ("spec",),
    "fit": ("spec", "data"),
    "query": ("run", "queries"),
    "counterfactual": ("run",),
    "report": ("run",),
    "compare": ("runs",),
    "evaluate": ("run", "data", "spec"),
}


def _outputs(verb: str, ns: argparse.Namespace | None) -> list[str]:
    if ns is None:
        return []
    if verb == "report":
        return [str(Path(ns.run) / "report.html")]
    out = getattr(ns, "out", None)
    return [out] if out else []


def _inputs(verb: str, ns: argparse.Namespace) -> list[str]:
    paths = []
    for name in INPUTS.get(verb, ()):
        value = getattr(ns, name, None)
        paths += [value] if isinstance(value, str) else list(value or [])
    return paths


def _fit_substitutions(ns: argparse.Namespace) -> list[str]:
    extra = ["--no-progress"]
    for flag, (attr, cap) in CLI_FIT_CAP[ns.method].items():
        value = getattr(ns, attr)  # None: not given, the default (always above the cap)
        if value is None or value > cap:
            extra += [flag, str(cap)]
    return extra


def readme_run_folder_files() -> set[str]:
    """The file names the README's run-folder paragraph lists."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index("A run folder holds")
    paragraph = text[start : text.index("\n\n", start)]
    return set(re.findall(r"`([\w.-]+\.\w+)`", paragraph))


@dataclass
class Step:
    command: Command
    action: str  # "execute", "parse" (with a reason), or "ignore" (shell-only)
    reason: str = ""
    parsed: Parsed | None = None


def plan_shell_block(block: Block) -> list[Step]:
    """What ``test_shell_block_runs`` does with each command of a fenced shell block."""
    steps, not_run = [], set()
    for command in shell_commands(block.text):
        argv = command.cli_argv
        if argv is None:
            steps.append(Step(command, "ignore", "shell-only"))
            continue
        parsed = parse_cli(argv)
        reason = PARSE_ONLY_VERBS.get(parsed.verb)
        if parsed.mode == "elided":
            reason = "elided arguments"
        elif reason is None and any(p in not_run for p in _inputs(parsed.verb, parsed.namespace)):
            reason = "reads an output of a command that is only parsed"
        if reason is not None:
            not_run.update(_outputs(parsed.verb, parsed.namespace))
            steps.append(Step(command, "parse", reason, parsed))
            continue
        assert parsed.verb in EXECUTED_VERBS, f"{block.where}: verb {parsed.verb!r} has no execution rule here"
        steps.append(Step(command, "execute", "", parsed))
    return steps


def run_shell_block(block: Block, work: Path, capsys) -> list[str]:
    """Execute the block's executable bayes-diml commands in order (see the docstring);
    returns a log line per command."""
    from bayes_diml.cli import main

    log = []
    for step in plan_shell_block(block):
        command, parsed = step.command, step.parsed
        if step.action != "execute":
            log.append(f"{'ignored' if step.action == 'ignore' else 'parsed only'} ({step.reason}): {command.text}")
            continue
        argv, ns = command.cli_argv, parsed.namespace
        where = f"{block.doc}:{block.line + command.line}: {command.text}"
        for path in _inputs(parsed.verb, ns):
            if not (work / path).exists() and Path(path).name in RECIPES:
                RECIPES[Path(path).name](work, work / path)
            assert (work / path).exists(), f"{where}: reads {path}, which neither the block nor the test prepares"
        executed = list(argv) + (_fit_substitutions(ns) if parsed.verb == "fit" else [])
        capsys.readouterr()
        rc = main(executed)
        output = capsys.readouterr()
        assert rc == 0, f"{where}\n  exit status {rc}\n  stdout: {output.out[-2000:]}\n  stderr: {output.err[-2000:]}"
        for path in _outputs(parsed.verb, ns):
            assert (work / path).exists(), f"{where}: exit status 0 but no {path}"
        if parsed.verb == "fit":
            written = {p.name for p in (work / ns.out).iterdir() if p.suffix != ".png"}
            listed = readme_run_folder_files()
            assert written == listed, (
                f"{where}: the run folder holds {sorted(written)}; the README's run-folder paragraph "
                f"lists {sorted(listed)} (missing there: {sorted(written - listed)}; not written: {sorted(listed - written)})"
            )
        substituted = executed[len(argv) :]
        log.append(f"executed{' (substituted: ' + ' '.join(substituted) + ')' if substituted else ''}: {command.text}")
    return log


def _runs_nuts(block: Block) -> bool:
    """Whether running the block runs NUTS (20-60 s on 2 shared cores: marked slow)."""
    if block_kind(block) == "python":
        return "fit(" in block.text and "nuts" in block.text
    try:
        return any(
            s.action == "execute" and s.parsed.verb == "fit" and s.parsed.namespace.method in ("nuts", "auto")
            for s in plan_shell_block(block)
        )
    except (AssertionError, ValueError):  # a command that does not parse: the test itself reports it
        return False


def _params(blocks: list[Block]) -> list:
    return [pytest.param(b, id=b.id, marks=[pytest.mark.slow] if _runs_nuts(b) else []) for b in blocks]


EXECUTABLE_SHELL_BLOCKS = [b for b in SHELL_BLOCKS if b.kind in SHELL_KINDS or b.kind == "indented"]


@pytest.mark.parametrize("block", _params(EXECUTABLE_SHELL_BLOCKS))
def test_shell_block_runs(block, tmp_path, monkeypatch, capsys):
    work = _workdir(tmp_path)
    monkeypatch.chdir(work)
    log = run_shell_block(block, work, capsys)
    with capsys.disabled():
        print(f"\n{block.id}:\n  " + "\n  ".join(log))


# ------------------------------------------------------------------ python
PYTHON_BLOCKS = _blocks("python")


@pytest.mark.parametrize("block", _params(PYTHON_BLOCKS))
def test_python_block_runs(block, prepared, tmp_path, monkeypatch):
    import jax

    import bayes_diml as bd

    work = _workdir(tmp_path, prepared)
    monkeypatch.chdir(work)
    monkeypatch.setattr(bd, "fit", _capped_fit(bd.fit))
    monkeypatch.setattr(jax.distributed, "initialize", lambda *args, **kwargs: None)
    code = compile("\n" * (block.line - 1) + block.text, block.doc, "exec")
    exec(code, {"__name__": "__main__"})  # noqa: S102 (running the documented code is the point)


# ------------------------------------------------------------------ toml
TOML_BLOCKS = _blocks("toml")


def _is_full_spec(table: dict) -> bool:
    return {"mechanism", "learner"} <= set(table)


@pytest.mark.parametrize("block", TOML_BLOCKS, ids=[b.id for b in TOML_BLOCKS])
def test_toml_block(block, tmp_path):
    import bayes_diml as bd
    from bayes_diml.spec import parse_spec

    table = tomllib.loads(block.text)
    if _is_full_spec(table):
        path = tmp_path / "spec.toml"
        path.write_text(block.text, encoding="utf-8")
        for npz in (REPO / "models").glob("*.npz"):  # arrays a spec may name beside it
            shutil.copy(npz, tmp_path / npz.name)
        bd.read_spec(path)
        return
    parse_spec(_deep_merge(_fragment_base(block, table), table), source=block.where, base_dir=REPO / "models")


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _fragment_family(table: dict) -> str | None:
    mechanism = table.get("mechanism", {})
    if "family" in mechanism:
        return mechanism["family"]
    return "tabular" if "payoffs" in mechanism.get("truth", {}) else None


def _tabular_base(payoffs) -> dict:
    """The smallest spec a tabular ``payoffs`` fragment fits: n and A from its shape (an
    array of A**n rows x n) or its keys (joint actions, labels in order of appearance)."""
    if isinstance(payoffs, dict):
        joints = [key.split() for key in payoffs]
        labels = list(dict.fromkeys(label for joint in joints for label in joint))
        n, A = len(joints[0]), len(labels)
        game = {"agents": n, "actions": A}
        if not all(label.isdigit() for label in labels):
            game["action_labels"] = labels
    else:
        n = len(payoffs[0])
        A = round(len(payoffs) ** (1 / n))
        game = {"agents": n, "actions": A}
    learner = {"rule": "logit_q", "alpha": 0.25, "beta": 3.0, "eps": 0.06}
    return {"game": game, "mechanism": {"family": "tabular"}, "learner": learner}


def _fragment_base(block: Block, table: dict) -> dict:
    """What a spec fragment is laid over: the document's first full spec of the fragment's
    family (any family when it names none); for a tabular payoffs fragment with no
    tabular spec in the document, the smallest tabular spec it fits (``_tabular_base``)."""
    family = _fragment_family(table)
    fulls = [tomllib.loads(b.text) for b in TOML_BLOCKS if b.doc == block.doc and _is_full_spec(tomllib.loads(b.text))]
    fitting = [f for f in fulls if family is None or f["mechanism"].get("family") == family]
    if fitting:
        return fitting[0]
    if family == "tabular":
        return _tabular_base(table["mechanism"]["truth"]["payoffs"])
    raise AssertionError(f"{block.where}: a spec fragment, and no full spec of family {family!r} in {block.doc} to lay it over")


# ------------------------------------------------------------------ summary
def inventory() -> dict[str, dict[str, int]]:
    """Per document: what this file does with its blocks and commands (for reports)."""
    counts: dict[str, dict[str, int]] = {}

    def add(doc: str, key: str) -> None:
        counts.setdefault(doc, {})
        counts[doc][key] = counts[doc].get(key, 0) + 1

    for block in BLOCKS:
        doc, kind = block.doc.split("[")[0], block_kind(block)
        if kind == "python":
            add(doc, "python blocks executed")
        elif kind == "toml":
            add(doc, "toml blocks " + ("read as specs" if _is_full_spec(tomllib.loads(block.text)) else "built as fragments"))
        elif kind == "text":
            add(doc, f"{block.kind or 'plain'} blocks ignored by kind")
        elif block in EXECUTABLE_SHELL_BLOCKS:
            add(doc, f"{block.kind} shell blocks")
            for step in plan_shell_block(block):
                if step.action == "ignore":
                    add(doc, "commands ignored (shell-only)" if step.command.repo_script is None else "repo scripts checked to exist")
                else:
                    add(doc, "bayes-diml commands executed" if step.action == "execute" else "bayes-diml commands parsed only")
        else:
            add(doc, f"{block.kind} shell snippets")
            for command in shell_commands(block.text):
                if command.cli_argv is not None:
                    add(doc, "bayes-diml commands parsed only")
                elif command.repo_script is not None:
                    add(doc, "repo scripts checked to exist")
                else:
                    add(doc, "commands ignored (shell-only)")
    return counts


if __name__ == "__main__":  # python tests/test_docs.py: what is checked where
    for doc, entry in inventory().items():
        print(doc, entry)
    for block in BLOCKS:
        print(f"  {block.id:60s} {block_kind(block)}")
