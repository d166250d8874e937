"""``edgefleet serve``: serve model files over the Open Inference Protocol, and
``edgefleet serve export-triton``: write a model into a Triton model repository."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, cast

import typer
from pydantic import ValidationError

from hub.cli.output import fail

if TYPE_CHECKING:
    from hub.serving import BatchingConfig, ModelSpec

serve_app = typer.Typer(
    help="Serve heavy models over the Open Inference Protocol (KServe V2) with dynamic batching.",
    invoke_without_command=True,
)

ModelOpt = Annotated[
    list[str] | None,
    typer.Option("--model", "-m", help="NAME=PATH or NAME:VERSION=PATH (.onnx, .pt/.ts, .pt2); repeatable"),
]
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="JSON file: {'models': [ModelSpec, ...]}")]
MaxBatchOpt = Annotated[int, typer.Option(help="max rows per batch; 0 turns batching off")]
DelayOpt = Annotated[float, typer.Option(help="longest wait (ms) for a batch to fill")]
PreferredOpt = Annotated[list[int] | None, typer.Option("--preferred-batch-size", help="repeatable")]
QueueOpt = Annotated[int, typer.Option(help="queued requests per model before answering 503")]
TimeoutOpt = Annotated[float, typer.Option(help="default per-request timeout (ms)")]
InstancesOpt = Annotated[int, typer.Option(help="model instances (worker threads) per model")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON (errors too, as {'error': ...} on stderr)")]


def _batching(
    max_batch_size: int,
    delay_ms: float,
    preferred: list[int] | None,
    queue: int,
    timeout_ms: float,
    instances: int,
) -> BatchingConfig:
    from hub.serving import BatchingConfig

    try:
        return BatchingConfig(
            max_batch_size=max_batch_size,
            max_queue_delay_ms=delay_ms,
            preferred_batch_sizes=tuple(preferred or ()),
            max_queue_size=queue,
            default_timeout_ms=timeout_ms,
            instances=instances,
        )
    except ValidationError as exc:
        raise typer.BadParameter(str(exc)) from exc


def _specs(models: list[str], config: Path | None, batching: BatchingConfig, device: str) -> list[ModelSpec]:
    from hub.serving import ServingConfig, parse_model_arg

    if device not in ("auto", "cpu", "cuda"):
        raise typer.BadParameter("--device must be auto, cpu or cuda")
    specs: list[ModelSpec] = []
    try:
        if config is not None:
            specs += ServingConfig.model_validate(json.loads(config.read_text())).models
        for arg in models:
            spec = parse_model_arg(arg, batching)
            specs.append(spec.model_copy(update={"device": device}))
    except (ValueError, OSError) as exc:  # ValidationError and JSONDecodeError are ValueErrors
        raise typer.BadParameter(str(exc)) from exc
    return specs


@serve_app.callback()
def serve(
    ctx: typer.Context,
    model: ModelOpt = None,
    config: ConfigOpt = None,
    host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
    max_batch_size: MaxBatchOpt = 32,
    max_queue_delay_ms: DelayOpt = 2.0,
    preferred_batch_size: PreferredOpt = None,
    max_queue_size: QueueOpt = 1024,
    timeout_ms: TimeoutOpt = 30_000.0,
    instances: InstancesOpt = 1,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
    token_file: Annotated[
        Path | None, typer.Option(help="file holding the API token clients must send (or EDGEFLEET_SERVING_TOKEN)")
    ] = None,
    no_auth: Annotated[bool, typer.Option("--no-auth", help="serve without a token (trusted networks only)")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Serve model files (no hub needed): V2 endpoints under /v2, Prometheus metrics at /metrics. Clients send
    ``Authorization: Bearer TOKEN``; without --token-file or EDGEFLEET_SERVING_TOKEN a token is made and printed.
    With --json the start is one JSON object on stdout: url, models and the made token (else null)."""
    if ctx.invoked_subcommand is not None:
        return
    batching = _batching(
        max_batch_size, max_queue_delay_ms, preferred_batch_size, max_queue_size, timeout_ms, instances
    )
    specs = _specs(model or [], config, batching, device)
    if not specs:
        raise typer.BadParameter("give at least one --model NAME=PATH or a --config file")
    import uvicorn
    from prometheus_client import CollectorRegistry

    from hub.serving import create_app

    token, made = (None, False) if no_auth else _serving_token(token_file)
    if as_json:
        shown = {
            "url": f"http://{host}:{port}",
            "models": [spec.name for spec in specs],
            "token": token if made else None,
        }
        typer.echo(json.dumps(shown))
    elif made:
        typer.echo(f"serving API token (shown once; clients send 'Authorization: Bearer ...'): {token}", err=True)
    app = create_app(specs, registry=CollectorRegistry(), token=token)
    uvicorn.run(app, host=host, port=port, log_level=log_level)


def _serving_token(token_file: Path | None) -> tuple[str, bool]:
    """The token from ``token_file`` or the environment, else a new one; and whether it was made here."""
    import os
    import secrets

    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as exc:
            raise typer.BadParameter(f"cannot read --token-file {token_file}: {exc}") from exc
        if not token:
            raise typer.BadParameter(f"--token-file {token_file} is empty")
        return token, False
    token = os.environ.get("EDGEFLEET_SERVING_TOKEN", "").strip()
    if token:
        return token, False
    return f"ef_{secrets.token_urlsafe(32)}", True


@serve_app.command("export-triton")
def export_triton_cmd(
    model: Annotated[str, typer.Argument(help="NAME=PATH or NAME:VERSION=PATH")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Triton model repository directory")],
    max_batch_size: MaxBatchOpt = 32,
    max_queue_delay_ms: DelayOpt = 2.0,
    preferred_batch_size: PreferredOpt = None,
    max_queue_size: QueueOpt = 1024,
    timeout_ms: TimeoutOpt = 30_000.0,
    instances: InstancesOpt = 1,
    instance_kind: Annotated[str, typer.Option(help="auto, gpu or cpu")] = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Write config.pbtxt and the model file into a Triton model repository."""
    from hub.serving import ServingError, export_triton

    if instance_kind not in ("auto", "gpu", "cpu"):
        raise typer.BadParameter("--instance-kind must be auto, gpu or cpu")
    batching = _batching(
        max_batch_size, max_queue_delay_ms, preferred_batch_size, max_queue_size, timeout_ms, instances
    )
    (spec,) = _specs([model], None, batching, "cpu")
    try:
        kind = cast(Literal["auto", "gpu", "cpu"], instance_kind)
        model_dir = export_triton(spec, out, instance_kind=kind)
    except ServingError as exc:
        fail(exc)
    typer.echo(json.dumps({"model_dir": str(model_dir)}) if as_json else str(model_dir))


def register(app: typer.Typer) -> None:
    """Add ``serve`` (and its ``export-triton`` subcommand) to the ``edgefleet`` CLI."""
    app.add_typer(serve_app, name="serve")
