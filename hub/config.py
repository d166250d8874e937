"""Hub settings, validated: embedded defaults (in-process broker, SQLite, local artifact folder).

`HubSettings` is what the code is given. `load_settings` layers them for ``hub serve``: flags first, then
``EDGEFLEET_*`` environment variables (``EDGEFLEET_API_PORT=9000``; lists as JSON), then a TOML file
(``--config hub.toml``, the field names as keys), then the defaults; every problem is one `SettingsError`.
"""

from __future__ import annotations

import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from fleet.wire.messages import BaseUrl
from fleet.wire.mqtt import TlsFiles
from hub.auth.guard import LoginBackoffSettings
from hub.devices.pki import ServerTls
from hub.errors import SettingsError

ENV_PREFIX = "EDGEFLEET_"


class HubSettings(BaseModel):
    """Everything the hub needs to start. Omit ``broker_url`` to run the embedded broker."""

    model_config = ConfigDict(extra="forbid")
    data_dir: Path = Path("var/hub")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default sqlite in data_dir")
    broker_url: str | None = Field(
        default=None, description="mqtt://user:pass@host:port or mqtts:// (TLS); default embedded"
    )
    broker_ca_file: Path | None = Field(default=None, description="CA of the broker's certificate (mqtts://)")
    broker_cert_file: Path | None = Field(default=None, description="the hub's client certificate (mutual TLS)")
    broker_key_file: Path | None = Field(default=None, description="the hub's client certificate key")
    embedded_tls_cert: Path | None = Field(default=None, description="embedded broker: serve TLS with this cert")
    embedded_tls_key: Path | None = Field(default=None, description="embedded broker: the certificate's key")
    embedded_client_ca: Path | None = Field(default=None, description="embedded broker: CA of device certificates")
    require_client_cert: bool = Field(
        default=False, description="embedded broker: every device presents a certificate naming its id"
    )
    api_tls_cert: Path | None = Field(default=None, description="serve the REST API over HTTPS with this cert")
    api_tls_key: Path | None = Field(default=None, description="the REST API certificate's key")
    device_broker_url: str | None = Field(
        default=None, description="the broker URL written into device kits, when devices reach it differently"
    )
    device_broker_failover_urls: list[str] = Field(
        default_factory=list,
        description="other nodes of a clustered broker written into device kits (the agent's broker_failover_urls)",
    )
    device_ca_dir: Path | None = Field(
        default=None, description="the fleet CA (`edgefleet pki init`): device kits get a client certificate"
    )
    device_cert_days: int = Field(
        default=825, ge=1, le=3650, description="validity of a device certificate the hub signs on renewal"
    )
    broker_auth_dir: Path | None = Field(
        default=None, description="rewrite Mosquitto's password and ACL files here when devices come and go"
    )
    nats_auth_dir: Path | None = Field(
        default=None, description="rewrite NATS's authorization include file here when devices come and go"
    )
    broker_host: str = "127.0.0.1"
    broker_port: int = Field(default=0, ge=0, le=65535, description="embedded broker port; 0 picks a free one")
    hub_secret: str | None = Field(default=None, description="hub's broker password; generated when omitted")
    chunk_size: int = Field(default=64 * 1024, ge=1024, le=1024 * 1024)
    rebroadcast_window_s: float = Field(
        default=2.0, ge=0, description="repair window: each chunk is broadcast at most once per window"
    )
    chunk_gather_s: float = Field(
        default=0.3, ge=0, le=10, description="a chunk request outside a wave waits this long for others to join it"
    )
    chunk_wave_wait_s: float = Field(
        default=3.0, ge=0, le=60, description="a wave's broadcast waits at most this long for its devices to ask"
    )
    retained_chunks_max: int = Field(
        default=512,
        ge=0,
        description="a rollout of a bundle of at most this many chunks keeps them retained on the broker while it "
        "runs, so devices receive the bundle when they subscribe, without asking the hub (0: off; agents from before "
        "retained chunks refuse such orders; keep it within the broker's per-client queue, Mosquitto's "
        "max_queued_messages)",
    )
    artifact_store: str | None = Field(
        default=None,
        pattern=r"^(s3://[a-z0-9][a-z0-9.-]{1,62}|file:)",
        description="s3://bucket[/prefix]?endpoint=URL for an S3-compatible service; default data_dir/artifacts",
    )
    bundle_transport: Literal["mqtt", "http"] = Field(
        default="mqtt",
        description="how devices download bundles, written into every order: mqtt (chunk broadcast over the "
        "broker, for LANs and small fleets) or http (range requests to bundle_mirrors, then the hub's /bundles)",
    )
    bundle_url: BaseUrl | None = Field(
        default=None,
        description="http transport: where devices reach this hub's /bundles route, e.g. "
        "https://hub.example:8600/bundles; default http(s)://api_host:api_port/bundles",
    )
    bundle_mirrors: list[BaseUrl] = Field(
        default_factory=list,
        max_length=8,
        description="http transport: mirror or CDN base URLs holding bundles as {base}/{sha256}, tried in order "
        "before the hub; untrusted (TUF checks every byte) and sent no device credentials",
    )
    bundle_link_ttl_s: int = Field(
        default=300, ge=30, le=7 * 24 * 3600, description="S3 store: lifetime of the pre-signed link /bundles answers"
    )
    metadata_refresh_interval_s: float = Field(
        default=600.0, gt=0, description="how often the hub re-signs TUF metadata that is half-way to expiry"
    )
    capture_max_age_s: float | None = Field(
        default=30 * 24 * 3600.0, gt=0, description="captured input samples older than this are deleted"
    )
    audit_max_age_s: float | None = Field(
        default=400 * 24 * 3600.0, gt=0, description="audit log entries older than this are deleted; None keeps all"
    )
    policy_interval_s: float = Field(default=30.0, gt=0, description="how often drift policies are evaluated")
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8600, ge=0, le=65535)
    api_max_body_bytes: int = Field(
        default=32 * 1024 * 1024, ge=1024, description="larger REST request bodies are answered 413 (inference inputs)"
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="addresses (or CIDR networks) of reverse proxies whose X-Forwarded-For names the client; "
        "empty: the connecting address is the client",
    )
    login_backoff: LoginBackoffSettings = Field(default_factory=LoginBackoffSettings)
    shared_telemetry: bool = Field(
        default=False,
        description="consume telemetry through an MQTT shared subscription ($share/GROUP/...), so several hub "
        "workers split the load; needs a broker that supports them (Mosquitto 2 does, the embedded one does not)",
    )
    share_group: str = Field(default="edgefleet-hub", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    broker_failover_urls: list[str] = Field(
        default_factory=list,
        description="other nodes of a clustered broker (same scheme and TLS files as broker_url): the hub's "
        "connections move to the next one in turn when their node is lost",
    )
    share_nats_url: str | None = Field(
        default=None,
        description="where the broker is a NATS cluster (whose MQTT has no shared subscriptions): its NATS "
        "client URLs, comma-separated (nats:// or tls://, credentials in the URL), over which replicas and "
        "telemetry workers share device traffic as NATS queue group share_group (see docs/scale-out.md)",
    )
    ingest_only: bool = Field(
        default=False,
        description="a telemetry worker: consumes only (shared) telemetry; no device state, bundle "
        "transfer or rollouts, which stay with the one full hub",
    )
    replica: bool = Field(
        default=False,
        description="one of several hub replicas on one PostgreSQL: device state, events, fetch requests and "
        "telemetry are consumed through shared subscriptions in share_group; the replica holding a PostgreSQL "
        "advisory lock runs rollouts and signs metadata (see docs/scale-out.md)",
    )
    leader_check_s: float = Field(
        default=2.0, gt=0, description="replicas: how often a follower campaigns and the leader checks its lock"
    )
    telemetry_max_age_s: float | None = Field(
        default=7 * 24 * 3600.0,
        gt=0,
        description="raw telemetry batches older than this are deleted (they are in the window aggregates)",
    )
    telemetry_max_rows: int | None = Field(
        default=1_000_000, ge=1, description="raw telemetry batches kept at most (the oldest are deleted first)"
    )
    telemetry_rollup_window_s: float = Field(
        default=3600.0, gt=0, description="time window of a telemetry aggregate row (per version, target, device)"
    )
    telemetry_aggregate_max_age_s: float | None = Field(
        default=90 * 24 * 3600.0,
        gt=0,
        description="telemetry aggregate windows that started longer ago are deleted; at least telemetry_max_age_s "
        "plus one telemetry_rollup_window_s, so they outlive the raw batches; null keeps them",
    )
    telemetry_prune_interval_s: float = Field(
        default=300.0, ge=0, description="how often the ingestor prunes telemetry; 0 never (another worker does)"
    )

    device_offline_after_s: float = Field(
        default=90.0,
        gt=0,
        description="a device not heard from (state or heartbeat) for this long is marked offline, also at start; "
        "keep it a few agent heartbeat intervals (30 s by default)",
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_networks(cls, value: list[str]) -> list[str]:
        import ipaddress

        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError as exc:
                raise ValueError(f"trusted proxy {item!r} is not an IP address or CIDR network") from exc
        return value

    @field_validator("broker_url")
    @classmethod
    def _broker_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("mqtt://", "tcp://", "mqtts://", "ssl://")):
            raise ValueError("broker_url must start with mqtt:// or mqtts://")
        return value

    @model_validator(mode="after")
    def _share_needs_external_broker(self) -> HubSettings:
        if self.shared_telemetry and self.broker_url is None:
            raise ValueError(
                "shared_telemetry needs an external broker (broker_url): the embedded one has no shared subscriptions"
            )
        return self

    @model_validator(mode="after")
    def _failover_like_the_broker(self) -> HubSettings:
        if self.broker_failover_urls and self.broker_url is None:
            raise ValueError("broker_failover_urls are other nodes of broker_url's cluster: set broker_url")
        secure = (self.broker_url or "").startswith(("mqtts://", "ssl://"))
        for url in self.broker_failover_urls:
            if url.startswith(("mqtts://", "ssl://")) != secure or not url.startswith(
                ("mqtt://", "tcp://", "mqtts://", "ssl://")
            ):
                raise ValueError(f"broker_failover_urls: {url!r} must use the same scheme as broker_url")
        return self

    @field_validator("share_nats_url")
    @classmethod
    def _nats_urls(cls, value: str | None) -> str | None:
        if value is None:
            return None
        urls = [url.strip() for url in value.split(",")]
        bad = [url for url in urls if not url.startswith(("nats://", "tls://"))]
        if not urls or bad:
            raise ValueError(f"share_nats_url: each URL must start with nats:// or tls://, not {bad or value!r}")
        return ",".join(urls)

    @model_validator(mode="after")
    def _nats_sharing_needs_sharing(self) -> HubSettings:
        if self.share_nats_url is not None and not (self.replica or self.shared_telemetry):
            raise ValueError("share_nats_url shares device traffic: set replica or shared_telemetry with it")
        return self

    def nats_servers(self) -> list[str]:
        """The NATS client URLs of ``share_nats_url`` (empty when traffic is shared the MQTT way)."""
        return self.share_nats_url.split(",") if self.share_nats_url else []

    def nats_tls(self) -> TlsFiles | None:
        """TLS for the NATS connection (tls:// URLs), with the broker's CA and client files."""
        if not any(url.startswith("tls://") for url in self.nats_servers()):
            return None
        files = (self.broker_ca_file, self.broker_cert_file, self.broker_key_file)
        return TlsFiles(*(str(path) if path else None for path in files))

    @model_validator(mode="after")
    def _aggregates_outlive_raw_telemetry(self) -> HubSettings:
        aggregates, raw = self.telemetry_aggregate_max_age_s, self.telemetry_max_age_s
        if aggregates is not None and (raw is None or aggregates < raw + self.telemetry_rollup_window_s):
            raise ValueError(
                "telemetry_aggregate_max_age_s must be at least telemetry_max_age_s plus telemetry_rollup_window_s "
                "(reports read the aggregates once raw batches are gone); set both, or null it"
            )
        return self

    @model_validator(mode="after")
    def _replica_needs_shared_services(self) -> HubSettings:
        if self.replica and (self.broker_url is None or not (self.database_url or "").startswith("postgres")):
            raise ValueError("replica needs an external broker (broker_url) and PostgreSQL (database_url)")
        return self

    @model_validator(mode="after")
    def _bundle_url_known(self) -> HubSettings:
        if self.bundle_transport == "http" and self.bundle_url is None and self.api_host in ("0.0.0.0", "::", ""):
            raise ValueError(
                f"bundle_transport http: set bundle_url, the address devices reach this hub's API at "
                f"(it listens on {self.api_host or 'every interface'})"
            )
        return self

    def device_bundle_url(self) -> str:
        """Where devices reach this hub's ``/bundles`` route: ``bundle_url``, else derived from the API address."""
        if self.bundle_url is not None:
            return self.bundle_url.rstrip("/")
        scheme = "https" if self.api_tls_cert is not None else "http"
        host = f"[{self.api_host}]" if ":" in self.api_host else self.api_host
        return f"{scheme}://{host}:{self.api_port}/bundles"

    @model_validator(mode="after")
    def _tls_pairs(self) -> HubSettings:
        for cert, key, what in (
            (self.embedded_tls_cert, self.embedded_tls_key, "embedded_tls_cert and embedded_tls_key"),
            (self.api_tls_cert, self.api_tls_key, "api_tls_cert and api_tls_key"),
            (self.broker_cert_file, self.broker_key_file, "broker_cert_file and broker_key_file"),
        ):
            if (cert is None) != (key is None):
                raise ValueError(f"{what} go together")
        if self.require_client_cert and (self.embedded_tls_cert is None or self.embedded_client_ca is None):
            raise ValueError("require_client_cert needs embedded_tls_cert, embedded_tls_key and embedded_client_ca")
        return self

    def broker_tls(self) -> TlsFiles | None:
        """TLS for the hub's own broker connection: for an mqtts:// URL, or the embedded broker serving TLS."""
        secure = (
            self.embedded_tls_cert is not None
            if self.broker_url is None
            else self.broker_url.startswith(("mqtts://", "ssl://"))
        )
        if not secure:
            return None
        files = (self.broker_ca_file, self.broker_cert_file, self.broker_key_file)
        return TlsFiles(*(str(path) if path else None for path in files))

    def embedded_tls(self) -> ServerTls | None:
        """The embedded broker's TLS listener settings, when it serves TLS."""
        if self.embedded_tls_cert is None or self.embedded_tls_key is None:
            return None
        client_ca = str(self.embedded_client_ca) if self.embedded_client_ca else None
        return ServerTls(str(self.embedded_tls_cert), str(self.embedded_tls_key), client_ca, self.require_client_cert)

    def tls_certificates(self) -> dict[str, Path]:
        """Every certificate this hub serves or trusts, by role, for the expiry gauge and `pki status`."""
        files = {
            "embedded_broker": self.embedded_tls_cert,
            "embedded_client_ca": self.embedded_client_ca,
            "api": self.api_tls_cert,
            "broker_ca": self.broker_ca_file,
            "hub_client": self.broker_cert_file,
            "device_ca": self.device_ca_dir / "ca.crt" if self.device_ca_dir else None,
        }
        return {role: path for role, path in files.items() if path is not None}

    def telemetry_filter(self) -> str:
        """The subscription the hub consumes telemetry with (shared when ``shared_telemetry`` or ``replica``)."""
        from fleet.wire import topics

        plain = topics.device_wildcard("telemetry")
        return f"$share/{self.share_group}/{plain}" if self.shared_telemetry or self.replica else plain

    def resolved_database_url(self) -> str:
        """The database URL, defaulting to a SQLite file in the data directory."""
        return self.database_url or f"sqlite:///{(self.data_dir / 'registry.db').resolve()}"


_file_values: ContextVar[dict[str, Any] | None] = ContextVar("hub_settings_file", default=None)


class _LayeredSettings(BaseSettings, HubSettings):
    """`HubSettings` read from init arguments (flags), then the environment, then the TOML file's values."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        from pydantic_settings import InitSettingsSource

        return init_settings, env_settings, InitSettingsSource(settings_cls, init_kwargs=_file_values.get() or {})


def load_settings(
    config_file: Path | None = None, *, defaults: dict[str, Any] | None = None, **flags: Any
) -> HubSettings:
    """Settings from ``flags`` (None values are not given), ``EDGEFLEET_*`` variables, ``config_file`` and then
    ``defaults``, in that order of precedence; a `SettingsError` naming each bad setting in one line."""
    values: dict[str, Any] = dict(defaults or {})
    if config_file is not None:
        try:
            values |= tomllib.loads(config_file.read_text())
        except OSError as exc:
            raise SettingsError(f"cannot read the settings file {config_file}: {exc.strerror or exc}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise SettingsError(f"{config_file} is not valid TOML: {exc}") from None
    token = _file_values.set(values)
    try:
        layered = _LayeredSettings(**{k: v for k, v in flags.items() if v is not None})
    except ValidationError as exc:
        raise SettingsError(f"invalid settings: {_one_line(exc)}") from None
    finally:
        _file_values.reset(token)
    return HubSettings.model_validate(layered.model_dump())


def _one_line(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)
