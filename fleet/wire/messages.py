"""Wire protocol v1 messages. Every JSON payload carries ``schema_version``; all models are frozen.

Bundle chunks travel as binary frames (see `encode_chunk`), everything else as JSON.
"""

from __future__ import annotations

import hashlib
import json
import struct
from enum import StrEnum
from typing import Annotated, Any, Final, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)

from fleet.errors import ProtocolError

SCHEMA_VERSION: Final = 1
MAX_JSON_BYTES: Final = 512 * 1024
MAX_CHUNK_BYTES: Final = 1024 * 1024
_CHUNK_MAGIC: Final = b"EFC1"

Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Name = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
DeviceId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")]
BatchId = Annotated[str, Field(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9-]+$")]
#: Counts stored in 32-bit integer columns; a window never holds more (a device answers far fewer requests).
Count = Annotated[int, Field(ge=0, le=2**31 - 1)]
Label = Annotated[str, Field(min_length=1, max_length=128)]
ShortName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
MAX_HISTOGRAM_BUCKETS: Final = 64
MAX_PREDICTION_LABELS: Final = 1000
MAX_FEATURES: Final = 256
MAX_ACK_BATCHES: Final = 1000
MAX_MIRRORS: Final = 8
#: Where a device downloads bundles over HTTP(S): ``{base}/{sha256}``, and ``{base}/chunk-index.{sha256}``.
BaseUrl = Annotated[str, Field(max_length=512, pattern=r"^https?://[^\s/?#@]+(/[^\s?#]*)?$")]


class WireModel(BaseModel):
    """Base of every JSON wire message: frozen, strict about unknown fields, versioned."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)  # JSON has no NaN or Infinity
    schema_version: Literal[1] = SCHEMA_VERSION


class InstalledModel(WireModel):
    """A model version installed on a device."""

    model: Name
    version: Name
    sha256: Sha256
    target: Name


class UpdateState(StrEnum):
    """Where a device is in its update state machine (reported in state and events)."""

    IDLE = "idle"
    DOWNLOAD = "download"
    VERIFY = "verify"
    INSTALL = "install"
    HEALTH_CHECK = "health_check"
    COMMIT = "commit"
    ROLLBACK = "rollback"
    FAILED = "failed"
    DONE = "done"


class DeviceState(WireModel):
    """Retained device state; the last will publishes the same shape with ``online=False``."""

    device_id: DeviceId
    online: bool
    target: Name | None = None
    agent_version: str | None = None
    active: InstalledModel | None = None
    last_known_good: InstalledModel | None = None
    update_state: UpdateState = UpdateState.IDLE
    deployment_id: str | None = None
    ts: float = 0.0


#: a state at most this much older than the one held (by the device's clock) is a late copy of an earlier report
LATE_STATE_WINDOW_S = 300.0


def late_copy(state: DeviceState, held_online: bool, held_ts: float | None) -> bool:
    """Whether ``state`` is a late copy of a report older than the one held for its device (a QoS 1 redelivery
    to a hub that fell behind, replicas storing in parallel): sent before it by the device's clock, by at most
    `LATE_STATE_WINDOW_S`, with the same online status. A change of online status (the last will carries the
    connect time) always counts, and so does a state much older: the device's clock stepped back, and its
    reports must not stay ignored until the clock catches up."""
    if held_ts is None or state.ts <= 0 or state.online != held_online:
        return False
    return held_ts - LATE_STATE_WINDOW_S <= state.ts < held_ts


class Heartbeat(WireModel):
    """Periodic liveness message, QoS 0."""

    device_id: DeviceId
    ts: float
    uptime_s: float
    requests_total: int = Field(ge=0)


class DeploymentOrder(WireModel):
    """The hub's desired state for one device, retained on its deployment topic."""

    deployment_id: Name
    model: Name
    version: Name
    target: Name
    tuf_target: str = Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9._/-]+$")
    sha256: Sha256
    size_bytes: int = Field(gt=0)
    chunk_size: int = Field(gt=0, le=MAX_CHUNK_BYTES)
    chunk_count: int = Field(gt=0)
    allow_downgrade: bool = False
    shadow: bool = False  # install and health-check, then run beside the active model instead of replacing it
    issued_at: float = 0.0
    # Strictly increasing per device, kept by hub and agent: an agent refuses an order older than the last one
    # it accepted, so a captured order can never be replayed (0: a hub from before sequences).
    sequence: int = Field(default=0, ge=0, le=2**63 - 1)
    # How the bundle travels. "mqtt": chunk broadcast over the broker. "http": range requests to each of
    # ``mirrors`` in order (untrusted, sent no credentials), then to ``hub_url`` (the hub's /bundles route, sent
    # the device's credentials). Either way the bytes are checked against the order's digest and TUF.
    transport: Literal["mqtt", "http"] = "mqtt"
    mirrors: list[BaseUrl] = Field(default_factory=list, max_length=MAX_MIRRORS)
    hub_url: BaseUrl | None = None
    # "mqtt" only: the broker keeps every chunk retained on `topics.retained_chunk_topic` while the rollout runs,
    # so the device subscribes to `topics.retained_chunks_filter` and is sent the whole bundle by the broker at
    # once; it asks the hub (fetch) only for chunks that have not arrived within its chunk timeout.
    retained_chunks: bool = False

    @model_validator(mode="after")
    def _sources_fit_transport(self) -> DeploymentOrder:
        if self.transport == "http" and self.retained_chunks:
            raise ValueError("an http order has no retained chunks")
        if self.transport == "http" and not (self.mirrors or self.hub_url):
            raise ValueError("an http order names at least one mirror or the hub_url")
        if self.transport == "mqtt" and (self.mirrors or self.hub_url):
            raise ValueError("an mqtt order names no download URLs")
        return self

    @model_serializer(mode="wrap")
    def _without_default_transport(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Leave the transport fields out of MQTT orders, and ``retained_chunks`` out when false, so an agent
        from before HTTP downloads or retained chunks (which refuses unknown fields) still accepts them."""
        data: dict[str, Any] = handler(self)
        if self.transport == "mqtt":
            for key in ("transport", "mirrors", "hub_url"):
                data.pop(key, None)
        if not self.retained_chunks:
            data.pop("retained_chunks", None)
        return data


class UpdateEvent(WireModel):
    """Progress or outcome of a deployment on one device."""

    device_id: DeviceId
    deployment_id: Name
    state: UpdateState
    ok: bool = True
    detail: str = ""
    progress: float | None = Field(default=None, ge=0.0, le=1.0)
    ts: float = 0.0


class FetchRequest(WireModel):
    """A device asks for bundle chunks (``kind='chunks'``), a TUF metadata file or chunk index
    (``kind='metadata'``), or pieces of a bundle's chunk index by position (``kind='pieces'``)."""

    request_id: Name
    kind: Literal["chunks", "metadata", "pieces"]
    sha256: Sha256 | None = None
    chunks: list[Annotated[int, Field(ge=0)]] = Field(default_factory=list, max_length=100_000)
    name: str | None = Field(default=None, max_length=128, pattern=r"^[A-Za-z0-9._-]+$")


class MetadataReply(WireModel):
    """The hub's answer to a metadata `FetchRequest`: the file, or ``found=False``."""

    request_id: Name
    name: str
    found: bool
    data_b64: str = ""


class FetchRefused(WireModel):
    """The hub's answer to a chunk `FetchRequest` it cannot serve (no such bundle, chunk out of range)."""

    request_id: Name
    sha256: Sha256
    reason: str = Field(max_length=1000)


class Histogram(WireModel):
    """Fixed-bucket histogram: ``counts[i]`` counts values <= ``edges[i]``; the last count is overflow."""

    edges: list[float] = Field(min_length=1, max_length=MAX_HISTOGRAM_BUCKETS)
    counts: list[Count] = Field(max_length=MAX_HISTOGRAM_BUCKETS + 1)
    total: float = Field(default=0.0, ge=0.0)


class ShadowStats(WireModel):
    """Candidate model run beside the active one on sampled requests."""

    candidate_version: Name
    compared: Count
    agreed: Count
    latency_ms: Histogram


class TelemetryBatch(WireModel):
    """Telemetry for one model version over one time window; the hub drops repeated ``batch_id``."""

    batch_id: BatchId
    device_id: DeviceId
    target: ShortName  # stored in 64-character columns
    model: Name
    version: ShortName
    window_start: float = Field(ge=0.0)
    window_end: float = Field(ge=0.0)
    requests: Count
    errors: Count
    offloaded: Count = 0
    latency_ms: Histogram
    confidence: Histogram
    predictions: dict[Label, Count] = Field(default_factory=dict, max_length=MAX_PREDICTION_LABELS)
    feature_sketches: dict[Label, str] = Field(default_factory=dict, max_length=MAX_FEATURES)
    shadow: ShadowStats | None = None
    # Data contract checks of the window's inputs: rows checked, and rows breaking each rule (``input.rule``).
    contract_rows: Count = 0
    contract_violations: dict[Label, Count] = Field(default_factory=dict, max_length=MAX_FEATURES)

    @model_serializer(mode="wrap")
    def _without_empty_contract(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Leave the contract fields out when nothing was checked, so a hub from before contracts (which
        refuses unknown fields) still accepts batches from devices without one."""
        data: dict[str, Any] = handler(self)
        if not self.contract_rows and not self.contract_violations:
            data.pop("contract_rows", None)
            data.pop("contract_violations", None)
        return data


class CapturedSample(WireModel):
    """One input row a device captured for retraining, with the answer it gave."""

    ts: float = Field(ge=0.0)
    input: list[float] = Field(max_length=65_536)
    label: Label
    confidence: float = Field(ge=0, le=1)


class CaptureBatch(WireModel):
    """Sampled inputs of one model version (opt-in on the device); the hub drops repeated ``batch_id``."""

    batch_id: Annotated[str, Field(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9-]+$")]
    device_id: DeviceId
    target: ShortName
    model: Name
    version: ShortName
    shape: list[Annotated[int, Field(ge=1)]] = Field(description="per-row input shape; rows are sent flattened")
    samples: list[CapturedSample] = Field(min_length=1, max_length=10_000)


class TelemetryAck(WireModel):
    """The hub's receipt for telemetry batches, sent only after they are committed to its database.

    ``stored`` batches (new or already stored) and ``rejected`` ones (with the reason; they can never be
    stored) may leave the device's outbox; a batch named in neither is sent again.
    """

    device_id: DeviceId
    stored: list[BatchId] = Field(default_factory=list, max_length=MAX_ACK_BATCHES)
    rejected: dict[BatchId, Annotated[str, Field(max_length=500)]] = Field(
        default_factory=dict, max_length=MAX_ACK_BATCHES
    )


class CertificateRequest(WireModel):
    """A device asks for a new client certificate for a key it generated (PEM CSR naming itself)."""

    device_id: DeviceId
    request_id: Annotated[str, Field(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9-]+$")]
    csr_pem: Annotated[str, Field(min_length=1, max_length=8192)]


class CertificateReply(WireModel):
    """The hub's answer to a `CertificateRequest`: the signed certificate, or why it was refused."""

    device_id: DeviceId
    request_id: Annotated[str, Field(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9-]+$")]
    cert_pem: Annotated[str, Field(max_length=8192)] | None = None
    error: Annotated[str, Field(max_length=500)] | None = None


M = TypeVar("M", bound=WireModel)


def encode(message: WireModel) -> bytes:
    """Serialise a wire message to compact JSON bytes."""
    return message.model_dump_json().encode()


def decode(model: type[M], payload: bytes, *, topic: str | None = None) -> M:
    """Parse ``payload`` as ``model``; raise `ProtocolError` naming the topic and the first bad field."""
    if len(payload) > MAX_JSON_BYTES:
        raise ProtocolError(f"message of {len(payload)} bytes exceeds the {MAX_JSON_BYTES}-byte limit", topic=topic)
    try:
        raw = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"malformed JSON: {exc}", topic=topic) from exc
    if not isinstance(raw, dict):
        raise ProtocolError("message is not a JSON object", topic=topic)
    if raw.get("schema_version") != SCHEMA_VERSION:
        raise ProtocolError(
            f"unsupported schema_version {raw.get('schema_version')!r}; this side speaks {SCHEMA_VERSION}",
            topic=topic,
        )
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "message"
        raise ProtocolError(f"invalid {model.__name__}: {where}: {first['msg']}", topic=topic) from exc


class ChunkFrame(BaseModel):
    """One decoded bundle chunk."""

    model_config = ConfigDict(frozen=True)
    sha256: str
    index: int
    count: int
    data: bytes


def encode_chunk(sha256: str, index: int, count: int, data: bytes) -> bytes:
    """Binary chunk frame: magic, header length, JSON header (with the chunk digest), then the bytes."""
    header = json.dumps(
        {
            "schema_version": SCHEMA_VERSION,
            "sha256": sha256,
            "index": index,
            "count": count,
            "chunk_sha256": hashlib.sha256(data).hexdigest(),
        }
    ).encode()
    return _CHUNK_MAGIC + struct.pack(">I", len(header)) + header + data


def decode_chunk(payload: bytes, *, topic: str | None = None) -> ChunkFrame:
    """Parse and check a chunk frame; a corrupt chunk raises `ProtocolError` saying which one."""
    if len(payload) > MAX_CHUNK_BYTES + 4096:
        raise ProtocolError(f"chunk frame of {len(payload)} bytes is oversized", topic=topic)
    if payload[:4] != _CHUNK_MAGIC or len(payload) < 8:
        raise ProtocolError("not a chunk frame (bad magic)", topic=topic)
    (header_len,) = struct.unpack(">I", payload[4:8])
    if header_len > 4096 or 8 + header_len > len(payload):
        raise ProtocolError("chunk frame header length out of range", topic=topic)
    try:
        header = json.loads(payload[8 : 8 + header_len])
        sha256, index, count, digest = header["sha256"], header["index"], header["count"], header["chunk_sha256"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ProtocolError(f"malformed chunk header: {exc}", topic=topic) from exc
    if header.get("schema_version") != SCHEMA_VERSION:
        raise ProtocolError(f"unsupported chunk schema_version {header.get('schema_version')!r}", topic=topic)
    if not (isinstance(index, int) and isinstance(count, int) and 0 <= index < count):
        raise ProtocolError(f"chunk index {index!r} out of range for count {count!r}", topic=topic)
    data = payload[8 + header_len :]
    if hashlib.sha256(data).hexdigest() != digest:
        raise ProtocolError(f"chunk {index} of bundle {str(sha256)[:12]} is corrupt (digest mismatch)", topic=topic)
    return ChunkFrame(sha256=sha256, index=index, count=count, data=data)
