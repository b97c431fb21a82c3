"""The control page at / in a real browser: Debian's headless Chromium driven by Playwright.

The tests are plain functions: Playwright's sync API runs its own event loop and cannot run
inside pytest-asyncio's. Waits are Playwright's (expect / wait_for_function), never sleeps.
Screenshots go to artifacts/ (gitignored; CI keeps them).
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from replay.clock import FakeClock
from replay.playback.registry import SessionRegistry
from replay.server.app import make_app
from replay.server.page import ASSETS, STATIC_DIR
from tests.conftest import ROOT
from tests.serving import serving

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / "artifacts"
IMDS = "/metadata/scheduledevents?api-version=2020-07-01"
WAIT_MS = 20_000
SERVE = ("--trace", "user-reboot", "--speed", "60", "--start", "now")
"""user-reboot at 60x: Scheduled after 0.5 s, Started on its own after 15.5 s, over at 25.5 s."""
CONTROLS = "button, input, select, [role=progressbar]"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser test needs Debian's chromium package "
            "(apt-get install -y chromium)",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@contextmanager
def opened(browser: Browser, url: str, width: int, height: int) -> Iterator[Page]:
    """The page at url in a fresh browser context; fails the test on any script error."""
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.set_default_timeout(WAIT_MS)
    expect.set_options(timeout=WAIT_MS)
    try:
        page.goto(url)
        yield page
        assert errors == [], errors
    finally:
        context.close()


def screenshot(page: Page, name: str, *, full_page: bool = False) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / name, full_page=full_page)


def imds_get(base: str, path: str = IMDS) -> dict[str, Any]:
    """What a VM polling the endpoint sees."""
    request = urllib.request.Request(base + path, headers={"Metadata": "true"})
    with urllib.request.urlopen(request, timeout=5) as resp:
        doc: dict[str, Any] = json.loads(resp.read())
        return doc


def control_get(base: str, path: str) -> Any:
    with urllib.request.urlopen(base + path, timeout=5) as resp:
        return json.loads(resp.read())


def seconds(countdown: str) -> float:
    """Seconds in a countdown the page shows: "in 14.9 s", "in 2m 05s" or "in 1h 02m"."""
    match = re.fullmatch(r"in (?:(\d+)h )?(?:(\d+)m )?(\d+(?:\.\d+)?)(s| s|m)", countdown.strip())
    assert match, f"not a countdown: {countdown!r}"
    hours, minutes, last, unit = match.groups()
    if unit == "m":  # "1h 02m": the last number counts minutes
        return int(hours or 0) * 3600 + float(last) * 60
    return int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(last)


def assert_moves_down(page: Page, selector: str) -> None:
    """The countdown in selector shows a smaller time a moment later."""
    shown = page.locator(selector).first
    expect(shown).to_have_text(re.compile(r"^in \d"))
    first = shown.inner_text()
    page.wait_for_function(
        "([selector, first]) => document.querySelector(selector).textContent !== first",
        arg=[selector, first],
    )
    assert seconds(shown.inner_text()) < seconds(first)


def assert_controls_labelled(page: Page) -> None:
    """Every control has an accessible name (aria-label, <label for> or its text)."""
    controls = page.locator(CONTROLS)
    assert controls.count() > 15
    for i in range(controls.count()):
        expect(controls.nth(i)).to_have_accessible_name(re.compile(r"\w"))


async def test_page_and_its_assets_are_served_and_nothing_else_of_the_package(
    aiohttp_client: Any, traces_dir: Path
) -> None:
    clock = FakeClock()
    client = await aiohttp_client(make_app(SessionRegistry(traces_dir, clock), clock=clock))
    page = await client.get("/")
    assert page.status == 200 and page.content_type == "text/html"
    html = await page.text()
    assert html == (STATIC_DIR / "index.html").read_text()
    for name in ASSETS:
        assert f'"/static/{name}"' in html
        asset = await client.get(f"/static/{name}")
        assert asset.status == 200 and asset.headers["Cache-Control"] == "no-cache"
        assert await asset.read() == (STATIC_DIR / name).read_bytes()
    script = await client.get("/static/app.js")
    assert "javascript" in script.content_type  # module scripts need a JavaScript MIME type
    for private in ("/static/__init__.py", "/static/", "/static/../server.py"):
        assert (await client.get(private)).status == 404, private


def test_page_shows_the_served_event_counts_down_and_approves_it_like_a_vm(
    browser: Browser, traces_dir: Path
) -> None:
    with serving(*SERVE, traces_dir=traces_dir) as base, opened(browser, base, 1280, 800) as page:
        card = page.locator(".event").first
        expect(card).to_be_visible()
        served = imds_get(base)["Events"]
        assert [e["EventStatus"] for e in served] == ["Scheduled"]
        event_id = served[0]["EventId"]
        card = page.locator(f'.event[data-event-id="{event_id}"]')
        expect(card.locator(".badge")).to_have_text("Scheduled")
        expect(page.locator("#document")).to_contain_text(event_id)
        expect(page.locator("#session-title")).to_have_text("default")
        expect(page.locator("#session-meta")).to_contain_text("user-reboot")

        assert_moves_down(page, "#next-countdown")
        assert_moves_down(page, ".nb-countdown")
        assert_controls_labelled(page)
        screenshot(page, "page-1280x800.png")

        with page.expect_request(
            lambda r: r.method == "POST" and "/metadata/scheduledevents" in r.url
        ) as posted:
            card.get_by_role("button", name="Approve").click()
        request = posted.value
        assert request.post_data_json == {"StartRequests": [{"EventId": event_id}]}
        assert request.headers["metadata"] == "true"
        response = request.response()
        assert response is not None and response.status == 200

        expect(card.locator(".badge")).to_have_text("Started")
        expect(page.locator("#document")).to_contain_text('"EventStatus": "Started"')
        served = imds_get(base)["Events"]
        assert [(e["EventId"], e["EventStatus"]) for e in served] == [(event_id, "Started")]
        # Started because of the click, not because the trace got there on its own (930 s).
        approvals = control_get(base, "/replay/sessions/default")["approvals"]
        assert [a["event_id"] for a in approvals] == [event_id]
        assert approvals[0]["offset_s"] < 930
        expect(card).to_contain_text("approved at offset")
        screenshot(page, "page-1280x800-approved.png", full_page=True)


def test_page_starts_a_fast_replay_and_shows_each_new_document_live(
    browser: Browser, traces_dir: Path
) -> None:
    with serving(*SERVE, traces_dir=traces_dir) as base, opened(browser, base, 1280, 800) as page:
        expect(page.get_by_role("row", name=re.compile("live-migration"))).to_contain_text(
            "20m 30s"
        )
        page.get_by_role("button", name="Use trace live-migration").click()
        expect(page.get_by_label("Trace", exact=True)).to_have_value("live-migration")
        page.get_by_label("Session name").fill("fast")
        page.get_by_label("Custom speed").fill("200")  # 1230 s of trace in 6.2 s
        expect(page.get_by_label("custom", exact=True)).to_be_checked()
        page.get_by_role("button", name="Start replay").click()

        expect(page.locator("#session-title")).to_have_text("fast")
        expect(page.get_by_label("Session", exact=True)).to_have_value("fast")
        expect(page.locator("#session-endpoint")).to_have_text(f"/s/fast{IMDS}")
        history = page.locator("#history li[data-incarnation]")
        expect(history.first).to_have_attribute("data-incarnation", "4")
        seen = [int(i) for i in history.evaluate_all("els => els.map(e => e.dataset.incarnation)")]
        assert seen == sorted(seen, reverse=True) and {3, 4} <= set(seen), seen
        expect(page.locator("#history")).to_contain_text("Started Freeze")
        expect(page.locator("#document")).to_contain_text('"DocumentIncarnation": 4')
        expect(page.locator("#session-state")).to_have_text("finished")
        expect(page.locator("#next-countdown")).to_have_text("none")
        assert control_get(base, "/replay/sessions/default")["trace"] == "user-reboot"


def test_page_steps_seeks_resumes_pauses_and_stops_a_session(
    browser: Browser, traces_dir: Path
) -> None:
    with serving(*SERVE, traces_dir=traces_dir) as base, opened(browser, base, 1280, 800) as page:
        expect(page.get_by_label("Trace", exact=True)).to_contain_text("spot-eviction")
        page.get_by_label("Trace", exact=True).select_option("spot-eviction")
        page.get_by_label("Session name").fill("manual")
        page.get_by_label("1x").check()
        page.get_by_label("Clock starts").select_option("virtual")
        page.get_by_role("button", name="Start replay").click()
        state = page.locator("#session-state")
        expect(state).to_have_text("virtual")
        expect(page.locator("#events")).to_contain_text("No events")
        expect(page.get_by_role("button", name="Pause the replay")).to_be_disabled()

        page.get_by_role("button", name="Step to the next transition").click()
        expect(page.locator(".event .badge")).to_have_text("Scheduled")
        expect(page.locator("#position")).to_have_text("30.0 s")
        expect(page.locator(".nb-countdown")).to_have_text("virtual time")

        page.get_by_label("Seek to", exact=True).fill("60")
        page.get_by_role("button", name="Seek to this offset").click()
        expect(page.locator(".event .badge")).to_have_text("Started")
        expect(page.locator("#timeline")).to_have_attribute("aria-valuenow", "60")

        page.get_by_role("button", name="Resume the replay").click()
        expect(state).to_have_text("running")
        assert_moves_down(page, "#next-countdown")  # 60 s to the end at 1x
        page.get_by_role("button", name="Pause the replay").click()
        expect(state).to_have_text("paused")
        page.get_by_label("Speed", exact=True).fill("dev")
        page.get_by_role("button", name="Set the replay speed").click()
        expect(page.locator("#session-meta")).to_contain_text("60x")
        assert control_get(base, "/replay/sessions/manual")["speed"] == 60

        playbook = '[{"from_s": 0, "to_s": 120, "status": 503}]'
        page.get_by_label("Windows in trace seconds (JSON)").fill(playbook)
        page.get_by_role("button", name="Load this fault playbook into the session").click()
        expect(page.locator("#faults-count")).to_have_text("1 window(s), 0 injected")
        assert control_get(base, "/replay/sessions/manual")["faults"]["windows"] == 1
        page.get_by_role("button", name="Remove the fault playbook").click()
        expect(page.locator("#faults-count")).to_have_text("none")

        page.get_by_role("button", name="Stop the session").click()
        expect(page.locator("#session-title")).to_have_text("default")
        names = [s["name"] for s in control_get(base, "/replay/sessions")]
        assert names == ["default"]
        expect(page.get_by_label("Session", exact=True).locator("option")).to_have_count(1)


def test_page_at_phone_width_shows_labelled_controls_without_sideways_scrolling(
    browser: Browser, traces_dir: Path
) -> None:
    with serving(*SERVE, traces_dir=traces_dir) as base, opened(browser, base, 390, 844) as page:
        expect(page.locator(".event .badge")).to_have_text("Scheduled")
        for name in (
            "Pause the replay",
            "Resume the replay",
            "Step to the next transition",
            "Stop the session",
            "Seek to this offset",
            "Set the replay speed",
            "Approve",
            "Start replay",
        ):
            button = page.get_by_role("button", name=name)
            expect(button).to_be_visible()
            box = button.bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, name
        for label in ("Session", "Seek to", "Speed", "Trace", "Session name", "Custom speed"):
            expect(page.get_by_label(label, exact=True)).to_be_visible()
        assert_controls_labelled(page)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        screenshot(page, "page-390.png")
        screenshot(page, "page-390-full.png", full_page=True)
