"""The web page in headless Chromium: filter to stuck sagas, open one, force compensation with a token."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.e2e.conftest import watched_page
from tests.integration.conftest import ARTIFACTS
from tests.integration.harness import Scenario

pytestmark = pytest.mark.integration
TOKEN = "page-token-42"
HOSTILE = '<img src=x onerror="window.pwned=1">'


def test_stuck_saga_forced_to_compensate_from_the_page(make_scenario: Callable[..., Scenario], browser: Any) -> None:
    s = make_scenario(timeout="1s", confirm="60s")
    # Deadlines are not swept (one-hour sweep), so stalled orders stay stuck until someone acts.
    w = s.worker(SAGA_TRACKER_ACTION_TOKEN=TOKEN, SAGA_TRACKER_SWEEP_INTERVAL="3600").start()
    events = []
    for n in range(3):
        events += [s.event(t, f"ok-{n}") for t in ("OrderCreated", "PaymentAuthorized", "InventoryReserved", "ShipmentCreated")]
    events += [s.event("OrderCreated", "stuck-1"), s.event("OrderCreated", "stuck-2"), s.event("OrderCreated", HOSTILE)]
    events += [s.event("PaymentAuthorized", "stuck-2")]
    s.send(*events)
    w.wait_saga("stuck-2", lambda b: b["visible_status"] == "PENDING_INVENTORY")
    # Stuck once past their 1 s deadlines: wait_listed polls until the API lists them so.
    # The API first, so a slow worker under CI load fails here with its log, not as a page timeout.
    w.wait_listed(6)
    w.wait_listed(3, "stuck=true")

    page, errors = watched_page(browser, height=800)
    page.goto(w.base + "/#/sagas")
    page.wait_for_selector("#sagas tbody tr")
    rows = page.locator("#sagas tbody tr")
    page.wait_for_function("document.querySelectorAll('#sagas tbody tr').length === 6")
    # The hostile id is text, not markup.
    assert page.locator("#sagas tbody img").count() == 0
    assert page.get_by_text(HOSTILE, exact=True).count() == 1
    assert page.evaluate("window.pwned === undefined")
    page.screenshot(path=str(ARTIFACTS / "page-list.png"), full_page=True)

    # Keyboard: filter to stuck sagas.
    page.locator("#f-stuck").focus()
    page.keyboard.press("Space")
    page.locator("#filters button[type=submit]").focus()
    page.keyboard.press("Enter")
    page.wait_for_function("document.querySelectorAll('#sagas tbody tr').length === 3")
    shown = {rows.nth(i).locator("td").first.inner_text() for i in range(rows.count())}
    assert shown == {"stuck-1", "stuck-2", HOSTILE}
    assert "overdue" in page.locator("#sagas tbody").inner_text()

    page.get_by_role("link", name="stuck-2", exact=True).click()
    page.wait_for_selector("#detail:not([hidden]) #timeline li")
    assert page.locator("#d-status").inner_text().startswith("PENDING_INVENTORY")
    assert "overdue" in page.locator("#timeline").inner_text()

    # Without the token the action is refused and nothing changes.
    page.fill("#a-actor", "oncall-alice")
    page.fill("#a-reason", "inventory service is down, customer was told")
    page.get_by_role("button", name="Force compensation").click()
    page.wait_for_selector("#action-result.error")
    assert "refused" in page.locator("#action-result").inner_text()

    page.fill("#token", TOKEN)
    page.dispatch_event("#token", "change")
    page.get_by_role("button", name="Force compensation").click()
    page.wait_for_function("document.querySelector('#action-result').textContent.includes('queued')")
    # Live refresh shows the compensations the tracker emitted, newest completed step first.
    page.wait_for_function("document.querySelectorAll('#comps tbody tr').length === 2", timeout=15_000)
    comps = page.locator("#comps tbody").inner_text()
    assert comps.index("stuck-2:payment:compensate:1") < comps.index("stuck-2:order:compensate:1")
    assert page.locator("#d-status").inner_text().startswith("COMPENSATING")
    assert "forced_compensation" in page.locator("#events").inner_text()
    page.screenshot(path=str(ARTIFACTS / "page-detail.png"), full_page=True)
    emitted = s.kafka.read_json(s.topic("compensations"), lambda m: len(m) >= 2)
    assert [c["id"] for c in emitted] == ["stuck-2:payment:compensate:1", "stuck-2:order:compensate:1"]
    assert errors == []
