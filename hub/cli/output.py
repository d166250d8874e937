"""How every ``edgefleet`` command prints: a result as a table or, with ``--json``, as JSON on stdout; an error as
one line on stderr (a JSON object ``{"error": ...}`` with ``--json``) and a non-zero exit status.

Usage errors Click finds (a bad option value, a missing argument) are printed the same way by `OneLineErrors`, the
root command's class, instead of Click's usage box.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import typer
from typer.core import TyperGroup

__all__ = ["JSON_ALWAYS_OPTION", "JSON_OPTION", "OneLineErrors", "emit", "fail", "wants_json"]

JSON_OPTION = typer.Option(False, "--json", help="print JSON (errors too, as {'error': ...} on stderr)")
#: ``--json`` of a command whose result is JSON either way: it turns its errors into JSON objects too.
JSON_ALWAYS_OPTION = typer.Option(False, "--json", help="errors as {'error': ...} too (the result is JSON anyway)")
#: Click's exception base (typer vendors Click in newer releases, so it is found through a public subclass).
_CLICK_ERROR: type[Exception] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
_state = {"json": False}


def wants_json() -> bool:
    """Whether the command line that runs has ``--json``."""
    return _state["json"]


def _error_line(message: str, as_json: bool) -> str:
    line = " ".join(str(message).split())  # a driver's or server's multi-line message, joined
    return json.dumps({"error": line}) if as_json else f"error: {line}"


def fail(message: object, code: int = 1) -> NoReturn:
    """End the command with ``message`` as one line on stderr and exit status ``code``."""
    typer.echo(_error_line(str(message), wants_json()), err=True)
    raise typer.Exit(code)


def emit(data: Any, as_json: bool, render: Callable[[Any], None]) -> None:
    """Print ``data`` as JSON with ``--json`` (``as_json``), else through ``render``."""
    if as_json:
        typer.echo(json.dumps(data, indent=2))
    else:
        render(data)


class OneLineErrors(TyperGroup):
    """The root command: Click's usage errors become one line (JSON with ``--json``), exit status 2."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        """Run the command line; in standalone mode exit with its status."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        argv = list(sys.argv[1:] if args is None else args)
        _state["json"] = "--json" in argv
        try:
            status = super().main(argv, prog_name, complete_var, False, windows_expand_args, **extra)
        except _CLICK_ERROR as caught:
            exc: Any = caught
            if type(exc).__name__ != "NoArgsIsHelpError":  # that one's help text is printed already
                typer.echo(_error_line(exc.format_message(), _state["json"]), err=True)
            sys.exit(exc.exit_code)
        except typer.Abort:
            typer.echo(_error_line("aborted", _state["json"]), err=True)
            sys.exit(1)
        sys.exit(status if isinstance(status, int) else 0)
