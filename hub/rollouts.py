"""Rollouts driven by the hub: the pure engine of `fleet.rollout`, persisted in the database and acted on.

`RolloutStore` keeps each rollout's `RolloutSnapshot` (JSON) with an outbox of the actions of every step and
a queue of operator commands; the CLI needs nothing else. `RolloutManager` runs inside a started `Hub`: it
ticks every open rollout on a timer and whenever a device reports (coalesced on one worker thread), turns
``DeployTo`` into retained `DeploymentOrder`s (``deployment_id`` = the rollout id), ``RollBack`` into
orders for each device's last known good model (``allow_downgrade``), and answers ``RequestGate`` with
`fleet.canary.analyse_canary` on the stored telemetry, with the plan's ``gate.canary`` settings. Persist,
then act: a restarted hub drains the outbox and keeps stepping from the stored snapshot.

Each rollout is mirrored as a `Deployment` with the rollout's id (and ``<id>.rollback`` once devices are sent
back), one `DeploymentDevice` row per device sent, so ``GET /deployments/{id}`` shows per-device progress
(the hub's event handler updates those rows); the deployment's ``status`` is the rollout's state. The last
failure detail each device reported for a rollout is kept in `RolloutDeviceError`, so a restarted hub still
knows why a device failed.

Errors are `hub.errors` ones: `NotFoundError` (unknown rollout or version), `InvalidRequestError` (a version
without variants, an unknown command), `ConflictError` (a command the rollout's state does not allow).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from sqlmodel import col, select

from fleet import topics
from fleet.canary import CanaryConfig, DeviceMetrics, analyse_canary, device_metrics
from fleet.errors import ProtocolError
from fleet.messages import DeploymentOrder, DeviceState, InstalledModel, UpdateEvent, UpdateState, decode
from fleet.mqtt import BrokerAddress, PahoBroker
from fleet.rollout import (
    Action,
    Command,
    DeployTo,
    DeviceStatus,
    GateInput,
    Notice,
    Pause,
    RequestGate,
    RollBack,
    RolloutError,
    RolloutSnapshot,
    RolloutStatus,
    Skipped,
    StateChanged,
    allowed_commands,
    dump_actions,
    load_actions,
    new_rollout,
    step,
    summarize,
)
from fleet.rollout_plan import RolloutPlan
from fleet.selection import Variant as PlanVariant
from fleet.transport import Broker, Message, Unsubscribe
from hub.errors import ConflictError, InvalidRequestError, NotFoundError
from hub.registry import (
    Database,
    Deployment,
    DeploymentDevice,
    Registry,
    RolloutCommandRow,
    RolloutOutbox,
    RolloutRow,
    Variant,
)
from hub.registry.rollout_tables import RolloutDeviceError

if TYPE_CHECKING:
    from hub.mqtt_service import HubMqtt
    from hub.service import Hub

log = logging.getLogger(__name__)

GateAnalysis = Callable[[RequestGate, RolloutSnapshot], GateInput]
_MAX_GATE_ROUNDS = 8
_ROLLBACK_SUFFIX = ".rollback"
_MAX_DEPLOYMENT_ID = 64  # Deployment.id's column length


# ------------------------------------------------------------------------------------------ storage


class RolloutStore:
    """Rollout rows, their action outbox and the operator command queue (each method one transaction)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, snapshot: RolloutSnapshot) -> None:
        """Store a new rollout."""
        with self.db.session() as session:
            if session.get(RolloutRow, snapshot.rollout_id) is not None:
                raise ConflictError(f"rollout {snapshot.rollout_id} already exists")
            session.add(_row(snapshot))

    def load(self, rollout_id: str) -> RolloutSnapshot:
        """The stored snapshot, or `NotFoundError`."""
        with self.db.session() as session:
            row = session.get(RolloutRow, rollout_id)
        if row is None:
            raise NotFoundError(f"rollout {rollout_id} does not exist")
        return RolloutSnapshot.model_validate_json(row.snapshot)

    def all(self) -> list[RolloutRow]:
        """All rollouts, newest first."""
        with self.db.session() as session:
            return list(session.exec(select(RolloutRow).order_by(col(RolloutRow.created_at).desc())))

    def open_ids(self) -> list[str]:
        """Ids of rollouts that are not completed or aborted, oldest first."""
        with self.db.session() as session:
            query = select(RolloutRow.id).where(col(RolloutRow.final).is_(False)).order_by(col(RolloutRow.created_at))
            return list(session.exec(query))

    def save(self, snapshot: RolloutSnapshot, actions: list[Action]) -> int | None:
        """Store the snapshot and, in the same transaction, its actions as an outbox row; return its id."""
        with self.db.session() as session:
            row = session.get(RolloutRow, snapshot.rollout_id)
            if row is None:
                raise NotFoundError(f"rollout {snapshot.rollout_id} does not exist")
            row.snapshot = snapshot.model_dump_json()
            row.state, row.final, row.updated_at = snapshot.state.value, snapshot.final, time.time()
            session.add(row)
            for deployment_id in (snapshot.rollout_id, snapshot.rollout_id + _ROLLBACK_SUFFIX):
                deployment = session.get(Deployment, deployment_id) if _mirrored(deployment_id) else None
                if deployment is not None and deployment.status != snapshot.state.value:
                    deployment.status = snapshot.state.value
                    session.add(deployment)
            if not actions:
                return None
            outbox = RolloutOutbox(rollout_id=snapshot.rollout_id, actions=dump_actions(actions).decode())
            session.add(outbox)
            session.flush()
            return outbox.id

    def undone_actions(self) -> list[tuple[int, str, list[Action]]]:
        """Outbox rows not yet carried out, oldest first: (id, rollout id, actions)."""
        with self.db.session() as session:
            rows = list(session.exec(select(RolloutOutbox).where(col(RolloutOutbox.done).is_(False))
                                     .order_by(col(RolloutOutbox.id))))
        return [(r.id or 0, r.rollout_id, load_actions(r.actions)) for r in rows]

    def mark_done(self, outbox_id: int | None) -> None:
        """Record that an outbox row's actions were carried out."""
        if outbox_id is None:
            return
        with self.db.session() as session:
            row = session.get(RolloutOutbox, outbox_id)
            if row is not None:
                row.done = True
                session.add(row)

    def history(self, rollout_id: str) -> list[Action]:
        """Every action the rollout produced, in order (the audit log)."""
        with self.db.session() as session:
            rows = list(session.exec(select(RolloutOutbox).where(RolloutOutbox.rollout_id == rollout_id)
                                     .order_by(col(RolloutOutbox.id))))
        return [a for r in rows for a in load_actions(r.actions)]

    def queue_command(self, rollout_id: str, command: Command) -> int:
        """Queue an operator command for the hub's next tick."""
        with self.db.session() as session:
            row = RolloutCommandRow(rollout_id=rollout_id, command=command.value)
            session.add(row)
            session.flush()
            return row.id or 0

    def pending_commands(self) -> list[RolloutCommandRow]:
        """Queued commands, oldest first."""
        with self.db.session() as session:
            return list(session.exec(select(RolloutCommandRow).where(col(RolloutCommandRow.done).is_(False))
                                     .order_by(col(RolloutCommandRow.id))))

    def finish_command(self, command_id: int | None, error: str = "") -> None:
        """Mark a queued command as handled (with the error when it could not be applied)."""
        with self.db.session() as session:
            row = session.get(RolloutCommandRow, command_id)
            if row is not None:
                row.done, row.error = True, error
                session.add(row)


    def mirror_deployment(self, deployment_id: str, model: str, version: str, devices: dict[str, int | None], *,
                          status: str, allow_downgrade: bool = False) -> bool:
        """Record devices sent ``deployment_id`` as `Deployment` / `DeploymentDevice` rows (``devices``: device
        id -> variant id); rows already there are kept (replays are harmless). False when the id is too long."""
        if not _mirrored(deployment_id):
            return False
        with self.db.session() as session:
            deployment = session.get(Deployment, deployment_id)
            if deployment is None:
                deployment = Deployment(id=deployment_id, model=model, version=version, device_ids=[],
                                        allow_downgrade=allow_downgrade, status=status)
            listed = set(deployment.device_ids)
            new = [d for d in devices if d not in listed]
            if new:
                deployment.device_ids = [*deployment.device_ids, *new]  # a new list: JSON columns track assignment
            session.add(deployment)
            session.flush()
            have = set(session.exec(select(DeploymentDevice.device_id)
                                    .where(DeploymentDevice.deployment_id == deployment_id)))
            session.add_all(DeploymentDevice(deployment_id=deployment_id, device_id=d, variant_id=variant_id)
                            for d, variant_id in devices.items() if d not in have)
        return True

    def record_error(self, deployment_id: str, device_id: str, detail: str) -> bool:
        """Keep the detail of a device's failed update event for a rollout (or its rollback); False when
        ``deployment_id`` belongs to no rollout."""
        rollout_id = deployment_id.removesuffix(_ROLLBACK_SUFFIX)
        with self.db.session() as session:
            if session.get(RolloutRow, rollout_id) is None:
                return False
            row = session.get(RolloutDeviceError, (deployment_id, device_id))
            if row is None:
                row = RolloutDeviceError(deployment_id=deployment_id, device_id=device_id, rollout_id=rollout_id,
                                         detail=detail)
            row.detail, row.updated_at = detail, time.time()
            session.add(row)
        return True

    def errors(self) -> dict[tuple[str, str], str]:
        """Kept failure details of open rollouts: (device id, deployment id) -> detail."""
        with self.db.session() as session:
            query = (select(RolloutDeviceError).join(RolloutRow, col(RolloutRow.id) == RolloutDeviceError.rollout_id)
                     .where(col(RolloutRow.final).is_(False)))
            return {(r.device_id, r.deployment_id): r.detail for r in session.exec(query)}


def _mirrored(deployment_id: str) -> bool:
    return len(deployment_id) <= _MAX_DEPLOYMENT_ID


def _row(snapshot: RolloutSnapshot) -> RolloutRow:
    return RolloutRow(id=snapshot.rollout_id, model=snapshot.plan.model, version=snapshot.plan.version,
                      state=snapshot.state.value, final=snapshot.final, snapshot=snapshot.model_dump_json(),
                      created_at=snapshot.created_at, updated_at=snapshot.updated_at)


# ------------------------------------------------------------------------------- operator actions


def plan_variants(registry: Registry, model: str, version: str) -> list[PlanVariant]:
    """The registry's variants of ``model:version`` as the selection engine sees them."""
    rows = registry.list_variants(model, version)
    if not rows:
        raise InvalidRequestError(f"{model}:{version} has no published variants")
    return [_plan_variant(row) for row in rows]


def _plan_variant(row: Variant) -> PlanVariant:
    metrics = row.metrics or {}

    def positive(*keys: str) -> float | None:
        for key in keys:
            value = metrics.get(key)
            if isinstance(value, int | float) and value > 0:
                return float(value)
        return None

    params = metrics.get("param_count")
    return PlanVariant(variant_id=str(row.id), target=row.target, precision=row.precision,
                       size_bytes=max(1, row.size_bytes), param_count=params if isinstance(params, int) else None,
                       latency_ms=positive("latency_ms", "p95_ms", "latency_p95_ms"),
                       peak_memory_mb=positive("peak_memory_mb"), sha256=row.bundle_sha256)


def create_rollout(store: RolloutStore, registry: Registry, plan: RolloutPlan, *,
                   rollout_id: str | None = None, now: float | None = None) -> RolloutSnapshot:
    """Store a new rollout of ``plan`` in state pending; the hub's next tick starts it."""
    rollout_id = rollout_id or f"ro-{uuid.uuid4().hex[:10]}"
    registry.get_version(plan.model, plan.version)
    snapshot = new_rollout(rollout_id, plan, plan_variants(registry, plan.model, plan.version),
                           now=time.time() if now is None else now)
    store.create(snapshot)
    return snapshot


def request_command(store: RolloutStore, rollout_id: str, command: Command | str) -> Command:
    """Check ``command`` against the rollout's state now and queue it for the hub; return it parsed."""
    try:
        parsed = Command(command)
    except ValueError:
        raise InvalidRequestError(f"unknown command {command!r}; use one of "
                                  f"{', '.join(c.value for c in Command)}") from None
    snapshot = store.load(rollout_id)
    if parsed not in allowed_commands(snapshot):
        allowed = ", ".join(c.value for c in allowed_commands(snapshot)) or "none"
        raise ConflictError(f"rollout {rollout_id} is {snapshot.state.value}: {parsed.value} is not allowed "
                            f"(allowed: {allowed})")
    store.queue_command(rollout_id, parsed)
    return parsed


def rollout_status(store: RolloutStore, rollout_id: str) -> RolloutStatus:
    """`fleet.rollout.summarize` of the stored snapshot."""
    return summarize(store.load(rollout_id))


# ------------------------------------------------------------------------------------------ gate


def canary_gate(registry: Registry, config: CanaryConfig | None = None) -> GateAnalysis:
    """A gate analysis: `analyse_canary` on telemetry since the request's ``since``, candidates on the new
    version against the baseline devices still on another version, device classes as in the rollout.

    The analysis settings are ``config`` when given, else the rollout plan's ``gate.canary``."""

    def analyse(request: RequestGate, snapshot: RolloutSnapshot) -> GateInput:
        batches = [b for b in registry.telemetry_batches(request.model) if b.window_end >= request.since]
        candidates, baseline = set(request.candidates), set(request.baseline)

        def metrics(ids: set[str], on_version: bool) -> list[DeviceMetrics]:
            chosen = [b for b in batches if b.device_id in ids and (b.version == request.version) == on_version]
            out = []
            for m in device_metrics(chosen, shadow_candidate=request.version):
                record = snapshot.devices.get(m.device_id)
                out.append(m.model_copy(update={"device_class": record.device_class}) if record else m)
            return out

        settings = config or (snapshot.plan.gate.canary if snapshot.plan.gate is not None else CanaryConfig())
        return analyse_canary(metrics(candidates, True), metrics(baseline, False), settings)

    return analyse


# --------------------------------------------------------------------------------------- manager


class RolloutManager:
    """Steps every open rollout, persists each step with its actions, then carries the actions out."""

    def __init__(self, registry: Registry, mqtt: HubMqtt, *, tick_s: float = 2.0,
                 analyse: GateAnalysis | None = None, clock: Callable[[], float] = time.time) -> None:
        self.registry = registry
        self.mqtt = mqtt
        self.store = RolloutStore(registry.db)
        self.tick_s = tick_s
        self.analyse = analyse or canary_gate(registry)
        self.clock = clock
        self._states: dict[str, DeviceState] = {}
        self._errors: dict[tuple[str, str], str] = {}
        self._data_lock = threading.Lock()
        self._tick_lock = threading.RLock()
        self._wake = threading.Event()
        self._ticked = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._unsubscribes: list[Unsubscribe] = []
        self._state_broker: Broker | None = None
        self.ticks = 0

    @classmethod
    def for_hub(cls, hub: Hub, *, tick_s: float = 2.0) -> RolloutManager:
        """A manager for a started hub, with its own broker connection for device states and events."""
        import secrets

        from fleet.acl import HUB_USERNAME

        if hub.mqtt is None:
            raise RuntimeError("hub is not started")
        manager = cls(hub.registry, hub.mqtt, tick_s=tick_s)
        if hub.settings.broker_url is None:
            address = hub.broker_address.with_credentials(HUB_USERNAME, hub.hub_secret)
        else:
            address = BrokerAddress.from_url(hub.settings.broker_url)
            if address.username is None:
                address = address.with_credentials(HUB_USERNAME, hub.hub_secret)
        broker = PahoBroker(address, client_id=f"edgefleet-rollouts-{secrets.token_hex(4)}")
        manager.watch(broker, own=True)
        return manager

    # -- inputs ---------------------------------------------------------------------------------------------

    def watch(self, broker: Broker, *, own: bool = False) -> None:
        """Follow device states and update events on ``broker`` (closed by `stop` when ``own``).

        Both on one connection, so a device's failed event is seen before the state that follows it.
        """
        self._unsubscribes.append(broker.subscribe(topics.device_wildcard("events"), self._on_event_message))
        self._unsubscribes.append(broker.subscribe(topics.device_wildcard("state"), self._on_state_message))
        if own:
            self._state_broker = broker

    def _on_state_message(self, message: Message) -> None:
        if not message.payload:
            return
        try:
            device_id, _ = topics.parse_device_topic(message.topic)
            state = decode(DeviceState, message.payload, topic=message.topic)
        except ProtocolError as exc:
            log.warning("rollouts: ignored state message: %s", exc)
            return
        if state.device_id != device_id:
            return
        self.observe_state(state)

    def _on_event_message(self, message: Message) -> None:
        try:
            device_id, _ = topics.parse_device_topic(message.topic)
            event = decode(UpdateEvent, message.payload, topic=message.topic)
        except ProtocolError as exc:
            log.warning("rollouts: ignored event message: %s", exc)
            return
        if event.device_id == device_id:
            self.observe_event(event)

    def observe_state(self, state: DeviceState) -> None:
        """Record a device's reported state and schedule a tick."""
        with self._data_lock:
            self._states[state.device_id] = state
        self._wake.set()

    def observe_event(self, event: UpdateEvent) -> None:
        """Record a device's update event (failures feed `DeviceStatus.error`) and schedule a tick."""
        if not event.ok and event.detail:
            with self._data_lock:
                known = self._errors.get((event.device_id, event.deployment_id))
                self._errors[(event.device_id, event.deployment_id)] = event.detail
            if known != event.detail:
                try:
                    self.store.record_error(event.deployment_id, event.device_id, event.detail)
                except Exception:  # the in-memory copy still serves this run
                    log.exception("rollouts: could not store the failure of %s", event.device_id)
        self._wake.set()

    def statuses(self) -> list[DeviceStatus]:
        """The whole inventory as the engine sees it: registry rows, refined by retained states."""
        with self._data_lock:
            states = dict(self._states)
            errors = dict(self._errors)
        out = []
        for device in self.registry.list_devices():
            state = states.get(device.id)
            if state is not None:
                error = errors.get((device.id, state.deployment_id)) if state.deployment_id else None
                status = DeviceStatus.from_state(state, device.labels, error)
                if status.target is None:
                    status = status.model_copy(update={"target": device.target})
                if status.update_state == UpdateState.ROLLBACK and error is None:
                    # still reverting: its failed event, with the reason, follows
                    status = status.model_copy(update={"update_state": None})
                out.append(status)
            else:
                out.append(DeviceStatus(device_id=device.id, target=device.target, labels=device.labels,
                                        online=device.online, active_model=device.active_model,
                                        active_version=device.active_version))
        return out

    # -- lifecycle ------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Carry out actions left in the outbox by a previous run, then tick on a worker thread."""
        if isinstance(self._state_broker, PahoBroker):
            self._state_broker.wait_connected(5.0)  # retained states follow the subscription at once
        stored = self.store.errors()  # failure reasons reported before a restart
        with self._data_lock:
            self._errors = {**stored, **self._errors}
        self.drain_outbox()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="edgefleet-rollouts", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the worker and the state subscription; safe to call twice."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        for unsubscribe in self._unsubscribes:
            unsubscribe()
        self._unsubscribes.clear()
        if self._state_broker is not None:
            self._state_broker.close()
            self._state_broker = None

    def wake(self) -> None:
        """Ask the worker for a tick now."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.tick_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.tick()
            except Exception:  # a bad tick must not stop the rollouts
                log.exception("rollout tick failed")

    # -- operator API (REST) --------------------------------------------------------------------------------

    def start_rollout(self, plan: RolloutPlan, *, rollout_id: str | None = None) -> RolloutSnapshot:
        """Create a rollout and step it once (it starts at once)."""
        snapshot = create_rollout(self.store, self.registry, plan, rollout_id=rollout_id, now=self.clock())
        self.tick()
        return self.store.load(snapshot.rollout_id)

    def command(self, rollout_id: str, command: Command | str) -> RolloutStatus:
        """Apply an operator command now; return the status after it."""
        request_command(self.store, rollout_id, command)
        self.tick()
        return rollout_status(self.store, rollout_id)

    # -- the loop -------------------------------------------------------------------------------------------

    def drain_outbox(self) -> None:
        """Carry out actions persisted but not (known to be) carried out, e.g. before a crash."""
        with self._tick_lock:
            for outbox_id, rollout_id, actions in self.store.undone_actions():
                snapshot = self.store.load(rollout_id)
                self._act(snapshot, actions, self.statuses())
                self.store.mark_done(outbox_id)

    def tick(self) -> None:
        """Apply queued commands, then step every open rollout once (answering gate requests at once)."""
        with self._tick_lock:
            self.ticks += 1
            commands, open_ids = self.store.pending_commands(), self.store.open_ids()
            statuses = self.statuses() if commands or open_ids else []
            for command in commands:
                try:
                    snapshot = self.store.load(command.rollout_id)
                    snapshot, actions = step(snapshot, self.clock(), statuses, command=command.command)
                except (RolloutError, NotFoundError) as exc:
                    self.store.finish_command(command.id, str(exc))
                    continue
                self._commit(snapshot, actions, statuses)
                self.store.finish_command(command.id)
            for rollout_id in open_ids:
                snapshot, actions = step(self.store.load(rollout_id), self.clock(), statuses)
                self._commit(snapshot, actions, statuses)
        with self._ticked:
            self._ticked.notify_all()

    def wait(self, rollout_id: str, until: Callable[[RolloutSnapshot], bool], timeout_s: float) -> RolloutSnapshot:
        """Block until ``until(snapshot)`` holds after a tick (or ``timeout_s`` passes); return the snapshot."""
        self.wait_for(lambda: until(self.store.load(rollout_id)), timeout_s)
        return self.store.load(rollout_id)

    def wait_for(self, condition: Callable[[], bool], timeout_s: float) -> bool:
        """Block until ``condition()`` holds, checked now and after every tick; return whether it does."""
        deadline = time.monotonic() + timeout_s
        with self._ticked:
            while True:
                if condition():
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._ticked.wait(remaining)

    def _commit(self, snapshot: RolloutSnapshot, actions: list[Action], statuses: list[DeviceStatus]) -> None:
        for _ in range(_MAX_GATE_ROUNDS):
            outbox_id = self.store.save(snapshot, actions)
            verdict = self._act(snapshot, actions, statuses)
            self.store.mark_done(outbox_id)
            if verdict is None:
                return
            snapshot, actions = step(snapshot, self.clock(), statuses, gate_verdict=verdict)
        log.warning("rollout %s: gate kept asking within one tick", snapshot.rollout_id)

    def _act(self, snapshot: RolloutSnapshot, actions: Iterable[Action],
             statuses: list[DeviceStatus]) -> GateInput | None:
        verdict: GateInput | None = None
        for action in actions:
            if isinstance(action, DeployTo):
                self._deploy(action, snapshot)
            elif isinstance(action, RollBack):
                self._roll_back(snapshot, action)
            elif isinstance(action, RequestGate):
                try:
                    verdict = self.analyse(action, snapshot)
                except Exception:
                    log.exception("rollout %s: canary analysis failed", snapshot.rollout_id)
            elif isinstance(action, Pause | Skipped):
                log.warning("rollout %s: %s", snapshot.rollout_id, _describe(action))
            elif isinstance(action, StateChanged | Notice):
                log.info("rollout %s: %s", snapshot.rollout_id, _describe(action))
        return verdict

    def _deploy(self, action: DeployTo, snapshot: RolloutSnapshot) -> None:
        row = self._variant_row(action.model, action.version, action.variant.variant_id)
        order = self.mqtt.order_for(action.deployment_id, row.bundle_sha256, model=action.model,
                                    version=action.version, target=row.target, tuf_target=row.tuf_target)
        self.store.mirror_deployment(action.deployment_id, action.model, action.version,
                                     dict.fromkeys(action.device_ids, row.id), status=snapshot.state.value)
        for device_id in action.device_ids:
            self.mqtt.send_deployment(device_id, order)

    def _roll_back(self, snapshot: RolloutSnapshot, action: RollBack) -> None:
        with self._data_lock:
            states = {d: self._states.get(d) for d in action.device_ids}
        plan = snapshot.plan
        orders: dict[str, DeploymentOrder | None] = {}
        for device_id, state in states.items():
            good: InstalledModel | None = None
            if state is None:  # no retained state seen yet (e.g. just restarted): the registry's last copy
                state = self._state_from_registry(device_id)
            if state is not None:
                active = state.active
                on_new = active is not None and (active.model, active.version) == (plan.model, plan.version)
                good = state.last_known_good if on_new or active is None else active
            orders[device_id] = self._order_for_installed(action.deployment_id, good) if good is not None else None
        sent = {d: o for d, o in orders.items() if o is not None}
        if sent:
            versions = sorted({o.version for o in sent.values()})
            variants = {d: getattr(self.registry.variant_by_bundle(o.sha256), "id", None) for d, o in sent.items()}
            self.store.mirror_deployment(action.deployment_id, plan.model, versions[0] if len(versions) == 1
                                         else "last-known-good", variants, status=snapshot.state.value,
                                         allow_downgrade=True)
        for device_id, order in orders.items():
            if order is None:
                self.mqtt.broker.publish(topics.device_topic(device_id, "deployment"), b"", qos=1, retain=True)
            else:
                self.mqtt.send_deployment(device_id, order)

    def _state_from_registry(self, device_id: str) -> DeviceState | None:
        try:
            device = self.registry.get_device(device_id)
        except NotFoundError:
            return None
        active = None
        if device.active_model and device.active_version and device.active_sha256:
            active = InstalledModel(model=device.active_model, version=device.active_version,
                                    sha256=device.active_sha256, target=device.target)
        return DeviceState(device_id=device_id, online=device.online, target=device.target, active=active)

    def _order_for_installed(self, deployment_id: str, installed: InstalledModel) -> DeploymentOrder | None:
        row = self.registry.variant_by_bundle(installed.sha256)
        if row is None:
            try:
                rows = self.registry.list_variants(installed.model, installed.version)
            except NotFoundError:
                return None
            row = next((r for r in rows if r.target == installed.target), None)
        if row is None:
            return None
        return self.mqtt.order_for(deployment_id, row.bundle_sha256, model=installed.model,
                                   version=installed.version, target=row.target, tuf_target=row.tuf_target,
                                   allow_downgrade=True)

    def _variant_row(self, model: str, version: str, variant_id: str) -> Variant:
        for row in self.registry.list_variants(model, version):
            if str(row.id) == variant_id:
                return row
        raise NotFoundError(f"variant {variant_id} of {model}:{version} no longer exists")


def _describe(action: Any) -> str:
    return ", ".join(f"{k}={v}" for k, v in action.model_dump(exclude={"kind"}).items())
