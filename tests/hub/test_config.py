"""Hub settings layered from flags, EDGEFLEET_* variables and a TOML file, each problem in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.config import load_settings
from hub.errors import SettingsError


def test_flags_beat_the_environment_which_beats_the_file_which_beats_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "hub.toml"
    config.write_text('api_port = 9100\nbroker_port = 1999\napi_host = "0.0.0.0"\n')
    monkeypatch.setenv("EDGEFLEET_API_PORT", "9200")
    monkeypatch.setenv("EDGEFLEET_TOKEN", "a CLI variable, not a hub setting")
    settings = load_settings(config, defaults={"broker_port": 1883, "broker_host": "::1"}, api_port=None)
    assert (settings.api_port, settings.broker_port, settings.api_host) == (9200, 1999, "0.0.0.0")
    assert settings.broker_host == "::1"  # only the default gave it
    assert load_settings(config, api_port=9300).api_port == 9300
    assert load_settings().api_port == 9200 and load_settings().broker_port == 0


@pytest.mark.parametrize(
    ("flags", "env", "toml", "message"),
    [
        ({"api_port": 70000}, {}, "", "invalid settings: api_port: Input should be less than or equal to 65535"),
        ({}, {"EDGEFLEET_API_PORT": "abc"}, "", "invalid settings: api_port: Input should be a valid integer"),
        ({}, {}, "bogus = 1\n", "invalid settings: bogus: Extra inputs are not permitted"),
        ({}, {}, "api_port = \n", "is not valid TOML"),
        ({"broker_url": "http://x"}, {}, "", "broker_url: broker_url must start with mqtt:// or mqtts://"),
        (
            {"telemetry_aggregate_max_age_s": 7 * 24 * 3600.0},  # the raw batches' 7 days, without the window
            {},
            "",
            "telemetry_aggregate_max_age_s must be at least telemetry_max_age_s plus telemetry_rollup_window_s",
        ),
    ],
)
def test_a_bad_setting_is_one_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    flags: dict[str, object],
    env: dict[str, str],
    toml: str,
    message: str,
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    config = tmp_path / "hub.toml"
    config.write_text(toml)
    with pytest.raises(SettingsError) as raised:
        load_settings(config, **flags)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"^cannot read the settings file .*nope.toml: No such file"):
        load_settings(tmp_path / "nope.toml")


def test_http_bundle_transport_names_where_devices_reach_the_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEFLEET_BUNDLE_MIRRORS", '["https://cdn.example/fleet/sha256"]')
    settings = load_settings(bundle_transport="http", api_port=9000)
    assert settings.bundle_mirrors == ["https://cdn.example/fleet/sha256"]
    assert settings.device_bundle_url() == "http://127.0.0.1:9000/bundles"  # derived from the API address
    given = load_settings(bundle_transport="http", api_host="0.0.0.0", bundle_url="https://hub.example/bundles/")
    assert given.device_bundle_url() == "https://hub.example/bundles"
    with pytest.raises(SettingsError, match=r"set bundle_url, the address devices reach this hub's API at") as raised:
        load_settings(bundle_transport="http", api_host="0.0.0.0")
    assert "\n" not in str(raised.value)
    with pytest.raises(SettingsError, match=r"^invalid settings: bundle_mirrors\.0: "):
        load_settings(bundle_mirrors=["https://user:pw@cdn.example/x?sig=1"])  # no credentials or query in a base


def test_nats_queue_groups_need_sharing_and_nats_urls() -> None:
    shared = {"broker_url": "mqtt://n1:1883", "shared_telemetry": True}
    settings = load_settings(share_nats_url="nats://n1:4222, tls://n2:4222", **shared)
    assert settings.nats_servers() == ["nats://n1:4222", "tls://n2:4222"]
    assert settings.nats_tls() is not None  # a tls:// URL uses the broker's CA and client files
    assert load_settings(share_nats_url="nats://n1:4222", **shared).nats_tls() is None
    assert load_settings(**shared).nats_servers() == []
    with pytest.raises(SettingsError, match=r"set replica or shared_telemetry with it"):
        load_settings(share_nats_url="nats://n1:4222", broker_url="mqtt://n1:1883")
    with pytest.raises(SettingsError, match=r"must start with nats:// or tls://"):
        load_settings(share_nats_url="mqtt://n1:1883", **shared)
