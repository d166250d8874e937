"""The embedded MQTT broker (amqtt) run on its own thread, with per-device credentials and topic ACLs.

Used when ``edgefleet hub serve`` gets no broker URL: one process, nothing else to install.
It speaks MQTT 3.1.1 and checks every connection against the registry's credentials and every publish
and subscription against `fleet.wire.acl`, like the generated Mosquitto configuration does. Three holes of
amqtt 0.12 are closed here:

- identity: a device must use its login as its client id (Mosquitto's ``use_username_as_clientid``), so no
  device can take over another's session with its own password; hub connections use ``edgefleet-`` ids;
- removal: a device is cut off by closing its socket, not only by cancelling amqtt's reader (see `_disconnect`);
- retained messages: amqtt replays, to every client that connects, the retained messages matching *any*
  client's subscriptions, without an ACL check; `_AclBroker` replays only for the client's own
  subscriptions and only topics its rules let it read.
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
from hub.devices.pki import ServerTls
from hub.errors import HubError

CredentialCheck = Callable[[str, str, str], bool]  # (username, password, client address)
_CHECKS: dict[str, CredentialCheck] = {}
log = logging.getLogger(__name__)
_AUTHENTICATED = "edgefleet.authenticated"  # session attribute: credentials checked once, before any session change


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
            require_client_cert: bool = False

        async def authenticate(self, *, session: Any) -> bool | None:
            check = _CHECKS.get(self.config.check_id)
            if self.config.allow_anonymous or session.attributes.get(_AUTHENTICATED):
                return True
            if check is None or not session.username or session.password is None:
                return False
            if not _client_id_matches(session.username, session.client_id):
                log.warning("refused %s: client id %r is not its login", session.username, session.client_id)
                return False
            problem = _certificate_problem(session, require=self.config.require_client_cert)
            if problem:
                log.warning("refused %s: %s", session.username, problem)
                return False
            password = session.password.decode() if isinstance(session.password, bytes) else session.password
            address = str(session.remote_address or "unknown")
            return await asyncio.get_running_loop().run_in_executor(None, check, session.username, password, address)

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

    from amqtt.broker import Broker as _AmqttBroker
    from amqtt.errors import AMQTTError, MQTTError
    from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler

    class _AclBroker(_AmqttBroker):
        """amqtt's broker that authenticates before touching any session, and replays retained messages only
        where the client may read them."""

        async def _initialize_client_session(
            self, reader: Any, writer: Any, remote_address: str, remote_port: int
        ) -> tuple[Any, Any]:
            # amqtt drops (clean session) or takes over the session of the CONNECT's client id before it
            # authenticates, so any client naming a victim's id disconnected the victim; authenticate first.
            try:
                handler, session = await BrokerProtocolHandler.init_from_connect(reader, writer, self.plugins_manager)
            except (AMQTTError, MQTTError) as exc:
                await writer.close()
                raise AMQTTError(f"bad CONNECT from {remote_address}:{remote_port}: {exc}") from exc
            if not await self._authenticate(session, self.listeners_config["default"]):
                handler.attach(session, reader, writer)
                await handler.mqtt_connack_authorize(False)
                await writer.close()
                raise AMQTTError(f"refused {session.username!r} (client id {session.client_id!r})")
            session.attributes[_AUTHENTICATED] = True
            return handler, await self._resume_or_replace(session)

        async def _resume_or_replace(self, session: Any) -> Any:
            """The session to continue: a fresh one (clean session), or the stored one of this client id."""
            if session.clean_session:
                await self._delete_session(session.client_id)
                session.parent = 0
            elif session.client_id in self._sessions:
                stored, _ = self._sessions[session.client_id]
                for name in ("will_flag", "will_message", "will_topic", "will_qos", "keep_alive", "username"):
                    setattr(stored, name, getattr(session, name))
                stored.password, stored.attributes[_AUTHENTICATED] = session.password, True
                session = stored
                session.parent = 1
            else:
                session.parent = 0
            delay = self.config.get("timeout-disconnect-delay", 0)
            if session.keep_alive > 0 and isinstance(delay, int):
                session.keep_alive += delay
            return session

        async def _publish_retained_messages_for_subscription(
            self, subscription: tuple[str, int], session: Any
        ) -> None:
            topic_filter = subscription[0]
            subscribers = self._subscriptions.get(topic_filter, [])
            if not any(subscriber.client_id == session.client_id for subscriber, _ in subscribers):
                return  # another client's subscription: amqtt replays every filter to every new connection
            handler = self._get_handler(session)
            if handler is None:
                return
            for topic, retained in list(self._retained_messages.items()):
                if self._matches(topic, topic_filter) and allowed(_rules_for(session.username), "read", topic):
                    qos = min(subscription[1], retained.qos or subscription[1])
                    await handler.mqtt_publish(retained.topic, retained.data, qos, retain=True)

    _AMQTT_ERROR: str | None = None
except ImportError as exc:  # pragma: no cover - only without the hub extra
    _AMQTT_ERROR = str(exc)


def _client_id_matches(username: str | None, client_id: str | None) -> bool:
    """A device's client id is its login; the hub's connections are named ``edgefleet-<role>-<random>``."""
    if not username or not client_id:
        return False
    if username == HUB_USERNAME:
        return client_id.startswith("edgefleet-")
    return client_id == username


def _certificate_problem(session: Any, *, require: bool) -> str | None:
    """Why the TLS client certificate does not fit the login: a device's certificate must name it (common
    name = device id); with ``require`` every device must present one. The hub logs in with its password."""
    if session.username == HUB_USERNAME:
        return None
    peer = session.ssl_object.getpeercert() if session.ssl_object is not None else None
    if not peer:
        return "no client certificate" if require else None
    names = [value for rdn in peer.get("subject", ()) for key, value in rdn if key == "commonName"]
    if names != [session.username]:
        return f"the client certificate names {names} but the login is {session.username!r}"
    return None


class _SnapshotItems(dict[str, Any]):
    """amqtt 0.12's broadcast loop iterates the subscription map across awaits, so a client subscribing at that
    moment raised "dictionary changed size during iteration" and the message was lost; iterate a snapshot."""

    def items(self) -> Any:
        return list(super().items())


class EmbeddedBroker:
    """Runs amqtt in a background thread; ``start()`` returns once it accepts connections."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        check: CredentialCheck | None = None,
        tls: ServerTls | None = None,
    ) -> None:
        if _AMQTT_ERROR:
            raise HubError(f"the embedded broker needs amqtt (pip install 'edgefleet[hub]'): {_AMQTT_ERROR}")
        self.host = host
        self.port = port or _free_port(host)
        self._check_id = uuid.uuid4().hex
        self._secured = check is not None
        self.tls = tls
        if check is not None:
            _CHECKS[self._check_id] = check
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="embedded-broker", daemon=True)
        self._broker: Any = None

    @property
    def local_host(self) -> str:
        """The address this host reaches the listener at: loopback when it listens on every interface (a
        certificate names loopback, never the wildcard)."""
        return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)

    @property
    def url(self) -> str:
        """``mqtt://host:port`` (``mqtts://`` with TLS) of the listener."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    def start(self, timeout_s: float = 15.0) -> None:
        """Start listening."""
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        try:
            future.result(timeout_s)
        except Exception as exc:
            self._broker = None  # it never started: nothing to shut down
            self.stop()
            raise HubError(f"embedded broker failed to start on {self.host}:{self.port}: {exc}") from exc

    async def _start(self) -> None:
        listener: dict[str, Any] = {"type": "tcp", "bind": f"{self.host}:{self.port}", "max_connections": 10_000}
        if self.tls is not None:
            listener |= {"ssl": True, "certfile": self.tls.cert_file, "keyfile": self.tls.key_file}
            if self.tls.client_ca_file:
                listener["cafile"] = self.tls.client_ca_file  # client certificates are verified against it
        config = {
            "listeners": {"default": listener},
            "plugins": {
                "hub.devices.embedded_broker.RegistryAuthPlugin": {
                    "check_id": self._check_id,
                    "allow_anonymous": not self._secured,
                    "require_client_cert": bool(self.tls and self.tls.require_client_cert),
                },
                "hub.devices.embedded_broker.AclTopicPlugin": {"enforce": self._secured},
            },
        }
        self._broker = _AclBroker(config, loop=self._loop) if self._secured else _AmqttBroker(config, loop=self._loop)
        self._broker._subscriptions = _SnapshotItems()
        await self._broker.start()

    def disconnect(self, client_id: str, timeout_s: float = 15.0) -> bool:
        """Close ``client_id``'s connection and drop its session (a removed device); False when it has none."""
        if self._broker is None:
            return False
        future = asyncio.run_coroutine_threadsafe(self._disconnect(client_id), self._loop)
        return future.result(timeout_s)

    async def _disconnect(self, client_id: str) -> bool:
        session, handler = self._broker._sessions.get(client_id, (None, None))
        if session is None:
            return False
        if handler is not None:
            # Cut the socket before stopping the handler: stop() only cancels the reader, and on Python 3.11
            # asyncio.wait_for drops a cancellation that arrives with a packet (the device's PUBACK of its cleared
            # order), so the reader would go on serving a removed device while stop() waited for it forever.
            writer = getattr(handler.writer, "_writer", None)  # amqtt's StreamWriterAdapter keeps the stream
            if isinstance(writer, asyncio.StreamWriter):
                writer.transport.abort()
            await handler.stop()
        await self._broker._delete_session(client_id)
        return True

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
