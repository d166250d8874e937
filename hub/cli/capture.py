"""``edgefleet capture export|delete``: the input samples devices captured for retraining (opt-in on devices).

Export writes one ``.npz`` (no pickle) with ``inputs`` (rows in the model's input shape), the answers given
(``labels``, ``confidences``) and where each row came from (``device_ids``, ``targets``, ``timestamps``); or,
for an ``--out`` ending in ``.parquet`` (needs ``edgefleet[parquet]``), one table with those columns, each
input flattened into a list column and the shape kept in the table's metadata.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import typer

from hub.config import HubSettings
from hub.errors import HubError

if TYPE_CHECKING:
    from hub.registry import Registry
    from hub.registry.captures import CaptureStore

DATA_DIR = typer.Option(Path("var/hub"), help="the hub's data directory")
DATABASE_URL = typer.Option(None, help="SQLAlchemy URL; omitted: SQLite in the data dir")


def register(app: typer.Typer) -> None:
    """Add the ``capture`` group to ``app``."""
    capture_app = typer.Typer(help="Input samples captured on devices, for retraining.", no_args_is_help=True)
    capture_app.command("export")(export_command)
    capture_app.command("delete")(delete_command)
    app.add_typer(capture_app, name="capture")


def _stores(data_dir: Path, database_url: str | None) -> tuple[Registry, CaptureStore]:
    from hub.registry import Database, Registry
    from hub.registry.captures import CaptureStore

    registry = Registry(Database(HubSettings(data_dir=data_dir, database_url=database_url).resolved_database_url()))
    return registry, CaptureStore(registry.db)


def export_samples(
    registry: Registry, store: CaptureStore, model: str, version: str, cohort: str | None = None
) -> dict[str, np.ndarray]:
    """The captured rows of ``model:version`` (of devices matching the ``cohort`` label selector, if given)."""
    from fleet.selection import parse_selector, selector_labels

    selector = parse_selector(cohort) if cohort else None
    labels = {d.id: dict(d.labels) for d in registry.list_devices()} if selector else {}
    inputs, answers, confidences, devices, targets, stamps = [], [], [], [], [], []
    shape: list[int] | None = None
    for row in store.rows(model, version):
        if selector is not None and not selector.matches(selector_labels(labels.get(row.device_id, {}), row.target)):
            continue
        if shape is not None and row.shape != shape:
            raise HubError(f"captures of {model}:{version} disagree on the input shape: {shape} and {row.shape}")
        shape = row.shape
        for sample in row.samples:
            inputs.append(sample["input"])
            answers.append(sample["label"])
            confidences.append(sample["confidence"])
            devices.append(row.device_id)
            targets.append(row.target)
            stamps.append(sample["ts"])
    rows = len(inputs)
    return {
        "inputs": np.asarray(inputs, dtype=np.float32).reshape(rows, *(shape or [0])),
        "labels": np.asarray(answers, dtype=str),
        "confidences": np.asarray(confidences, dtype=np.float32),
        "device_ids": np.asarray(devices, dtype=str),
        "targets": np.asarray(targets, dtype=str),
        "timestamps": np.asarray(stamps, dtype=np.float64),
    }


def export_command(
    model_version: str = typer.Argument(..., metavar="MODEL:VERSION"),
    out: Path = typer.Option(..., "--out", "-o", help="the .npz file to write"),
    cohort: str | None = typer.Option(None, help="only devices matching this label selector, e.g. 'site=north'"),
    data_dir: Path = DATA_DIR,
    database_url: str | None = DATABASE_URL,
) -> None:
    """Export the captured inputs of MODEL:VERSION with the answers the devices gave."""
    from hub.monitoring.queries import parse_model_version

    try:
        model, version = parse_model_version(model_version)
        registry, store = _stores(data_dir, database_url)
        registry.get_version(model, version)
        arrays = export_samples(registry, store, model, version, cohort)
    except HubError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    if out.suffix.lower() == ".parquet":
        _write_parquet(out, arrays)
    else:
        np.savez_compressed(out, **arrays)  # type: ignore[arg-type]
    typer.echo(json.dumps({"out": str(out), "rows": len(arrays["labels"])}))


def _write_parquet(out: Path, arrays: dict[str, np.ndarray]) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        typer.echo('error: Parquet export needs pyarrow: pip install "edgefleet[parquet]"', err=True)
        raise typer.Exit(2) from exc
    inputs = arrays["inputs"]
    columns = {name: pa.array(values.tolist()) for name, values in arrays.items() if name != "inputs"}
    columns["inputs"] = pa.array(inputs.reshape(len(inputs), -1).tolist(), type=pa.list_(pa.float32()))
    table = pa.table(columns).replace_schema_metadata({"input_shape": json.dumps(list(inputs.shape[1:]))})
    pq.write_table(table, out)


def delete_command(
    model_version: str = typer.Argument(..., metavar="MODEL[:VERSION]"),
    data_dir: Path = DATA_DIR,
    database_url: str | None = DATABASE_URL,
) -> None:
    """Delete the captured inputs of a model (one version, or every version)."""
    model, _, version = model_version.partition(":")
    deleted = _stores(data_dir, database_url)[1].delete(model, version or None)
    typer.echo(json.dumps({"deleted_messages": deleted}))
