"""``edgefleet models list|register-conversion``: models, versions and their variants, through the hub's REST API.

``register-conversion`` runs each usable variant of a conversion here (golden self-test outputs and the drift
reference come from this host's runtimes), then uploads each as an unsigned bundle
(``POST /models/M/versions/V/variants``, operator token); the hub signs, stores and registers it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from hub.cli.output import JSON_OPTION, emit, fail
from hub.cli.remote import hub_session

console = Console(stderr=True)


def register(app: typer.Typer) -> None:
    """Add the ``models`` group to ``app``."""
    models_app = typer.Typer(help="Models, versions and their variants.", no_args_is_help=True)
    models_app.command("list")(list_command)
    models_app.command("register-conversion")(register_conversion_command)
    app.add_typer(models_app, name="models")


def list_command(as_json: bool = JSON_OPTION) -> None:
    """Models with their versions (highest first)."""
    with hub_session() as hub:
        emit(hub.get("/models"), as_json, _print_models)


def register_conversion_command(
    directory: Path = typer.Argument(..., help="an `edgefleet convert` output directory"),
    version: str = typer.Option(..., help="semver of the new model version"),
    vectors: Path = typer.Option(..., help=".npz of model inputs for the golden self-test vectors"),
    model: str | None = typer.Option(None, help="model name (default: the report's)"),
    labels: str | None = typer.Option(None, help="comma-separated class labels"),
    gate: Path | None = typer.Option(None, help="gate thresholds (TOML): refuse unless `edgefleet gate` passes"),
    contract: Path | None = typer.Option(
        None, help="data contract (JSON/TOML) the bundles carry; default: the conversion's contract.json"
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Sign and register every usable variant of a conversion under MODEL:VERSION on the hub."""
    import semver

    from converters.errors import ConversionError
    from fleet.errors import FleetError
    from hub.bundles.conversions import prepare_conversion
    from hub.bundles.upload import UPLOAD_MEDIA_TYPE, pack_upload
    from hub.cli.contract import load_contract_option
    from hub.cli.gate import run_gate
    from hub.errors import HubError

    if not semver.Version.is_valid(version):
        fail(f"version {version!r} is not semantic versioning (MAJOR.MINOR.PATCH)")
    if gate is not None:
        verdict = run_gate(directory, gate, None)
        if not verdict.passed:
            if not as_json:
                typer.echo(verdict.table(), err=True)
            fail(f"{directory} failed the gate {gate}; nothing registered")
    try:
        prepared = prepare_conversion(
            directory,
            version=version,
            vectors=vectors,
            model=model,
            labels=labels.split(",") if labels else None,
            contract=load_contract_option(contract),
        )
    except (ConversionError, FleetError, HubError, OSError, ValueError) as exc:
        fail(exc)
    registered: list[dict[str, Any]] = []
    with hub_session() as hub:
        for variant in prepared.variants:
            answer = hub.upload(
                f"/models/{prepared.model}/versions/{version}/variants",
                pack_upload(variant, prepared.contract),
                UPLOAD_MEDIA_TYPE,
            )
            registered.append(
                {"variant": variant.name, "bundle_sha256": answer["bundle_sha256"], "tuf_target": answer["tuf_target"]}
            )
    result = {"model": prepared.model, "version": version, "registered": registered, "skipped": prepared.skipped}
    emit(result, as_json, _print_registration)


def _print_models(models: list[dict[str, Any]]) -> None:
    table = Table("model", "versions", "description")
    for m in models:
        table.add_row(str(m["name"]), ", ".join(map(str, m["versions"])), str(m["description"]))
    Console().print(table)


def _print_registration(result: dict[str, Any]) -> None:
    table = Table("variant", "registered", "bundle sha256 / reason", title=f"{result['model']}:{result['version']}")
    for r in result["registered"]:
        table.add_row(r["variant"], "yes", r["bundle_sha256"])
    for s in result["skipped"]:
        table.add_row(s["variant"], "no", s["reason"])
    Console().print(table)
