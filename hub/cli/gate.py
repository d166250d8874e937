"""``edgefleet gate``: the quality gate a conversion must pass, for any CI (exit status, table, JUnit XML)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from hub.cli.output import JSON_OPTION, fail

if TYPE_CHECKING:
    from converters.gate import GateResult


def register(app: typer.Typer) -> None:
    """Add the ``gate`` command to ``app``."""

    @app.command("gate")
    def gate(
        conversion: Path = typer.Argument(..., help="an `edgefleet convert` output directory (or its report.json)"),
        config: Path | None = typer.Option(None, "--config", help="TOML thresholds (a [gate] table)"),
        production: Path | None = typer.Option(None, help="the production version's conversion, to compare with"),
        min_accuracy: float | None = typer.Option(None, help="minimum accuracy of every variant"),
        max_accuracy_drop: float | None = typer.Option(None, help="maximum accuracy drop vs the source model"),
        max_drop_vs_production: float | None = typer.Option(None, help="maximum accuracy drop vs production"),
        max_latency_ms: float | None = typer.Option(None, help="p50 latency budget of every variant"),
        max_size_mb: float | None = typer.Option(None, help="size budget of every variant"),
        require_target: list[str] = typer.Option([], help="a target that must have a usable variant, repeatable"),
        junit: Path | None = typer.Option(None, help="write JUnit XML here"),
        as_json: bool = JSON_OPTION,
    ) -> None:
        """Check a conversion against thresholds; exit 1 when any check fails (2 on bad input)."""
        result = run_gate(
            conversion,
            config,
            production,
            min_accuracy=min_accuracy,
            max_accuracy_drop=max_accuracy_drop,
            max_drop_vs_production=max_drop_vs_production,
            max_latency_ms=max_latency_ms,
            max_size_mb=max_size_mb,
            required_targets=require_target,
        )
        if junit is not None:
            junit.write_text(result.junit_xml())
        typer.echo(result.model_dump_json(indent=2) if as_json else result.table())
        raise typer.Exit(0 if result.passed else 1)


def run_gate(conversion: Path, config: Path | None, production: Path | None, **thresholds: object) -> GateResult:
    """Load the reports and thresholds and evaluate; bad input exits 2 with a one-line reason."""
    from converters import load_report
    from converters.errors import ConversionError
    from converters.gate import GateThresholds, evaluate_gate

    try:
        limits = GateThresholds.load(config, **thresholds)
        report = load_report(_directory(conversion), verify=False)
        baseline = load_report(_directory(production), verify=False) if production else None
    except ConversionError as exc:
        fail(exc, code=2)
    return evaluate_gate(report, limits, production=baseline)


def _directory(path: Path) -> Path:
    return path.parent if path.name == "report.json" else path
