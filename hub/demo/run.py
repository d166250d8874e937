"""``edgefleet demo``: a model trained on the spot reaches a simulated fleet, answers requests, reports back."""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from hub.app import Hub
from hub.config import HubSettings
from hub.demo.model import digits_manifest, digits_reference, train_digits
from hub.demo.simulator import SimulatedFleet
from hub.devices.pki import CertificateAuthority

DEMO_TARGET = "x86-onnx-cpu"
_OURS = ("mqtt-dispatch", "embedded-broker", "telemetry-writer", "agent-http", "paho")


def run_demo(
    devices: int = 5,
    *,
    requests_per_device: int = 50,
    data_dir: Path | None = None,
    broker_url: str | None = None,
    log: Any = None,
) -> dict[str, Any]:
    """Run the whole loop and return the summary (``ok`` is False if any device failed)."""
    say = log or (lambda _msg: None)
    started = time.monotonic()
    threads_before = {t.ident for t in threading.enumerate()}
    with tempfile.TemporaryDirectory(prefix="edgefleet-demo-") as tmp:
        root = data_dir or Path(tmp)
        say("training a digits classifier (scikit-learn's digits, PyTorch MLP)...")
        trained = train_digits(root / "model")
        say(f"trained: held-out accuracy {trained.accuracy:.3f}; exported {trained.onnx_path.name}")
        ca, settings = _secured_settings(root, broker_url)
        hub = Hub(settings)
        hub.start()
        broker_port = hub.broker_address.port if broker_url is None else None
        fleet = SimulatedFleet(hub, root / "fleet", ca)
        try:
            say(
                f"hub up: broker {hub.broker_address.url}"
                f"{' (TLS, a client certificate per device)' if ca else ''}, "
                f"registry {hub.db.engine.url.render_as_string()}"
            )
            manifest = digits_manifest(trained, "1.0.0", target=DEMO_TARGET)
            published = hub.publish(
                manifest,
                trained.onnx_path,
                trained.golden_x,
                trained.golden_logits,
                reference=digits_reference(trained),
                metrics={"accuracy": trained.accuracy},
            )
            say(
                f"published digits:1.0.0 for {DEMO_TARGET}: bundle {published.bundle_sha256[:12]}, "
                f"signed as {published.tuf_target}"
            )
            fleet.provision(devices, DEMO_TARGET)
            fleet.start()
            say(f"{devices} agents running")
            deployment = hub.deploy("digits", "1.0.0", [d.device_id for d in fleet.devices])
            outcome = hub.wait_deployment(deployment.id, timeout_s=120)
            say(f"deployment {deployment.id}: " + ", ".join(f"{k}={v}" for k, v in sorted(outcome.items())))
            per_device = _drive_traffic(fleet, trained, requests_per_device)
            fleet.stop()  # agents flush telemetry and mark themselves offline on the way out
            expected_batches = sum(1 for d in per_device.values() if d["ok"] > 0)
            telemetry = _wait_telemetry(hub, expected_batches, timeout_s=30)
            devices_rows = hub.registry.list_devices()
            summary = {
                "devices_total": devices,
                "devices_on_version": sum(1 for d in devices_rows if d.active_version == "1.0.0"),
                "inferences_ok": sum(d["ok"] for d in per_device.values()),
                "inferences_failed": sum(d["failed"] for d in per_device.values()),
                "device_accuracy": _ratio(
                    sum(d["correct"] for d in per_device.values()), sum(d["ok"] for d in per_device.values())
                ),
                "telemetry_batches_received": telemetry,
                "bundle_sha256": published.bundle_sha256,
                "bundle_bytes": hub.store.size(published.bundle_sha256),
                "hub_egress_bytes": hub.transfer.egress_bytes if hub.transfer else 0,
                "model": "digits",
                "version": "1.0.0",
                "target": DEMO_TARGET,
                "source_accuracy": trained.accuracy,
                "deployment": {"id": deployment.id, "devices": outcome},
                "devices": per_device,
            }
        finally:
            fleet.stop()
            hub.stop()
    leftover = [
        t.name
        for t in threading.enumerate()
        if t.ident not in threads_before and t.is_alive() and (not t.daemon or t.name.startswith(_OURS))
    ]
    summary["leftover_threads"] = leftover
    summary["broker_port_released"] = _port_closed(broker_port) if broker_port else True
    summary["duration_s"] = round(time.monotonic() - started, 2)
    summary["ok"] = (
        summary["devices_on_version"] == devices
        and summary["inferences_failed"] == 0
        and summary["telemetry_batches_received"] >= devices
        and not leftover
        and summary["broker_port_released"]
    )
    return summary


def _drive_traffic(fleet: SimulatedFleet, trained: Any, requests: int) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    with httpx.Client(timeout=10.0) as client:
        for offset, device in enumerate(fleet.devices):
            ok = failed = correct = 0
            versions: set[str] = set()
            for i in range(requests):
                index = (offset * requests + i) % len(trained.test_x)
                response = client.post(f"{device.api_url}/v1/predict", json={"inputs": trained.test_x[index].tolist()})
                if response.status_code != 200:
                    failed += 1
                    continue
                body = response.json()
                ok += 1
                versions.add(body["version"])
                correct += int(body["predictions"][0]["label"] == str(trained.test_y[index]))
            results[device.device_id] = {"ok": ok, "failed": failed, "correct": correct, "versions": sorted(versions)}
    return results


def _wait_telemetry(hub: Hub, at_least: int, timeout_s: float) -> int:
    if hub.ingestor is not None:
        hub.ingestor.wait_stored(at_least, timeout_s)
    return hub.registry.telemetry_count()


def _port_closed(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _ratio(numerator: int, denominator: int) -> float:
    return round(numerator / denominator, 4) if denominator else 0.0


def _secured_settings(root: Path, broker_url: str | None) -> tuple[CertificateAuthority | None, HubSettings]:
    """On the embedded broker the demo runs as a real fleet would: its own CA, the broker serving TLS, and every
    device presenting a certificate that names it. An external broker is used as given."""
    if broker_url is not None:
        return None, HubSettings(data_dir=root / "hub", broker_url=broker_url)
    ca = CertificateAuthority.create(root / "pki")
    server = ca.issue_server(root / "pki" / "broker", ["127.0.0.1", "localhost"])
    settings = HubSettings(
        data_dir=root / "hub",
        embedded_tls_cert=server.cert_file,
        embedded_tls_key=server.key_file,
        embedded_client_ca=ca.cert_file,
        require_client_cert=True,
        broker_ca_file=ca.cert_file,
    )
    return ca, settings
