"""The policy evaluator: every interval, judge each stored policy's cohorts and act on sustained breaches.

Each evaluation reads the telemetry of the policy's last ``lookback_s`` through the monitoring queries the drift
and contract violation reports use (`hub.monitoring.queries`): from the window aggregates, so it costs about
(devices + targets) x windows in the lookback, not every batch, and keeps working once raw batches are pruned.
The lookback takes whole aggregate windows (`telemetry_rollup_window_s`): those with a batch that ended in it.

A cohort's breach starts a timer; when the breach has held at every evaluation for the policy's ``window_s``
the hub acts once: an ``alert`` event (and the ``edgefleet_policy_actions_total`` metric), ``pause`` of the
model's open rollouts through the rollout command queue, and with ``rollback`` a downgrade deployment of the
cohort's devices to the last good version. A cohort that stops breaching re-arms. Every action is stored as
an event with the evidence it acted on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import semver
from prometheus_client import CollectorRegistry, Counter, Gauge

from fleet.drift.cohorts import CohortNamer
from fleet.drift.report import CohortDrift, DriftReport
from hub.errors import ConflictError, HubError, NotFoundError
from hub.monitoring.device_counts import DeviceCounts
from hub.monitoring.queries import MonitoringSource, device_counts_for, drift_report_for
from hub.monitoring.violations import ViolationReport, violation_report
from hub.policies.config import Policy
from hub.registry import Registry
from hub.registry.policies import PolicyStore
from hub.registry.rollouts import RolloutStore
from hub.rollouts.operations import request_command

__all__ = ["PolicyEvaluator", "last_good_version"]
log = logging.getLogger(__name__)
Deploy = Callable[[str, str, list[str]], str]
"""``deploy(model, version, device_ids)`` -> deployment id, allowing a downgrade."""


@dataclass
class _Pass:
    """What one evaluation of a policy already did, so overlapping cohorts (``all`` and ``target=...``)
    pause once and send each device back once."""

    paused: bool = False
    rolled_back: set[str] = field(default_factory=set)


@dataclass
class _Cohort:
    devices: set[str] = field(default_factory=set)
    requests: int = 0


class PolicyEvaluator:
    """Evaluates policies on stored telemetry; `start` runs `evaluate` every ``interval_s`` on a thread."""

    def __init__(
        self,
        store: PolicyStore,
        registry: Registry,
        rollouts: RolloutStore,
        source: Callable[[], MonitoringSource],
        deploy: Deploy,
        prometheus: CollectorRegistry,
        *,
        interval_s: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.registry = registry
        self.rollouts = rollouts
        self._source = source
        self._deploy = deploy
        self.interval_s = interval_s
        self.clock = clock
        self._breached_since: dict[tuple[str, str, str], float] = {}
        self._acted: set[tuple[str, str, str]] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.actions = Counter(
            "edgefleet_policy_actions",
            "Actions taken by drift policies (alert, pause, rollback, failed).",
            ["model", "action"],
            registry=prometheus,
        )
        self.breached = Gauge(
            "edgefleet_policy_breached_cohorts",
            "Cohorts of a model version passing a policy threshold at the last evaluation.",
            ["model", "version"],
            registry=prometheus,
        )

    def start(self) -> None:
        """Evaluate every ``interval_s`` until `stop` (a second start while running does nothing)."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="hub-policies", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        """Whether the evaluation thread runs (on the leading replica only)."""
        return self._thread is not None

    def stop(self) -> None:
        """Stop the evaluation thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.evaluate()
            except Exception:  # one bad evaluation must not end the evaluator
                log.exception("policy evaluation failed")

    def evaluate(self) -> int:
        """Judge every policy once; return how many cohorts were acted on."""
        acted = 0
        for row in self.store.all():
            acted += self._evaluate_one(row.model, row.version, Policy.model_validate(row.policy))
        return acted

    def _evaluate_one(self, model: str, version: str, policy: Policy) -> int:
        now = self.clock()
        since = now - policy.lookback_s
        source = self._source()
        counts = device_counts_for(source, model, version, since=since, until=now)
        labels = source.device_labels()
        cohorts = _cohorts(counts, policy, labels)
        drift = self._drift(source, model, version, policy, since, now)
        violations = violation_report(
            counts, model=model, version=version, by=policy.by, selectors=policy.cohorts, device_labels=labels
        )
        acted = breaching = 0
        done = _Pass()
        for name, cohort in cohorts.items():
            key = (model, version, name)
            breaches = _breaches(policy, name, drift, violations) if cohort.requests >= policy.min_requests else []
            if not breaches:
                self._breached_since.pop(key, None)
                self._acted.discard(key)
                continue
            breaching += 1
            since = self._breached_since.setdefault(key, now)
            if now - since < policy.window_s or key in self._acted:
                continue
            self._acted.add(key)
            evidence = {
                "breaches": breaches,
                "breached_since": since,
                "window_s": policy.window_s,
                "devices": sorted(cohort.devices),
                "requests": cohort.requests,
                "policy": policy.model_dump(mode="json"),
            }
            self._act(model, version, name, policy, evidence, now, done)
            acted += 1
        self.breached.labels(model, version).set(breaching)
        return acted

    def _drift(
        self, source: MonitoringSource, model: str, version: str, policy: Policy, since: float, until: float
    ) -> DriftReport | None:
        if policy.max_drift_share is None and policy.feature is None:
            return None
        try:
            return drift_report_for(
                source, model, version, by=policy.by, selectors=policy.cohorts, since=since, until=until
            )
        except NotFoundError:  # no reference: nothing to judge drift against
            return None

    def _act(
        self, model: str, version: str, cohort: str, policy: Policy, evidence: dict[str, Any], now: float, done: _Pass
    ) -> None:
        summary = "; ".join(b["detail"] for b in evidence["breaches"])
        self._event(
            model,
            version,
            cohort,
            "alert",
            f"cohort {cohort} breached for {policy.window_s:g}s: {summary}",
            evidence,
            now,
        )
        if policy.pause_rollouts and not done.paused:
            done.paused = True
            paused = self._pause(model)
            if paused:
                self._event(
                    model,
                    version,
                    cohort,
                    "pause",
                    f"paused rollouts {', '.join(paused)}",
                    {**evidence, "rollouts": paused},
                    now,
                )
        devices = [d for d in evidence["devices"] if d not in done.rolled_back]
        if policy.rollback and devices:
            done.rolled_back.update(devices)
            self._rollback(model, version, cohort, policy, {**evidence, "devices": devices}, now)

    def _pause(self, model: str) -> list[str]:
        paused = []
        queued = {c.rollout_id for c in self.rollouts.pending_commands() if c.command == "pause"}
        for row in self.rollouts.all():
            if row.model != model or row.final or row.id in queued:
                continue
            try:
                request_command(self.rollouts, row.id, "pause")
            except ConflictError:
                continue  # already paused, or in a state that cannot pause
            paused.append(row.id)
        return paused

    def _rollback(
        self, model: str, version: str, cohort: str, policy: Policy, evidence: dict[str, Any], now: float
    ) -> None:
        devices = evidence["devices"]
        target = policy.rollback_to or last_good_version(self.registry, model, version)
        if target is None:
            self._event(
                model,
                version,
                cohort,
                "rollback_failed",
                f"no version of {model} below {version} to roll back to",
                evidence,
                now,
            )
            return
        try:
            deployment_id = self._deploy(model, target, devices)
        except (HubError, RuntimeError) as exc:
            self._event(model, version, cohort, "rollback_failed", f"rollback to {target} failed: {exc}", evidence, now)
            return
        detail = f"rolled {len(devices)} devices of {cohort} back to {model}:{target}"
        self._event(
            model,
            version,
            cohort,
            "rollback",
            detail,
            {**evidence, "to_version": target, "deployment_id": deployment_id},
            now,
        )

    def _event(
        self, model: str, version: str, cohort: str, action: str, detail: str, evidence: dict[str, Any], now: float
    ) -> None:
        log.warning("policy %s:%s %s: %s", model, version, action, detail)
        self.actions.labels(model, action).inc()
        self.store.record(model, version, cohort, action, detail, evidence, now=now)


def _cohorts(counts: list[DeviceCounts], policy: Policy, labels: dict[str, dict[str, str]]) -> dict[str, _Cohort]:
    namer = CohortNamer(by=policy.by, selectors=policy.cohorts, device_labels=labels)
    out: dict[str, _Cohort] = {}
    for device in counts:
        for name in namer.names(device):
            cohort = out.setdefault(name, _Cohort())
            cohort.devices.add(device.device_id)
            cohort.requests += device.requests
    return out


def _breaches(
    policy: Policy, cohort: str, drift: DriftReport | None, violations: ViolationReport
) -> list[dict[str, Any]]:
    """What in ``cohort`` passes the policy's thresholds, each with its value and threshold."""
    drifted = next((c for c in drift.cohorts if c.cohort == cohort), None) if drift is not None else None
    found = [] if drifted is None else [*_share_breach(policy, drifted), *_feature_breach(policy, drifted)]
    checked = violations.cohort(cohort)
    limit = policy.max_violation_rate
    if checked is not None and limit is not None and checked.rate > 0 and checked.rate >= limit:
        worst = max(checked.rates, key=lambda rule: checked.rates[rule])
        found.append(
            {
                "signal": "contract_violations",
                "value": checked.rate,
                "threshold": limit,
                "rates": checked.rates,
                "rows": checked.rows,
                "detail": f"{worst} broken by {checked.rate:.1%} of {checked.rows} rows",
            }
        )
    return found


def _share_breach(policy: Policy, drifted: CohortDrift) -> list[dict[str, Any]]:
    limit, share = policy.max_drift_share, drifted.drift_share
    if limit is None or share is None or share < limit:
        return []
    detail = f"{drifted.drifted_features}/{drifted.tested_features} features drifted"
    return [{"signal": "drift_share", "value": share, "threshold": limit, "detail": detail}]


def _feature_breach(policy: Policy, drifted: CohortDrift) -> list[dict[str, Any]]:
    result = next((f for f in drifted.features if f.feature == policy.feature), None)
    if result is None or result.statistic is None:
        return []
    limit = policy.max_feature_statistic
    if not (result.statistic > limit if limit is not None else result.drifted):
        return []
    detail = f"feature {result.feature} {result.test} {result.statistic:.3g}"
    return [
        {
            "signal": "feature",
            "feature": result.feature,
            "test": result.test,
            "value": result.statistic,
            "threshold": limit if limit is not None else result.threshold,
            "detail": detail,
        }
    ]


def last_good_version(registry: Registry, model: str, version: str) -> str | None:
    """The newest version of ``model`` below ``version`` that has published variants."""
    current = semver.Version.parse(version)
    for row in registry.list_versions(model):
        if semver.Version.parse(row.version) < current and registry.list_variants(model, row.version):
            return row.version
    return None
