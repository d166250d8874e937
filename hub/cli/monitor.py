"""Monitoring commands: ``drift report MODEL:VERSION`` and ``canary report ROLLOUT``.

Both ask the hub over its REST API (or analyse a telemetry dump given with ``--telemetry``, no hub needed), print
a table, or the JSON report with ``--json``. ``canary report`` uses the rollout's own gate settings and lists the
verdicts its gate reached.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from hub.cli.model_ref import parse_model_version
from hub.cli.output import JSON_OPTION, fail
from hub.cli.remote import hub_session
from hub.errors import HubError


def register(app: typer.Typer) -> None:
    """Add ``drift`` and ``canary`` commands to ``app``."""
    drift_app = typer.Typer(help="Input, prediction and confidence drift.", no_args_is_help=True)
    canary_app = typer.Typer(help="Canary analysis of rollouts.", no_args_is_help=True)
    app.add_typer(drift_app, name="drift")
    app.add_typer(canary_app, name="canary")

    @drift_app.command("report")
    def drift_report(
        model_version: str = typer.Argument(..., metavar="MODEL:VERSION"),
        cohort: list[str] = typer.Option(
            [], "--cohort", help="label selector naming one cohort, e.g. 'region=eu,tier in (edge)'; repeatable"
        ),
        by: list[str] = typer.Option(
            ["target"], "--by", help="split into cohorts by target, version or label:KEY; repeatable"
        ),
        last: float | None = typer.Option(None, "--last", help="only telemetry of the last N hours"),
        reference: Path | None = typer.Option(None, help="ReferenceProfile JSON (e.g. a bundle's reference.json)"),
        telemetry: Path | None = typer.Option(None, help="telemetry dump (JSON or JSONL) instead of the hub"),
        as_json: bool = JSON_OPTION,
    ) -> None:
        """Drift of a model version's live telemetry against its reference data, per cohort."""
        from fleet.drift import DriftReport  # scipy: imported by the command that needs it, not by the CLI
        from fleet.telemetry import ReferenceProfile
        from hub.monitoring.queries import FileSource, drift_report_for

        try:
            model, version = parse_model_version(model_version)
            ref = ReferenceProfile.model_validate_json(reference.read_text()) if reference else None
            if telemetry is not None or ref is not None:
                if telemetry is None:
                    raise ValueError("--reference goes with --telemetry (the hub uses its bundle's reference)")
                report = drift_report_for(
                    FileSource(telemetry),
                    model,
                    version,
                    by=by,
                    selectors={c: c for c in cohort},
                    since=time.time() - last * 3600 if last else None,
                    reference=ref,
                )
            else:
                with hub_session() as hub:
                    answer = hub.get(f"/models/{model}/versions/{version}/drift", cohort=cohort, by=by, last_hours=last)
                report = DriftReport.model_validate(answer)
        except (HubError, ValueError, OSError) as exc:
            fail(exc)
        if as_json:
            typer.echo(report.model_dump_json(indent=2))
            return
        table = Table(
            "cohort",
            "feature",
            "test",
            "statistic",
            "p (BH)",
            "threshold",
            "drift",
            title=f"drift of {model}:{version}",
        )
        for row in report.rows():
            style = "red" if row["drift"] == "DRIFT" else None
            table.add_row(*row.values(), style=style)
        Console().print(table)
        for c in report.cohorts:
            verdict = {True: "inputs drifted", False: "no input drift", None: "not enough data"}[c.dataset_drift]
            share = "-" if c.drift_share is None else f"{c.drift_share:.0%}"
            typer.echo(
                f"{c.cohort}: {verdict} ({c.drifted_features}/{c.tested_features} features, {share}); "
                f"{c.devices} devices, {c.requests} requests"
            )

    @canary_app.command("report")
    def canary_report(
        rollout: str = typer.Argument(..., metavar="ROLLOUT"),
        telemetry: Path | None = typer.Option(None, help="telemetry dump (JSON) instead of the hub"),
        as_json: bool = JSON_OPTION,
    ) -> None:
        """Canary verdict (pass, fail, inconclusive) of a rollout with its own gate settings, its reasons and
        metrics, and the verdicts the rollout's gate reached."""
        from fleet.canary import CanaryReport
        from hub.monitoring.queries import FileSource, canary_report_for

        gate_verdicts: list[dict[str, Any]] = []
        try:
            if telemetry is not None:
                report = canary_report_for(FileSource(telemetry), rollout)
            else:
                with hub_session() as hub:
                    answer = hub.get(f"/rollouts/{rollout}/canary")
                gate_verdicts = answer.pop("gate_verdicts", [])
                answer.pop("rollout_id", None)
                report = CanaryReport.model_validate(answer)
        except (HubError, ValueError, OSError) as exc:
            fail(exc)
        if as_json:
            typer.echo(json.dumps({**report.model_dump(mode="json"), "gate_verdicts": gate_verdicts}, indent=2))
            return
        score = "-" if report.score is None else f"{report.score:.0f}"
        typer.echo(
            f"rollout {rollout}: {report.verdict.value.upper()} (score {score}; "
            f"{report.canary_devices} canary vs {report.baseline_devices} baseline devices)"
        )
        for reason in report.reasons:
            typer.echo(f"  - {reason}")
        table = Table("metric", "verdict", "critical", "canary", "baseline", "change", "p", "reason")
        for m in report.metrics:
            table.add_row(
                m.metric.value,
                m.verdict.value,
                "yes" if m.critical else "",
                "-" if m.canary_value is None else f"{m.canary_value:.4g}",
                "-" if m.baseline_value is None else f"{m.baseline_value:.4g}",
                "-" if m.relative_change is None else f"{m.relative_change:+.1%}",
                "-" if m.p_value is None else f"{m.p_value:.3g}",
                m.reason,
            )
        Console().print(table)
        for verdict in gate_verdicts:
            reasons = "; ".join(verdict["reasons"]) or "no reasons given"
            typer.echo(f"gate verdict after wave {verdict['wave']}: {verdict['verdict']}: {reasons}")
