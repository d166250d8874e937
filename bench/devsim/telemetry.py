"""Telemetry batches as the agent sends them, built once and stamped per device and window.

Encoding a `TelemetryBatch` with pydantic for each of 10,000 devices costs more CPU than the hub's ingest of it;
`BatchTemplate` encodes one real batch (histograms and KLL feature sketches from random values) and replaces
only the fields that differ per send (batch id, device id, window), so every payload is still a valid batch.
"""

from __future__ import annotations

import time
import uuid

from fleet.wire.messages import TelemetryBatch, encode

_PLACEHOLDER_ID = "b-00000000000000000000000000000000"
_PLACEHOLDER_DEVICE = "devsim-placeholder-device"


class BatchTemplate:
    """One encoded telemetry batch with ``features`` KLL sketches over ``values`` rows, re-stamped per send."""

    def __init__(self, target: str, model: str, version: str, *, features: int = 8, values: int = 200) -> None:
        import numpy as np

        from fleet.wire.sketches import CONFIDENCE_BUCKETS, LATENCY_BUCKETS_MS, FeatureSketcher, HistogramAccumulator

        rng = np.random.default_rng(0)
        latency, confidence = HistogramAccumulator(LATENCY_BUCKETS_MS), HistogramAccumulator(CONFIDENCE_BUCKETS)
        latency.observe_many(rng.lognormal(np.log(30), 0.3, values))
        confidence.observe_many(np.clip(rng.normal(0.9, 0.05, values), 0, 1))
        sketcher = FeatureSketcher()
        for feature in range(features):
            sketcher.update_column(f"f{feature}", rng.normal(0, 1, values))
        batch = TelemetryBatch(
            batch_id=_PLACEHOLDER_ID,
            device_id=_PLACEHOLDER_DEVICE,
            target=target,
            model=model,
            version=version,
            window_start=1.0,
            window_end=2.0,
            requests=values,
            errors=0,
            latency_ms=latency.to_histogram(),
            confidence=confidence.to_histogram(),
            predictions={"0": values // 2, "1": values - values // 2},
            feature_sketches=sketcher.to_wire(),
        )
        text = encode(batch).decode()
        head, tail = text.split('"window_start":1.0,"window_end":2.0', 1)
        self._head = head.replace(_PLACEHOLDER_ID, "{batch_id}").replace(_PLACEHOLDER_DEVICE, "{device_id}")
        self._tail = tail
        if "{batch_id}" not in self._head or "{device_id}" not in self._head:
            raise ValueError("telemetry template: unexpected field order in the encoded batch")
        self.features = features

    def render(self, device_id: str, window_s: float, now: float | None = None) -> tuple[str, bytes]:
        """A new batch (its id, its payload) from ``device_id`` for the window ending ``now``."""
        end = time.time() if now is None else now
        batch_id = f"b-{uuid.uuid4().hex}"
        head = self._head.replace("{batch_id}", batch_id).replace("{device_id}", device_id)
        window = f'"window_start":{end - window_s!r},"window_end":{end!r}'
        return batch_id, (head + window + self._tail).encode()
