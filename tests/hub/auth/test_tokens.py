"""Issuing tokens: shown once, stored as a digest, with an expiry; bad requests refused."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import time_machine

from hub.auth import Role, issue_token, token_state
from hub.errors import InvalidRequestError
from hub.registry import AccessStore, Database


@pytest.fixture
def store(tmp_path: Path) -> AccessStore:
    return AccessStore(Database(f"sqlite:///{tmp_path / 'registry.db'}"))


def test_only_the_digest_is_stored_and_the_id_comes_from_it(store: AccessStore) -> None:
    issued = issue_token(store, "ci", Role.OPERATOR, created_by="test")
    digest = hashlib.sha256(issued.token.encode()).hexdigest()
    assert issued.token.startswith("ef_") and len(issued.token) > 40
    (row,) = store.tokens()
    assert row.token_sha256 == digest and row.id == digest[:12]
    assert issued.token not in row.model_dump_json()
    assert issue_token(store, "ci", Role.OPERATOR, created_by="test").token != issued.token


def test_tokens_expire_and_revocation_wins(store: AccessStore) -> None:
    with time_machine.travel(1_000_000, tick=False) as clock:
        short = issue_token(store, "short", Role.VIEWER, ttl_days=1, created_by="test").row
        forever = issue_token(store, "forever", Role.VIEWER, ttl_days=None, created_by="test").row
        assert token_state(short) == "active"
        clock.shift(86_400)
        assert token_state(short) == "expired" and token_state(forever) == "active"
        revoked = store.revoke_token(forever.id)
        assert token_state(revoked) == "revoked"
        clock.shift(10)
        assert store.revoke_token(forever.id).revoked_at == revoked.revoked_at  # idempotent


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": " "}, "needs a name"),
        ({"ttl_days": 0}, "must be positive"),
        ({"token": "short"}, "at least 32"),
    ],
)
def test_bad_requests_are_refused(store: AccessStore, kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"name": "x", "role": Role.VIEWER, "created_by": "test", **kwargs}
    with pytest.raises(InvalidRequestError, match=match):
        issue_token(store, **args)  # type: ignore[arg-type]
    assert store.tokens() == []
