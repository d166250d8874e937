"""``edgefleet convert`` and ``edgefleet targets list``: the converters' command line."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import typer

from hub.cli.output import fail

DEFAULT_CACHE = Path(os.environ.get("EDGEFLEET_CACHE_DIR", Path.home() / ".cache" / "edgefleet" / "convert"))


def register(app: typer.Typer) -> None:
    """Add ``convert`` and the ``targets`` group to ``app``."""
    app.command("convert")(convert_command)
    targets_app = typer.Typer(help="Hardware targets EdgeFleet converts for.", no_args_is_help=True)
    targets_app.command("list")(targets_list)
    app.add_typer(targets_app, name="targets")


def targets_list(as_json: bool = typer.Option(False, "--json", help="Print the profiles as JSON.")) -> None:
    """List the known hardware targets."""
    from targets import list_targets

    profiles = list_targets()
    if as_json:
        typer.echo(json.dumps([t.to_dict() for t in profiles], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="EdgeFleet targets")
    for column in ("name", "runtime", "precisions", "memory MB", "accelerator", "latency budget ms", "arch"):
        table.add_column(column)
    for t in profiles:
        table.add_row(
            t.name,
            t.runtime,
            ", ".join(t.precisions),
            str(t.memory_mb),
            t.accelerator,
            f"{t.latency_budget_ms:g}",
            t.arch,
        )
    Console().print(table)


def convert_command(
    model: Path = typer.Argument(..., help="Source model: .pt2 (torch.export.save), TorchScript or .onnx."),
    targets: str = typer.Option(..., "--targets", "-t", help="Comma-separated target names (see `targets list`)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory (replaced atomically)."),
    calib: Path | None = typer.Option(None, "--calib", help="Calibration data (.npz of input arrays)."),
    eval_data: Path | None = typer.Option(None, "--eval", help="Evaluation data (.npz; 'labels' optional)."),
    train: Path | None = typer.Option(None, "--train", help="Training data for pruning fine-tune/distillation."),
    max_accuracy_drop: float | None = typer.Option(
        None,
        "--max-accuracy-drop",
        help="Search quantization settings within this accuracy drop (0.01 = 1 point).",
    ),
    precisions: str | None = typer.Option(None, "--precisions", help="Only these precisions, e.g. int8,fp32."),
    pipeline: Path | None = typer.Option(
        None, "--pipeline", help="JSON file mapping 'target' or 'target/precision' to a list of steps."
    ),
    cache_dir: Path = typer.Option(DEFAULT_CACHE, "--cache-dir", help="Step cache directory."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write the step cache."),
    keep_going: bool = typer.Option(False, "--keep-going", help="Write the report even if no variant was built."),
    strict: bool = typer.Option(False, "--strict", help="Stop at the first failing variant and exit non-zero."),
    threads: int = typer.Option(2, "--threads", help="Threads each runtime may use when measuring."),
    as_json: bool = typer.Option(False, "--json", help="Print report.json to stdout instead of a table."),
    contract: Path | None = typer.Option(
        None, "--contract", help="Data contract (see `contract infer`): check --calib/--eval data, ship it along."
    ),
) -> None:
    """Convert MODEL into a checked, measured variant per target; writes OUT/report.json and a model card."""
    from converters import registry
    from converters.errors import ConversionError, UnsupportedOperatorError
    from targets import TargetError

    try:
        pipelines = json.loads(pipeline.read_text()) if pipeline else None
        target_names = [t.strip() for t in targets.split(",") if t.strip()]
        wanted = [p.strip() for p in precisions.split(",")] if precisions else None
        # Refuse a missing extra before importing any toolchain.
        from converters.convert import plan_variants

        plan_variants(target_names, precisions=wanted, pipelines=pipelines)
        loader = "onnx" if model.suffix.lower() == ".onnx" else "torch"
        if not registry.module_available(loader):
            raise registry.MissingExtraError(f"loading {model.name}", loader)
        report = _run(
            model,
            target_names,
            out,
            calib,
            eval_data,
            train,
            max_accuracy_drop,
            wanted,
            pipelines,
            None if no_cache else cache_dir,
            keep_going,
            threads,
            quiet=as_json,
            strict=strict,
        )
    except UnsupportedOperatorError as exc:
        fail(f"unsupported operator {exc.operator!r} (target {exc.target}, stage {exc.stage}): {exc}", code=2)
    except (ConversionError, TargetError, json.JSONDecodeError, OSError) as exc:
        fail(exc, code=2)
    if contract is not None:
        report = _record_contract(report, out, contract, [p for p in (calib, eval_data) if p is not None])
    if as_json:
        typer.echo(report.to_json())
    else:
        _print_table(report, out)
    if all(v.status == "failed" for v in report.variants):  # nothing usable was built
        raise typer.Exit(1)


def _record_contract(report: Any, out: Path, path: Path, data: list[Path]) -> Any:
    """The contract check step: check the calibration and evaluation data, record the result in the report
    and keep the contract beside it (``register-conversion`` ships it in every bundle)."""
    from converters.report import write_report
    from fleet.wire.bundle import CONTRACT_NAME
    from hub.cli.contract import check_data_files, load_contract_option

    contract = load_contract_option(path)
    assert contract is not None
    results = check_data_files(contract, data)
    passed = not any(r["violations"] for r in results.values())
    report.contract = {"path": str(path), "passed": passed, "data": results}
    (out / CONTRACT_NAME).write_text(contract.model_dump_json(indent=2))
    write_report(report, out)
    for name, result in results.items():
        if result["violations"]:
            typer.echo(f"warning: {name} breaks the data contract: {result['violations']}", err=True)
    return report


def _run(
    model: Path,
    targets: list[str],
    out: Path,
    calib: Path | None,
    eval_data: Path | None,
    train: Path | None,
    budget: float | None,
    precisions: list[str] | None,
    pipelines: Any,
    cache_dir: Path | None,
    keep_going: bool,
    threads: int,
    *,
    quiet: bool,
    strict: bool = False,
) -> Any:
    from functools import partial

    from converters.convert import convert

    run = partial(
        convert,
        model,
        targets,
        out,
        calib=calib,
        eval=eval_data,
        train=train,
        max_accuracy_drop=budget,
        precisions=precisions,
        pipelines=pipelines,
        cache_dir=cache_dir,
        keep_going=keep_going,
        threads=threads,
        strict=strict,
    )
    if quiet:
        return run()
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[step]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        tasks: dict[str, Any] = {}

        def on_event(event: str, name: str, detail: str) -> None:
            if event == "source":
                console.print(f"[dim]{detail}[/dim]")
            elif event == "start":
                tasks[name] = progress.add_task(name, total=len(detail.split(" → ")) + 1, step=detail)
            elif event in ("step", "cached"):
                label = f"{detail} (cached)" if event == "cached" else detail
                progress.update(tasks[name], advance=1 if event == "cached" or detail != "measure" else 0, step=label)
            elif event == "done":
                progress.update(tasks[name], completed=progress.tasks[tasks[name]].total, step=detail)

        return run(progress=on_event)


def _print_table(report: Any, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{report.model} → {out}")
    table.add_column("variant", no_wrap=True)
    table.add_column("status", no_wrap=True)
    for column in ("KiB", "max err", "top-1", "acc", "p50 ms", "p99 ms", "run", "budget"):
        table.add_column(column, justify="right", no_wrap=True)

    def fmt(value: Any, digits: int = 3) -> str:
        if value is None:
            return "—"
        if isinstance(value, bool):
            return "yes" if value else "no"
        return f"{value:.{digits}g}" if isinstance(value, float) else str(value)

    styles = {"ok": "green", "out_of_budget": "yellow", "not_executed": "dim", "failed": "red"}
    for v in report.variants:
        size = None if v.size_bytes is None else v.size_bytes / 1024
        table.add_row(
            v.name,
            f"[{styles[v.status]}]{v.status}[/]",
            fmt(size, 4),
            fmt(v.max_abs_error),
            fmt(v.top1_agreement),
            fmt(v.accuracy),
            fmt(v.latency_ms_p50),
            fmt(v.latency_ms_p99),
            fmt(v.executed),
            fmt(v.within_budget),
        )
    console = Console(width=max(Console().width, 120))
    console.print(table)
    for v in report.variants:
        if v.reason or v.error:
            console.print(f"[dim]{v.name}: {v.reason or (v.error.message if v.error else '')}[/dim]")
    console.print(f"report: {out / 'report.json'}  model card: {out / 'MODEL_CARD.md'}")
