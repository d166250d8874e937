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

Passwords may be given in clear or as bcrypt hashes (``nats server passwd``), which NATS compares itself.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from fleet.wire.acl import Rule

__all__ = ["mqtt_subject", "nats_user", "render_authorization"]

#: where NATS delivers a QoS 1 subscription's messages (its JetStream consumer's delivery subjects)
_QOS1_DELIVERY = "$MQTT.sub.>"


def mqtt_subject(topic_filter: str) -> str:
    """The NATS subject (with NATS wildcards) that an MQTT topic filter maps to."""
    return ".".join({"+": "*", "#": ">"}.get(level, level) for level in topic_filter.split("/"))


def _subjects(pattern: str) -> set[str]:
    """The subjects an MQTT pattern covers: ``a/#`` also matches ``a`` itself, and NATS subscribes to both."""
    subject = mqtt_subject(pattern)
    return {subject, subject[: -len(".>")]} if subject.endswith(".>") else {subject}


def nats_user(username: str, password: str, rules: Iterable[Rule]) -> dict[str, Any]:
    """One entry of the ``users`` list: publish what ``rules`` let it write, subscribe to what they let it read."""
    rules = list(rules)
    publish = sorted(set().union(*(_subjects(r.pattern) for r in rules if r.access == "write")))
    subscribe = sorted(set().union(*(_subjects(r.pattern) for r in rules if r.access == "read"), {_QOS1_DELIVERY}))
    return {
        "user": username,
        "password": password,
        "permissions": {"publish": {"allow": publish}, "subscribe": {"allow": subscribe}},
    }


def render_authorization(users: Iterable[dict[str, Any]]) -> str:
    """A NATS ``authorization`` block for ``users`` (NATS's configuration format accepts JSON values)."""
    return "authorization {\n  users = " + json.dumps(list(users), indent=2).replace("\n", "\n  ") + "\n}\n"
