"""Mosquitto's side of broker access control: its password and ACL files written atomically, and the listener
configuration that names them. The texts come from `hub.devices.broker_acl` (on the hub, or through the REST API's
``GET /broker/auth-files`` for ``edgefleet broker auth-files`` on the broker's host)."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hub.devices.pki import ServerTls

__all__ = ["BrokerAuthFiles", "mosquitto_config", "write_auth_files"]


@dataclass(frozen=True, slots=True)
class BrokerAuthFiles:
    """Where `write_auth_files` put the two files."""

    password_file: Path
    acl_file: Path


def _write_atomically(path: Path, text: str, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_auth_files(directory: Path, password_text: str, acl_text: str, *, mode: int = 0o640) -> BrokerAuthFiles:
    """Write ``passwd`` and ``acl`` into ``directory`` atomically (a reloading broker never sees half a file).

    ``mode`` applies to both; the broker's user (or group) must be able to read them after it drops root.
    """
    directory.mkdir(parents=True, exist_ok=True)
    files = BrokerAuthFiles(password_file=directory / "passwd", acl_file=directory / "acl")
    _write_atomically(files.password_file, password_text, mode)
    _write_atomically(files.acl_file, acl_text, mode)
    return files


def mosquitto_config(
    files: BrokerAuthFiles, *, port: int = 1883, host: str = "127.0.0.1", tls: ServerTls | None = None
) -> str:
    """A Mosquitto 2 listener for devices: no anonymous clients, these files, and each client's id forced to
    its login (``use_username_as_clientid``), so no device can take over another's session.

    With ``tls`` the listener speaks TLS only; with ``tls.require_client_cert`` every client must present a
    certificate signed by ``tls.client_ca_file`` and its common name becomes its login
    (``use_identity_as_username``), so the device id comes from the certificate, not from what it claims.
    """
    lines = [f"listener {port} {host}", "use_username_as_clientid true", "allow_anonymous false"]
    if tls is not None:
        lines += [f"certfile {tls.cert_file}", f"keyfile {tls.key_file}"]
        if tls.client_ca_file:
            lines.append(f"cafile {tls.client_ca_file}")
        if tls.require_client_cert:
            lines += ["require_certificate true", "use_identity_as_username true"]
    lines += [f"password_file {files.password_file}", f"acl_file {files.acl_file}", ""]
    return "\n".join(lines)
