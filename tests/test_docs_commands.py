"""Every ``edgefleet`` and ``edgefleet-agent`` command the README, docs/*.md and the systemd units show parses
against the real command line, without running it: a renamed command, a dropped option or a missing argument
fails here instead of in a new user's terminal.

Commands come from code (fenced blocks, indented blocks, ``ExecStart=``), where each must be complete (every
required argument and option given), and from inline code in prose and docs/operations.md's command table, where
a mention need only name real commands and options. ``a|b`` in a command's place stands for each of them, ``...``
for whatever follows, ``[--option value]`` for an optional part.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer.main

from agent.cli import build_parser
from hub.cli import app

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
UNITS = sorted([*(ROOT / "deploy").glob("*.service"), *(ROOT / "docs").glob("*.service")])
PROGRAMS = ("edgefleet", "edgefleet-agent")
ALTERNATIVES = "\N{BROKEN BAR}"  # stands in for `|` between command names while the shell's `|` splits commands
PREFIXES = {"export", "sudo", "time", "nohup", "exec"}


@dataclass(frozen=True)
class Shown:
    """One command as a document shows it."""

    where: str  # file:line
    words: tuple[str, ...]  # the program's name first
    complete: bool  # code to run, not a mention in prose


def _code_lines(text: str) -> Iterator[tuple[int, str]]:
    """Lines of fenced and indented code (continuations joined), without heredoc bodies."""
    fence: str | None = None
    heredoc: str | None = None
    pending: tuple[int, str] | None = None
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if heredoc is not None:
            heredoc = None if stripped == heredoc else heredoc
            continue
        if stripped.startswith("```"):
            fence = None if fence is not None else stripped
            continue
        indented = line.startswith("    ") and stripped.split(" ", 1)[0] in PROGRAMS
        if fence is None and pending is None and not indented:
            continue
        start, joined = pending if pending is not None else (number, "")
        joined += " " + stripped.removesuffix("\\")
        pending = (start, joined) if stripped.endswith("\\") else None
        if pending is None:
            marker = re.search(r"<<-?\s*'?\"?(\w+)", joined)
            heredoc = marker.group(1) if marker else None
            yield start, joined


def _segments(line: str) -> Iterator[list[str]]:
    """The simple commands of a shell line: split at ``;``, ``&``, ``|``, ``(``, ``)``, redirections dropped."""
    line = re.sub(r"(?<=[\w-])\|(?=[\w-])", ALTERNATIVES, line)  # `pause|resume` names alternatives
    line = re.sub(r"\[(--[^\]]*)\]", r"\1", line)  # `[--warn-days 30]`: an optional part, shown
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|()<>")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    words: list[str] = []
    redirect = False
    for token in lexer:
        if redirect:
            redirect = False
        elif token[0] in "<>":
            redirect = True  # the next word is the redirection's target
            if words and words[-1].isdigit():
                words.pop()  # `2>&1`: the descriptor is no argument
        elif token[0] in ";&|()":
            yield words
            words = []
        else:
            words.append(token)
    yield words


def _command(words: list[str]) -> tuple[str, ...] | None:
    """The ``edgefleet`` command among ``words`` (after variable assignments and prefixes), if there is one."""
    for index, word in enumerate(words):
        program = "" if "=" in word else word.rsplit("/", 1)[-1]  # `/opt/edgefleet/bin/edgefleet` too
        if program in PROGRAMS:
            return (program, *words[index + 1 :])
        if word not in PREFIXES and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", word):
            return None
    return None


def _shown_in(path: Path) -> Iterator[Shown]:
    text = path.read_text()
    name = path.relative_to(ROOT)
    if path.suffix == ".md":
        lines = _code_lines(text)
    else:  # a systemd unit: its commands
        lines = ((n, line.split("=", 1)[1]) for n, line in enumerate(text.splitlines(), 1) if line.startswith("Exec"))
    for number, line in lines:
        if "edgefleet" not in line:
            continue
        for words in _segments(line):
            command = _command(words)
            if command is not None:
                yield Shown(f"{name}:{number}", command, complete=True)
    if path.suffix != ".md":
        return
    for number, line in enumerate(text.splitlines(), 1):
        for span in re.findall(r"`([^`]+)`", line):
            if span.split(" ", 1)[0] in PROGRAMS and " " in span:
                yield Shown(f"{name}:{number}", tuple(_mention(span)), complete=False)
        if path.name == "operations.md" and line.startswith("| `"):  # the command/route/role table
            for span in re.findall(r"`([^`]+)`", line.split(" | ", 1)[0]):
                yield Shown(f"{name}:{number}", ("edgefleet", *_mention(span)), complete=False)


def _mention(span: str) -> list[str]:
    return next(_segments(span.replace("\\|", "|")))


SHOWN = [shown for path in [*DOCS, *UNITS] for shown in _shown_in(path)]


def _options(command: Any) -> dict[str, Any]:
    names = {opt: param for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    return names | {"--help": None}


def _problem(command: Any, words: list[str], complete: bool, path: str) -> str | None:
    """Why ``words`` do not parse as arguments of ``command`` (``path`` names it), or None when they do."""
    options = _options(command)
    positionals: list[str] = []
    given: set[str] = set()
    rest = list(words)
    while rest:
        word = rest.pop(0)
        if word == "...":
            return None  # whatever follows
        if word == "--":
            positionals.extend(rest)
            break
        if word.startswith("-") and len(word) > 1 and not re.fullmatch(r"-[\d.]+", word):
            name, _, inline = word.partition("=")
            if name not in options:
                return f"`{path}` has no option {name}"
            param = options[name]
            if param is None:
                return None  # --help
            given.add(param.name)
            takes = 0 if (param.is_flag or param.count) else param.nargs
            if takes and not inline:
                if len(rest) < takes and complete:
                    return f"{name} of `{path}` needs a value"
                del rest[:takes]
            continue
        if hasattr(command, "commands") and not positionals:
            names = word.split(ALTERNATIVES)
            for name in names:
                if name not in command.commands:
                    return f"`{path}` has no command {name!r}"
                problem = _problem(command.commands[name], rest, complete, f"{path} {name}")
                if problem is not None:
                    return problem
            return None
        positionals.append(word)
    return _missing(command, positionals, given, path) if complete else _extra(command, positionals, path)


def _extra(command: Any, positionals: list[str], path: str) -> str | None:
    arguments = [p for p in command.params if p.param_type_name == "argument"]
    if any(p.nargs == -1 for p in arguments) or len(positionals) <= sum(p.nargs for p in arguments):
        return None
    return f"`{path}` takes {sum(p.nargs for p in arguments)} argument(s), not {positionals}"


def _missing(command: Any, positionals: list[str], given: set[str], path: str) -> str | None:
    extra = _extra(command, positionals, path)
    if extra is not None:
        return extra
    if hasattr(command, "commands") and not getattr(command, "invoke_without_command", False):
        return f"`{path}` needs one of its commands: {', '.join(sorted(command.commands))}"
    arguments = [p for p in command.params if p.param_type_name == "argument"]
    needed = sum(p.nargs for p in arguments if p.required and p.nargs > 0)
    if len(positionals) < needed:
        return f"`{path}` needs {needed} argument(s), got {positionals}"
    absent = [p.opts[0] for p in command.params if p.param_type_name == "option" and p.required and p.name not in given]
    return f"`{path}` needs {', '.join(absent)}" if absent else None


def _agent_problem(words: list[str], complete: bool) -> str | None:
    parser = build_parser()
    if not complete:
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
        return None if not words or words[0] in commands else f"`edgefleet-agent` has no command {words[0]!r}"
    errors = io.StringIO()
    with contextlib.redirect_stderr(errors), contextlib.suppress(SystemExit):
        parser.parse_args(words)
        return None
    return errors.getvalue().strip().splitlines()[-1]


@functools.cache
def _edgefleet() -> Any:
    return typer.main.get_command(app)


def problem(shown: Shown) -> str | None:
    """Why a shown command does not parse, or None."""
    program, *words = shown.words
    if program == "edgefleet-agent":
        return _agent_problem(words, shown.complete)
    return _problem(_edgefleet(), words, shown.complete, "edgefleet")


def test_the_documents_show_commands_of_every_kind() -> None:
    complete = [s for s in SHOWN if s.complete]
    assert len(complete) > 60 and len(SHOWN) - len(complete) > 50
    programs = {s.words[0] for s in complete}
    assert programs == set(PROGRAMS)
    assert any(s.where.startswith("deploy/") for s in complete)  # ExecStart= lines
    assert any(s.words[:3] == ("edgefleet", "tokens", "create") for s in complete)  # inside $(...)


@pytest.mark.parametrize(
    ("line", "complete", "why"),
    [
        ("edgefleet rollout begin digits:1.0.0", True, "no command 'begin'"),
        ("edgefleet rollout start digits:1.0.0 --canary-size 1", True, "no option --canary-size"),
        ("edgefleet rollout start --canary 1", True, "needs 1 argument"),
        ("edgefleet devices add cam-1 --out kits/cam-1", True, "needs --target"),
        ("edgefleet rollout status first second", True, "takes 1 argument"),
        ("edgefleet rollout start digits:1.0.0 --canary", True, "needs a value"),
        ("edgefleet rollout pause|resume|halt first", True, "no command 'halt'"),
        ("edgefleet rollout", True, "needs one of its commands"),
        ("edgefleet devices label cam-1 --force", False, "no option --force"),
        ("edgefleet-agent run", True, "--config"),
        ("edgefleet-agent start --config a.toml", False, "no command 'start'"),
    ],
)
def test_the_check_catches_drift(line: str, complete: bool, why: str) -> None:
    found = problem(Shown("example", tuple(shlex.split(line.replace("|", ALTERNATIVES))), complete))
    assert found is not None and why in found, found


@pytest.mark.parametrize(
    "line",
    [
        "edgefleet rollout pause|resume|abort|promote first",
        "edgefleet pki status --ca var/pki --warn-days 30 --json",
        "edgefleet --hub http://hub:8600 rollout list",
        "edgefleet serve --model big=big.onnx",
        "edgefleet contract check work/contract.json work/eval.npz",
        "edgefleet-agent run --config work/cam-1/agent.toml",
    ],
)
def test_the_check_accepts_real_commands(line: str) -> None:
    assert problem(Shown("example", tuple(shlex.split(line.replace("|", ALTERNATIVES))), True)) is None


def test_every_command_the_documents_show_parses() -> None:
    problems = [f"{s.where}: {' '.join(s.words)}: {why}" for s in SHOWN if (why := problem(s)) is not None]
    assert not problems, "\n".join(problems)
