"""The HTTP API on two real workers: every endpoint, filters, pagination, errors, actions, OpenAPI."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator

from tests.integration.harness import Scenario, Worker
from tracker.demo.runner import get_json

pytestmark = pytest.mark.integration
TOKEN = "act-0123456789"


def validator(spec: dict[str, Any], name: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": f"#/components/schemas/{name}", "components": spec["components"]})


def check(spec: dict[str, Any], name: str, body: Any) -> Any:
    errors = sorted(validator(spec, name).iter_errors(body), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors[:5]]
    return body


def post(w: Worker, path: str, body: Any, token: str | None = TOKEN, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(w.base + path, data=data, method="POST", headers=headers or {})
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


def query(w: Worker, **params: str) -> tuple[int, Any]:
    return w.get("/sagas?" + urllib.parse.urlencode(params))


def all_pages(w: Worker, **params: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(50):
        status, body = query(w, **params, **({"cursor": cursor} if cursor else {}))
        assert status == 200, body
        items += body["items"]
        cursor = body["next_cursor"]
        if not cursor:
            return items
    raise AssertionError("pagination did not end")


def wait_for(check_fn: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check_fn():
            return
        time.sleep(0.3)
    raise AssertionError("condition not met in time")


@pytest.fixture
def two_workers(make_scenario: Callable[..., Scenario]) -> tuple[Scenario, Worker, Worker]:
    # Deadlines are never swept here (one-hour sweep): running orders become "stuck".
    s = make_scenario(timeout="2s", confirm="60s")
    env = {"SAGA_TRACKER_ACTION_TOKEN": TOKEN, "SAGA_TRACKER_SWEEP_INTERVAL": "3600"}
    w1, w2 = s.worker("w1", **env).start(), s.worker("w2", **env).start()
    wait_for(
        lambda: bool(w1.get("/readyz")[1].get("active_partitions")) and bool(w2.get("/readyz")[1].get("active_partitions")),
        timeout=40,
    )
    events = []
    for n in range(6):
        events += [s.event(t, f"c-{n}") for t in ("OrderCreated", "PaymentAuthorized", "InventoryReserved", "ShipmentCreated")]
        events += [s.event("OrderCreated", f"r-{n}")]
    for n in range(4):
        events += [s.event("OrderCreated", f"f-{n}"), s.event("PaymentDeclined", f"f-{n}"), s.event("OrderCancelled", f"f-{n}")]
        events += [s.event("ApprovalRequested", f"a-{n}", field="request_id")]
    s.send(*events)

    def settled() -> bool:
        status, body = w1.get("/sagas/stats")
        return status == 200 and body["counts"] == {
            "order": {"completed": 6, "running": 6, "compensated": 4},
            "approval": {"running": 4},
        }

    wait_for(settled, timeout=60)
    return s, w1, w2


def test_api_over_two_workers(two_workers: tuple[Scenario, Worker, Worker]) -> None:
    _, w1, w2 = two_workers
    status, spec = w1.get("/openapi.json")
    assert status == 200 and spec["openapi"].startswith("3.1")
    all_ids = {f"{p}-{n}" for p, k in (("c", 6), ("r", 6), ("f", 4), ("a", 4)) for n in range(k)}

    # Each worker owns some of the sagas, and answers for all of them.
    local = [len(w.get("/internal/sagas?limit=500")[1]) for w in (w1, w2)]
    assert all(n > 0 for n in local) and sum(local) == len(all_ids)
    for saga_id in sorted(all_ids):
        for w in (w1, w2):
            status, body = w.get(f"/sagas/{saga_id}")
            assert status == 200, body
            check(spec, "Saga", body)
    assert w2.get("/sagas/c-1")[1]["visible_status"] == "COMPLETED"
    assert w1.get("/sagas/r-1")[1]["awaiting"]["events"] == ["PaymentAuthorized"]

    # Lists cover both workers, paginate with a cursor, in order.
    for w in (w1, w2):
        items = all_pages(w, limit="4")
        assert sorted(i["saga_id"] for i in items) == sorted(all_ids)
        keys = [(i["updated_at"], i["saga_id"]) for i in items]
        assert keys == sorted(keys, reverse=True)
    by_id = all_pages(w2, sort="saga_id", limit="7")
    assert [i["saga_id"] for i in by_id] == sorted(all_ids)
    status, page = query(w1, limit="3")
    check(spec, "SagaList", page)
    assert len(page["items"]) == 3 and page["next_cursor"] and not page["partial"]

    # Filters.
    def ids(**params: str) -> set[str]:
        return {i["saga_id"] for i in all_pages(w2, **params)}

    assert ids(saga_type="approval") == {f"a-{n}" for n in range(4)}
    assert ids(status="completed") == {f"c-{n}" for n in range(6)}
    assert ids(status="compensated") == {f"f-{n}" for n in range(4)}
    assert ids(step="payment") == {f"r-{n}" for n in range(6)}
    assert ids(step="approval") == {f"a-{n}" for n in range(4)}
    wait_for(lambda: ids(stuck="true") == {f"r-{n}" for n in range(6)})  # past their 2 s deadline; parked ones never are
    assert ids(key="c-3") == {"c-3"}
    assert ids(updated_since=str(time.time() + 3600)) == set()
    assert ids(updated_since="2020-01-01T00:00:00Z", saga_type="order", status="running") == {f"r-{n}" for n in range(6)}

    # Stats: fleet-wide counts, stuck, oldest in flight per step, lag of both workers.
    status, stats = w2.get("/sagas/stats")
    check(spec, "Stats", stats)
    assert stats["stuck"] == {"order": 6} and len(stats["workers"]) == 2
    assert stats["oldest_in_flight_seconds"]["order"]["payment"] > 2
    assert set(stats["oldest_in_flight_seconds"]["approval"]) == {"approval"}
    # The flow per step, added up over both workers: every step listed, zeros included.
    flow = stats["flow"]["order"]
    assert list(flow) == ["order", "payment", "inventory", "shipping"]
    assert {k: flow["payment"][k] for k in ("pending", "stuck", "failed", "compensated")} == {
        "pending": 6,
        "stuck": 6,
        "failed": 4,
        "compensated": 4,
    }
    assert flow["inventory"]["pending"] == flow["inventory"]["failed"] == 0
    assert flow["shipping"]["completed"] == 6 and flow["shipping"]["p50_seconds"] is not None
    assert stats["flow"]["approval"]["approval"]["pending"] == 4 and stats["flow"]["approval"]["approval"]["stuck"] == 0
    # Each count lists exactly those sagas.
    assert ids(saga_type="order", failed_step="payment") == {f"f-{n}" for n in range(4)}
    assert ids(saga_type="order", at="payment", stuck="true") == {f"r-{n}" for n in range(6)}

    # Errors: JSON, right status, the parameter named, no stack trace.
    status, body = w1.get("/sagas/nobody")
    assert status == 404 and check(spec, "Error", body)["error"] == "not_found"
    for params, parameter in [
        ({"status": "sleeping"}, "status"),
        ({"limit": "0"}, "limit"),
        ({"limit": "x"}, "limit"),
        ({"sort": "colour"}, "sort"),
        ({"cursor": "!!"}, "cursor"),
        ({"stuck": "maybe"}, "stuck"),
        ({"saga_type": "pizza"}, "saga_type"),
        ({"updated_since": "soon"}, "updated_since"),
        ({"colour": "red"}, "colour"),
    ]:
        status, body = query(w1, **params)
        assert status == 400 and check(spec, "Error", body)["parameter"] == parameter, (params, body)
        assert "Traceback" not in body["message"]
    for path, code in (("/no/such/path", 404), ("/sagas/a%2Fb%20%3Cb%3E", 404)):
        status, body = w1.get(path)
        assert status == code and check(spec, "Error", body)["error"] == "not_found"
    assert "'a/b <b>'" in w1.get("/sagas/a%2Fb%20%3Cb%3E")[1]["message"]
    status, body = post(w1, "/sagas/c-1", {})
    assert status == 405 and check(spec, "Error", body)["error"] == "method_not_allowed"
    for path, name in (("/healthz", "Alive"), ("/readyz", "Ready")):
        for w in (w1, w2):
            status, body = w.get(path)
            assert status == 200 and check(spec, name, body)


def test_operator_actions(two_workers: tuple[Scenario, Worker, Worker]) -> None:
    s, w1, w2 = two_workers
    spec = w1.get("/openapi.json")[1]
    action = {"action": "force_compensation", "actor": "alice", "reason": "customer cancelled by phone"}
    before = w1.get("/sagas/r-0")[1]
    for token in (None, "wrong-token", TOKEN[:-1]):
        status, body = post(w1, "/sagas/r-0/actions", action, token=token)
        assert status == 401 and check(spec, "Error", body)["error"] == "unauthorized"
    time.sleep(1)
    assert w1.get("/sagas/r-0")[1]["history"] == before["history"]  # refused actions changed nothing
    for body, parameter in [
        ({"action": "launch", "actor": "a"}, "action"),
        ({"action": "resolve"}, "actor"),
        ({"action": "extend_deadline", "actor": "a", "seconds": -1}, "seconds"),
        ({"action": "force_compensation", "actor": "a"}, "reason"),
        (b"[1]", "body"),
        (b"{", "body"),
        ({"action": 5, "actor": "a"}, "action"),
        ({"action": "resolve", "actor": ["a"], "reason": "r"}, "actor"),
        ({"action": "extend_deadline", "actor": "a", "seconds": "600"}, "seconds"),
        ({"action": "resolve", "actor": "a", "reason": 42}, "reason"),
    ]:
        status, err = post(w2, "/sagas/r-0/actions", body)
        assert status == 400 and err["parameter"] == parameter, (body, err)
    huge = json.dumps({**action, "reason": "x" * 200_000}).encode()
    status, err = post(w1, "/sagas/r-0/actions", huge)
    assert status == 413 and err["error"] == "payload_too_large" and err["parameter"] == "body", err
    status, err = post(w1, "/sagas/nobody/actions", action)
    assert status == 404

    # Accepted by either worker, applied once however often it is retried.
    for w in (w1, w2):
        status, body = post(w, "/sagas/r-0/actions", action, headers={"Idempotency-Key": "call-42"})
        assert status == 202 and check(spec, "ActionAccepted", body)["id"] == "action:call-42"
    saga = w2.wait_saga("r-0", lambda b: b["status"] == "compensating")
    forced = [h for h in saga["history"] if h["outcome"] == "forced_compensation"]
    assert len(forced) == 1 and "alice" in forced[0]["detail"] and "customer cancelled" in forced[0]["detail"]
    comps = s.kafka.read_json(s.topic("compensations"), lambda m: len(m) >= 1)
    assert [c["id"] for c in comps] == ["r-0:order:compensate:1"] and "forced by alice" in comps[0]["reason"]

    # An action that does not fit the saga's state is recorded as rejected, not applied.
    status, _ = post(w1, "/sagas/c-0/actions", {"action": "resolve", "actor": "bob", "reason": "done by hand"})
    assert status == 202
    done = w1.wait_saga("c-0", lambda b: b["history"][-1]["outcome"] == "rejected")
    assert done["status"] == "completed"
    status, _ = post(w2, "/sagas/r-1/actions", {"action": "extend_deadline", "actor": "bob", "seconds": 600})
    extended = w2.wait_saga("r-1", lambda b: b["history"][-1]["outcome"] == "deadline_extended")
    assert extended["deadline"]["due"] > time.time() + 500


def test_tokens_protect_reads_and_disable_actions(scenario: Scenario) -> None:
    s = scenario
    w = s.worker(SAGA_TRACKER_READ_TOKEN="read-secret").start()
    s.send(s.event("OrderCreated", "t/2 <b>"), s.event("OrderCreated", "t-1"))
    for path in ("/sagas", "/sagas/stats", "/sagas/t-1"):
        status, body = w.get(path)
        assert status == 401 and body["error"] == "unauthorized"
    req = urllib.request.Request(w.base + "/sagas/t-1", headers={"Authorization": "Bearer read-secret"})
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                assert orjson.loads(resp.read())["saga_id"] == "t-1"
                break
        except urllib.error.HTTPError as exc:
            assert exc.code == 404 and time.monotonic() < deadline
            time.sleep(0.3)
    odd = urllib.request.Request(w.base + "/sagas/t%2F2%20%3Cb%3E", headers={"Authorization": "Bearer read-secret"})
    with urllib.request.urlopen(odd, timeout=5) as resp:  # an id with a path separator and markup
        assert orjson.loads(resp.read())["saga_id"] == "t/2 <b>"
    status, body = post(w, "/sagas/t-1/actions", {"action": "resolve", "actor": "a", "reason": "r"}, token="read-secret")
    assert status == 403 and body["error"] == "actions_disabled"
    assert get_json(w.base + "/healthz")[0] == 200 and get_json(w.base + "/metrics")[0] == 200
    assert "read-secret" not in w.log.read_text()  # tokens are never logged


def test_fuzzed_paths_and_query_strings_answer_json_never_a_crash(scenario: Scenario) -> None:
    """Arbitrary saga ids (separators, HTML, non-ASCII, 10,000 characters) and query strings."""
    import random

    w = scenario.worker().start()
    weird = ["a/b", "../../etc/passwd", "<img src=x onerror=alert(1)>", "x" * 10_000, "%00", "ü🙂", "stats/x", " ", "?"]
    rng = random.Random(11)
    alphabet = "abc/%?#&=.<>\"' \\\x00\x7fü🙂-_"
    texts = weird + ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40))) for _ in range(80)]
    for text in texts:
        quoted = urllib.parse.quote(text, safe="")
        for path in (f"/sagas/{quoted}", f"/sagas?key={quoted}&status={quoted}", f"/sagas?limit={quoted}", f"/{quoted}"):
            status, body = get(w, path)
            assert status in (200, 400, 404, 405), (path, status, body)
            if len(path) > 8000:  # aiohttp refuses request lines over 8190 bytes, before any view
                assert status == 400
            elif status >= 400:
                assert isinstance(body, dict) and body.get("error") and "Traceback" not in str(body), (path, body)
    assert w.alive()


def get(w: Worker, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(w.base + path, timeout=10) as resp:
            raw = resp.read()
            return resp.status, orjson.loads(raw) if resp.headers.get_content_type() == "application/json" else raw
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, orjson.loads(raw)
        except orjson.JSONDecodeError:
            return exc.code, raw


def test_definitions_describe_every_saga_type_as_the_tracker_reads_it(scenario: Scenario) -> None:
    s = scenario
    w = s.worker(SAGA_TRACKER_READ_TOKEN="read-secret").start()
    spec = w.get("/openapi.json")[1]
    req = urllib.request.Request(w.base + "/definitions")
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(req, timeout=10)
    assert denied.value.code == 401  # the read token guards it like every read
    req = urllib.request.Request(w.base + "/definitions", headers={"Authorization": "Bearer read-secret"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        body = check(spec, "Definitions", orjson.loads(resp.read()))
    by_name = {d["name"]: d for d in body["definitions"]}
    order, approval = by_name["order"], by_name["approval"]
    assert [x["name"] for x in order["steps"]] == ["order", "payment", "inventory", "shipping"]  # the definition's order
    assert order["start"] == "OrderCreated" and order["current"] and order["topics"][0] == s.prefix + "orders"
    payment = order["steps"][1]
    assert payment["failed_by"] == ["PaymentDeclined"] and payment["timeout"] == 4.0 and payment["status"] == "PENDING_PAYMENT"
    assert payment["compensation"] == {"emit": "RefundPayment", "confirmed_by": ["PaymentRefunded"], "semantic": False}
    assert order["compensation_policy"]["max_attempts"] == 3 and order["correlation"]["saga_id"] == ["data.order_id"]
    assert approval["steps"][1]["timeout"] is None and approval["steps"][2]["compensation"] is None
