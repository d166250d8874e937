"""Agent configuration (``agent.toml``), validated with pydantic."""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agent.errors import AgentConfigError
from fleet.wire.mqtt import TlsFiles
from fleet.wire.topics import DEVICE_ID_PATTERN
from targets import TARGETS

_BROKER_SCHEMES = ("mqtt://", "tcp://", "mqtts://", "ssl://")


class AgentConfig(BaseModel):
    """Everything one device needs; paths are relative to the config file's directory when loaded."""

    model_config = ConfigDict(extra="forbid")
    device_id: str
    target: str
    broker_url: str = Field(default="mqtt://127.0.0.1:1883", description="mqtt://host:port, or mqtts:// for TLS")
    broker_failover_urls: list[str] = Field(
        default_factory=list,
        description="other nodes of a clustered broker (same scheme, TLS files and login): when the current node "
        "is lost or cannot be reached, the agent tries the next one in turn",
    )
    broker_ca_file: Path | None = Field(default=None, description="CA of the broker's certificate (mqtts://)")
    broker_cert_file: Path | None = Field(default=None, description="this device's client certificate (mutual TLS)")
    broker_key_file: Path | None = Field(default=None, description="the client certificate's private key")
    cert_renew_before_days: float = Field(
        default=90.0, gt=0, description="renew the client certificate when fewer days than this remain"
    )
    cert_check_interval_s: float = Field(default=6 * 3600.0, gt=0, description="how often to check its expiry")
    cert_request_timeout_s: float = Field(default=60.0, gt=0, description="how long to wait for the hub's answer")
    password: str | None = Field(default=None, description="device credential; prefer password_file")
    password_file: Path | None = None
    data_dir: Path = Path("var/agent")
    trust_root: Path = Field(description="the hub's TUF root.json given at provisioning")
    http_host: str = "127.0.0.1"
    http_port: int | None = Field(default=None, ge=0, le=65535, description="local inference API; None disables")
    http_max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024, description="larger bodies get 413")
    http_max_batch_rows: int = Field(default=1024, ge=1, description="rows one request may carry (413 beyond)")
    http_read_timeout_s: float = Field(default=10.0, gt=0, description="a client silent this long gets 408")
    http_max_connections: int = Field(default=64, ge=1, description="connections served at once; beyond: 503")
    connect_timeout_s: float = Field(default=10.0, gt=0, description="how long one broker connection attempt waits")
    reconnect_initial_s: float = Field(default=1.0, gt=0, description="first backoff ceiling between attempts")
    reconnect_max_s: float = Field(default=60.0, gt=0, description="backoff cap: attempts go on forever")
    telemetry_interval_s: float = Field(default=10.0, gt=0)
    telemetry_ack_timeout_s: float = Field(
        default=30.0, gt=0, description="a telemetry batch the hub has not acknowledged by then is sent again"
    )
    heartbeat_interval_s: float = Field(default=30.0, gt=0)
    outbox_max_batches: int = Field(default=10_000, ge=10)
    chunk_timeout_s: float = Field(default=5.0, gt=0)
    # 0: ask at once; the request tells the hub this device listens, and a wave is broadcast once all asked.
    chunk_ask_after_s: float = Field(default=0.0, ge=0, description="wait this long for chunks before asking")
    download_timeout_s: float = Field(default=600.0, gt=0)
    metadata_timeout_s: float = Field(
        default=60.0, gt=0, description="how long one TUF metadata file is asked for (4 requests, each wait doubling)"
    )
    bundle_ca_file: Path | None = Field(
        default=None, description="CA of HTTPS bundle sources (the hub's API certificate), besides the system's"
    )
    bundle_timeout_s: float = Field(default=30.0, gt=0, description="an HTTP bundle source silent this long is cut")
    bundle_attempts: int = Field(default=4, ge=1, description="tries of one HTTP source without progress")
    bundle_retry_initial_s: float = Field(default=1.0, gt=0, description="first backoff between HTTP tries")
    bundle_retry_max_s: float = Field(default=30.0, gt=0, description="backoff cap between HTTP tries")
    offload_url: str | None = Field(default=None, description="hub serving endpoint (Open Inference Protocol)")
    offload_token_file: Path | None = Field(
        default=None, description="file holding the hub API token the serving tier requires (a viewer token)"
    )
    offload_timeout_s: float = Field(default=2.0, gt=0)
    cascade_threshold: float | None = Field(
        default=None, gt=0, le=1, description="offload answers whose local confidence is below this"
    )
    shadow_sample_rate: float = Field(default=0.1, ge=0, le=1, description="share of requests a shadow model sees")
    capture_rate: float = Field(
        default=0.0, ge=0, le=1, description="share of input rows kept for retraining; 0 (default) captures nothing"
    )
    capture_max_per_hour: int = Field(default=100, ge=0, description="rows captured per clock hour at most")
    capture_max_bytes: int = Field(default=5 * 1024 * 1024, ge=0, description="disk kept for unsent captures")
    refuse_contract_violations: bool = Field(
        default=False, description="answer 400 to inputs breaking the model's data contract (always counted)"
    )

    @field_validator("device_id")
    @classmethod
    def _device_id(cls, value: str) -> str:
        if not DEVICE_ID_PATTERN.match(value):
            raise ValueError("device_id must be 1-63 letters, digits, '.', '_' or '-'")
        return value

    @field_validator("target")
    @classmethod
    def _target(cls, value: str) -> str:
        if value not in TARGETS:
            raise ValueError(f"unknown target {value!r}; known: {', '.join(sorted(TARGETS))}")
        return value

    @field_validator("http_host")
    @classmethod
    def _loopback(cls, value: str) -> str:
        if value not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError("the local inference API listens on loopback only")
        return value

    @model_validator(mode="after")
    def _failover_like_the_broker(self) -> AgentConfig:
        secure = self.broker_url.startswith(("mqtts://", "ssl://"))
        for url in self.broker_failover_urls:
            if url.startswith(("mqtts://", "ssl://")) != secure or not url.startswith(_BROKER_SCHEMES):
                raise ValueError(f"broker_failover_urls: {url!r} must use the same scheme as broker_url")
        return self

    def broker_nodes(self) -> list[str]:
        """``broker_url`` then the failover nodes, without repeats."""
        return list(dict.fromkeys([self.broker_url, *self.broker_failover_urls]))

    def broker_tls(self) -> TlsFiles | None:
        """The TLS files for an ``mqtts://`` broker URL (None for plain ``mqtt://``)."""
        if not self.broker_url.startswith(("mqtts://", "ssl://")):
            return None
        return TlsFiles(
            *(str(p) if p else None for p in (self.broker_ca_file, self.broker_cert_file, self.broker_key_file))
        )

    @model_validator(mode="after")
    def _backoff(self) -> AgentConfig:
        if self.reconnect_initial_s > self.reconnect_max_s:
            raise ValueError("reconnect_initial_s must not exceed reconnect_max_s")
        if self.bundle_retry_initial_s > self.bundle_retry_max_s:
            raise ValueError("bundle_retry_initial_s must not exceed bundle_retry_max_s")
        return self

    def offload_token(self) -> str | None:
        """The serving tier's API token, read from ``offload_token_file`` when given."""
        if self.offload_token_file is None:
            return None
        try:
            return self.offload_token_file.read_text().strip() or None
        except OSError as exc:
            raise AgentConfigError(f"cannot read offload_token_file {self.offload_token_file}: {exc}") from exc

    def secret(self) -> str | None:
        """The device password, read from ``password_file`` when given."""
        if self.password_file is not None:
            try:
                return self.password_file.read_text().strip()
            except OSError as exc:
                raise AgentConfigError(f"cannot read password_file {self.password_file}: {exc}") from exc
        return self.password

    @classmethod
    def load(cls, path: Path) -> AgentConfig:
        """Read and validate a TOML config; relative paths resolve against the file's directory."""
        try:
            raw = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise AgentConfigError(f"cannot read agent config {path}: {exc}") from exc
        for key in (
            "data_dir",
            "trust_root",
            "password_file",
            "offload_token_file",
            "broker_ca_file",
            "broker_cert_file",
            "broker_key_file",
            "bundle_ca_file",
        ):
            if key in raw and not Path(raw[key]).is_absolute():
                raw[key] = str(path.parent / raw[key])
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            prefix = f"{where}: " if where else ""  # a check across keys names no single key
            raise AgentConfigError(f"{path}: {prefix}{first['msg'].removeprefix('Value error, ')}") from exc
