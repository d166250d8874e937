"""``edgefleet capture export|delete``: the input samples devices captured for retraining (opt-in on devices), through
the hub's REST API (operator token).

Export writes the hub's ``.npz`` (no pickle) with ``inputs`` (rows in the model's input shape), the answers given
(``labels``, ``confidences``) and where each row came from (``device_ids``, ``targets``, ``timestamps``); or, for an
``--out`` ending in ``.parquet`` (needs ``edgefleet[parquet]``), one table with those columns, each input flattened
into a list column and the shape kept in the table's metadata.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from hub.cli.model_ref import parse_model_version
from hub.cli.output import JSON_OPTION, emit, fail
from hub.cli.remote import hub_session
from hub.errors import HubError

if TYPE_CHECKING:
    import numpy as np


def register(app: typer.Typer) -> None:
    """Add the ``capture`` group to ``app``."""
    capture_app = typer.Typer(help="Input samples captured on devices, for retraining.", no_args_is_help=True)
    capture_app.command("export")(export_command)
    capture_app.command("delete")(delete_command)
    app.add_typer(capture_app, name="capture")


def export_command(
    model_version: str = typer.Argument(..., metavar="MODEL:VERSION"),
    out: Path = typer.Option(..., "--out", "-o", help="the .npz (or .parquet) file to write"),
    cohort: str | None = typer.Option(None, help="only devices matching this label selector, e.g. 'site=north'"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Export the captured inputs of MODEL:VERSION with the answers the devices gave."""
    try:
        model, version = parse_model_version(model_version)
    except HubError as exc:
        fail(exc)
    with hub_session() as hub:
        data = hub.get_bytes(f"/models/{model}/versions/{version}/captures", cohort=cohort)
    try:
        import numpy as np

        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        if out.suffix.lower() == ".parquet":
            _write_parquet(out, arrays)
        else:
            out.write_bytes(data)
    except (OSError, ValueError) as exc:
        fail(f"cannot write {out}: {exc}")
    rows = len(arrays["labels"])
    emit({"out": str(out), "rows": rows}, as_json, lambda _: typer.echo(f"{rows} captured rows written to {out}"))


def _write_parquet(out: Path, arrays: dict[str, np.ndarray]) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        fail('Parquet export needs pyarrow: pip install "edgefleet[parquet]"')
    inputs = arrays["inputs"]
    columns = {name: pa.array(values.tolist()) for name, values in arrays.items() if name != "inputs"}
    columns["inputs"] = pa.array(inputs.reshape(len(inputs), -1).tolist(), type=pa.list_(pa.float32()))
    table = pa.table(columns).replace_schema_metadata({"input_shape": json.dumps(list(inputs.shape[1:]))})
    pq.write_table(table, out)


def delete_command(
    model_version: str = typer.Argument(..., metavar="MODEL[:VERSION]"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Delete the captured inputs of a model (one version, or every version)."""
    model, _, version = model_version.partition(":")
    with hub_session() as hub:
        answer = hub.delete(f"/models/{model}/captures", version=version or None)
    emit(answer, as_json, lambda a: typer.echo(f"{a['deleted_messages']} capture message(s) deleted"))
