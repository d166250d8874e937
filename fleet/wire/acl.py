"""Who may touch which topic: the one source of the broker access rules for devices and the hub.

`device_rules` feeds both the generated Mosquitto ACL file and the embedded broker's topic check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fleet.wire.topics import ROOT, validate_device_id
from fleet.wire.transport import topic_matches

Access = Literal["read", "write"]
HUB_USERNAME = "edgefleet-hub"


@dataclass(frozen=True, slots=True)
class Rule:
    """Access to one topic pattern."""

    access: Access
    pattern: str


def device_rules(device_id: str) -> tuple[Rule, ...]:
    """The topics one device may write (its own reports) and read (its orders and the broadcasts)."""
    own = f"{ROOT}/devices/{validate_device_id(device_id)}"
    return (
        *(
            Rule("write", f"{own}/{channel}")
            for channel in ("state", "heartbeat", "events", "telemetry", "fetch", "capture", "certificate-request")
        ),
        Rule("read", f"{own}/deployment"),
        Rule("read", f"{own}/meta"),
        Rule("read", f"{own}/refused"),
        Rule("read", f"{own}/telemetry-ack"),
        Rule("read", f"{own}/certificate"),
        Rule("read", f"{ROOT}/bundles/#"),
        Rule("read", f"{ROOT}/broadcast/#"),
    )


def hub_rules() -> tuple[Rule, ...]:
    """The hub reads and writes the whole protocol tree."""
    return (Rule("read", f"{ROOT}/#"), Rule("write", f"{ROOT}/#"))


def allowed(rules: tuple[Rule, ...], access: Access, topic: str) -> bool:
    """Whether ``rules`` grant ``access`` to ``topic`` (a topic filter, for subscriptions)."""
    return any(rule.access == access and _covers(rule.pattern, topic) for rule in rules)


def _covers(pattern: str, topic: str) -> bool:
    # A subscription filter is allowed only if every topic it can match is covered by the pattern.
    if "#" in topic or "+" in topic:
        return pattern == topic or (pattern.endswith("/#") and topic.startswith(pattern[:-1]))
    return topic_matches(pattern, topic)
