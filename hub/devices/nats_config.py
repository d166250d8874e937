"""NATS's side of broker access control on the broker's host: the authorization include file written owner-only and
atomically, and the configuration lines that include it with an MQTT listener mapping device certificates to users.
The file's text comes from `hub.devices.nats_auth` (on the hub, through ``GET /broker/auth-files?broker=nats`` for
``edgefleet broker auth-files --broker nats``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Final

from hub.devices.pki import ServerTls
from hub.errors import InvalidRequestError
from hub.private_files import write_private

__all__ = ["NATS_AUTH_FILE", "nats_config", "write_nats_auth"]

NATS_AUTH_FILE: Final = "nats-auth.conf"


def write_nats_auth(directory: Path, text: str) -> Path:
    """Write ``text`` to ``directory/nats-auth.conf`` atomically and owner-only (it holds bcrypt hashes of the secrets;
    run this as the user NATS runs as)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / NATS_AUTH_FILE
    write_private(path, text.encode())
    return path


def nats_config(
    auth_file: Path,
    *,
    config_dir: Path | None = None,
    port: int = 8883,
    host: str = "0.0.0.0",
    tls: ServerTls,
    replicas: int | None = None,
) -> str:
    """The lines for each node's configuration: include ``auth_file``, and an MQTT listener that speaks TLS only,
    requires a client certificate signed by ``tls.client_ca_file`` and maps it to its user (``verify_and_map``).

    NATS resolves an ``include`` path from the directory of the file that includes it, even an absolute one, so
    the path is written relative to ``config_dir`` (default: ``auth_file``'s own directory). ``replicas``: the
    stream and consumer replicas of a cluster's MQTT state (its node count)."""
    if not tls.client_ca_file:
        raise InvalidRequestError("NATS maps device certificates to users: give the CA of device certificates")

    def quoted(value: object) -> str:
        return json.dumps(str(value))

    lines = [
        "# EdgeFleet: the fleet's NATS users and MQTT listener (edgefleet broker auth-files --broker nats)",
        f"include {quoted(os.path.relpath(auth_file.absolute(), (config_dir or auth_file.parent).absolute()))}",
        "mqtt {",
        f"  listen: {quoted(f'{host}:{port}')}",
    ]
    if replicas is not None:
        lines += [f"  stream_replicas: {replicas}", f"  consumer_replicas: {replicas}"]
    lines += [
        "  tls {",
        f"    cert_file: {quoted(tls.cert_file)}",
        f"    key_file: {quoted(tls.key_file)}",
        f"    ca_file: {quoted(tls.client_ca_file)}",
        "    verify_and_map: true",
        "  }",
        "}",
        "",
    ]
    return "\n".join(lines)
