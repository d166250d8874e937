"""Content-addressed artifact store on local disk: blobs named by their sha256, written atomically."""

from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

from hub.errors import ArtifactError, NotFoundError

_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_BUFFER = 1 << 20


class ArtifactStore:
    """Blobs under ``root/sha256/ab/abcdef...``; a blob never changes once written."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "sha256").mkdir(parents=True, exist_ok=True)
        (root / "tmp").mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        """A local file holding the blob ``digest`` (whether or not it exists yet)."""
        return self._local(digest)

    def _local(self, digest: str) -> Path:
        if not _DIGEST.match(digest):
            raise NotFoundError(f"invalid artifact digest {digest!r}")
        return self.root / "sha256" / digest[:2] / digest

    def put_bytes(self, data: bytes) -> str:
        """Store ``data`` and return its sha256."""
        return self.put_stream(io.BytesIO(data))

    def put_stream(self, stream: BinaryIO) -> str:
        """Store everything read from ``stream``; the blob appears only when completely written."""
        digest = hashlib.sha256()
        fd, tmp_name = tempfile.mkstemp(dir=self.root / "tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                while block := stream.read(_BUFFER):
                    digest.update(block)
                    out.write(block)
                out.flush()
                os.fsync(out.fileno())
            final = self._local(digest.hexdigest())
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp_name, final)
        except OSError as exc:
            Path(tmp_name).unlink(missing_ok=True)
            raise ArtifactError(f"cannot write artifact under {self.root}: {exc.strerror or exc}") from exc
        return digest.hexdigest()

    def read(self, digest: str) -> bytes:
        """Return the blob's bytes, checking them against the digest."""
        try:
            data = self._local(digest).read_bytes()
        except FileNotFoundError as exc:
            raise NotFoundError(f"artifact {digest} is not in the store") from exc
        if hashlib.sha256(data).hexdigest() != digest:
            raise ArtifactError(f"artifact {digest} is corrupt on disk (digest mismatch)")
        return data

    def read_range(self, digest: str, offset: int, length: int) -> bytes:
        """Return ``length`` bytes from ``offset`` of the blob (no digest check: callers check chunks)."""
        try:
            with self._local(digest).open("rb") as blob:
                blob.seek(offset)
                return blob.read(length)
        except FileNotFoundError as exc:
            raise NotFoundError(f"artifact {digest} is not in the store") from exc

    def size(self, digest: str) -> int:
        """Size of the blob in bytes."""
        try:
            return self._local(digest).stat().st_size
        except FileNotFoundError as exc:
            raise NotFoundError(f"artifact {digest} is not in the store") from exc


class S3ArtifactStore(ArtifactStore):
    """The same content-addressed store on any S3-compatible service, with local disk as a read-through cache.

    Blobs are objects ``{prefix}sha256/{digest}`` in ``bucket``; a blob is uploaded before ``put_*`` returns, so
    every hub replica sharing the bucket sees it. Ranges are read from S3 directly; ``path`` downloads the blob
    into the cache first (verified against its digest) for readers that need a file. Credentials come from
    boto3's usual chain (environment, config files, instance roles).
    """

    def __init__(
        self, bucket: str, cache: Path, *, endpoint_url: str | None = None, prefix: str = "", region: str | None = None
    ) -> None:
        import boto3
        from botocore.config import Config

        super().__init__(cache)
        self.bucket = bucket
        self.prefix = prefix
        self._s3 = boto3.client(
            "s3", endpoint_url=endpoint_url, region_name=region or "us-east-1",
            config=Config(retries={"max_attempts": 5, "mode": "standard"}),
        )  # fmt: skip

    @classmethod
    def from_url(cls, url: str, cache: Path) -> S3ArtifactStore:
        """``s3://bucket[/prefix]?endpoint=http://host:port&region=r`` (endpoint for non-AWS services)."""
        from urllib.parse import parse_qs, urlparse

        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ArtifactError(f"artifact store URL must look like s3://bucket?endpoint=..., got {url!r}")
        query = parse_qs(parsed.query)
        prefix = parsed.path.lstrip("/")
        return cls(
            parsed.netloc,
            cache,
            endpoint_url=query.get("endpoint", [None])[0],
            prefix=f"{prefix.rstrip('/')}/" if prefix else "",
            region=query.get("region", [None])[0],
        )

    def _key(self, digest: str) -> str:
        self._local(digest)  # validates the digest
        return f"{self.prefix}sha256/{digest}"

    def _call(self, what: str, digest: str, action: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return action()
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchKey", "NotFound"):
                raise NotFoundError(f"artifact {digest} is not in s3://{self.bucket}/{self.prefix}") from exc
            raise ArtifactError(f"cannot {what} artifact {digest} in s3://{self.bucket}: {code or exc}") from exc
        except BotoCoreError as exc:
            raise ArtifactError(f"cannot {what} artifact {digest} in s3://{self.bucket}: {exc}") from exc

    def put_stream(self, stream: BinaryIO) -> str:
        """Store locally (atomically, digest computed), then upload; return the digest."""
        digest = super().put_stream(stream)
        local = self._local(digest)
        self._call("upload", digest, lambda: self._s3.upload_file(str(local), self.bucket, self._key(digest)))
        return digest

    def path(self, digest: str) -> Path:
        """A local file holding the blob: the cache, filled from S3 (and verified) when missing."""
        local = self._local(digest)
        if not local.is_file():
            data = self._call("download", digest, lambda: self._get(digest))
            if hashlib.sha256(data).hexdigest() != digest:
                raise ArtifactError(f"artifact {digest} in s3://{self.bucket} is corrupt (digest mismatch)")
            ArtifactStore.put_stream(self, io.BytesIO(data))  # into the cache only: the object is already in S3
        return local

    def read(self, digest: str) -> bytes:
        """The blob's bytes, checked against the digest."""
        self.path(digest)
        return super().read(digest)

    def read_range(self, digest: str, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset``: from the cache when there, else one ranged GET."""
        if self._local(digest).is_file():
            return super().read_range(digest, offset, length)
        if length <= 0:
            return b""
        byte_range = f"bytes={offset}-{offset + length - 1}"
        return bytes(self._call("read", digest, lambda: self._get(digest, byte_range)))

    def size(self, digest: str) -> int:
        """Size of the object in bytes."""
        head = self._call("inspect", digest, lambda: self._s3.head_object(Bucket=self.bucket, Key=self._key(digest)))
        return int(head["ContentLength"])

    def download_url(self, digest: str, expires_s: int = 3600) -> str:
        """A pre-signed HTTPS URL devices can fetch the blob from (with range requests) until it expires."""
        return str(
            self._call(
                "sign",
                digest,
                lambda: self._s3.generate_presigned_url(
                    "get_object", Params={"Bucket": self.bucket, "Key": self._key(digest)}, ExpiresIn=expires_s
                ),
            )
        )

    def _get(self, digest: str, byte_range: str | None = None) -> bytes:
        extra = {"Range": byte_range} if byte_range else {}
        response = self._s3.get_object(Bucket=self.bucket, Key=self._key(digest), **extra)
        return bytes(response["Body"].read())


def open_store(url: str | None, data_dir: Path) -> ArtifactStore:
    """The artifact store for ``url``: local disk under ``data_dir/artifacts`` when None, else ``s3://...``
    (with ``data_dir/artifacts`` as its cache)."""
    if url is None or url.startswith("file:"):
        return ArtifactStore(data_dir / "artifacts" if url is None else Path(url.removeprefix("file:")))
    return S3ArtifactStore.from_url(url, data_dir / "artifacts")
