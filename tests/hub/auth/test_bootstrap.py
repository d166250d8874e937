"""The first admin token: a random one on first start, or the one given in EDGEFLEET_ADMIN_TOKEN, stored once."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.auth import ADMIN_TOKEN_ENV, Role, bootstrap_admin_token
from hub.errors import InvalidRequestError
from hub.registry import AccessStore, Database


@pytest.fixture
def store(tmp_path: Path) -> AccessStore:
    return AccessStore(Database(f"sqlite:///{tmp_path / 'registry.db'}"))


def test_first_start_creates_one_admin_token_and_later_starts_none(store: AccessStore) -> None:
    first = bootstrap_admin_token(store, {})
    assert first is not None and first.row.role == Role.ADMIN and first.row.expires_at is not None
    assert bootstrap_admin_token(store, {}) is None
    assert len(store.tokens()) == 1


def test_a_token_from_the_environment_is_stored_once_and_stays_revoked(store: AccessStore) -> None:
    env = {ADMIN_TOKEN_ENV: "x" * 40}
    created = bootstrap_admin_token(store, env)
    assert created is not None and created.token == "x" * 40
    store.revoke_token(created.row.id)
    assert bootstrap_admin_token(store, env) is None
    assert [t.revoked_at is not None for t in store.tokens()] == [True]


def test_a_short_token_in_the_environment_is_refused(store: AccessStore) -> None:
    with pytest.raises(InvalidRequestError, match="at least 32"):
        bootstrap_admin_token(store, {ADMIN_TOKEN_ENV: "admin"})
    assert store.tokens() == []
