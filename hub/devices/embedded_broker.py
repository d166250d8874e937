"""The embedded MQTT broker (amqtt) run on its own thread, with per-device credentials and topic ACLs.

Used when ``edgefleet hub serve`` gets no broker URL: one process, nothing else to install.
It speaks MQTT 3.1.1 and checks every connection against the registry's credentials and every publish
and subscription against `fleet.wire.acl`, like the generated Mosquitto configuration does.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fleet.wire.acl import HUB_USERNAME, Rule, allowed, device_rules, hub_rules
from hub.errors import HubError

CredentialCheck = Callable[[str, str], bool]
_CHECKS: dict[str, CredentialCheck] = {}
log = logging.getLogger(__name__)


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _rules_for(username: str | None) -> tuple[Rule, ...]:
    if username == HUB_USERNAME:
        return hub_rules()
    if not username:
        return ()
    try:
        return device_rules(username)
    except ValueError:
        return ()


try:  # the plugins subclass amqtt's bases; amqtt is a hub dependency
    from amqtt.contexts import Action
    from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin

    class RegistryAuthPlugin(BaseAuthPlugin):
        """Accepts a connection only with valid credentials (the hub's, or a provisioned device's)."""

        @dataclass
        class Config:
            check_id: str = ""
            allow_anonymous: bool = False

        async def authenticate(self, *, session: Any) -> bool | None:
            check = _CHECKS.get(self.config.check_id)
            if self.config.allow_anonymous:
                return True
            if check is None or not session.username or session.password is None:
                return False
            password = session.password.decode() if isinstance(session.password, bytes) else session.password
            return await asyncio.get_running_loop().run_in_executor(None, check, session.username, password)

    class AclTopicPlugin(BaseTopicPlugin):
        """Confines each device to its own topics plus read-only broadcast and bundle topics."""

        @dataclass
        class Config:
            enforce: bool = True
            extra: dict[str, Any] = field(default_factory=dict)

        async def topic_filtering(
            self, *, session: Any = None, topic: str | None = None, action: Any = None
        ) -> bool | None:
            if not self.config.enforce:
                return True
            if topic is None or topic.startswith("$SYS"):
                return False
            username = session.username if session else None
            if action == Action.PUBLISH:
                return allowed(_rules_for(username), "write", topic)
            return allowed(_rules_for(username), "read", topic)

    _AMQTT_ERROR: str | None = None
except ImportError as exc:  # pragma: no cover - only without the hub extra
    _AMQTT_ERROR = str(exc)


class _SnapshotItems(dict[str, Any]):
    """amqtt 0.12's broadcast loop iterates the subscription map across awaits, so a client subscribing at that
    moment raised "dictionary changed size during iteration" and the message was lost; iterate a snapshot."""

    def items(self) -> Any:
        return list(super().items())


class EmbeddedBroker:
    """Runs amqtt in a background thread; ``start()`` returns once it accepts connections."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, check: CredentialCheck | None = None) -> None:
        if _AMQTT_ERROR:
            raise HubError(f"the embedded broker needs amqtt (pip install 'edgefleet[hub]'): {_AMQTT_ERROR}")
        self.host = host
        self.port = port or _free_port(host)
        self._check_id = uuid.uuid4().hex
        self._secured = check is not None
        if check is not None:
            _CHECKS[self._check_id] = check
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="embedded-broker", daemon=True)
        self._broker: Any = None

    @property
    def url(self) -> str:
        """``mqtt://host:port`` of the listener."""
        return f"mqtt://{self.host}:{self.port}"

    def start(self, timeout_s: float = 15.0) -> None:
        """Start listening."""
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        try:
            future.result(timeout_s)
        except Exception as exc:
            self.stop()
            raise HubError(f"embedded broker failed to start on {self.host}:{self.port}: {exc}") from exc

    async def _start(self) -> None:
        from amqtt.broker import Broker

        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}", "max_connections": 10_000}},
            "plugins": {
                "hub.devices.embedded_broker.RegistryAuthPlugin": {
                    "check_id": self._check_id,
                    "allow_anonymous": not self._secured,
                },
                "hub.devices.embedded_broker.AclTopicPlugin": {"enforce": self._secured},
            },
        }
        self._broker = Broker(config, loop=self._loop)
        self._broker._subscriptions = _SnapshotItems()
        await self._broker.start()

    def stop(self, timeout_s: float = 15.0) -> None:
        """Shut the broker down and join its thread."""
        if self._thread.is_alive():
            if self._broker is not None:
                try:
                    asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop).result(timeout_s)
                except Exception:  # shutting down anyway
                    log.exception("embedded broker shutdown failed")
            pending = asyncio.run_coroutine_threadsafe(_cancel_all(), self._loop)
            try:
                pending.result(timeout_s)
            except Exception:
                log.debug("cancelling broker tasks failed", exc_info=True)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout_s)
        if not self._loop.is_closed() and not self._loop.is_running():
            self._loop.run_until_complete(self._loop.shutdown_default_executor())
            self._loop.close()
        _CHECKS.pop(self._check_id, None)


async def _cancel_all() -> None:
    current = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
