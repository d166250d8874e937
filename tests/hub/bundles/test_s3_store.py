"""The artifact store on a real S3-API server (moto's standalone server): the store's contract, a cache that
verifies what it downloads, one-line errors, and a hub whose bundles live only in the bucket."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub.bundles.store import S3ArtifactStore, open_store
from hub.errors import ArtifactError, NotFoundError
from tests.s3_server import create_bucket, s3_server


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with s3_server() as url:
        create_bucket(url, "fleet")
        yield url


def test_blobs_round_trip_through_the_bucket_and_a_fresh_cache(endpoint: str, tmp_path: Path) -> None:
    data = bytes(range(256)) * 1000
    writer = open_store(f"s3://fleet/prod?endpoint={endpoint}", tmp_path / "a")
    assert isinstance(writer, S3ArtifactStore)
    digest = writer.put_bytes(data)
    reader = S3ArtifactStore.from_url(f"s3://fleet/prod?endpoint={endpoint}", tmp_path / "b")  # another replica
    assert reader.size(digest) == len(data)
    assert reader.read_range(digest, 1000, 300) == data[1000:1300]  # a ranged GET, nothing cached yet
    assert not reader._local(digest).exists()
    assert reader.read(digest) == data and reader.path(digest).read_bytes() == data  # cached after a full read


def test_a_corrupt_object_is_refused_and_a_missing_one_is_not_found(endpoint: str, tmp_path: Path) -> None:
    import boto3

    store = S3ArtifactStore("fleet", tmp_path, endpoint_url=endpoint, prefix="corrupt/")
    digest = hashlib.sha256(b"genuine").hexdigest()
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").put_object(
        Bucket="fleet", Key=f"corrupt/sha256/{digest}", Body=b"tampered"
    )
    with pytest.raises(ArtifactError, match="corrupt"):
        store.path(digest)
    with pytest.raises(NotFoundError, match="not in s3://fleet/corrupt/"):
        store.size("0" * 64)


def test_bad_urls_and_unreachable_services_give_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="must look like s3://bucket"):
        open_store("s3:///nobucket", tmp_path)
    dead = S3ArtifactStore("fleet", tmp_path, endpoint_url="http://127.0.0.1:9")
    with pytest.raises(ArtifactError, match="cannot upload artifact"):
        dead.put_bytes(b"x")
