"""API tokens and audit entries on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hub.errors import ConflictError, NotFoundError
from hub.registry import AccessStore, ApiToken, AuditEntry, Database


@pytest.fixture
def store(database_url: str) -> Iterator[AccessStore]:
    db = Database(database_url)
    yield AccessStore(db)
    db.close()


def _token(token_id: str, digest: str) -> ApiToken:
    return ApiToken(id=token_id, name=f"t-{token_id}", role="viewer", token_sha256=digest, created_at=1.0)


def _entry(at: float, token_id: str, status: int = 200) -> AuditEntry:
    return AuditEntry(
        at=at, token_id=token_id, token_name="n", role="admin", method="POST", route="/r", path="/r", client="c",
        status=status,
    )  # fmt: skip


def test_tokens_are_unique_by_id_and_digest_and_revocation_is_idempotent(store: AccessStore) -> None:
    store.add_token(_token("aaa", "1" * 64))
    with pytest.raises(ConflictError):
        store.add_token(_token("aaa", "2" * 64))
    with pytest.raises(ConflictError):
        store.add_token(_token("bbb", "1" * 64))
    assert store.token_count() == 1 and store.token("bbb") is None
    first = store.revoke_token("aaa", at=10.0)
    assert store.revoke_token("aaa", at=20.0).revoked_at == first.revoked_at == 10.0
    with pytest.raises(NotFoundError):
        store.revoke_token("ghost")


def test_audit_entries_newest_first_filtered_and_paged(store: AccessStore) -> None:
    for at, token_id in [(1.0, "a"), (2.0, "b"), (3.0, "a"), (4.0, "b")]:
        store.record_audit(_entry(at, token_id))
    assert [e.at for e in store.audit_entries()] == [4.0, 3.0, 2.0, 1.0]
    assert [e.at for e in store.audit_entries(token_id="a")] == [3.0, 1.0]
    assert [e.at for e in store.audit_entries(since=2.5)] == [4.0, 3.0]
    assert [e.at for e in store.audit_entries(limit=1)] == [4.0]


def test_the_audit_log_keeps_its_retention_over_years_of_changes(database_url: str) -> None:
    import datetime as dt

    import time_machine

    db = Database(database_url)
    store = AccessStore(db, audit_max_age_s=400 * 86400)
    start = dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
    try:
        for day in range(0, 3 * 365, 5):  # three years, a change every five days
            with time_machine.travel(start + dt.timedelta(days=day), tick=False):
                store.record_audit(AuditEntry(token_id="a", token_name="n", role="admin", method="POST", route="/r",
                                              path="/r", client="c", status=200))  # fmt: skip
        kept = store.audit_entries(limit=1000)
        newest = kept[0].at
        assert len(kept) == 81  # 400 days at one per 5 days, both ends included; not the 219 written
        assert min(e.at for e in kept) >= newest - 400 * 86400
    finally:
        db.close()
