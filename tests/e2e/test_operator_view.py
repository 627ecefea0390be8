"""The operator's view in headless Chromium: the flow diagram's counts, a stuck count opening
exactly those sagas, a batch retry over that filter, and a compensated saga's timeline."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest

from tests.e2e.conftest import watched_page
from tests.integration.conftest import ARTIFACTS
from tests.integration.harness import Scenario, Worker

pytestmark = pytest.mark.integration
TOKEN = "flow-token-7"
FLOW = ("OrderCreated", "PaymentAuthorized", "InventoryReserved", "ShipmentCreated")


def flow_text(page: Any, saga_type: str, step: str, label: str) -> str:
    link = page.locator(f'#flows section[aria-label="{saga_type}"] g[data-step="{step}"] a[data-count="{label}"]')
    return str(link.text_content())  # SVG: no innerText


def opened(page: Any, w: Worker) -> None:
    page.goto(w.base + "/")
    page.wait_for_selector('#flows section[aria-label="order"] svg')


def test_the_flow_diagram_counts_each_step_and_a_stuck_count_opens_those_sagas_for_a_batch_retry(
    make_scenario: Callable[..., Scenario], browser: Any
) -> None:
    s = make_scenario(timeout="1s", confirm="300s")
    # Deadlines are not swept (one-hour sweep): the orders waiting for payment stay stuck.
    w = s.worker(SAGA_TRACKER_ACTION_TOKEN=TOKEN, SAGA_TRACKER_SWEEP_INTERVAL="3600").start()
    events = []
    for n in range(3):
        events += [s.event(t, f"done-{n}") for t in FLOW]
    events += [s.event("OrderCreated", f"stuck-{n}") for n in range(2)]
    for n in range(2):  # inventory fails; the services undo payment and order themselves
        events += [s.event(t, f"oos-{n}") for t in ("OrderCreated", "PaymentAuthorized", "OutOfStock")]
        events += [s.event(t, f"oos-{n}") for t in ("PaymentRefunded", "OrderCancelled")]
    events += [s.event("ApprovalRequested", "approval-0", field="request_id")]
    audit = orjson.loads(s.event("OrderCreated", "done-0")[2]) | {"type": "OrderAudited", "id": "audit-1"}
    events += [(s.prefix + "orders", b"done-0", orjson.dumps(audit), [])]  # a type no definition names
    s.send(*events)
    w.wait_listed(2, "stuck=true")
    w.wait_listed(2, "status=compensated")
    w.wait_listed(3, "status=completed")

    page, errors = watched_page(browser)
    page.on("dialog", lambda d: d.accept())
    opened(page, w)
    page.wait_for_function(
        """document.querySelector('#flows section[aria-label="order"] g[data-step="payment"] a[data-count="stuck"]')
           ?.textContent === 'stuck 2'"""
    )
    expected: dict[str, dict[str, str]] = {
        "order": {"pending": "0", "stuck": "0", "failed": "0", "compensated": "0"},
        "payment": {"pending": "2", "stuck": "2", "failed": "0", "compensated": "0"},
        "inventory": {"pending": "0", "stuck": "0", "failed": "2", "compensated": "2"},
        "shipping": {"pending": "0", "stuck": "0", "failed": "0", "compensated": "0"},  # zero-count step, drawn
    }
    for step, counts in expected.items():
        for label, figure in counts.items():
            assert flow_text(page, "order", step, label) == f"{label} {figure}", (step, label)
    assert flow_text(page, "approval", "approval", "pending") == "pending 1"
    drift = page.locator('#flows p[aria-label="Drift of order from its definition"]').inner_text()
    assert "undeclared event types 1" in drift and "OrderAudited 1" in drift, drift
    assert page.locator('#flows p[aria-label="Drift of approval from its definition"]').inner_text() == (
        "no drift from the definition"
    )
    shipping = page.locator('#flows section[aria-label="order"] g[data-step="shipping"]')
    assert "p50" in str(shipping.text_content()) and "ShipmentCancelled" in str(shipping.text_content())
    assert "t-stuck" in (page.locator('#flows section[aria-label="order"] g[data-step="payment"]').get_attribute("class") or "")
    page.screenshot(path=str(ARTIFACTS / "page-flow.png"), full_page=True)

    # Keyboard: the stuck count of payment is a link; Enter opens exactly those sagas.
    stuck = page.locator('#flows section[aria-label="order"] g[data-step="payment"] a[data-count="stuck"]')
    stuck.focus()
    page.keyboard.press("Enter")
    page.wait_for_selector("#list-view:not([hidden])")
    page.wait_for_function("document.querySelectorAll('#sagas tbody tr').length === 2")
    shown = sorted(page.locator("#sagas tbody tr td:first-child").all_inner_texts())
    assert shown == ["stuck-0", "stuck-1"]
    assert page.evaluate("location.hash") == "#/sagas?saga_type=order&at=payment&stuck=true"

    # A batch retry over that filter, with the token: counted, confirmed, watched.
    page.fill("#token", TOKEN)
    page.dispatch_event("#token", "change")
    page.wait_for_function("document.querySelectorAll('#sagas tbody tr').length === 2")
    page.select_option("#b-action", "retry_timeout")
    page.fill("#b-actor", "oncall-carol")
    page.fill("#b-reason", "payment service recovered")
    page.click("#b-count")
    page.wait_for_function("document.querySelector('#b-result').textContent.includes('2 saga(s) match')")
    page.click("#b-run")
    page.wait_for_function("document.querySelector('#b-result').textContent.includes('queued for 2')")
    page.wait_for_function(
        """(() => { const c = document.querySelectorAll('#b-status tbody td');
                   return c.length > 5 && c[3].textContent === '2' && c[5].textContent === '0'; })()""",
        timeout=30_000,
    )
    batch = page.locator("#b-status tbody td").first.inner_text()
    page.screenshot(path=str(ARTIFACTS / "page-batch.png"), full_page=True)
    for n in range(2):  # in each saga's history: who, why and the batch
        saga = w.wait_saga(f"stuck-{n}", lambda b: b["status"] == "compensating")
        entry = next(h for h in saga["history"] if h["id"] == f"{batch}:stuck-{n}")
        assert entry["outcome"] == "timeout_retried" and entry["detail"] == "by oncall-carol: payment service recovered"
    # The diagram follows: nothing stuck at payment, both now went wrong there.
    page.goto(w.base + "/#/")
    page.wait_for_function(
        """document.querySelector('#flows section[aria-label="order"] g[data-step="payment"] a[data-count="failed"]')
           ?.textContent === 'failed 2'"""
    )
    assert flow_text(page, "order", "payment", "pending") == "pending 0"
    assert errors == []


def test_the_timeline_draws_a_compensated_sagas_attempts_in_order(make_scenario: Callable[..., Scenario], browser: Any) -> None:
    s = make_scenario(timeout="1s", confirm="2s")
    w = s.worker(SAGA_TRACKER_SWEEP_INTERVAL="0.5").start()
    s.send(s.event("OrderCreated", "late-undo"), s.event("PaymentAuthorized", "late-undo"))
    # Inventory stalls: attempt 1 of both undos, unanswered; attempt 2 two seconds later.
    w.wait_saga("late-undo", lambda b: sum(o["kind"] == "compensation" for o in b["outbox"]) >= 4, timeout=30)
    s.send(s.event("PaymentRefunded", "late-undo"), s.event("OrderCancelled", "late-undo"))
    w.wait_saga("late-undo", lambda b: b["status"] == "compensated")

    page, errors = watched_page(browser)
    page.goto(w.base + "/#/saga/late-undo")
    page.wait_for_selector("#tl svg .tl-mark")
    attempts = page.locator('#tl .tl-mark[data-kind="attempt"]')
    labels = attempts.evaluate_all("ms => ms.map(m => m.getAttribute('aria-label'))")
    payment = [label for label in labels if label.startswith("payment:")]
    assert [label.split(" (")[0] for label in payment] == [
        "payment: compensation attempt 1",
        "payment: compensation attempt 2",
    ], labels
    xs = attempts.evaluate_all("ms => ms.map(m => Number(m.querySelector('circle').getAttribute('cx')))")
    assert xs == sorted(xs)  # drawn in time order, left to right
    assert page.locator('#tl .tl-mark[data-kind="timeout"]').count() >= 1
    assert page.locator('#tl .tl-mark[data-kind="confirmed"]').count() == 2
    # Focus shows the record as text.
    attempts.first.focus()
    assert "compensation attempt 1" in page.locator("#tl-info").inner_text()
    page.screenshot(path=str(ARTIFACTS / "page-timeline.png"), full_page=True)
    assert errors == []
