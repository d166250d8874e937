"""Registry operations. Every public method opens its own transaction; results are detached rows."""

from __future__ import annotations

import base64
import logging
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple, TypedDict

import semver
import sqlalchemy as sql
from pydantic import ValidationError
from sqlalchemy import delete, or_, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, func, select

from fleet.errors import ProtocolError
from fleet.telemetry import validate_batch
from fleet.telemetry_blocks import CheckedBatch, check_batches, explain
from fleet.wire.fast_telemetry import from_message
from fleet.wire.messages import DeviceState, TelemetryBatch, UpdateEvent, late_copy
from hub.errors import ConflictError, InvalidRequestError, NotFoundError
from hub.registry.bulk import insert_records, stored_batch_ids
from hub.registry.credentials import dummy_hash, hash_bcrypt, hash_password, hash_secret, new_secret, verify_secret
from hub.registry.db import Database
from hub.registry.device_windows import compact_device_windows, insert_device_windows
from hub.registry.label_cache import DeviceLabelCache
from hub.registry.tables import (
    Deployment,
    DeploymentDevice,
    Device,
    Model,
    ModelVersion,
    TelemetryRecord,
    Variant,
)
from hub.registry.telemetry_tables import unpack_sketches
from hub.registry.telemetry_windows import TelemetryWindows
from hub.registry.telemetry_writes import PreparedTelemetry, prepare_telemetry
from hub.registry.window_folds import WindowFolds
from targets import TargetError, get_target

_WRITE_ATTEMPTS = 5
log = logging.getLogger(__name__)


def usable_batch(payload: Mapping[str, Any]) -> TelemetryBatch | None:
    """The stored batch if analysis can use it (it parses and passes `validate_batch`), else None (logged):
    rows stored before validation covered everything must not break every later report."""
    try:
        batch = TelemetryBatch.model_validate(payload)
        validate_batch(batch)
    except (ValidationError, ProtocolError) as exc:
        log.warning("skipped stored telemetry batch %s: %s", payload.get("batch_id"), str(exc).splitlines()[0])
        return None
    return batch


def parse_semver(version: str) -> semver.Version:
    """Parse a semantic version or raise `InvalidRequestError` saying what is wrong."""
    try:
        return semver.Version.parse(version)
    except (ValueError, TypeError) as exc:
        raise InvalidRequestError(f"version {version!r} is not semantic versioning (MAJOR.MINOR.PATCH): {exc}") from exc


def _precision_rank(variant: Variant) -> int:
    precisions = get_target(variant.target).precisions
    return precisions.index(variant.precision) if variant.precision in precisions else len(precisions)


def _id(value: int | None) -> int:
    if value is None:  # rows read back from the database always have their key
        raise ConflictError("row has no primary key yet")
    return value


_BLOCK = 500  # ids per IN (...) list: well below every database's limit on bound parameters


def _apply_states(connection: Connection, states: list[DeviceState]) -> list[str]:
    newest = {state.device_id: state for state in states}
    now = time.time()
    # The rows are locked here, by id, before the updates below (two statements, each in id order): every writer
    # of device rows (replicas' state writers, heartbeats, the leader's order sequences) locks in id order, so
    # two of them never deadlock.
    locked = [
        row
        for block in _blocks(sorted(newest))
        for row in connection.execute(
            sql.select(col(Device.id), col(Device.online), col(Device.state_ts))
            .where(col(Device.id).in_(block))
            .order_by(col(Device.id))
            .with_for_update()
        )
    ]
    known = [device_id for device_id, _, _ in locked]
    rows = [
        _state_row(newest[device_id], now)
        for device_id, online, stored_ts in locked
        if not late_copy(newest[device_id], online, stored_ts)
    ]
    for with_active in (True, False):  # one executemany per column set
        batch = [row for row in rows if ("active_model" in row) == with_active]
        if batch:  # bound as b_<column>: a bind parameter may not carry its column's own name
            values: dict[str, Any] = {key: sql.bindparam(f"b_{key}") for key in batch[0] if key != "device"}
            statement = update(Device).where(col(Device.id) == sql.bindparam("device")).values(values)
            connection.execute(statement, [{_bound(k): v for k, v in row.items()} for row in batch])
    return known


def _apply_events(connection: Connection, events: list[UpdateEvent]) -> int:
    by_deployment: dict[str, set[str]] = {}
    for event in events:
        by_deployment.setdefault(event.deployment_id, set()).add(event.device_id)
    current: dict[tuple[str, str], str] = {}
    for deployment_id, device_ids in sorted(by_deployment.items()):
        for block in _blocks(sorted(device_ids)):
            # locked: hub replicas may apply two events of one device at once (shared subscriptions)
            query = (
                sql.select(col(DeploymentDevice.device_id), col(DeploymentDevice.state))
                .where(col(DeploymentDevice.deployment_id) == deployment_id)
                .where(col(DeploymentDevice.device_id).in_(block))
                .order_by(col(DeploymentDevice.device_id))
                .with_for_update()
            )
            current.update(((deployment_id, device_id), state) for device_id, state in connection.execute(query))
    applied = 0
    final: dict[tuple[str, str], dict[str, Any]] = {}
    now = time.time()
    for event in events:
        key = (event.deployment_id, event.device_id)
        if key not in current:
            continue
        applied += 1
        finished = current[key] in ("done", "failed", "rollback")
        if finished and event.state.value not in ("done", "failed", "rollback"):
            continue  # a late progress message after the outcome changes nothing (QoS 1 redelivery)
        current[key] = event.state.value
        final[key] = {
            "deployment": event.deployment_id,
            "device": event.device_id,
            "b_state": event.state.value,
            "b_ok": event.ok,
            "b_detail": event.detail,
            "b_updated_at": now,
        }
    if final:
        statement = (
            update(DeploymentDevice)
            .where(col(DeploymentDevice.deployment_id) == sql.bindparam("deployment"))
            .where(col(DeploymentDevice.device_id) == sql.bindparam("device"))
            .values({key: sql.bindparam(f"b_{key}") for key in ("state", "ok", "detail", "updated_at")})
        )
        connection.execute(statement, list(final.values()))
    return applied


def _state_row(state: DeviceState, now: float) -> dict[str, Any]:
    """The device columns a reported state sets (the active model's only when it names one)."""
    row: dict[str, Any] = {
        "device": state.device_id,
        "online": state.online,
        "last_seen": now,
        "update_state": state.update_state.value,
        "state_ts": state.ts if state.ts > 0 else None,
    }
    if state.active is not None:
        row |= {
            "active_model": state.active.model,
            "active_version": state.active.version,
            "active_sha256": state.active.sha256,
        }
    return row


def _bound(key: str) -> str:
    return key if key == "device" else f"b_{key}"


def _blocks(ids: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(ids), _BLOCK):
        yield ids[start : start + _BLOCK]


class DeviceView(NamedTuple):
    """A device as the rollout engine sees it in the registry (`Registry.device_inventory`)."""

    id: str
    target: str
    labels: dict[str, str]
    online: bool
    active_model: str | None
    active_version: str | None


class _CredentialHashes(TypedDict):
    credential_hash: str  # scrypt: REST and the embedded broker
    broker_hash: str  # $7$: Mosquitto's password file
    nats_hash: str  # bcrypt: NATS's authorization file


def _credential_hashes(secret: str) -> _CredentialHashes:
    """A device secret's hashes, one per checker of device logins."""
    return _CredentialHashes(
        credential_hash=hash_secret(secret), broker_hash=hash_password(secret), nats_hash=hash_bcrypt(secret)
    )


class Registry:
    """Models, versions, variants, devices, deployments and telemetry records."""

    def __init__(self, database: Database) -> None:
        self.db = database
        self.windows = TelemetryWindows(database)
        """The window aggregates of stored telemetry (what reports read)."""
        self.folds = WindowFolds()
        """Folds each write into its window aggregate rows (keeping the rows it wrote deserialised)."""
        self.device_labels = DeviceLabelCache(database)
        """The labelled devices' labels, for the label cohort rows of the window aggregates."""

    # -- models and versions ---------------------------------------------------------------------------

    def ensure_model(self, name: str, description: str = "") -> Model:
        """Return the model called ``name``, creating it if needed."""
        with self.db.session() as session:
            model = session.exec(select(Model).where(Model.name == name)).first()
            if model is None:
                model = Model(name=name, description=description)
                session.add(model)
                session.flush()
            return model

    def list_models(self) -> list[Model]:
        """All models by name."""
        with self.db.session() as session:
            return list(session.exec(select(Model).order_by(Model.name)))

    def add_version(self, model_name: str, version: str, notes: str = "") -> ModelVersion:
        """Register a new semver version of ``model_name`` (created if missing)."""
        parsed = parse_semver(version)
        model = self.ensure_model(model_name)
        try:
            with self.db.session() as session:
                row = ModelVersion(
                    model_id=_id(model.id),
                    version=str(parsed),
                    major=parsed.major,
                    minor=parsed.minor,
                    patch=parsed.patch,
                    prerelease=parsed.prerelease or "",
                    notes=notes,
                )
                session.add(row)
                session.flush()
                return row
        except IntegrityError as exc:
            raise ConflictError(f"{model_name}:{version} is already registered") from exc

    def get_version(self, model_name: str, version: str) -> ModelVersion:
        """The version row, or `NotFoundError`."""
        with self.db.session() as session:
            row = session.exec(
                select(ModelVersion).join(Model).where(Model.name == model_name, ModelVersion.version == version)
            ).first()
        if row is None:
            raise NotFoundError(f"model version {model_name}:{version} is not registered")
        return row

    def list_versions(self, model_name: str) -> list[ModelVersion]:
        """Versions of a model, highest semver first."""
        with self.db.session() as session:
            rows = list(session.exec(select(ModelVersion).join(Model).where(Model.name == model_name)))
        return sorted(rows, key=lambda r: semver.Version.parse(r.version), reverse=True)

    # -- variants -----------------------------------------------------------------------------------------

    def add_variant(
        self,
        model_name: str,
        version: str,
        *,
        target: str,
        runtime: str,
        precision: str,
        artifact_sha256: str,
        size_bytes: int,
        bundle_sha256: str,
        bundle_size: int,
        tuf_target: str,
        metrics: dict[str, Any] | None = None,
    ) -> Variant:
        """Attach a built variant to a registered version."""
        try:
            get_target(target)
        except TargetError as exc:
            raise InvalidRequestError(str(exc)) from exc
        version_row = self.get_version(model_name, version)
        try:
            with self.db.session() as session:
                row = Variant(
                    version_id=_id(version_row.id),
                    target=target,
                    runtime=runtime,
                    precision=precision,
                    artifact_sha256=artifact_sha256,
                    size_bytes=size_bytes,
                    bundle_sha256=bundle_sha256,
                    bundle_size=bundle_size,
                    tuf_target=tuf_target,
                    metrics=metrics or {},
                )
                session.add(row)
                session.flush()
                return row
        except IntegrityError as exc:
            raise ConflictError(f"{model_name}:{version} already has a {precision} variant for {target}") from exc

    def list_variants(self, model_name: str, version: str) -> list[Variant]:
        """Variants of one version."""
        version_row = self.get_version(model_name, version)
        with self.db.session() as session:
            return list(session.exec(select(Variant).where(Variant.version_id == version_row.id)))

    def variant_by_bundle(self, bundle_sha256: str) -> Variant | None:
        """The variant whose bundle has this digest."""
        with self.db.session() as session:
            return session.exec(select(Variant).where(Variant.bundle_sha256 == bundle_sha256)).first()

    # -- devices -------------------------------------------------------------------------------------------

    def provision_device(self, device_id: str, target: str, labels: dict[str, str] | None = None) -> tuple[Device, str]:
        """Create a device with a fresh credential; return the row and the clear-text secret (shown once)."""
        from fleet.errors import ProtocolError
        from fleet.wire.topics import validate_device_id

        try:
            validate_device_id(device_id)
            get_target(target)
        except (ProtocolError, TargetError) as exc:
            raise InvalidRequestError(str(exc)) from exc
        secret = new_secret()
        try:
            with self.db.session() as session:
                device = Device(id=device_id, target=target, labels=labels or {}, **_credential_hashes(secret))
                session.add(device)
                session.flush()
        except IntegrityError as exc:
            raise ConflictError(f"device {device_id} is already provisioned") from exc
        if labels:
            self.device_labels.invalidate()
        return device, secret

    def renew_device_secret(self, device_id: str) -> tuple[Device, str]:
        """Give a provisioned device a fresh secret, replacing all three hashes in one transaction (a device
        provisioned before 0011 gets its NATS hash); the old secret stops checking at once. Return the row and
        the clear-text secret (shown once), or `NotFoundError`."""
        secret = new_secret()
        hashes = _credential_hashes(secret)  # before the transaction: scrypt is slow on purpose
        with self.db.session() as session:
            device = session.get(Device, device_id)
            if device is None:
                raise NotFoundError(f"device {device_id} is not provisioned")
            for name, value in hashes.items():
                setattr(device, name, value)
            session.add(device)
            session.flush()
            session.refresh(device)
        return device, secret

    def set_device_labels(self, device_id: str, labels: dict[str, str], remove: list[str] | None = None) -> Device:
        """Set ``labels`` on a device and drop the keys in ``remove``; return the updated row."""
        with self.db.session() as session:
            device = session.get(Device, device_id)
            if device is None:
                raise NotFoundError(f"device {device_id} is not provisioned")
            merged = {k: v for k, v in {**device.labels, **labels}.items() if k not in set(remove or ())}
            device.labels = merged  # a new dict: JSON columns track assignment
            session.add(device)
            session.flush()
            session.refresh(device)
        self.device_labels.invalidate()
        return device

    def remove_device(self, device_id: str) -> None:
        """Decommission a device: its row and per-deployment rows go, so its credential no longer checks."""
        with self.db.session() as session:
            device = session.get(Device, device_id)
            if device is None:
                raise NotFoundError(f"device {device_id} is not provisioned")
            for row in session.exec(select(DeploymentDevice).where(DeploymentDevice.device_id == device_id)):
                session.delete(row)
            session.flush()
            session.delete(device)
        self.device_labels.invalidate()

    def check_device_secret(self, device_id: str, secret: str) -> bool:
        """Whether ``secret`` is the device's credential; an unknown id costs the same hashing as a known one."""
        with self.db.session() as session:
            device = session.get(Device, device_id)
        if device is None:
            verify_secret(secret, dummy_hash())  # no timing oracle for which ids exist
            return False
        return verify_secret(secret, device.credential_hash)

    def next_order_sequence(self, device_id: str) -> int:
        """Reserve the device's next deployment-order sequence (see `next_order_sequences`)."""
        sequences = self.next_order_sequences([device_id])
        if device_id not in sequences:
            raise NotFoundError(f"device {device_id} does not exist")
        return sequences[device_id]

    def next_order_sequences(self, device_ids: Iterable[str]) -> dict[str, int]:
        """Reserve each device's next deployment-order sequence in one transaction (a wave's orders): above
        every earlier one, and at least the current time in milliseconds, so sequences keep rising even after a
        database is restored from backup. Devices that do not exist are left out."""
        wanted = sorted(set(device_ids))  # locked in one order, so two replicas never deadlock
        floor = int(time.time() * 1000)
        sequences: dict[str, int] = {}
        with self.db.session() as session:
            connection = session.connection()
            for block in _blocks(wanted):
                query = (
                    sql.select(col(Device.id), col(Device.order_sequence))
                    .where(col(Device.id).in_(block))
                    .order_by(col(Device.id))
                    .with_for_update()
                )
                for device_id, sequence in connection.execute(query):
                    sequences[device_id] = max(sequence + 1, floor)
            if sequences:
                connection.execute(
                    update(Device)
                    .where(col(Device.id) == sql.bindparam("device"))
                    .values(order_sequence=sql.bindparam("sequence")),
                    [{"device": d, "sequence": n} for d, n in sequences.items()],
                )
        return sequences

    def get_device(self, device_id: str) -> Device:
        """The device row, or `NotFoundError`."""
        with self.db.session() as session:
            device = session.get(Device, device_id)
        if device is None:
            raise NotFoundError(f"device {device_id} is not provisioned")
        return device

    def list_devices(self) -> list[Device]:
        """All devices by id."""
        with self.db.session() as session:
            return list(session.exec(select(Device).order_by(Device.id)))

    def device_inventory(self) -> list[DeviceView]:
        """What the rollout engine needs of every device, by id: plain tuples, much cheaper than `list_devices`
        on a fleet of thousands."""
        columns = [Device.id, Device.target, Device.labels, Device.online, Device.active_model, Device.active_version]
        with self.db.session() as session:
            rows = session.connection().execute(sql.select(*map(col, columns)).order_by(col(Device.id)))
            return [DeviceView._make(row) for row in rows]

    def apply_device_state(self, state: DeviceState) -> bool:
        """Record a device's reported state; return False for devices that are not provisioned."""
        return bool(self.apply_device_states([state]))

    def apply_device_states(self, states: list[DeviceState]) -> list[str]:
        """Record reported states in one transaction (later ones win); return the ids of provisioned devices."""
        return self.record_device_reports(states, [])[0]

    def record_device_reports(self, states: list[DeviceState], events: list[UpdateEvent]) -> tuple[list[str], int]:
        """Record reported states (later ones win) and apply update events (in order) in one transaction;
        return the ids of the provisioned devices among the states and how many events found their row."""
        with self.db.session() as session:
            connection = session.connection()
            return _apply_states(connection, states), _apply_events(connection, events)

    def record_heard(self, heard: dict[str, float]) -> None:
        """Devices heard from (heartbeats) at the given times: online, last seen then. A time older than the
        device's last state changes nothing, so a late heartbeat never undoes a newer offline state."""
        if not heard:
            return
        statement = (
            update(Device)
            .where(col(Device.id) == sql.bindparam("device"))
            .where(or_(col(Device.last_seen).is_(None), col(Device.last_seen) < sql.bindparam("at")))
            .values(online=True, last_seen=sql.bindparam("at"))
        )
        with self.db.session() as session:  # one statement for all (psycopg pipelines it: one round trip)
            rows = [{"device": device_id, "at": at} for device_id, at in sorted(heard.items())]  # locks in id order
            session.connection().execute(statement, rows)

    def mark_silent_offline(self, silent_since: float) -> list[str]:
        """Mark offline every online device not heard from since ``silent_since``; return their ids."""
        silent = or_(col(Device.last_seen).is_(None), col(Device.last_seen) < silent_since)
        with self.db.session() as session:
            online = select(Device.id).where(col(Device.online).is_(True)).where(silent)
            ids = list(session.exec(online.order_by(col(Device.id)).with_for_update()))  # locked in id order
            if ids:
                session.connection().execute(
                    update(Device).where(col(Device.id).in_(ids)).where(silent).values(online=False)
                )
        return sorted(ids)

    # -- deployments --------------------------------------------------------------------------------------

    def create_deployment(
        self, model_name: str, version: str, device_ids: list[str], *, allow_downgrade: bool = False
    ) -> tuple[Deployment, dict[str, Variant]]:
        """Record a deployment and pick each device's variant by its target; return both.

        A device whose target has no variant is refused with `InvalidRequestError` naming it: it is never
        sent a variant built for other hardware.
        """
        variants = self.list_variants(model_name, version)
        by_target: dict[str, Variant] = {}
        for variant in sorted(variants, key=_precision_rank):  # the target's preferred precision first
            by_target.setdefault(variant.target, variant)
        chosen: dict[str, Variant] = {}
        missing: list[str] = []
        for device_id in device_ids:
            device = self.get_device(device_id)
            if device.target in by_target:
                chosen[device_id] = by_target[device.target]
            else:
                missing.append(f"{device_id} ({device.target})")
        if missing:
            raise InvalidRequestError(f"{model_name}:{version} has no variant for: {', '.join(missing)}")
        deployment = Deployment(
            id=f"dep-{uuid.uuid4().hex[:12]}",
            model=model_name,
            version=version,
            device_ids=list(device_ids),
            allow_downgrade=allow_downgrade,
        )
        with self.db.session() as session:
            session.add(deployment)
            session.flush()
            for device_id, variant in chosen.items():
                session.add(DeploymentDevice(deployment_id=deployment.id, device_id=device_id, variant_id=variant.id))
        return deployment, chosen

    def get_deployment(self, deployment_id: str) -> Deployment:
        """The deployment row, or `NotFoundError`."""
        with self.db.session() as session:
            row = session.get(Deployment, deployment_id)
        if row is None:
            raise NotFoundError(f"deployment {deployment_id} does not exist")
        return row

    def list_deployments(self) -> list[Deployment]:
        """All deployments, newest first."""
        with self.db.session() as session:
            return list(session.exec(select(Deployment).order_by(col(Deployment.created_at).desc())))

    def deployment_devices(self, deployment_id: str) -> list[DeploymentDevice]:
        """Per-device progress of a deployment."""
        with self.db.session() as session:
            return list(session.exec(select(DeploymentDevice).where(DeploymentDevice.deployment_id == deployment_id)))

    def record_update_event(self, event: UpdateEvent) -> bool:
        """Apply a device's update event to its deployment row; False when no such row exists."""
        return bool(self.record_update_events([event]))

    def record_update_events(self, events: list[UpdateEvent]) -> int:
        """Apply update events, in order, in one transaction; return how many found their deployment row."""
        return self.record_device_reports([], events)[1]

    # -- telemetry -----------------------------------------------------------------------------------------

    def record_telemetry(self, batches: list[TelemetryBatch]) -> int:
        """Store batches in one transaction, skipping batch ids already stored; return how many were new."""
        return len(self.store_telemetry(batches))

    def store_telemetry(
        self, batches: Sequence[TelemetryBatch], *, aggregate_window_s: float = 3600.0, shard: str = ""
    ) -> list[TelemetryBatch]:
        """`store_checked` for pydantic batches: each must pass `validate_batch` (`ProtocolError` otherwise)."""
        fast = [from_message(b) for b in batches]
        checked = [c if c is not None else explain(f) for c, f in zip(check_batches(fast), fast, strict=True)]
        stored = {
            c.batch.batch_id for c in self.store_checked(checked, aggregate_window_s=aggregate_window_s, shard=shard)
        }
        return [b for b in {b.batch_id: b for b in batches}.values() if b.batch_id in stored]

    def store_checked(
        self, batches: Sequence[CheckedBatch], *, aggregate_window_s: float = 3600.0, shard: str = ""
    ) -> list[CheckedBatch]:
        """Store batches that passed `validate_batch` in one transaction, skipping batch ids already stored;
        return the newly stored ones (`prepare_checked`, then `store_prepared`)."""
        return self.store_prepared(self.prepare_checked(batches, aggregate_window_s=aggregate_window_s, shard=shard))

    def prepare_checked(
        self, batches: Sequence[CheckedBatch], *, aggregate_window_s: float = 3600.0, shard: str = ""
    ) -> PreparedTelemetry:
        """A write of ``batches`` ready for `store_prepared`, its CPU work done without the database: the rows,
        and the window aggregates (windows of ``aggregate_window_s``; this writer's ``shard`` of them) per
        cohort, devices labelled as they are now (`DeviceLabelCache`: refreshed, not read per write).
        A batch with a non-finite time window raises `ValueError`."""
        return prepare_telemetry(batches, window_s=aggregate_window_s, shard=shard, labels=self.device_labels.labels())

    def store_prepared(self, prepared: PreparedTelemetry) -> list[CheckedBatch]:
        """Store a prepared write in one transaction, skipping batch ids already stored; return the newly
        stored batches.

        The new batches are written in bulk (COPY on PostgreSQL, one multi-row statement on SQLite; sketches
        as raw bytes) and merged, in the same transaction, into their `TelemetryWindowAggregate` rows and
        added as `TelemetryDeviceWindow` rows, so each batch is counted in the aggregates exactly when it is
        stored. Several hub workers may write at once: when another writer stored one of these ids (or created
        one of these aggregate rows, for writers sharing a shard) between our read and our commit, the
        transaction is retried (it then sees that id as stored), so a batch is stored, aggregated and returned
        exactly once across workers. Workers with shards of their own never wait on each other's rows.

        A batch from a labelled device is also merged, the same way, into one row per label of the device
        (cohort ``key=value``): relabelling a device leaves its earlier windows in its former cohorts.
        """
        if not prepared.batches:
            return []
        for attempt in range(_WRITE_ATTEMPTS):
            try:
                with self.folds.transaction() as staged, self.db.session() as session:
                    seen = stored_batch_ids(session.connection(), list(prepared.batches))
                    write = prepared.without(seen) if seen else prepared
                    if not write.batches:
                        return []
                    insert_records(session.connection(), list(write.rows.values()))
                    insert_device_windows(session, write.per_device)
                    for key in sorted(write.partials):  # one lock order across workers: no deadlocks
                        self.folds.fold(
                            session.connection(), staged, key, write.shard, write.window_s, write.partials[key]
                        )
                return list(write.batches.values())
            except IntegrityError:
                if attempt == _WRITE_ATTEMPTS - 1:
                    raise
        return []  # pragma: no cover - the loop returns or raises

    def existing_devices(self, device_ids: Iterable[str]) -> set[str]:
        """Which of ``device_ids`` are provisioned (one query)."""
        wanted = list(set(device_ids))
        if not wanted:
            return set()
        with self.db.session() as session:
            return set(session.exec(select(Device.id).where(col(Device.id).in_(wanted))))

    def prune_telemetry(
        self,
        *,
        max_age_s: float | None = None,
        max_rows: int | None = None,
        aggregate_max_age_s: float | None = None,
        now: float | None = None,
        chunk: int = 2000,
    ) -> int:
        """Keep stored telemetry bounded: delete raw batches whose window ended more than ``max_age_s`` ago,
        then the oldest beyond ``max_rows``, and the window aggregates of windows that started more than
        ``aggregate_max_age_s`` ago, and merge the per-device window rows written since the last call
        (`compact_device_windows`). Return how many raw batches were deleted.

        Nothing is folded: every stored batch is already in the window aggregates (since it was stored, or
        since migration 0007). A chunk of raw batches per transaction; workers pruning at once delete each
        batch once."""
        now = time.time() if now is None else now
        pruned = 0
        if max_age_s is not None:
            pruned += self._delete_oldest(chunk, before=now - max_age_s)
        if max_rows is not None:
            with self.db.session() as session:
                excess = int(session.exec(select(func.count()).select_from(TelemetryRecord)).one()) - max_rows
            if excess > 0:
                pruned += self._delete_oldest(chunk, limit=excess)
        if aggregate_max_age_s is not None:
            self.windows.prune(now - aggregate_max_age_s)
        compact_device_windows(self.db)
        return pruned

    def _delete_oldest(self, chunk: int, *, before: float | None = None, limit: int | None = None) -> int:
        """Delete raw batches oldest first: those whose window ended before ``before``, at most ``limit``."""
        deleted = 0
        while limit is None or deleted < limit:
            take = chunk if limit is None else min(chunk, limit - deleted)
            query = select(TelemetryRecord.batch_id).order_by(col(TelemetryRecord.window_end)).limit(take)
            if before is not None:
                query = query.where(TelemetryRecord.window_end < before)
            with self.db.session() as session:
                ids = list(session.exec(query))
                if not ids:
                    return deleted
                statement = delete(TelemetryRecord).where(col(TelemetryRecord.batch_id).in_(ids))
                count = session.connection().execute(statement).rowcount
            deleted += count
            if count < len(ids):  # another worker is pruning the same batches: it carries on
                return deleted
        return deleted

    def telemetry_batches(self, model_name: str | None = None, version: str | None = None) -> list[TelemetryBatch]:
        """Stored batches analysis can use, optionally for one model version, oldest first."""
        return self.read_telemetry(model_name, version)[0]

    def read_telemetry(
        self, model_name: str | None = None, version: str | None = None
    ) -> tuple[list[TelemetryBatch], int]:
        """Stored batches analysis can use (oldest first) and how many stored rows were skipped as unusable."""
        query = select(TelemetryRecord.payload, TelemetryRecord.sketches).order_by(col(TelemetryRecord.window_end))
        if model_name is not None:
            query = query.where(TelemetryRecord.model == model_name)
        if version is not None:
            query = query.where(TelemetryRecord.version == version)
        with self.db.session() as session:
            payloads = [_stored_payload(p, sk) for p, sk in session.exec(query)]
        batches = [b for b in map(usable_batch, payloads) if b is not None]
        return batches, len(payloads) - len(batches)

    def device_telemetry(self, device_id: str, since: float | None = None) -> list[TelemetryBatch]:
        """Usable stored batches of one device (every model), optionally only windows ending after ``since``,
        oldest first."""
        query = (
            select(TelemetryRecord.payload, TelemetryRecord.sketches)
            .where(TelemetryRecord.device_id == device_id)
            .order_by(col(TelemetryRecord.window_end))
        )
        if since is not None:
            query = query.where(TelemetryRecord.window_end >= since)
        with self.db.session() as session:
            payloads = [_stored_payload(p, sk) for p, sk in session.exec(query)]
        return [b for b in map(usable_batch, payloads) if b is not None]

    def telemetry_count(self, model_name: str | None = None, version: str | None = None) -> int:
        """Number of stored batches, optionally of one model version."""
        query = select(func.count()).select_from(TelemetryRecord)
        if model_name is not None:
            query = query.where(TelemetryRecord.model == model_name)
        if version is not None:
            query = query.where(TelemetryRecord.version == version)
        with self.db.session() as session:
            return int(session.exec(query).one())


def _stored_payload(payload: Mapping[str, Any], sketches: bytes | None) -> Mapping[str, Any]:
    """The batch JSON as received: rows written before migration 0006 hold their sketches in the JSON."""
    if sketches is None:
        return payload
    try:
        unpacked = unpack_sketches(sketches)
    except ProtocolError:
        return {**payload, "feature_sketches": None}  # unusable: `usable_batch` skips it
    return {**payload, "feature_sketches": {n: base64.b64encode(raw).decode("ascii") for n, raw in unpacked.items()}}
