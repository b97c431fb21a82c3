"""The fleet page at /fleet in a real browser (Debian's headless Chromium, Playwright).

A plain function: Playwright's sync API runs its own event loop. Waits are Playwright's
(expect), never sleeps. The fleet runs in virtual time, so it moves only when the page says.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect, sync_playwright

from tests.conftest import ROOT
from tests.serving import serving

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
WAIT_MS = 20_000
FD0 = ["web-0", "web-1", "web-2"]
FD1 = ["web-3", "web-4", "web-5"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium", pytrace=False)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield launched
        launched.close()


def fleet_file(tmp_path: Path) -> Path:
    text = '[[group]]\nname = "web"\ntrace = "live-migration"\ngap_s = 120\n'
    for i, name in enumerate(FD0 + FD1):
        text += f'[[vm]]\nname = "{name}"\naddress = "127.0.0.{40 + i}"\ngroup = "web"\n'
        text += f"fault_domain = {0 if name in FD0 else 1}\n"
    path = tmp_path / "fleet.toml"
    path.write_text(text)
    return path


def test_the_page_shows_the_fleet_by_fault_domain_and_approves_as_a_chosen_vm(
    browser: Browser, traces_dir: Path, tmp_path: Path
) -> None:
    args = ("--fleet", str(fleet_file(tmp_path)), "--speed", "60", "--start", "virtual")
    with serving(*args, traces_dir=traces_dir) as base:
        context = browser.new_context(viewport={"width": 1200, "height": 900})
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.set_default_timeout(WAIT_MS)
        expect.set_options(timeout=WAIT_MS)
        try:
            page.goto(base + "/fleet")
            for fd, names in ((0, FD0), (1, FD1)):
                domain = page.locator(f'.domain[data-fault-domain="{fd}"]')
                expect(domain.locator(".vm-name")).to_have_text(names)
            expect(page.locator(".vm")).to_have_count(6)
            expect(page.locator("#fleet-state")).to_have_text("virtual")

            page.click("#step")  # fault domain 0's freeze is Scheduled
            event = page.locator(".event")
            expect(event).to_have_count(1)
            expect(event.locator(".status")).to_have_text("Scheduled")
            expect(event.locator("td").nth(3)).to_have_text(", ".join(FD0))
            for name in FD0:
                expect(page.locator(f'.vm[data-vm="{name}"]')).to_have_attribute(
                    "data-state", "Scheduled"
                )
            for name in FD1:  # they see the event, it does not affect them
                expect(page.locator(f'.vm[data-vm="{name}"]')).to_have_attribute(
                    "data-state", "watching"
                )

            event.locator("select.approve-as").select_option("web-1")
            event.locator("button.approve").click()
            expect(event.locator(".status")).to_have_text("Started")
            for name in FD0:
                expect(page.locator(f'.vm[data-vm="{name}"]')).to_have_attribute(
                    "data-state", "Started"
                )
            expect(page.locator("#approvals li")).to_have_count(1)
            expect(page.locator("#approvals li")).to_contain_text("web-1 approved")
            # Someone else moves the fleet, with no document changing for 900 s: the page
            # hears it on the fleet's stream.
            for verb, body in (("speed", b'{"speed": 1}'), ("resume", None)):
                moved = urllib.request.Request(
                    f"{base}/replay/fleet/{verb}",
                    data=body,
                    method="POST",
                    headers={"Content-Type": "application/json"},
                )
                with urllib.request.urlopen(moved, timeout=5) as answer:
                    assert answer.status == 200
            expect(page.locator("#fleet-state")).to_have_text("running")
            expect(page.locator("#fleet-position")).to_contain_text("· 1x")
            (ROOT / "artifacts").mkdir(exist_ok=True)
            page.screenshot(path=str(ROOT / "artifacts" / "fleet-page.png"), full_page=True)
            assert errors == [], errors
        finally:
            context.close()
