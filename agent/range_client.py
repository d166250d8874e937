"""HTTP(S) range requests for bundle downloads: stdlib only (urllib), so the agent install stays small.

A `BundleSource` is one base URL: a mirror or CDN (untrusted, sent no credentials) or the hub's ``/bundles``
route (sent the device's id and secret as HTTP Basic). A file of the bundle is ``{base}/{name}``. The hub may
answer with a redirect to a short-lived link into object storage; the credentials are never forwarded there
(urllib drops "unredirected" headers on a redirect). Whatever a source says, the bytes are checked by the
caller against the order's digest and TUF: a source is trusted for availability only.
"""

from __future__ import annotations

import base64
import http.client
import re
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from agent.errors import TransferError

_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
_BLOCK = 64 * 1024


class SourceUnavailable(TransferError):
    """A source could not serve a request; ``retry`` says whether asking it again later may help."""

    def __init__(self, message: str, *, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


@dataclass(frozen=True)
class BundleSource:
    """One base URL bundles are downloaded from; ``credentials`` (device id, secret) only for the hub."""

    base: str
    credentials: tuple[str, str] | None = None

    @property
    def label(self) -> str:
        """How messages name it: ``mirror URL`` or ``hub URL``."""
        return f"{'hub' if self.credentials is not None else 'mirror'} {self.base}"

    def url(self, name: str) -> str:
        """The URL of the file ``name`` (a bundle digest or ``chunk-index.{digest}``)."""
        return f"{self.base.rstrip('/')}/{name}"


class RangeClient:
    """Opens (ranges of) files on bundle sources; ``ca_file`` is trusted besides the system's CAs."""

    def __init__(self, *, timeout_s: float = 30.0, ca_file: Path | None = None) -> None:
        self.timeout_s = timeout_s
        context = ssl.create_default_context()
        if ca_file is not None:
            try:
                context.load_verify_locations(cafile=str(ca_file))
            except (OSError, ssl.SSLError) as exc:
                raise TransferError(f"cannot load the CA file {ca_file} for HTTPS downloads: {exc}") from exc
        self._opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context))

    def open(self, source: BundleSource, name: str, start: int = 0, end: int | None = None) -> tuple[BinaryIO, int]:
        """Ask for bytes ``start`` to ``end`` (inclusive; None: to the end) of ``name``; return the response body
        and the offset it starts at: ``start``, or 0 when the source ignored the range and sends the whole file."""
        request = urllib.request.Request(source.url(name))
        if start > 0 or end is not None:
            request.add_header("Range", f"bytes={start}-{'' if end is None else end}")
        if source.credentials is not None:
            token = base64.b64encode(":".join(source.credentials).encode()).decode()
            request.add_unredirected_header("Authorization", f"Basic {token}")
        try:
            response = self._opener.open(request, timeout=self.timeout_s)
        except urllib.error.HTTPError as exc:
            exc.close()
            # 408, 429 and 5xx pass; 404 (not there), 401/403 (refused) and 416 (shorter than asked) do not
            retry = exc.code in (408, 429) or exc.code >= 500
            raise SourceUnavailable(f"{source.label} answered HTTP {exc.code} for {name}", retry=retry) from exc
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise SourceUnavailable(f"{source.label} unreachable: {reason}", retry=True) from exc
        if response.status == 200:
            return response, 0
        content_range = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
        if response.status != 206 or content_range is None or int(content_range.group(1)) != start:
            response.close()
            raise SourceUnavailable(
                f"{source.label} answered HTTP {response.status} with Content-Range "
                f"{response.headers.get('Content-Range')!r} to a request from byte {start}",
                retry=False,
            )
        return response, start


def copy_body(body: BinaryIO, out: BinaryIO, limit: int) -> int:
    """Copy ``body`` to ``out`` until it ends or ``limit`` bytes were written; return the count written.

    A connection cut mid-body raises `SourceUnavailable` (to retry) once what arrived before is written; a
    write error of ``out`` (a full disk) propagates as the `OSError` it is.
    """
    written = 0
    try:
        while written < limit:
            try:
                block = body.read(min(_BLOCK, limit - written))
            except (OSError, http.client.HTTPException) as exc:
                raise SourceUnavailable(f"connection cut after {written} bytes: {exc!r}", retry=True) from exc
            if not block:
                break
            out.write(block)
            written += len(block)
    finally:
        body.close()
    return written
