"""``edgefleet contract``: infer a data contract from calibration data, and check data files against one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from fleet.errors import ProtocolError
from hub.cli.output import JSON_ALWAYS_OPTION, JSON_OPTION, emit, fail

if TYPE_CHECKING:  # numpy and the contract checks load with the commands that use them, not with the CLI
    import numpy as np

    from fleet.wire.contract import DataContract

#: Arrays of a data file that are not model inputs.
NOT_INPUTS = ("labels",)


def register(app: typer.Typer) -> None:
    """Add the ``contract`` group to ``app``."""
    contract_app = typer.Typer(help="Data contracts: what a model's inputs must look like.", no_args_is_help=True)
    contract_app.command("infer")(infer_command)
    contract_app.command("check")(check_command)
    app.add_typer(contract_app, name="contract")


def _arrays(path: Path) -> dict[str, np.ndarray]:
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files if name not in NOT_INPUTS}
    except (OSError, ValueError) as exc:
        raise ProtocolError(f"cannot read {path} as .npz: {exc}") from exc


def infer_command(
    data: Path = typer.Argument(..., help="calibration data: .npz of input arrays ('labels' is ignored)"),
    out: Path = typer.Option(..., "--out", "-o", help="where to write the contract (.json, or .toml)"),
    model: str | None = typer.Option(None, help="model name recorded in the contract"),
    per_feature: bool = typer.Option(False, "--per-feature", help="also infer a value range per flattened feature"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Infer a contract every row of DATA satisfies; edit it to loosen or tighten the rules."""
    from fleet.wire.contract import infer

    try:
        contract = infer(_arrays(data), model=model, per_feature=per_feature)
        raw = contract.model_dump(mode="json", exclude_none=True)
        if out.suffix.lower() == ".toml":
            import tomli_w

            out.write_text(tomli_w.dumps(raw))
        else:
            out.write_text(json.dumps(raw, indent=2) + "\n")
    except (ProtocolError, OSError) as exc:
        fail(exc, code=2)
    inputs = [{"name": s.name, "dtype": s.dtype, "shape": list(s.shape)} for s in contract.inputs]
    names = ", ".join(f"{s.name} {s.dtype}{s.shape}" for s in contract.inputs)
    emit({"out": str(out), "inputs": inputs}, as_json, lambda _: typer.echo(f"contract for {names} written to {out}"))


def check_command(
    contract_path: Path = typer.Argument(..., metavar="CONTRACT", help="contract file (.json or .toml)"),
    data: list[Path] = typer.Argument(..., help=".npz data files to check"),
    as_json: bool = JSON_ALWAYS_OPTION,
) -> None:
    """Check data files against a contract and print the violations per file as JSON; exit 1 when any row
    breaks a rule."""
    from fleet.wire.contract import load_contract

    try:
        results = check_data_files(load_contract(contract_path), data)
    except ProtocolError as exc:
        fail(exc, code=2)
    typer.echo(json.dumps(results, indent=2))
    if any(r["violations"] for r in results.values()):
        raise typer.Exit(1)


def check_data_files(contract: DataContract, paths: list[Path]) -> dict[str, Any]:
    """Rows and per-rule violations of each data file, keyed by its path."""
    from fleet.wire.contract import check

    return {str(path): check(contract, _arrays(path)).model_dump() for path in paths}


def load_contract_option(path: Path | None) -> DataContract | None:
    """The contract a ``--contract`` option names (None when not given); bad files exit with one line."""
    from fleet.wire.contract import load_contract

    if path is None:
        return None
    try:
        return load_contract(path)
    except ProtocolError as exc:
        fail(exc, code=2)
