"""`RolloutManager`: steps the pure engine of `fleet.rollout` for every open rollout, persists, then acts.

It runs inside a started `Hub`. Its worker thread ticks on events, not on a period: a device report that can
move a rollout (a device finished, failed, appeared or went on- or offline; not mid-download progress), a
rollout's own next due time (`fleet.rollout.next_due`: a device timeout, the gate's next request), and, polled
every ``tick_s`` with two cheap queries, operator commands or rollouts that another hub replica queued. Reports
arriving during a tick are handled together by the next one, which starts no sooner than the last one took
(at most ``_MAX_SPACING_S`` later), so a wave of thousands costs a few ticks, not one per report.

Each step turns ``DeployTo`` into retained `DeploymentOrder`s (``deployment_id`` = the rollout id; a wave's
sequences reserved in one transaction). A bundle the ``retainer`` can keep (`BundleTransfer.retainable`) is
published retained once per rollout before its first orders, which then say ``retained_chunks``: each device
receives it from the broker as it subscribes. The bundles held are recorded before they are published and
cleared when the rollout ends (or, after a restart, at `start`). Otherwise a wave's devices are announced to
`BundleTransfer.push` first, so the broadcast waits for their requests. ``RollBack`` turns into
orders for each device's last known good model (``allow_downgrade``), and answers ``RequestGate`` with the gate
analysis (`hub.rollouts.gate.canary_gate` by default). Persist, then act: each step is stored with its actions
(`hub.registry.rollouts.RolloutStore`) before they are carried out, so a restarted hub drains the outbox and
keeps stepping from the stored snapshot.

It receives what it needs, never the whole hub: the registry, an order sink (`OrderSink`), and device states and
events through `observe_state` / `observe_event` (the hub wires those to `hub.devices.traffic.DeviceTraffic`,
which calls them in arrival order, so a device's failed event is seen before the state that follows it).

Each rollout is mirrored as a `Deployment` with the rollout's id (and ``<id>.rollback`` once devices are sent
back), so ``GET /deployments/{id}`` shows per-device progress. The last failure detail each device reported for
a rollout is kept, so a restarted hub still knows why a device failed.

Errors are `hub.errors` ones: `NotFoundError` (unknown rollout or version), `InvalidRequestError` (a version
without variants, an unknown command), `ConflictError` (a command the rollout's state does not allow).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, Protocol

from sqlmodel import Session

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
    awaiting,
    next_due,
    step,
)
from fleet.rollout.inputs import BUSY_UPDATE_STATES
from fleet.rollout_plan import RolloutPlan
from fleet.wire.messages import DeploymentOrder, DeviceState, InstalledModel, UpdateEvent, UpdateState, late_copy
from hub.errors import NotFoundError
from hub.registry import Registry, Variant
from hub.registry.repository import DeviceView
from hub.registry.rollouts import RolloutStore
from hub.rollouts.gate import GateAnalysis, canary_gate
from hub.rollouts.operations import create_rollout, request_command, rollout_status

__all__ = ["ChunkRetainer", "OrderSink", "RolloutManager"]

log = logging.getLogger(__name__)

_MAX_GATE_ROUNDS = 8
_MAX_SPACING_S = 0.25
_FAILED = frozenset({UpdateState.FAILED, UpdateState.ROLLBACK})


class OrderSink(Protocol):
    """Where the manager's deployment orders go (`hub.devices.orders.DeploymentOrders` in a hub)."""

    def order_for(
        self,
        deployment_id: str,
        bundle_sha256: str,
        *,
        model: str,
        version: str,
        target: str,
        tuf_target: str,
        allow_downgrade: bool = False,
        shadow: bool = False,
    ) -> DeploymentOrder:
        """Build an order for a stored bundle."""
        ...

    def send_all(self, orders: Mapping[str, DeploymentOrder]) -> None:
        """Deliver each device's order as its desired deployment (a wave at once)."""
        ...

    def clear(self, device_id: str) -> None:
        """Withdraw the device's desired deployment."""
        ...


class ChunkRetainer(Protocol):
    """Keeps a bundle's chunks retained on the broker (`hub.bundles.transfer.BundleTransfer` in a hub)."""

    def retainable(self, sha256: str) -> int:
        """The bundle's chunk count when it is small enough to keep retained, else 0."""
        ...

    def retain(self, sha256: str) -> None:
        """Publish every chunk retained."""
        ...

    def clear_retained(self, sha256: str, chunk_count: int) -> None:
        """Clear the retained chunks."""
        ...


class RolloutManager:
    """Steps every open rollout, persists each step with its actions, then carries the actions out."""

    def __init__(
        self,
        registry: Registry,
        orders: OrderSink,
        *,
        tick_s: float = 2.0,
        analyse: GateAnalysis | None = None,
        clock: Callable[[], float] = time.time,
        fence: Callable[[Session], None] | None = None,
        push: Callable[[str, Collection[str]], None] | None = None,
        retainer: ChunkRetainer | None = None,
    ) -> None:
        self.registry = registry
        self.orders = orders
        self.store = RolloutStore(registry.db, fence=fence)  # fence: refuse a deposed replica's outbox writes
        # Told a bundle's digest and the wave's devices before their orders go out, so the bundle is broadcast
        # once the whole wave is listening instead of in answer to each request (`BundleTransfer.push`).
        self.push = push
        # Keeps a rollout's bundle retained on the broker while it runs: its orders say so, devices receive the
        # bundle as they subscribe and ask for nothing, so a wave waits for no one and late joiners cost no egress.
        self.retainer = retainer
        self._retained: set[str] = set()  # digests this manager published retained since it started
        self._held: set[tuple[str, str]] = set()  # (rollout, digest) recorded in the store, so each wave skips it
        self._republish = False  # the broker connection came back: publish the retained chunks again
        self.tick_s = tick_s
        self.analyse = analyse or canary_gate(registry)
        self.clock = clock
        self._states: dict[str, DeviceState] = {}
        self._status_cache: dict[str, tuple[DeviceView, DeviceState | None, str | None, DeviceStatus]] = {}
        self._saved: dict[str, tuple[str, RolloutSnapshot]] = {}  # per rollout: the JSON this manager stored last
        self._errors: dict[tuple[str, str], str] = {}
        self._data_lock = threading.Lock()
        self._tick_lock = threading.RLock()
        self._wake = threading.Event()
        self._ticked = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_due: float | None = None  # the earliest `next_due` of the open rollouts after the last tick
        # per open rollout, what its running wave waits for (None: any outcome may move some rollout)
        self._awaiting: dict[str, tuple[set[str], int]] | None = None
        self._reported: set[str] | None = None  # devices that reported an outcome since the running tick began
        self._open: set[str] = set()
        self.ticks = 0
        self._ticks_done = 0  # guarded by _ticked: waiters compare it to know a tick ended

    # -- inputs ---------------------------------------------------------------------------------------------

    def observe_state(self, state: DeviceState) -> None:
        """Record a device's reported state; schedule a tick when it can move a rollout: a failure, a device
        seen for the first time or going on- or offline, and a success once the running wave can be complete
        (`fleet.rollout.awaiting`), not every progress report of a wave of thousands."""
        with self._data_lock:
            previous = self._states.get(state.device_id)
            if previous is not None and late_copy(state, previous.online, previous.ts):
                return
            self._states[state.device_id] = state
            if previous is None or state.online != previous.online or state.update_state in _FAILED:
                wake = True
            elif state.update_state in BUSY_UPDATE_STATES:
                wake = False
            else:
                wake = self._outcome(state.device_id)
        if wake:
            self._wake.set()

    def _outcome(self, device_id: str) -> bool:
        """A device reported an outcome: whether a rollout may now move (called holding the data lock)."""
        if self._reported is not None:
            self._reported.add(device_id)  # a tick is running: it checks against the waves it leaves running
            return False
        if self._awaiting is None:
            return True
        can_move = False
        for devices, slack in self._awaiting.values():
            if device_id in devices:
                devices.discard(device_id)
                can_move = can_move or len(devices) <= slack
        return can_move

    def observe_event(self, event: UpdateEvent) -> None:
        """Record a device's update event (failures feed `DeviceStatus.error`); a failure schedules a tick."""
        if event.ok:
            return  # progress and success: the state that follows says the same
        if event.detail:
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
        """The whole inventory as the engine sees it: registry rows, refined by retained states.

        Statuses are frozen, so one is rebuilt only when its device's row, state or failure detail changed:
        a tick over a fleet of thousands costs one light query, not thousands of new objects."""
        with self._data_lock:
            states = dict(self._states)
            errors = dict(self._errors)
        out = []
        cache: dict[str, tuple[DeviceView, DeviceState | None, str | None, DeviceStatus]] = {}
        for row in self.registry.device_inventory():
            state = states.get(row.id)
            error = errors.get((row.id, state.deployment_id)) if state is not None and state.deployment_id else None
            known = self._status_cache.get(row.id)
            if known is not None and known[1] is state and known[2] == error and known[0] == row:
                status = known[3]
            else:
                status = _status(row, state, error)
            cache[row.id] = (row, state, error, status)
            out.append(status)
        self._status_cache = cache
        return out

    # -- lifecycle ------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Carry out actions left in the outbox by a previous run, then tick on a worker thread."""
        stored = self.store.errors()  # failure reasons reported before a restart
        with self._data_lock:
            self._errors = {**stored, **self._errors}
        self._reconcile_retained()
        self.drain_outbox()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="edgefleet-rollouts", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the worker; safe to call twice."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def wake(self) -> None:
        """Ask the worker for a tick now."""
        self._wake.set()

    def broker_reconnected(self) -> None:
        """The hub's broker connection came back, perhaps to a broker restarted without its retained messages:
        the next tick publishes the retained chunks of open rollouts again (on the worker, not the caller's
        thread, since publishing waits for the broker)."""
        with self._data_lock:
            self._republish = True
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            due_in = self._next_due - self.clock() if self._next_due is not None else self.tick_s
            woken = self._wake.wait(max(0.0, min(self.tick_s, due_in)))
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                if not (woken or self._due() or self._queued_elsewhere()):
                    continue
                began = time.perf_counter()
                self.tick()
                # let the reports arriving meanwhile gather: the next tick takes them all at once
                self._stop.wait(min(time.perf_counter() - began, _MAX_SPACING_S))
            except Exception:  # a bad tick must not stop the rollouts
                log.exception("rollout tick failed")

    def _await(self, waits: dict[str, tuple[set[str], int]] | None) -> None:
        """Install what the running waves wait for, minus the outcomes reported while the tick ran."""
        with self._data_lock:
            reported, self._reported = self._reported or set(), None
            self._awaiting = waits
            can_move = [self._outcome(device_id) for device_id in sorted(reported)].count(True) > 0
        if can_move:
            self._wake.set()

    def _load(self, rollout_id: str) -> RolloutSnapshot:
        """The stored snapshot; the one this manager saved last when the row still holds it (no JSON parse of
        thousands of records per tick; ``step`` never changes the snapshot it is given)."""
        text = self.store.load_json(rollout_id)
        saved = self._saved.get(rollout_id)
        if saved is not None and saved[0] == text:
            return saved[1]
        return RolloutSnapshot.model_validate_json(text)

    def _due(self) -> bool:
        return self._next_due is not None and self.clock() >= self._next_due

    def _queued_elsewhere(self) -> bool:
        """Whether a command or a rollout was queued since the last tick (by a REST route of any replica)."""
        return bool(self.store.pending_commands()) or set(self.store.open_ids()) != self._open

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
            with self._data_lock:  # this tick sees every report so far; later outcomes are checked after it
                self._reported = set()
                self._wake.clear()
                republish, self._republish = self._republish, False
            if republish:
                self._retained.clear()
                self._reconcile_retained()
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
            due: list[float] = []
            waits: dict[str, tuple[set[str], int]] | None = {}
            for rollout_id in open_ids:
                snapshot, actions = step(self._load(rollout_id), self.clock(), statuses)
                snapshot = self._commit(snapshot, actions, statuses)
                when = next_due(snapshot, self.clock())
                if when is not None:
                    due.append(when)
                wait = awaiting(snapshot)
                if wait is None or waits is None:
                    waits = None
                elif not snapshot.final:
                    waits[rollout_id] = (set(wait.devices), wait.slack)
            self._next_due = min(due, default=None)
            self._open = set(open_ids)
            self._saved = {r: saved for r, saved in self._saved.items() if r in self._open}
            self._await(waits)
        with self._ticked:
            self._ticks_done += 1
            self._ticked.notify_all()

    def wait(self, rollout_id: str, until: Callable[[RolloutSnapshot], bool], timeout_s: float) -> RolloutSnapshot:
        """Block until ``until(snapshot)`` holds after a tick (or ``timeout_s`` passes); return the snapshot.
        Each check parses the stored snapshot only when it is not the one this manager saved last."""
        self.wait_for(lambda: until(self._load(rollout_id)), timeout_s)
        return self._load(rollout_id)

    def wait_for(self, condition: Callable[[], bool], timeout_s: float) -> bool:
        """Block until ``condition()`` holds, checked now and after every tick; return whether it does.

        The condition runs outside the tick lock, so a slow condition (a database read) never holds up the
        worker's next tick."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._ticked:
                seen = self._ticks_done
            if condition():
                return True
            with self._ticked:
                while self._ticks_done == seen:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._ticked.wait(remaining)

    def _commit(
        self, snapshot: RolloutSnapshot, actions: list[Action], statuses: list[DeviceStatus]
    ) -> RolloutSnapshot:
        """Store the step with its actions, carry them out, and step again with a gate verdict; return the
        snapshot last stored."""
        for _ in range(_MAX_GATE_ROUNDS):
            dumped = snapshot.model_dump_json()
            outbox_id = self.store.save(snapshot, actions, dumped=dumped)
            self._saved[snapshot.rollout_id] = (dumped, snapshot)
            verdict = self._act(snapshot, actions, statuses)
            self.store.mark_done(outbox_id)
            if verdict is None:
                break
            snapshot, actions = step(snapshot, self.clock(), statuses, gate_verdict=verdict)
        else:
            log.warning("rollout %s: gate kept asking within one tick", snapshot.rollout_id)
        if snapshot.final:
            self._release_retained(snapshot.rollout_id)
        return snapshot

    def _act(
        self, snapshot: RolloutSnapshot, actions: Iterable[Action], statuses: list[DeviceStatus]
    ) -> GateInput | None:
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
        order = self.orders.order_for(
            action.deployment_id,
            row.bundle_sha256,
            model=action.model,
            version=action.version,
            target=row.target,
            tuf_target=row.tuf_target,
        )
        self.store.mirror_deployment(
            action.deployment_id,
            action.model,
            action.version,
            dict.fromkeys(action.device_ids, row.id),
            status=snapshot.state.value,
        )
        if self._retain(snapshot.rollout_id, row.bundle_sha256):
            order = order.model_copy(update={"retained_chunks": True})
        elif self.push is not None:
            with self._data_lock:  # online ones only: the broadcast waits for their requests, not for the offline
                online = [d for d in action.device_ids if (state := self._states.get(d)) is not None and state.online]
            self.push(row.bundle_sha256, online)
        self.orders.send_all(dict.fromkeys(action.device_ids, order))

    # -- retained chunks ------------------------------------------------------------------------------------

    def _retain(self, rollout_id: str, sha256: str) -> bool:
        """Keep ``sha256`` retained for the rollout (recorded before it is published); whether it is."""
        count = self.retainer.retainable(sha256) if self.retainer is not None else 0
        if self.retainer is None or not count:
            return False
        if (rollout_id, sha256) not in self._held:
            self.store.hold_retained(rollout_id, sha256, count)
            self._held.add((rollout_id, sha256))
        if sha256 not in self._retained:
            self.retainer.retain(sha256)
            self._retained.add(sha256)
        return True

    def _release_retained(self, rollout_id: str) -> None:
        """Clear the chunks kept retained for a rollout that ended, unless another rollout still ships them."""
        held = self.store.retained()
        mine = held.pop(rollout_id, {})
        if not mine:
            return
        if self.retainer is None:
            log.warning("rollout %s: no broker connection to clear %d retained bundle(s)", rollout_id, len(mine))
            return
        shipped_elsewhere = {sha256 for bundles in held.values() for sha256 in bundles}
        for sha256, count in sorted(mine.items()):
            if sha256 not in shipped_elsewhere:
                self.retainer.clear_retained(sha256, count)
                self._retained.discard(sha256)
        self.store.drop_retained(rollout_id)
        self._held = {held for held in self._held if held[0] != rollout_id}

    def _reconcile_retained(self) -> None:
        """At start and after the broker connection came back: clear what rollouts that ended meanwhile left
        retained, publish again what open ones hold (a broker restarted without persistence lost it)."""
        open_ids = set(self.store.open_ids())
        for rollout_id, held in sorted(self.store.retained().items()):
            if rollout_id not in open_ids:
                self._release_retained(rollout_id)
            elif self.retainer is not None:
                self._held.update((rollout_id, sha256) for sha256 in held)
                for sha256 in sorted(held.keys() - self._retained):
                    self.retainer.retain(sha256)
                    self._retained.add(sha256)

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
            self.store.mirror_deployment(
                action.deployment_id,
                plan.model,
                versions[0] if len(versions) == 1 else "last-known-good",
                variants,
                status=snapshot.state.value,
                allow_downgrade=True,
            )
        self.orders.send_all(sent)
        for device_id, order in orders.items():
            if order is None:
                self.orders.clear(device_id)

    def _state_from_registry(self, device_id: str) -> DeviceState | None:
        try:
            device = self.registry.get_device(device_id)
        except NotFoundError:
            return None
        active = None
        if device.active_model and device.active_version and device.active_sha256:
            active = InstalledModel(
                model=device.active_model,
                version=device.active_version,
                sha256=device.active_sha256,
                target=device.target,
            )
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
        return self.orders.order_for(
            deployment_id,
            row.bundle_sha256,
            model=installed.model,
            version=installed.version,
            target=row.target,
            tuf_target=row.tuf_target,
            allow_downgrade=True,
        )

    def _variant_row(self, model: str, version: str, variant_id: str) -> Variant:
        for row in self.registry.list_variants(model, version):
            if str(row.id) == variant_id:
                return row
        raise NotFoundError(f"variant {variant_id} of {model}:{version} no longer exists")


def _status(row: DeviceView, state: DeviceState | None, error: str | None) -> DeviceStatus:
    """A device's status: its retained state when one was seen, else the registry's copy."""
    if state is None:
        return DeviceStatus(
            device_id=row.id,
            target=row.target,
            labels=row.labels,
            online=row.online,
            active_model=row.active_model,
            active_version=row.active_version,
        )
    status = DeviceStatus.from_state(state, row.labels, error)
    if status.target is None:
        status = status.model_copy(update={"target": row.target})
    if status.update_state == UpdateState.ROLLBACK and error is None:
        # still reverting: its failed event, with the reason, follows
        status = status.model_copy(update={"update_state": None})
    return status


def _describe(action: Any) -> str:
    return ", ".join(f"{k}={v}" for k, v in action.model_dump(exclude={"kind"}).items())
