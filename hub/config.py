"""Hub settings, validated: embedded defaults (in-process broker, SQLite, local artifact folder)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator


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

    @field_validator("broker_url")
    @classmethod
    def _broker_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("mqtt://", "tcp://")):
            raise ValueError("broker_url must start with mqtt://")
        return value

    def resolved_database_url(self) -> str:
        """The database URL, defaulting to a SQLite file in the data directory."""
        return self.database_url or f"sqlite:///{(self.data_dir / 'registry.db').resolve()}"
