"""The hub's fast decoder of `TelemetryBatch` payloads: msgspec structs mirroring the pydantic messages.

Telemetry is the one message the hub receives thousands of times a second, so it is decoded here, in one
pass, with the feature sketches' base64 turned into bytes by the decoder. The structs carry the same fields
and constraints as `fleet.wire.messages.TelemetryBatch`; `decode_telemetry` refuses whatever the reference
decoder (`messages.decode`) might refuse and some valid but unusual payloads too (JSON in UTF-16, integers
written as ``1.0``): it returns ``None`` and the caller runs the reference decoder, which either accepts the
payload or names the first bad field. So every refusal reads as before and nothing valid is lost.

Hub-only (msgspec is not in the agent install); the agent builds batches with the pydantic models.
"""

from __future__ import annotations

import base64
from typing import Annotated, Final, Literal

import msgspec

from fleet.wire.messages import (
    MAX_FEATURES,
    MAX_HISTOGRAM_BUCKETS,
    MAX_JSON_BYTES,
    MAX_PREDICTION_LABELS,
    Histogram,
    ShadowStats,
    TelemetryBatch,
)

__all__ = [
    "MIRRORS",
    "FastHistogram",
    "FastShadowStats",
    "FastTelemetryBatch",
    "decode_telemetry",
    "from_message",
    "stored_json",
    "to_message",
]

# Python's ``$`` also matches before a final newline; pydantic's (Rust) regex does not: ``\Z`` is its twin.
_NAME: Final = r"^[A-Za-z0-9][A-Za-z0-9._-]*\Z"
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=_NAME)]
ShortName = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=_NAME)]
DeviceId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}\Z")]
BatchId = Annotated[str, msgspec.Meta(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9-]+\Z")]
Count = Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)]
Label = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
NonNegative = Annotated[float, msgspec.Meta(ge=0.0)]


class FastHistogram(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`fleet.wire.messages.Histogram`."""

    edges: Annotated[list[float], msgspec.Meta(min_length=1, max_length=MAX_HISTOGRAM_BUCKETS)]
    counts: Annotated[list[Count], msgspec.Meta(max_length=MAX_HISTOGRAM_BUCKETS + 1)]
    total: NonNegative = 0.0
    schema_version: Literal[1] = 1


class FastShadowStats(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`fleet.wire.messages.ShadowStats`."""

    candidate_version: Name
    compared: Count
    agreed: Count
    latency_ms: FastHistogram
    schema_version: Literal[1] = 1


class FastTelemetryBatch(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """`fleet.wire.messages.TelemetryBatch` with its feature sketches as raw bytes (encoded without the fields
    left at their defaults, as the message reads them back)."""

    schema_version: Literal[1]  # required at the top, as `messages.decode` requires it
    batch_id: BatchId
    device_id: DeviceId
    target: ShortName
    model: Name
    version: ShortName
    window_start: NonNegative
    window_end: NonNegative
    requests: Count
    errors: Count
    offloaded: Count = 0
    latency_ms: FastHistogram
    confidence: FastHistogram
    predictions: Annotated[dict[Label, Count], msgspec.Meta(max_length=MAX_PREDICTION_LABELS)] = {}
    feature_sketches: Annotated[dict[Label, bytes], msgspec.Meta(max_length=MAX_FEATURES)] = {}
    shadow: FastShadowStats | None = None
    contract_rows: Count = 0
    contract_violations: Annotated[dict[Label, Count], msgspec.Meta(max_length=MAX_FEATURES)] = {}


#: Each struct and the pydantic message it mirrors (tests hold them to the same fields).
MIRRORS: Final = {FastHistogram: Histogram, FastShadowStats: ShadowStats, FastTelemetryBatch: TelemetryBatch}
_DECODER: Final = msgspec.json.Decoder(FastTelemetryBatch)
_ENCODER: Final = msgspec.json.Encoder()


def decode_telemetry(payload: bytes) -> FastTelemetryBatch | None:
    """The batch in ``payload``, or None where `messages.decode` must have the last word (it explains)."""
    if len(payload) > MAX_JSON_BYTES:
        return None
    try:
        return _DECODER.decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def _histogram(h: Histogram) -> FastHistogram:
    return FastHistogram(edges=list(h.edges), counts=list(h.counts), total=h.total)


def from_message(batch: TelemetryBatch) -> FastTelemetryBatch:
    """The same batch as a struct (its base64 sketches decoded; `ValueError` when one is not base64)."""
    shadow = batch.shadow
    return FastTelemetryBatch(
        schema_version=1,
        batch_id=batch.batch_id,
        device_id=batch.device_id,
        target=batch.target,
        model=batch.model,
        version=batch.version,
        window_start=batch.window_start,
        window_end=batch.window_end,
        requests=batch.requests,
        errors=batch.errors,
        offloaded=batch.offloaded,
        latency_ms=_histogram(batch.latency_ms),
        confidence=_histogram(batch.confidence),
        predictions=dict(batch.predictions),
        feature_sketches={name: base64.b64decode(text, validate=True) for name, text in batch.feature_sketches.items()},
        shadow=None
        if shadow is None
        else FastShadowStats(
            candidate_version=shadow.candidate_version,
            compared=shadow.compared,
            agreed=shadow.agreed,
            latency_ms=_histogram(shadow.latency_ms),
        ),
        contract_rows=batch.contract_rows,
        contract_violations=dict(batch.contract_violations),
    )


def to_message(batch: FastTelemetryBatch) -> TelemetryBatch:
    """The pydantic message of a struct (validated again: for the rare callers that need the model)."""
    data = msgspec.to_builtins(batch)
    data["feature_sketches"] = {n: base64.b64encode(raw).decode("ascii") for n, raw in batch.feature_sketches.items()}
    return TelemetryBatch.model_validate(data)


def stored_json(batch: FastTelemetryBatch) -> str:
    """The batch as JSON without its feature sketches (stored apart, as bytes)."""
    return _ENCODER.encode(msgspec.structs.replace(batch, feature_sketches={})).decode()
