"""Input capture on the device: sampling rate, hourly cap (clock moved with time-machine), bounded disk,
messages within the wire limit."""

from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np
import time_machine

from agent.capture import InputCapture
from fleet.wire.messages import MAX_JSON_BYTES, CaptureBatch, decode


def _capture(tmp_path: Path, **options: object) -> InputCapture:
    settings: dict[str, object] = {"rate": 1.0, "max_per_hour": 1000, "max_bytes": 10 * 1024 * 1024}
    settings.update(options)
    return InputCapture(tmp_path / "capture", "cam-1", "x86-onnx-cpu", rng=random.Random(0), **settings)  # type: ignore[arg-type]


def _offer(capture: InputCapture, rows: int, width: int = 4) -> int:
    x = np.arange(rows * width, dtype=np.float32).reshape(rows, width)
    return capture.offer("digits", "1.0.0", x, [str(i % 10) for i in range(rows)], [0.9] * rows)


def test_rate_samples_a_share_and_spooled_messages_carry_rows_and_answers(tmp_path: Path) -> None:
    assert _offer(_capture(tmp_path / "none", rate=0.0), 500) == 0
    sampled = _capture(tmp_path / "some", rate=0.2)
    kept = _offer(sampled, 2000)
    assert 300 < kept < 500
    capture = _capture(tmp_path / "all")
    assert _offer(capture, 3) == 3
    assert capture.spool() == 1
    batch = decode(CaptureBatch, capture.pending()[0].read_bytes())
    assert batch.shape == [4] and [s.input for s in batch.samples][1] == [4.0, 5.0, 6.0, 7.0]
    assert [s.label for s in batch.samples] == ["0", "1", "2"]
    sent: list[tuple[str, bytes]] = []
    assert capture.send(lambda topic, payload: sent.append((topic, payload)) is None) == 1
    assert sent[0][0] == "edgefleet/v1/devices/cam-1/capture" and capture.pending() == []


def test_hourly_cap_resets_when_the_clock_hour_changes(tmp_path: Path) -> None:
    with time_machine.travel(1_899_997_200.0, tick=False) as clock:  # the start of a clock hour
        capture = InputCapture(
            tmp_path, "cam-1", "x86-onnx-cpu", rate=1.0, max_per_hour=10, max_bytes=1 << 20, clock=time.time
        )
        assert _offer(capture, 6) == 6
        assert _offer(capture, 6) == 4
        clock.shift(3599)
        assert _offer(capture, 6) == 0
        clock.shift(1)
        assert _offer(capture, 6) == 6


def test_disk_is_bounded_oldest_dropped_and_messages_fit_the_wire_limit(tmp_path: Path) -> None:
    capture = _capture(tmp_path, max_bytes=600 * 1024)
    for _ in range(4):
        _offer(capture, 200, width=256)  # about 200 KiB of JSON each time
        capture.spool()
    sizes = [p.stat().st_size for p in capture.pending()]
    assert sum(sizes) <= 600 * 1024 and capture.dropped >= 1
    assert max(sizes) < MAX_JSON_BYTES


def test_a_row_the_wire_cannot_carry_is_dropped_not_raised(tmp_path: Path) -> None:
    capture = _capture(tmp_path)
    x = np.ones((2, 4), dtype=np.float32)
    assert capture.offer("digits", "1.0.0", x, ["ok", "x" * 200], [0.9, 0.8]) == 0
    assert capture.dropped == 2 and capture.spool() == 0
