"""`SimFleet`: thousands of `SimDevice`s on one asyncio event loop, in a thread of their own.

Devices connect in paced steps: at most ``max_pending`` sessions between opening their socket and their first
SUBACK (a broker creating a JetStream consumer per QoS 1 subscription, like NATS, answers slowly; a thousand
simultaneous SYNs overflow a listen backlog), spread round robin over the broker addresses (cluster nodes).
Other threads call into the loop with `call` and wait on the counters with `wait_for`; every counter change
notifies one condition.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from bench.devsim.device import SimDevice
from bench.devsim.session import MqttSession

TICK_S = 0.5
RECONNECT_S = 1.0  # a device whose session was lost connects again after this many seconds times its losses
MAX_RECONNECTS = 5


class SimFleet:
    """Drives ``devices`` against ``addresses`` ((host, port) pairs, device i on address i mod n)."""

    def __init__(
        self,
        addresses: Sequence[tuple[str, int]],
        *,
        max_pending: int = 200,
        heartbeat_s: float = 30.0,
    ) -> None:
        self.addresses = list(addresses)
        self.max_pending = max_pending
        self.heartbeat_s = heartbeat_s
        self.devices: list[SimDevice] = []
        self.ready = 0
        self.subacks = 0  # subscriptions acknowledged with every filter granted
        self.finished = 0
        self.failed = 0
        self.acked_batches = 0
        self.rejected_batches = 0
        self.connect_errors = 0
        self.lost: list[str] = []  # one line per device that lost its session (first 20 kept)
        self.lost_count = 0
        self.on_other: Callable[[SimDevice, str, bytes], None] | None = None
        self._cond = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="devsim", daemon=True)
        self._pending: asyncio.Semaphore | None = None
        self._waiting_ready: dict[SimDevice, asyncio.Event] = {}
        self._addresses: dict[SimDevice, tuple[str, int]] = {}
        self._stopping = False
        self.error: BaseException | None = None

    # -- FleetHooks ---------------------------------------------------------------------------------------------

    def device_ready(self, device: SimDevice, first: bool) -> None:
        event = self._waiting_ready.pop(device, None)
        if event is not None:
            event.set()
        self._count("subacks")
        if first:
            self._count("ready")

    def device_lost(self, device: SimDevice, reason: str) -> None:
        event = self._waiting_ready.pop(device, None)
        if event is not None:
            event.set()
        device.session = None
        if not self._stopping and device.reconnects < MAX_RECONNECTS:  # the agent reconnects, with backoff
            device.reconnects += 1
            self._loop.call_later(RECONNECT_S * device.reconnects, self._reconnect, device)
        with self._cond:
            self.lost_count += 1
            if len(self.lost) < 20:
                self.lost.append(reason)
            self._cond.notify_all()

    def device_finished(self, device: SimDevice, ok: bool) -> None:
        self._count("finished" if ok else "failed")

    def telemetry_acked(self, device: SimDevice, stored: int, rejected: int) -> None:
        with self._cond:
            self.acked_batches += stored
            self.rejected_batches += rejected
            self._cond.notify_all()

    def other_message(self, device: SimDevice, topic: str, payload: bytes) -> None:
        if self.on_other is not None:
            self.on_other(device, topic, payload)

    def _count(self, name: str) -> None:
        with self._cond:
            setattr(self, name, getattr(self, name) + 1)
            self._cond.notify_all()

    # -- driving ------------------------------------------------------------------------------------------------

    def start(self, devices: Sequence[SimDevice]) -> None:
        """Start the loop thread and connect ``devices`` in paced steps (returns at once)."""
        self.devices = list(devices)
        self._thread.start()
        self.call(lambda: self._loop.create_task(self._connect_all(self.devices)))

    def add(self, devices: Sequence[SimDevice]) -> None:
        """Connect more devices on the running loop."""
        self.devices.extend(devices)
        added = list(devices)
        self.call(lambda: self._loop.create_task(self._connect_all(added)))

    def call(self, function: Callable[[], Any]) -> None:
        """Run ``function`` on the loop's thread (devices are touched from that thread only)."""
        self._loop.call_soon_threadsafe(function)

    def wait_for(self, condition: Callable[[SimFleet], bool], timeout_s: float) -> bool:
        """Block until ``condition(self)`` holds (checked at every counter change) or ``timeout_s`` passes."""
        with self._cond:
            return self._cond.wait_for(lambda: self.error is not None or condition(self), timeout_s)

    def stop(self) -> None:
        """Disconnect every device cleanly and stop the loop thread."""
        if not self._thread.is_alive():
            return

        def close_all() -> None:
            self._stopping = True
            for device in self.devices:
                if device.session is not None:
                    device.session.close()
            self._loop.call_later(0.2, self._loop.stop)  # let the DISCONNECTs leave the buffers

        self.call(close_all)
        self._thread.join(30)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._pending = asyncio.Semaphore(self.max_pending)
        timers = self._loop.create_task(self._timers())
        try:
            self._loop.run_forever()
        except BaseException as exc:  # reported by whoever waits
            with self._cond:
                self.error = exc
                self._cond.notify_all()
        finally:
            timers.cancel()
            self._loop.run_until_complete(asyncio.gather(timers, return_exceptions=True))
            self._loop.close()

    async def _connect_all(self, devices: list[SimDevice]) -> None:
        assert self._pending is not None
        offset = len(self.devices) - len(devices)
        for index, device in enumerate(devices):
            await self._pending.acquire()
            self._addresses[device] = self.addresses[(offset + index) % len(self.addresses)]
            self._loop.create_task(self._connect(device))

    def _reconnect(self, device: SimDevice) -> None:
        async def again() -> None:
            assert self._pending is not None
            await self._pending.acquire()
            await self._connect(device)

        if not self._stopping:
            self._loop.create_task(again())

    async def _connect(self, device: SimDevice) -> None:
        assert self._pending is not None
        host, port = self._addresses[device]
        ready = asyncio.Event()
        self._waiting_ready[device] = ready
        try:
            for attempt in range(5):
                try:
                    await self._loop.create_connection(lambda: MqttSession(device, device.connect_packet()), host, port)
                    break
                except OSError:
                    with self._cond:
                        self.connect_errors += 1
                    await asyncio.sleep(0.2 * 2**attempt)
            else:
                self.device_lost(device, f"{device.device_id}: cannot connect to {host}:{port}")
                return
            await ready.wait()
        finally:
            self._waiting_ready.pop(device, None)
            self._pending.release()

    async def _timers(self) -> None:
        """Every TICK_S: the devices' timers; keepalive pings and heartbeats spread over their interval, a slice
        of the devices per tick, as independent devices would send them."""
        tick = 0
        ping_every = round(30 / TICK_S)
        beat_every = max(1, round(self.heartbeat_s / TICK_S)) if self.heartbeat_s else 0
        while True:
            await asyncio.sleep(TICK_S)
            tick += 1
            now = time.monotonic()
            for device in self.devices:
                if device.session is not None:
                    device.tick(now)
            for device in self.devices[tick % ping_every :: ping_every]:
                if device.session is not None:
                    device.session.ping()
            if beat_every:
                for device in self.devices[tick % beat_every :: beat_every]:
                    device.heartbeat()

    def send_telemetry(self, devices: Sequence[SimDevice]) -> None:
        """Each of ``devices`` sends one telemetry batch (from the loop's thread)."""

        def send() -> None:
            for device in devices:
                device.send_telemetry()

        self.call(send)
