"""HTTP(S) bundle downloads against real local servers: a cut download resumes with a range request (the bundle's
bytes travel once, not twice), a failing mirror is retried with backoff and then left, a tampered mirror is
refused with one line in the update's outcome while the hub serves the right bytes, and with the previous version
installed only the missing pieces travel, as range requests."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.errors import TransferError
from agent.http_download import HttpDownloader
from agent.range_client import RangeClient
from agent.transfer import ChunkDownloader
from fleet.wire.chunk_index import parse_index_name
from fleet.wire.messages import DeploymentOrder, UpdateState
from hub.bundles.chunking import chunk_index
from tests.agent.conftest import DEVICE, Device, MemoryHub
from tests.agent.test_delta import head, publish
from tests.bundle_mirror import BundleMirror, store_files
from tests.http_server import running_server

SECRET = "device-secret"
BASIC = "Basic " + base64.b64encode(f"{DEVICE}:{SECRET}".encode()).decode()


def over_http(order: DeploymentOrder, mirrors: list[str], hub_url: str | None = None) -> DeploymentOrder:
    """``order`` with the http transport and these sources."""
    return DeploymentOrder.model_validate(
        {**order.model_dump(), "transport": "http", "mirrors": mirrors, "hub_url": hub_url}
    )


def http_downloader(
    directory: Path,
    *,
    sleep: Callable[[float], None] = lambda _s: None,
    attempts: int = 4,
    retry_initial_s: float = 1.0,
    retry_max_s: float = 30.0,
) -> HttpDownloader:
    """A downloader with the device's credentials that never really sleeps between tries."""
    return HttpDownloader(
        directory,
        RangeClient(timeout_s=5),
        credentials=(DEVICE, SECRET),
        attempts=attempts,
        retry_initial_s=retry_initial_s,
        retry_max_s=retry_max_s,
        sleep=sleep,
    )


def with_indexes(files: Callable[[str], bytes | None]) -> Callable[[str], bytes | None]:
    """``files`` plus the chunk index of each bundle, as the hub serves them."""

    def read(name: str) -> bytes | None:
        indexed = parse_index_name(name)
        if indexed is None:
            return files(name)
        data = files(indexed)
        return None if data is None else chunk_index(data).encode()

    return read


def test_a_cut_download_resumes_from_where_it_stopped(memory_hub: MemoryHub, tmp_path: Path) -> None:
    order, data = publish(memory_hub, "1.0.0", head(1))
    cut = len(data) // 3
    mirror = BundleMirror(store_files(memory_hub.store.root), cut_after=cut)
    downloader = http_downloader(tmp_path / "downloads")
    chunks = ChunkDownloader(memory_hub.broker, DEVICE, tmp_path / "downloads", http=downloader)
    with running_server(mirror) as address:
        path = chunks.download(over_http(order, [f"http://{address}/cdn"]), timeout_s=30)
    assert path.read_bytes() == data
    assert [r.range for r in mirror.requests] == [None, f"bytes={cut}-"]
    assert downloader.fetched_bytes == len(data)  # each byte once: ~ the file's size, not twice it
    assert chunks.note == "" and not list((tmp_path / "downloads").glob("*.http"))


def test_a_partial_file_left_by_a_restart_is_resumed(memory_hub: MemoryHub, tmp_path: Path) -> None:
    order, data = publish(memory_hub, "1.0.0", head(1))
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    (downloads / f"{order.sha256}.http").write_bytes(data[:1000])
    mirror = BundleMirror(store_files(memory_hub.store.root))
    downloader = http_downloader(downloads)
    with running_server(mirror) as address:
        path = downloader.download(over_http(order, [f"http://{address}"]), downloads / "x.bundle", deadline=1e12)
    assert path.read_bytes() == data
    assert [r.range for r in mirror.requests] == ["bytes=1000-"] and downloader.fetched_bytes == len(data) - 1000


def test_a_failing_mirror_is_retried_with_backoff_then_the_next_serves(memory_hub: MemoryHub, tmp_path: Path) -> None:
    order = memory_hub.publish("1.0.0")
    files = store_files(memory_hub.store.root)
    down, empty, good = BundleMirror(files, status=503), BundleMirror(lambda _name: None), BundleMirror(files)
    delays: list[float] = []
    downloader = http_downloader(tmp_path, sleep=delays.append, attempts=3, retry_initial_s=1.0, retry_max_s=8.0)
    with running_server(down) as a, running_server(empty) as b, running_server(good) as c:
        mirrors = [f"http://{a}", f"http://{b}", f"http://{c}"]
        path = downloader.download(over_http(order, mirrors), tmp_path / "b.bundle", deadline=1e12)
    assert path.read_bytes() == memory_hub.store.read(order.sha256)
    assert (len(down.requests), len(empty.requests), len(good.requests)) == (3, 1, 1)  # a 404 is not retried
    assert len(delays) == 2 and 0.5 <= delays[0] <= 1.0 <= delays[1] <= 2.0  # exponential, with jitter
    assert downloader.note == (
        f"mirror http://{a} answered HTTP 503 for {order.sha256} (3 tries); "
        f"mirror http://{b} answered HTTP 404 for {order.sha256}"
    )


def test_when_no_source_serves_the_error_names_each_in_one_line(memory_hub: MemoryHub, tmp_path: Path) -> None:
    order = memory_hub.publish("1.0.0")
    with running_server(BundleMirror(lambda _name: None)) as address, pytest.raises(TransferError) as caught:
        http_downloader(tmp_path).download(
            over_http(order, [f"http://{address}"], "http://127.0.0.1:9/bundles"), tmp_path / "b", deadline=1e12
        )
    message = str(caught.value)
    assert "\n" not in message and f"mirror http://{address} answered HTTP 404" in message
    assert "hub http://127.0.0.1:9/bundles unreachable" in message


def test_a_tampered_mirror_is_refused_and_the_hub_serves_the_right_bytes(device: Device, memory_hub: MemoryHub) -> None:
    order = memory_hub.publish("1.0.0")
    files = store_files(memory_hub.store.root)
    tampered, hub = BundleMirror(files, tamper=True), BundleMirror(files, credentials=BASIC)
    device.downloader.http = http_downloader(device.data_dir / "downloads")
    with running_server(tampered) as bad, running_server(hub) as good:
        outcome = device.updater.apply(over_http(order, [f"http://{bad}/cdn/"], f"http://{good}/bundles"))
    assert outcome is UpdateState.DONE
    assert device.updater.state.active is not None and device.updater.state.active.sha256 == order.sha256
    _, state, ok, detail = device.reports[-1]  # what the hub stores as the device's update history
    assert state is UpdateState.DONE and ok and "\n" not in detail
    assert re.search(rf"refused mirror http://{bad}/cdn/: it served bytes that fail verification", detail), detail
    assert [r.authorization for r in tampered.requests] == [None]  # a mirror never sees the device's secret
    assert [r.authorization for r in hub.requests] == [BASIC]


def test_with_the_previous_version_only_missing_pieces_travel_as_ranges(device: Device, memory_hub: MemoryHub) -> None:
    first, _ = publish(memory_hub, "1.0.0", head(1))
    second, data = publish(memory_hub, "2.0.0", head(2))
    mirror = BundleMirror(with_indexes(store_files(memory_hub.store.root)))
    downloader = device.downloader.http = http_downloader(device.data_dir / "downloads")
    with running_server(mirror) as address:
        url = f"http://{address}"
        assert device.updater.apply(over_http(first, [url])) is UpdateState.DONE
        before, fetched_before = len(mirror.requests), downloader.fetched_bytes
        assert device.updater.apply(over_http(second, [url])) is UpdateState.DONE
    asked = mirror.requests[before:]
    assert {r.name for r in asked if r.name.startswith("chunk-index.")} == {
        f"chunk-index.{first.sha256}",
        f"chunk-index.{second.sha256}",
    }
    ranges = [r.range for r in asked if not r.name.startswith("chunk-index.")]
    assert ranges and all(r and re.fullmatch(r"bytes=\d+-\d+", r) for r in ranges)
    ranged = sum(int(b) - int(a) + 1 for a, b in (re.findall(r"\d+", r or "") for r in ranges))
    changed = head(2).nbytes
    assert changed <= ranged <= 2 * changed < 0.4 * len(data)
    assert downloader.fetched_bytes - fetched_before < 0.45 * len(data)  # pieces plus the two indexes
    assert device.updater.state.active is not None and device.updater.state.active.version == "2.0.0"


def test_a_mirror_serving_a_bad_piece_is_refused_and_the_next_serves_the_delta(
    device: Device, memory_hub: MemoryHub
) -> None:
    first, _ = publish(memory_hub, "1.0.0", head(1))
    second, _ = publish(memory_hub, "2.0.0", head(2))
    files = with_indexes(store_files(memory_hub.store.root))
    tampered, good = BundleMirror(files, tamper=True), BundleMirror(files)
    downloader = device.downloader.http = http_downloader(device.data_dir / "downloads")
    with running_server(tampered) as bad, running_server(good) as mirror:
        assert device.updater.apply(over_http(first, [f"http://{mirror}"])) is UpdateState.DONE
        assert device.updater.apply(over_http(second, [f"http://{bad}", f"http://{mirror}"])) is UpdateState.DONE
    assert downloader.reused_bytes > 0.5 * second.size_bytes  # a delta, not a whole download
    assert any(r.range for r in tampered.requests) and all(r.range for r in good.requests[-1:])
    _, state, ok, detail = device.reports[-1]
    assert (
        state is UpdateState.DONE
        and ok
        and f"refused mirror http://{bad}: it served piece" in detail
        and "unlike its chunk index" in detail
    )


def test_https_sources_are_trusted_through_the_configured_ca_only(memory_hub: MemoryHub, tmp_path: Path) -> None:
    from hub.devices.pki import CertificateAuthority

    order = memory_hub.publish("1.0.0")
    ca = CertificateAuthority.create(tmp_path / "pki")
    cert = ca.issue_server(tmp_path / "pki" / "mirror", ["127.0.0.1"])
    mirror = BundleMirror(store_files(memory_hub.store.root))
    tls = {"ssl_certfile": str(cert.cert_file), "ssl_keyfile": str(cert.key_file)}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    trusting = HttpDownloader(
        tmp_path / "a", RangeClient(timeout_s=5, ca_file=ca.cert_file), credentials=None, attempts=1
    )
    untrusting = HttpDownloader(tmp_path / "b", RangeClient(timeout_s=5), credentials=None, attempts=1)
    with running_server(mirror, **tls) as address:
        https = over_http(order, [f"https://{address}/cdn"])
        path = trusting.download(https, tmp_path / "a.bundle", deadline=1e12)
        assert path.read_bytes() == memory_hub.store.read(order.sha256)
        with pytest.raises(TransferError) as caught:
            untrusting.download(https, tmp_path / "b.bundle", deadline=1e12)
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value) and "\n" not in str(caught.value)
    assert len(mirror.requests) == 1  # the untrusted handshake never reached HTTP
