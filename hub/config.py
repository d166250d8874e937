"""Hub settings, validated: embedded defaults (in-process broker, SQLite, local artifact folder)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class HubSettings(BaseModel):
    """Everything the hub needs to start. Omit ``broker_url`` to run the embedded broker."""

    model_config = ConfigDict(extra="forbid")
    data_dir: Path = Path("var/hub")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default sqlite in data_dir")
    broker_url: str | None = Field(default=None, description="mqtt://user:pass@host:port; default embedded")
    broker_host: str = "127.0.0.1"
    broker_port: int = Field(default=0, ge=0, le=65535, description="embedded broker port; 0 picks a free one")
    hub_secret: str | None = Field(default=None, description="hub's broker password; generated when omitted")
    chunk_size: int = Field(default=64 * 1024, ge=1024, le=1024 * 1024)
    rebroadcast_window_s: float = Field(default=2.0, ge=0)
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8600, ge=0, le=65535)
    shared_telemetry: bool = Field(
        default=False,
        description="consume telemetry through an MQTT shared subscription ($share/GROUP/...), so several hub "
        "workers split the load; needs a broker that supports them (Mosquitto 2 does, the embedded one does not)",
    )
    share_group: str = Field(default="edgefleet-hub", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    ingest_only: bool = Field(
        default=False,
        description="a telemetry worker: consumes only (shared) telemetry; no device state, bundle "
        "transfer or rollouts, which stay with the one full hub",
    )
    telemetry_max_age_s: float | None = Field(
        default=7 * 24 * 3600.0, gt=0, description="raw telemetry batches older than this are folded into rollups"
    )
    telemetry_max_rows: int | None = Field(
        default=1_000_000, ge=1, description="raw telemetry batches kept at most (the oldest are folded first)"
    )
    telemetry_rollup_window_s: float = Field(default=3600.0, gt=0, description="time window of a rollup row")
    telemetry_prune_interval_s: float = Field(
        default=300.0, ge=0, description="how often the ingestor prunes raw telemetry; 0 never (another worker does)"
    )

    @field_validator("broker_url")
    @classmethod
    def _broker_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("mqtt://", "tcp://")):
            raise ValueError("broker_url must start with mqtt://")
        return value

    @model_validator(mode="after")
    def _share_needs_external_broker(self) -> HubSettings:
        if self.shared_telemetry and self.broker_url is None:
            raise ValueError(
                "shared_telemetry needs an external broker (broker_url): the embedded one has no shared subscriptions"
            )
        return self

    def telemetry_filter(self) -> str:
        """The subscription the hub consumes telemetry with (shared when ``shared_telemetry``)."""
        from fleet.wire import topics

        plain = topics.device_wildcard("telemetry")
        return f"$share/{self.share_group}/{plain}" if self.shared_telemetry else plain

    def resolved_database_url(self) -> str:
        """The database URL, defaulting to a SQLite file in the data directory."""
        return self.database_url or f"sqlite:///{(self.data_dir / 'registry.db').resolve()}"
