"""``edgefleet hub migrate``: upgrades a first-release registry and says from which revision to which."""

from __future__ import annotations

import json
from pathlib import Path

import sqlalchemy
from typer.testing import CliRunner

from hub.cli import app
from hub.registry.migrations import BASELINE_REVISION, head_revision
from tests.hub.registry.conftest import load_first_release


def test_migrate_reports_revisions_and_is_idempotent(database_url: str, tmp_path: Path) -> None:
    load_first_release(database_url)
    args = ["hub", "migrate", "--data-dir", str(tmp_path), "--database-url", database_url]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert f"from {BASELINE_REVISION} to {head_revision()}" in first.output
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and f"from {head_revision()} to {head_revision()}" in again.output


def test_migrate_a_fresh_data_dir_creates_it_and_the_schema(tmp_path: Path) -> None:
    data_dir = tmp_path / "var" / "hub"  # not there yet: a first migrate may come before the first `hub serve`
    result = CliRunner().invoke(app, ["hub", "migrate", "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    assert f"from none (empty database) to {head_revision()}" in result.output
    assert (data_dir / "registry.db").exists() and data_dir.stat().st_mode & 0o777 == 0o700
    again = CliRunner().invoke(app, ["hub", "migrate", "--data-dir", str(data_dir), "--json"])
    assert json.loads(again.stdout) == {"from": head_revision(), "to": head_revision(), "backup": None}


def test_migrate_refuses_an_unknown_schema_with_one_line(database_url: str, tmp_path: Path) -> None:
    engine = sqlalchemy.create_engine(database_url)
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text("CREATE TABLE model (id INTEGER PRIMARY KEY)"))
    engine.dispose()
    result = CliRunner().invoke(app, ["hub", "migrate", "--data-dir", str(tmp_path), "--database-url", database_url])
    assert result.exit_code == 1
    assert "error: database has EdgeFleet tables but no schema revision" in result.output
    assert "Traceback" not in result.output
