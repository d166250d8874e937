"""The alert rules (monitoring/alerts.yml) pass promtool's checks and unit tests, and only use metrics the
hub exports (hub/metrics.py)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fleet.wire.messages import Histogram, ShadowStats, TelemetryBatch
from hub.bundles.tuf_repository import TufRepository
from hub.devices.pki import CertificateAuthority
from hub.monitoring.certificate_metrics import CertificateMetrics
from hub.monitoring.metrics import FleetMetrics
from hub.monitoring.signing_metrics import SigningMetrics

yaml = pytest.importorskip("yaml")  # PyYAML, installed with amqtt (hub extra)
MONITORING = Path(__file__).resolve().parents[2] / "monitoring"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not found: install the Debian/Ubuntu package 'prometheus' (apt-get install -y prometheus)",
)


@needs_promtool
def test_rules_pass_promtool_check() -> None:
    proc = subprocess.run(
        [str(PROMTOOL), "check", "rules", "alerts.yml"], cwd=MONITORING, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 7 rules found" in proc.stdout


@needs_promtool
def test_rules_pass_their_promtool_unit_tests() -> None:
    proc = subprocess.run(
        [str(PROMTOOL), "test", "rules", "alerts_test.yml"],
        cwd=MONITORING,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_alert_has_a_unit_test() -> None:
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    assert alerts == {
        "EdgeFleetHighP99Latency",
        "EdgeFleetHighErrorRate",
        "EdgeFleetLowConfidence",
        "EdgeFleetFeatureDrift",
        "EdgeFleetDevicesOffline",
        "EdgeFleetCertificateExpiring",
        "EdgeFleetTufMetadataExpiring",
    }
    tests = yaml.safe_load((MONITORING / "alerts_test.yml").read_text())
    tested = {case["alertname"] for t in tests["tests"] for case in t.get("alert_rule_test", []) if case["exp_alerts"]}
    assert tested == alerts


def test_rules_only_use_metrics_the_hub_exports(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    tuf = TufRepository(tmp_path / "tuf")
    registry.register(SigningMetrics(lambda: tuf))
    ca = CertificateAuthority.create(tmp_path / "pki")
    registry.register(CertificateMetrics({"device_ca": ca.cert_file}))
    metrics = FleetMetrics(registry)
    hist = Histogram(edges=[1.0], counts=[1, 0], total=0.5)
    metrics.observe_batch(
        TelemetryBatch(
            batch_id="batch-0001",
            device_id="d",
            target="t",
            model="m",
            version="v",
            window_start=0,
            window_end=1,
            requests=1,
            errors=0,
            latency_ms=hist,
            confidence=hist,
            predictions={"a": 1},
            shadow=ShadowStats(candidate_version="w", compared=1, agreed=1, latency_ms=hist),
        )
    )
    metrics.set_devices({"t": 1}, {"t": 1})
    metrics.set_rollout_state("r", "m", "v", "canary")
    metrics.drift_detected.labels("m", "v", "all", "x").set(0)
    exported = {s.name for f in text_string_to_metric_families(generate_latest(registry).decode()) for s in f.samples}
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    used = {name for g in rules["groups"] for r in g["rules"] for name in re.findall(r"edgefleet_\w+", r["expr"])}
    assert used and used <= exported, used - exported
