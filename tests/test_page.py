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
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, Request, expect, sync_playwright

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
SERVE = ("--trace", "user-reboot", "--speed", "30", "--start", "now")
"""user-reboot at 30x: Scheduled after 1 s, Started on its own after 31 s, over at 51 s. A test
that approves the event or watches its countdown has 31 s from the server's start (about 5 s
used on a loaded 2-core machine)."""
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
    """The page at url in a fresh browser context; fails the test on any script error and on
    any request the server would refuse (a body not sent as JSON, a foreign Origin)."""
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    errors: list[str] = []
    requests: list[Request] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("request", lambda request: requests.append(request))
    page.set_default_timeout(WAIT_MS)
    expect.set_options(timeout=WAIT_MS)
    try:
        page.goto(url)
        yield page
        assert errors == [], errors
        assert_sent_like_the_server_asks(requests, url)
    finally:
        context.close()


def assert_sent_like_the_server_asks(requests: list[Request], base: str) -> None:
    """Every body the page sent was JSON, and every Origin it sent was its own."""
    own = urlsplit(base)
    for request in requests:
        headers = request.all_headers()
        origin = headers.get("origin")
        if origin is not None:
            assert urlsplit(origin)[:2] == own[:2], (request.method, request.url, origin)
        if request.post_data_buffer is not None:
            mime = headers.get("content-type", "").partition(";")[0].strip()
            assert mime == "application/json", (
                request.method,
                request.url,
                headers.get("content-type"),
            )


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


def control_post(base: str, path: str) -> Any:
    """A control call from outside the page (no body): the page learns of it only by push."""
    request = urllib.request.Request(base + path, method="POST")
    with urllib.request.urlopen(request, timeout=5) as resp:
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


IMPORT = re.compile(
    r"""\b(?:import|export)\b\s*(?:[\w{},*\s]+?\s*from\s*)?\(?\s*["']([^"']+)["']"""
)
"""The module specifier of a static or dynamic import, or of a re-export."""
MODULE_MAX_LINES = 250


def imports_of(script: str) -> list[str]:
    return IMPORT.findall(script)


async def test_page_and_its_assets_are_served_and_nothing_else_of_the_package(
    aiohttp_client: Any, traces_dir: Path
) -> None:
    clock = FakeClock()
    client = await aiohttp_client(make_app(SessionRegistry(traces_dir, clock), clock=clock))
    page = await client.get("/")
    assert page.status == 200 and page.content_type == "text/html"
    assert page.headers["Cache-Control"] == "no-cache"
    html = await page.text()
    assert html == (STATIC_DIR / "index.html").read_text()
    assert '<link rel="stylesheet" href="/static/style.css">' in html
    for name in ASSETS:
        asset = await client.get(f"/static/{name}")
        assert asset.status == 200 and asset.headers["Cache-Control"] == "no-cache"
        assert await asset.read() == (STATIC_DIR / name).read_bytes()
    for private in ("/static/__init__.py", "/static/", "/static/../server.py", "/static/x.js"):
        assert (await client.get(private)).status == 404, private


async def test_page_is_loaded_as_es_modules_each_served_as_javascript(
    aiohttp_client: Any, traces_dir: Path
) -> None:
    """index.html loads one module script; what it imports, all of it relative (no CDN), is
    every .js served and nothing more, each as JavaScript (a browser refuses a module served
    as anything else) and each short enough to read."""
    clock = FakeClock()
    client = await aiohttp_client(make_app(SessionRegistry(traces_dir, clock), clock=clock))
    html = await (await client.get("/")).text()
    scripts = re.findall(r"<script\b[^>]*>", html)
    assert scripts == ['<script type="module" src="/static/main.js">'], scripts
    loaded: set[str] = set()
    todo = ["main.js"]
    while todo:
        name = todo.pop()
        if name in loaded:
            continue
        loaded.add(name)
        resp = await client.get(f"/static/{name}")
        assert resp.status == 200, name
        assert resp.content_type in ("text/javascript", "application/javascript"), name
        script = await resp.text()
        assert len(script.splitlines()) < MODULE_MAX_LINES, name
        for spec in imports_of(script):
            assert re.fullmatch(r"\./[\w-]+\.js", spec), f"{name} imports {spec!r}"
            todo.append(spec.removeprefix("./"))
    assert len(loaded) >= 5, loaded
    assert loaded == {name for name in ASSETS if name.endswith(".js")}


def test_the_import_pattern_finds_every_form_of_import() -> None:
    script = """import { a, b } from "./one.js";
import * as ns from './two.js';
import "./three.js";
import {
  c,
} from "./four.js";
const five = await import("./five.js");
export { six } from "./six.js";
export const seven = "./seven.js"; // "important" is not an import, nor is an export of a string
"""
    found = imports_of(script)
    assert found == ["./one.js", "./two.js", "./three.js", "./four.js", "./five.js", "./six.js"]


async def test_status_carries_the_server_wall_clock_the_page_counts_down_on(
    aiohttp_client: Any, traces_dir: Path
) -> None:
    clock = FakeClock()
    client = await aiohttp_client(make_app(SessionRegistry(traces_dir, clock), clock=clock))
    first = await (await client.get("/replay/sessions/default")).json()
    assert first["computed_at"] == clock.wall().isoformat()
    clock.advance(2.5)
    later = await (await client.get("/replay/sessions/default")).json()
    assert later["computed_at"] == clock.wall().isoformat() != first["computed_at"]


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


def test_page_starts_a_replay_and_shows_each_new_document_live(
    browser: Browser, traces_dir: Path
) -> None:
    """Virtual time moved from outside the page (the control API), then a short real run to
    the end: each new document reaches the page by push alone."""
    with serving(*SERVE, traces_dir=traces_dir) as base, opened(browser, base, 1280, 800) as page:
        expect(page.get_by_role("row", name=re.compile("live-migration"))).to_contain_text(
            "20m 30s"
        )
        page.get_by_role("button", name="Use trace live-migration").click()
        expect(page.get_by_label("Trace", exact=True)).to_have_value("live-migration")
        page.get_by_label("Session name").fill("fast")
        page.get_by_label("Custom speed").fill("200")
        expect(page.get_by_label("custom", exact=True)).to_be_checked()
        page.get_by_label("Clock starts").select_option("virtual")
        page.get_by_role("button", name="Start replay").click()

        expect(page.locator("#session-title")).to_have_text("fast")
        expect(page.get_by_label("Session", exact=True)).to_have_value("fast")
        expect(page.locator("#session-endpoint")).to_have_text(f"/s/fast{IMDS}")
        expect(page.locator("#session-meta")).to_contain_text("200x")
        history = page.locator("#history li[data-incarnation]")
        expect(history.first).to_have_attribute("data-incarnation", "1")
        for incarnation, offset in ((2, "30.0 s"), (3, "930.0 s")):  # live-migration's changes
            control_post(base, "/replay/sessions/fast/advance")
            expect(history.first).to_have_attribute("data-incarnation", str(incarnation))
            expect(page.locator("#document")).to_contain_text(
                f'"DocumentIncarnation": {incarnation}'
            )
            expect(page.locator("#position")).to_have_text(offset)
        expect(page.locator("#history")).to_contain_text("Started Freeze")

        # 30 trace seconds before the end, then 150 ms of real time at 200x to the last document.
        page.get_by_label("Seek to", exact=True).fill("1200")
        page.get_by_role("button", name="Seek to this offset").click()
        expect(page.locator("#position")).to_have_text("1200.0 s")
        page.get_by_role("button", name="Resume the replay").click()
        expect(history.first).to_have_attribute("data-incarnation", "4")
        expect(page.locator("#document")).to_contain_text('"DocumentIncarnation": 4')
        expect(page.locator("#session-state")).to_have_text("finished")
        expect(page.locator("#next-countdown")).to_have_text("none")
        expect(page.locator("#position")).to_have_text("1230.0 s")
        seen = history.evaluate_all("els => els.map(e => Number(e.dataset.incarnation))")
        assert seen == [4, 3, 2, 1], seen
        assert control_get(base, "/replay/sessions/default")["trace"] == "user-reboot"


EXTRAPOLATE = """async ([status, elapsed]) => {
    const clock = await import("/static/clock.js");
    return [clock.extrapolate(status, elapsed), clock.nextIn(status, elapsed)];
}"""


def test_page_moves_the_replay_on_from_the_numbers_the_server_sent(
    browser: Browser, traces_dir: Path
) -> None:
    """Between statuses the page shows position_s + elapsed * speed while running, held
    otherwise, capped at the end unless looping; the countdown runs down from in_s."""
    with serving(*SERVE, traces_dir=traces_dir) as base, opened(browser, base, 1280, 800) as page:
        status = control_get(base, "/replay/sessions/default")
        assert status["state"] == "running"

        def moved(elapsed: float, **change: Any) -> tuple[dict[str, Any], float | None]:
            shown, next_in = page.evaluate(EXTRAPOLATE, [{**status, **change}, elapsed])
            return shown, next_in

        nxt = {"offset_s": 930.0, "round": 0, "in_s": 14.0, "at": status["computed_at"]}
        common = {"position_s": 90.0, "speed": 60, "round": 0, "next_transition": nxt}
        common |= {"state": "running", "duration_s": 3600.0, "loop": False}
        assert moved(2.0, **common) == ({"round": 0, "offset_s": 210.0}, 12.0)
        assert moved(30.0, **common) == ({"round": 0, "offset_s": 1890.0}, -16.0)
        assert moved(30.0, **common | {"duration_s": 1000.0}) == (
            {"round": 0, "offset_s": 1000.0},
            -16.0,
        )
        looping = common | {"duration_s": 1000.0, "loop": True, "round": 2}
        assert moved(30.0, **looping) == ({"round": 3, "offset_s": 890.0}, -16.0)
        for held in ("paused", "virtual", "waiting", "finished"):
            assert moved(30.0, **common | {"state": held}) == ({"round": 0, "offset_s": 90.0}, None)
        unknown = common | {"next_transition": None}
        assert moved(1.0, **unknown) == ({"round": 0, "offset_s": 150.0}, None)


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
        held = control_get(base, "/replay/sessions/manual")["position_s"]
        expect(page.locator("#position")).to_have_text(f"{held:.1f} s")  # the server's, held
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
