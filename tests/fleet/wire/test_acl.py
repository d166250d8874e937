"""Access rules: a device reaches only its own subtree and the read-only broadcasts."""

from __future__ import annotations

from fleet.wire.acl import allowed, device_rules, hub_rules


def test_device_rules_confine_a_device() -> None:
    rules = device_rules("cam-1")
    assert allowed(rules, "write", "edgefleet/v1/devices/cam-1/telemetry")
    assert allowed(rules, "write", "edgefleet/v1/devices/cam-1/capture")
    assert not allowed(rules, "write", "edgefleet/v1/devices/cam-2/capture")
    assert not allowed(rules, "read", "edgefleet/v1/devices/cam-2/capture")
    assert allowed(rules, "read", "edgefleet/v1/devices/cam-1/deployment")
    assert allowed(rules, "read", "edgefleet/v1/devices/cam-1/refused")
    assert not allowed(rules, "write", "edgefleet/v1/devices/cam-1/refused")
    assert not allowed(rules, "read", "edgefleet/v1/devices/cam-2/refused")
    assert allowed(rules, "read", "edgefleet/v1/bundles/" + "a" * 64)
    assert allowed(rules, "read", "edgefleet/v1/bundles/#")
    assert not allowed(rules, "write", "edgefleet/v1/devices/cam-1/deployment")
    assert not allowed(rules, "read", "edgefleet/v1/devices/cam-2/deployment")
    assert not allowed(rules, "write", "edgefleet/v1/devices/cam-2/telemetry")
    assert not allowed(rules, "read", "edgefleet/v1/devices/+/deployment")
    assert not allowed(rules, "read", "#")
    assert not allowed(rules, "write", "edgefleet/v1/bundles/x")


def test_hub_reaches_the_whole_tree_only() -> None:
    assert allowed(hub_rules(), "read", "edgefleet/v1/devices/+/state")
    assert allowed(hub_rules(), "write", "edgefleet/v1/devices/cam-1/deployment")
    assert not allowed(hub_rules(), "read", "$SYS/broker/clients")
