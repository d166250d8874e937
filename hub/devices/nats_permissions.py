"""NATS authorization for the device protocol: `fleet.wire.acl`'s rules as NATS subject permissions.

NATS's MQTT maps a topic to a subject (``/`` -> ``.``, ``+`` -> ``*``, ``#`` -> ``>``) and applies the user's
subject permissions to it, so the rules that render Mosquitto's ACL file (`hub.devices.broker_acl`) render a
NATS ``authorization`` block too. One addition: a QoS 1 subscription is a JetStream consumer whose deliveries
arrive on ``$MQTT.sub.<id>``, so every MQTT user needs to subscribe there; an MQTT client cannot name that
subject itself (``#`` stops at ``$`` subjects, and a wildcard over another device's topics is refused), which
`tests/integration/test_nats_permissions.py` checks on a real server::

    users = [nats_user("edgefleet-hub", hub_password, hub_rules()),
             *(nats_user(d, password, device_rules(d)) for d, password in devices)]
    Path("auth.conf").write_text(render_authorization(users))  # `include auth.conf` in every node's config

Passwords may be given in clear or as bcrypt hashes (``nats server passwd``), which NATS compares itself; a user
mapped from a TLS certificate (``verify_and_map``) has none. ``connection_types`` limits where a user may log in
(``MQTT``, ``STANDARD`` for NATS clients); `hub.devices.nats_auth` builds the fleet's users from the inventory.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from fleet.wire.acl import Rule
from hub.devices.nats_queue import mqtt_filter_to_subject

__all__ = ["nats_user", "render_authorization"]

#: where NATS delivers a QoS 1 subscription's messages (its JetStream consumer's delivery subjects)
_QOS1_DELIVERY = "$MQTT.sub.>"


def _subjects(pattern: str) -> set[str]:
    """The subjects an MQTT pattern covers: ``a/#`` also matches ``a`` itself, and NATS subscribes to both."""
    subject = mqtt_filter_to_subject(pattern)  # the mapping NATS's MQTT gateway uses
    return {subject, subject[: -len(".>")]} if subject.endswith(".>") else {subject}


def nats_user(
    username: str, password: str | None, rules: Iterable[Rule], *, connection_types: Sequence[str] = ()
) -> dict[str, Any]:
    """One entry of the ``users`` list: publish what ``rules`` let it write, subscribe to what they let it read.

    ``password`` None: a user only a TLS certificate maps to; ``connection_types``: NATS's
    ``allowed_connection_types`` (any kind when empty)."""
    rules = list(rules)
    publish = sorted(set().union(*(_subjects(r.pattern) for r in rules if r.access == "write")))
    subscribe = sorted(set().union(*(_subjects(r.pattern) for r in rules if r.access == "read"), {_QOS1_DELIVERY}))
    user: dict[str, Any] = {"user": username}
    if password is not None:
        user["password"] = password
    if connection_types:
        user["allowed_connection_types"] = list(connection_types)
    user["permissions"] = {"publish": {"allow": publish}, "subscribe": {"allow": subscribe}}
    return user


def render_authorization(users: Iterable[dict[str, Any]]) -> str:
    """A NATS ``authorization`` block for ``users``, one user per line (NATS's configuration format accepts JSON
    values; 10,000 devices make about 8.5 MB, which nats-server 2.9 parses in 0.6 s)."""
    lines = ",\n".join(f"    {json.dumps(user)}" for user in users)
    return f"authorization {{\n  users = [\n{lines}\n  ]\n}}\n"
