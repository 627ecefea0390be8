"""A batch's report from the workers' answers (no broker): every saga accounted for once."""

from __future__ import annotations

from typing import Any

import orjson

from tracker.web.batches import Book, batch_id, manifest, outcome, report


def found() -> dict[str, Any]:
    sagas = [{"saga_id": f"s-{n}", "saga_type": "order", "version": "1"} for n in range(5)]
    return manifest(batch_id("k"), {"action": "resolve", "actor": "al", "reason": "why"}, {"status": "x"}, sagas)


def test_what_became_of_a_control_record_is_read_from_the_sagas_history() -> None:
    control = "b-1:s-0"
    assert outcome(None, control)[0] == "rejected"
    assert outcome({"history": [], "seen": []}, control) == ("pending", "")
    assert outcome({"history": [{"id": control, "outcome": "resolved"}]}, control) == ("applied", "resolved")
    rejected = {"history": [{"id": control, "outcome": "rejected", "detail": "not failed"}]}
    assert outcome(rejected, control) == ("rejected", "not failed")
    assert outcome({"history": [], "seen": [control]}, control) == ("applied", "")  # its entry dropped since


def test_sagas_no_worker_answered_for_are_pending_never_missing() -> None:
    parts: list[dict[str, Any]] = [
        {"applied": ["s-0", "s-1"], "rejected": [{"saga_id": "s-2", "reason": "no"}], "pending": []},
        {"applied": ["s-1"], "rejected": [], "pending": ["s-3"]},  # s-1 twice: moved between two answers
    ]
    r = report(found(), parts, ["http://w3"])
    assert (r["matched"], r["applied"], r["rejected"], r["pending"]) == (5, 2, 1, 2)
    assert r["pending_sagas"] == ["s-3", "s-4"] and r["partial"] and r["rejections"] == [{"saga_id": "s-2", "reason": "no"}]


def test_the_book_keeps_manifests_and_ignores_anything_else_on_the_topic() -> None:
    book, m = Book(), found()
    book.fold(m["batch_id"].encode(), orjson.dumps(m))
    book.fold(b"b-nothex", orjson.dumps(m))
    book.fold(b"b-0123456789abcdef", b"not json")
    book.fold(None, b"{}")
    assert list(book.batches) == [m["batch_id"]] and book.batches[m["batch_id"]]["matched"] == 5
