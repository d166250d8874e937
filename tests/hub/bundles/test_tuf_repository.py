"""The TUF repository keeps its metadata fresh, signs root with online or offline keys (threshold too), and an
agent's verifier (python-tuf's client) accepts every root version chained that way."""

from __future__ import annotations

import hashlib
import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import time_machine

from agent.errors import VerificationError
from agent.verifier import BundleVerifier
from fleet.wire.messages import DeploymentOrder
from hub.bundles.keys import read_key_file
from hub.bundles.refresh import MetadataRefresher
from hub.bundles.tuf_repository import TufRepository, expiry_warnings
from hub.errors import NotFoundError, SigningError

DAY = timedelta(days=1)


def _now() -> datetime:
    return datetime.now(UTC)


def _device(repo: TufRepository, directory: Path) -> BundleVerifier:
    """An agent's verifier provisioned with the repository's current root, fetching straight from it."""

    def source(name: str) -> bytes | None:
        try:
            return repo.metadata_file(name)
        except NotFoundError:
            return None

    return BundleVerifier(directory, repo.trusted_root(), source)


def _bundle(repo: TufRepository, directory: Path, version: str) -> tuple[DeploymentOrder, Path]:
    """Sign a small bundle and return the order naming it and its file."""
    data = f"bundle {version}".encode()
    target = f"m/{version}/x86.zip"
    repo.add_target(target, data, {"model": "m", "version": version, "target": "x86"})
    path = directory / f"{version}.zip"
    path.write_bytes(data)
    order = DeploymentOrder(
        deployment_id=f"d-{version}",
        model="m",
        version=version,
        target="x86",
        tuf_target=target,
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        chunk_size=1024,
        chunk_count=1,
    )
    return order, path


def _versions(repo: TufRepository) -> dict[str, int]:
    return {
        "root": json.loads(repo.trusted_root())["signed"]["version"],
        **{r: json.loads(repo.metadata_file(f"{r}.json"))["signed"]["version"] for r in ("snapshot", "timestamp")},
        "targets": json.loads(repo.metadata_file("targets.json"))["signed"]["version"],
    }


@pytest.mark.parametrize(
    ("days", "resigned"),
    [
        (0, []),
        (0.6, ["timestamp"]),
        (4, ["snapshot", "timestamp"]),
        (50, ["targets", "snapshot", "timestamp"]),
        (200, ["root", "targets", "snapshot", "timestamp"]),
    ],
)
def test_refresh_resigns_each_role_once_half_its_lifetime_is_gone(
    tmp_path: Path, days: float, resigned: list[str]
) -> None:
    repo = TufRepository(tmp_path / "tuf")
    before = _versions(repo)
    with time_machine.travel(_now() + days * DAY, tick=False):
        assert repo.refresh() == resigned
        assert repo.due() == []
        after = _versions(repo)
        assert {r for r in after if after[r] != before[r]} == set(resigned)
        left = repo.seconds_to_expiry()
        assert all(seconds > 0 for seconds in left.values())
        assert repo.refresh() == []  # nothing is re-signed twice


def test_refresh_lets_a_device_update_after_400_days(tmp_path: Path) -> None:
    repo = TufRepository(tmp_path / "tuf")
    verifier = _device(repo, tmp_path / "device")
    order, path = _bundle(repo, tmp_path, "1.0.0")
    assert verifier.verify(order, path)["version"] == "1.0.0"
    order, path = _bundle(repo, tmp_path, "1.1.0")
    with time_machine.travel(_now() + 400 * DAY, tick=False):
        with pytest.raises(VerificationError, match="expired"):
            verifier.verify(order, path)
        assert repo.refresh() == ["root", "targets", "snapshot", "timestamp"]
        assert _versions(repo)["root"] == 2
        assert verifier.verify(order, path)["version"] == "1.1.0"


def test_offline_root_is_not_resigned_by_the_hub_and_is_warned_about(tmp_path: Path) -> None:
    repo = TufRepository(tmp_path / "tuf")
    repo.export_root_key(tmp_path / "root.pem")
    assert repo.root_keys_on_hub() == (0, 1)
    assert not any((tmp_path / "tuf" / "keys").glob("root*"))
    assert expiry_warnings(tmp_path / "tuf", _now()) == []
    with time_machine.travel(_now() + 200 * DAY, tick=False):
        assert repo.refresh() == ["targets", "snapshot", "timestamp"]
        assert 150 * 86400 < repo.seconds_to_expiry()["root"] < 170 * 86400
        (warning,) = expiry_warnings(tmp_path / "tuf", _now())
        assert "1 of its 1 needed keys are offline" in warning and "edgefleet keys sign-root" in warning
        with pytest.raises(SigningError, match="needs 1 more root key signature"):
            repo.sign_root()


def test_offline_root_signing_chain_is_accepted_by_a_device(tmp_path: Path) -> None:
    repo = TufRepository(tmp_path / "tuf")
    verifier = _device(repo, tmp_path / "device")
    order, path = _bundle(repo, tmp_path, "1.0.0")
    verifier.verify(order, path)
    repo.export_root_key(tmp_path / "root.pem")
    offline = read_key_file(tmp_path / "root.pem", None)
    with time_machine.travel(_now() + 300 * DAY, tick=False):
        assert repo.sign_root([offline]) == 2
        assert repo.sign_root([offline]) == 3  # a device several versions behind walks the chain
    with time_machine.travel(_now() + 400 * DAY, tick=False):
        repo.refresh()
        order, path = _bundle(repo, tmp_path, "1.1.0")
        assert verifier.verify(order, path)["version"] == "1.1.0"
        assert expiry_warnings(tmp_path / "tuf", _now()) == []
    assert (tmp_path / "device" / "root.json").read_bytes() == repo.metadata_file("3.root.json")


def test_root_threshold_two_needs_both_keys_and_a_device_follows(tmp_path: Path) -> None:
    repo = TufRepository(tmp_path / "tuf", root_threshold=2)
    assert repo.root_keys_on_hub() == (2, 2)
    assert json.loads(repo.trusted_root())["signed"]["roles"]["root"]["threshold"] == 2
    verifier = _device(repo, tmp_path / "device")
    order, path = _bundle(repo, tmp_path, "1.0.0")
    verifier.verify(order, path)
    first = repo.export_root_key(tmp_path / "root-1.pem")
    second = repo.export_root_key(tmp_path / "root-2.pem")
    assert first != second and repo.root_keys_on_hub() == (0, 2)
    with pytest.raises(SigningError, match="is not on the hub"):
        repo.export_root_key(tmp_path / "root-3.pem")
    one = read_key_file(tmp_path / "root-1.pem", None)
    two = read_key_file(tmp_path / "root-2.pem", None)
    with pytest.raises(SigningError, match="needs 1 more root key signature"):
        repo.sign_root([one])
    assert repo.sign_root([one, two]) == 2
    # Rotating one root key out: signed by both old keys and the new one; the old key file stays usable offline.
    assert repo.rotate_key("root", old_keyid=first[:8], offline_signers=[one, two]) == 3
    with time_machine.travel(_now() + 400 * DAY, tick=False):
        with pytest.raises(SigningError, match="needs 1 more"):  # the new key is on the hub, one is not enough
            repo.sign_root()
        assert repo.sign_root([two]) == 4
        repo.refresh()
        order, path = _bundle(repo, tmp_path, "1.1.0")
        assert verifier.verify(order, path)["version"] == "1.1.0"


def test_a_key_of_another_repository_cannot_sign_root(tmp_path: Path) -> None:
    repo = TufRepository(tmp_path / "tuf")
    other = TufRepository(tmp_path / "other")
    other.export_root_key(tmp_path / "other-root.pem")
    with pytest.raises(SigningError, match="is not a root key of this repository"):
        repo.sign_root([read_key_file(tmp_path / "other-root.pem", None)])


def test_online_key_rotated_by_another_process_is_picked_up(tmp_path: Path) -> None:
    hub_view = TufRepository(tmp_path / "tuf")
    cli_view = TufRepository(tmp_path / "tuf")  # e.g. `edgefleet keys rotate targets` while the hub runs
    verifier = _device(hub_view, tmp_path / "device")
    cli_view.rotate_key("targets")
    order, path = _bundle(hub_view, tmp_path, "1.0.0")
    assert verifier.verify(order, path)["version"] == "1.0.0"


@pytest.mark.parametrize(("threshold", "keys"), [(0, 1), (3, 2)])
def test_impossible_root_threshold_is_refused(tmp_path: Path, threshold: int, keys: int) -> None:
    with pytest.raises(SigningError, match="root threshold"):
        TufRepository(tmp_path / "tuf", root_threshold=threshold, root_keys=keys)


def test_refresher_resigns_at_start_and_on_request_and_stops(tmp_path: Path) -> None:
    repo = TufRepository(tmp_path / "tuf")
    refresher = MetadataRefresher(lambda: repo, interval_s=3600)
    with time_machine.travel(_now() + 2 * DAY, tick=True) as clock:
        assert repo.seconds_to_expiry()["timestamp"] < 0
        refresher.start()  # a hub started after two days down: fresh before it answers anyone
        try:
            assert repo.seconds_to_expiry()["timestamp"] > 0.5 * 86400
            version = _versions(repo)["timestamp"]
            clock.shift(DAY)
            assert refresher.refresh_now()
            assert _versions(repo)["timestamp"] == version + 1
            assert refresher.refresh_now()
            assert _versions(repo)["timestamp"] == version + 1  # fresh enough: not re-signed again
        finally:
            refresher.stop()
    assert not any(t.name == "tuf-metadata-refresh" for t in threading.enumerate())
