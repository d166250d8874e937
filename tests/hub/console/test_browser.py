"""The console in a real headless Chromium (Debian's ``chromium`` and ``chromium-driver``, driven by Selenium)
against a hub served by uvicorn: every page renders without browser console errors, fleet counts follow the
hub live, a device's charts have points, a rollout is paused from its page, API errors show as one line.

Set ``EDGEFLEET_CONSOLE_SCREENSHOTS=docs/screenshots`` to refresh the screenshots docs/console.md shows.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet.rollout import RolloutState
from hub.api import create_app
from hub.auth import Role
from hub.registry.rollouts import RolloutStore
from tests.http_server import running_server
from tests.hub.auth.clients import token_for
from tests.hub.console.console_fleet import ROLLOUT_ID, ConsoleFleet, bring_online, console_fleet
from tests.waiting import wait_until

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install '.[dev]')")
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = [
    pytest.mark.skipif(
        not (CHROMIUM and CHROMEDRIVER), reason="needs Debian's chromium and chromium-driver (apt-get install)"
    ),
    pytest.mark.usefixtures("signed_in"),
]
PAGE_TIMEOUT_S = 15


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleFleet]:
    with console_fleet(tmp_path_factory.mktemp("console")) as fleet:
        yield fleet


@pytest.fixture(scope="module")
def base_url(fleet: ConsoleFleet) -> Iterator[str]:
    with running_server(create_app(fleet.hub)) as address:
        yield f"http://{address}"


@pytest.fixture(scope="module")
def signed_in(browser: webdriver.Chrome, base_url: str, fleet: ConsoleFleet) -> None:
    """The console's tab holds an operator token, as its sign-in page stores it."""
    browser.get(f"{base_url}/ui#/signin")
    browser.execute_script(
        "sessionStorage.setItem('edgefleet.token', arguments[0])", token_for(fleet.hub, Role.OPERATOR)
    )


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM or ""
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def open_page(browser: webdriver.Chrome, base_url: str, route: str) -> None:
    """Load ``/ui#route`` from scratch and wait until its page has rendered its data."""
    browser.get("about:blank")
    browser.get(f"{base_url}/ui{route}")
    assert wait_until(
        lambda: browser.execute_script("return document.querySelector('#page').dataset.loaded !== undefined"),
        PAGE_TIMEOUT_S,
    ), f"{route} did not render: {error_line(browser)!r}"


def text_of(browser: webdriver.Chrome, selector: str) -> str:
    """The text of ``selector`` read in one script call (polling re-renders pages: elements go stale)."""
    return str(browser.execute_script("return document.querySelector(arguments[0])?.textContent ?? ''", selector))


def error_line(browser: webdriver.Chrome) -> str:
    return text_of(browser, "#error")


def console_errors(browser: webdriver.Chrome) -> list[str]:
    """Browser console messages of level SEVERE since the last call."""
    return [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]


def chart_points(browser: webdriver.Chrome, title: str) -> int:
    return int(
        browser.execute_script(
            "return document.querySelector(`.chart[data-title='${arguments[0]}']`).dataset.points", title
        )
    )


def screenshot(browser: webdriver.Chrome, name: str) -> None:
    folder = os.environ.get("EDGEFLEET_CONSOLE_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        height = int(browser.execute_script("return document.documentElement.scrollHeight"))
        browser.set_window_size(1400, min(height + 120, 2400))  # the whole page, not only the first screen
        browser.save_screenshot(str(Path(folder) / f"{name}.png"))
        browser.set_window_size(1400, 1000)


def test_every_page_renders_without_console_errors(
    browser: webdriver.Chrome, base_url: str, fleet: ConsoleFleet
) -> None:
    device = fleet.device_with_telemetry()
    pages = {
        "fleet": "#/fleet",
        "device": f"#/device/{device}",
        "rollouts": "#/rollouts",
        "rollout": f"#/rollout/{ROLLOUT_ID}",
        "models": "#/models",
        "drift": "#/drift?version=digits:1.1.0",
        "signin": "#/signin",
    }
    console_errors(browser)
    texts, drift_points, canary_points = {}, [], {}
    for name, route in pages.items():
        open_page(browser, base_url, route)
        if name == "rollout":  # the canary analysis loads after the status
            assert wait_until(lambda: browser.find_elements("css selector", "#canary p"), PAGE_TIMEOUT_S)
            canary_points = {
                c.get_attribute("data-title"): int(c.get_attribute("data-points"))
                for c in browser.find_elements("css selector", "#canary .chart")
            }
        if name == "drift":
            drift_points = [
                int(c.get_attribute("data-points")) for c in browser.find_elements("css selector", ".chart")
            ]
        assert error_line(browser) == "", name
        assert console_errors(browser) == [], name
        texts[name] = text_of(browser, "#page")
        screenshot(browser, name)
    assert "keywords" in texts["models"] and "accuracy" in texts["models"] and "0.912" in texts["models"]
    assert drift_points and all(points > 0 for points in drift_points)  # reference and current drawn per feature
    assert "started with" in texts["rollout"]  # the timeline's reasons
    assert canary_points["latency (pass)"] == 2  # the gate's metrics: canary against baseline

    browser.get(f"{base_url}/docs")  # Swagger UI from the package: renders the API without internet
    assert wait_until(lambda: browser.find_elements("css selector", ".swagger-ui .info .title"), PAGE_TIMEOUT_S)
    assert "EdgeFleet hub" in browser.find_element("css selector", ".swagger-ui .info .title").text
    assert console_errors(browser) == []
    screenshot(browser, "docs")


def test_fleet_counts_follow_the_hub_live(browser: webdriver.Chrome, base_url: str, fleet: ConsoleFleet) -> None:
    open_page(browser, base_url, "#/fleet")

    def shown(card: str) -> int:
        return int(text_of(browser, f"#count-{card} b"))

    before_total, before_online = shown("total"), shown("online")
    bring_online(fleet.hub, "cam-live")
    assert wait_until(lambda: fleet.hub.registry.get_device("cam-live").online)
    assert wait_until(
        lambda: (shown("total"), shown("online")) == (before_total + 1, before_online + 1), PAGE_TIMEOUT_S
    )
    assert wait_until(lambda: "cam-live" in text_of(browser, "#page"), PAGE_TIMEOUT_S)


def test_device_charts_have_a_point_per_telemetry_window(
    browser: webdriver.Chrome, base_url: str, fleet: ConsoleFleet
) -> None:
    device = fleet.device_with_telemetry()
    windows = sum(1 for b in fleet.batches if b.device_id == device)
    open_page(browser, base_url, f"#/device/{device}?hours=2")

    assert chart_points(browser, "requests") == windows
    assert chart_points(browser, "latency (ms)") == 3 * windows  # p50, p95, p99
    assert chart_points(browser, "confidence (mean)") == windows
    assert browser.find_elements("css selector", ".chart[data-title='requests'] canvas")  # drawn by uPlot


def test_a_rollout_is_paused_from_its_page(browser: webdriver.Chrome, base_url: str, fleet: ConsoleFleet) -> None:
    store = RolloutStore(fleet.hub.registry.db)
    assert store.load(ROLLOUT_ID).state == RolloutState.WAVE_RUNNING
    open_page(browser, base_url, f"#/rollout/{ROLLOUT_ID}")
    assert not browser.find_element("css selector", "button[data-command=resume]").is_enabled()

    browser.find_element("css selector", "button[data-command=pause]").click()

    assert wait_until(lambda: store.load(ROLLOUT_ID).state == RolloutState.PAUSED, PAGE_TIMEOUT_S)
    assert wait_until(lambda: text_of(browser, "#rollout-state") == "paused", PAGE_TIMEOUT_S)
    assert browser.execute_script("return !document.querySelector('button[data-command=resume]').disabled")
    assert "pause" in text_of(browser, "#rollout-status")  # the timeline shows the operator's pause
    assert console_errors(browser) == []


def test_an_api_error_shows_as_one_line(browser: webdriver.Chrome, base_url: str) -> None:
    browser.get("about:blank")
    browser.get(f"{base_url}/ui#/device/no-such-device")
    assert wait_until(lambda: error_line(browser), PAGE_TIMEOUT_S)
    line = error_line(browser)
    assert line.startswith("404") and "no-such-device" in line and "\n" not in line
    browser.get_log("browser")  # the failed fetch is logged by the browser itself: expected here
