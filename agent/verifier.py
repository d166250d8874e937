"""TUF verification of bundles with python-tuf's ngclient, metadata fetched over MQTT.

The trusted metadata lives in ``metadata_dir`` and survives restarts, so a device never goes back to
older metadata (rollback protection) and follows root key rotations. A bundle is accepted only when the
hub's current targets metadata lists it with the same length and sha256, and its signed custom fields
name the model, version and target the order asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from agent.errors import TransferError, VerificationError
from fleet.wire.messages import DeploymentOrder

MetadataSource = Callable[[str], bytes | None]


def _fetcher(source: MetadataSource) -> Any:
    from tuf.api import exceptions
    from tuf.ngclient import FetcherInterface

    class MqttMetadataFetcher(FetcherInterface):
        """ngclient fetcher that asks the hub over MQTT; a missing file answers like HTTP 404."""

        def _fetch(self, url: str) -> Iterator[bytes]:
            name = url.rsplit("/", 1)[-1]
            try:
                data = source(name)
            except TransferError as exc:
                raise exceptions.DownloadError(str(exc)) from exc
            if data is None:
                raise exceptions.DownloadHTTPError(f"{name} not found", 404)
            yield data

    return MqttMetadataFetcher()


class BundleVerifier:
    """Checks downloaded bundles against the hub's signed TUF metadata."""

    def __init__(self, metadata_dir: Path, trust_root: bytes, source: MetadataSource) -> None:
        self.metadata_dir = metadata_dir
        metadata_dir.mkdir(parents=True, exist_ok=True)
        self._bootstrap = None if (metadata_dir / "root.json").exists() else trust_root
        self._source = source

    def verify(self, order: DeploymentOrder, bundle_path: Path) -> dict[str, Any]:
        """Refresh metadata and check the file; return the signed custom fields or raise `VerificationError`."""
        from tuf.api import exceptions
        from tuf.ngclient import Updater

        try:
            updater = Updater(
                str(self.metadata_dir),
                "mqtt://hub/metadata/",
                fetcher=_fetcher(self._source),
                bootstrap=self._bootstrap,
            )
            self._bootstrap = None
            updater.refresh()
            info = updater.get_targetinfo(order.tuf_target)
        except exceptions.ExpiredMetadataError as exc:
            raise VerificationError(f"refused {order.tuf_target}: hub metadata has expired ({exc})") from exc
        except exceptions.BadVersionNumberError as exc:
            raise VerificationError(f"refused {order.tuf_target}: metadata rollback detected ({exc})") from exc
        except exceptions.UnsignedMetadataError as exc:
            raise VerificationError(f"refused {order.tuf_target}: metadata not signed by trusted keys ({exc})") from exc
        except exceptions.DownloadError as exc:
            raise VerificationError(f"could not fetch TUF metadata for {order.tuf_target}: {exc}") from exc
        except exceptions.RepositoryError as exc:
            raise VerificationError(f"refused {order.tuf_target}: invalid TUF metadata ({exc})") from exc
        if info is None:
            raise VerificationError(f"refused {order.tuf_target}: the hub has not signed this bundle")
        try:
            with bundle_path.open("rb") as handle:
                info.verify_length_and_hashes(handle)
        except exceptions.LengthOrHashMismatchError as exc:
            raise VerificationError(
                f"refused {order.tuf_target}: bundle does not match its signed length and sha256, "
                f"it was tampered with or corrupted ({exc})"
            ) from exc
        custom = dict(info.unrecognized_fields.get("custom", {}))
        for key, wanted in (("model", order.model), ("version", order.version), ("target", order.target)):
            if custom.get(key) != wanted:
                raise VerificationError(
                    f"refused {order.tuf_target}: signed {key} is {custom.get(key)!r}, the order asked for {wanted!r}"
                )
        return custom
