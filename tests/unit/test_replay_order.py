"""A rebuilt generation applies its replayed backlog before any live record: every order that
this allows ends where the live generation did (no faust, no broker, no clock).

The world: one saga whose services complete, stall, fail or answer compensation requests
after a drawn delay (at once, late, or never). The live generation applies every record in
event-time order and fires each deadline once nothing older is waiting (the sweeper on stream
time), recording each decision it takes. A replay that begins at a drawn moment feeds the new
generation every record written before it, inputs and recorded decisions merged by timestamp;
what was written later reaches it live, after that backlog: the services' records (among them
answers to the live generation's compensations) and the live generation's decisions, which it
follows rather than deciding again. Those come on different topics, so an answer may overtake
the decision that asked for it. The cut falls anywhere: before the saga, between a decision and
the answers it causes, after everything.

Not covered here, and not by the replay: the order of one saga's records across its topics.
The machine reaches the same saga from any arrival order of its service events
(``test_properties``), but not once a deadline falls between them: a late completion read after
a confirmation that was written after it decides differently. That holds for any generation,
the live one included (a lagging topic would have changed its decision too), so a rebuilt
generation can differ from the live one there; ``replay --verify`` lists such a saga.
"""

from __future__ import annotations

import heapq
import os
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from tests.unit.sagas import COMPLETIONS, Saga, ev
from tracker.core import state as st
from tracker.core.events import Event, decision_event, timeout_event

FAILURES = {1: "PaymentDeclined", 2: "OutOfStock", 3: "ShipmentFailed"}
CONFIRMS = ["OrderCancelled", "PaymentRefunded", "StockReleased", "ShipmentCancelled"]
STEP_OF = {"order": 0, "payment": 1, "inventory": 2, "shipping": 3}
ENOUGH = 40  # deadlines a saga can fire: a step timeout, then at most three attempts per step


@dataclass(frozen=True)
class World:
    """What the services do: completion gaps (a gap past the step's timeout is a late event),
    where they stop (a stall, or a failure event), and how they answer each compensation."""

    gaps: tuple[float, ...]  # seconds between a step's completion and the next one's
    fails: bool  # the step after the last completed one fails rather than stalls
    answers: tuple[float | None, ...]  # per compensation request in order: delay, or ignored
    undo_after_failure: tuple[bool, ...]  # choreography: which done steps undo on a failure


@dataclass(order=True)
class Written:
    """A record as written to its topic: an input, or a decision the live generation recorded."""

    ts: float
    rank: int  # at one timestamp an input comes before a decision (the live order)
    seq: int
    topic: str = field(compare=False)
    event: Event = field(compare=False)
    answers: str = field(compare=False, default="")  # a confirmation: the decision that asked for it


@hs.composite
def worlds(draw: Any) -> World:
    done = draw(hs.integers(1, 4))
    gaps = tuple(draw(hs.floats(0.5, 75.0)) for _ in range(done - 1))
    return World(
        gaps=gaps,
        fails=done < 4 and draw(hs.booleans()),
        answers=tuple(draw(hs.one_of(hs.none(), hs.floats(0.01, 25.0))) for _ in range(12)),
        undo_after_failure=tuple(draw(hs.booleans()) for _ in range(done)),
    )


def service_records(world: World) -> list[tuple[float, str, Event]]:
    """The services' own records (everything but answers to compensation requests)."""
    t, out = 100.0, []
    for i, gap in enumerate((0.0, *world.gaps)):
        t += gap
        out.append((t, f"topic-{i}", ev(COMPLETIONS[i], t, f"c{i}")))
    done = len(world.gaps) + 1
    if world.fails:
        t += 1.0
        out.append((t, f"topic-{done}", ev(FAILURES[done], t, "f")))
        for i, undo in enumerate(world.undo_after_failure):
            if undo:  # each undoes its own work on hearing of the failure (same id every time)
                out.append((t + 0.5 + i, f"topic-{i}", ev(CONFIRMS[i], t + 0.5 + i, f"undo-{i}")))
    return out


class Generation:
    """One generation applying records the way a worker does: a record at a time, each
    deadline fired (decided at its due time) once no record older than it is waiting."""

    def __init__(self) -> None:
        self.saga = Saga()
        self.decisions: list[Written] = []
        self.compensations: list[tuple[float, str, str]] = []  # (decided at, step, decision id) in order

    def apply(self, record: Event, now: float | None = None) -> None:
        t = self.saga(record, now)
        decided = record.time if now is None else now
        decision = next((str(e.id) for e in t.emits if e.kind == "decision"), "")
        for e in t.emits:
            if e.kind == "decision":
                at = float(e.payload["decided_at"])
                self.decisions.append(Written(at, 1, len(self.decisions), "decisions", decision_event(e.payload)))
            elif e.kind == "compensation":
                self.compensations.append((decided, str(e.payload["step"]), decision))

    def fire_once(self, before: float) -> bool:
        """Fire the saga's deadline if it is due before ``before``; whether it did."""
        s = self.saga.state
        if s is None or s.deadline is None or s.deadline.due >= before:
            return False
        self.apply(timeout_event(s.saga_id, s.saga_type, s.deadline.token, s.deadline.due))
        return True

    def fire_until(self, before: float) -> None:
        for _ in range(ENOUGH):
            if not self.fire_once(before):
                return
        raise AssertionError("a saga kept firing deadlines")

    def digest(self) -> dict[str, Any]:
        return st.outcome_view(self.saga.s.to_dict())


def live(world: World) -> tuple[Generation, list[Written]]:
    """The live generation over the whole world; returns it and every record written, inputs
    (with the services' answers to its compensation requests) and its decisions."""
    g = Generation()
    waiting: list[Written] = [Written(ts, 0, n, topic, e) for n, (ts, topic, e) in enumerate(service_records(world))]
    heapq.heapify(waiting)
    written: list[Written] = []
    answered = 0
    for _ in range(ENOUGH + len(waiting) * 2):
        # The services answer each compensation request as soon as it is decided.
        for at, step, decision in g.compensations[answered:]:
            delay = world.answers[answered % len(world.answers)]
            answered += 1
            if delay is not None:  # the service undoes its step and confirms (same id every time)
                i = STEP_OF[step]
                confirm = ev(CONFIRMS[i], at + delay, f"undo-{i}")
                heapq.heappush(waiting, Written(at + delay, 0, 1000 + answered, f"topic-{i}", confirm, decision))
        if g.fire_once(waiting[0].ts if waiting else float("inf")):
            continue
        if not waiting:
            break
        record = heapq.heappop(waiting)
        written.append(record)
        g.apply(record.event)
    else:
        raise AssertionError("the live generation never settled")
    return g, sorted(written + g.decisions)


def rebuilt(written: list[Written], began: float, overtake: list[bool]) -> Generation:
    """The replay that began at ``began``: everything written before it, merged by timestamp
    and applied when the replay runs; then what was written later, live: the services' records
    and the live generation's decisions (this one follows them, it does not fire its own).
    Live, they come on different topics: an answer may overtake the decision that asked for it
    (``overtake``, one flag per answer)."""
    g = Generation()
    for w in (w for w in written if w.ts < began):
        g.apply(w.event, now=began)
    tail = [w for w in written if w.ts >= began]
    flags = iter(overtake)
    for w in [w for w in tail if w.answers]:
        asked = next((d for d in tail if d.topic == "decisions" and d.event.id == w.answers), None)
        if asked is None or not next(flags, False):
            continue
        between = tail[tail.index(asked) : tail.index(w)]
        # It passes decisions only: passing the services' own records is the reordering across
        # topics this property leaves out (see the module doc).
        if all(x.topic == "decisions" for x in between):
            tail.remove(w)
            tail.insert(tail.index(asked), w)
    for w in tail:
        g.apply(w.event, now=max(began, w.ts))
    return g


@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", 300)), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(world=worlds(), began=hs.floats(99.0, 400.0), overtake=hs.lists(hs.booleans(), max_size=12))
def test_backlog_first_then_live_reaches_the_live_digest(world: World, began: float, overtake: list[bool]) -> None:
    g1, written = live(world)
    g2 = rebuilt(written, began, overtake)
    assert g2.digest() == g1.digest()


def test_an_answer_that_overtakes_its_decision_still_counts_the_attempt() -> None:
    """The inventory step stalls, the live generation compensates it and the service confirms
    at once, after the replay began. The answer comes on the service's topic, the decision on
    the decisions topic: read first, it finds nothing asked yet (``confirmed_early``); the
    decision, once it arrives, counts the attempt it made (``decision_overtaken``)."""
    world = World(gaps=(10.0, 10.0), fails=False, answers=(0.1,) * 12, undo_after_failure=(False,) * 3)
    g1, written = live(world)
    assert g1.saga.s.status == st.COMPENSATED
    began = max(w.ts for w in written if w.topic == "decisions") - 0.05  # before the timeout is recorded
    in_order = rebuilt(written, began, [False] * 3)
    overtaken = rebuilt(written, began, [True] * 3)
    assert in_order.digest() == overtaken.digest() == g1.digest()
    assert overtaken.digest()["emitted"] == [
        *sorted(f"o-1:{step}:compensate:1" for step in ("inventory", "order", "payment")),
        "o-1:saga:SagaCompensated",
    ]
    outcomes = [h["outcome"] for h in overtaken.saga.s.history]
    assert outcomes.count("confirmed_early") == 3 and outcomes.count("decision_overtaken") == 3


def test_a_retry_answered_before_its_decision_arrives_is_counted_not_parked() -> None:
    """Attempt 1 unanswered, attempt 2 answered at once: read before the retry's decision, the
    answer finishes the step, and the decision's anchor (the retry's due time) is gone."""
    world = World(gaps=(5.0,), fails=False, answers=(None, None, 0.2, 0.2), undo_after_failure=(False,) * 2)
    g1, written = live(world)
    assert [x.comp_attempts for x in g1.saga.s.steps[:2]] == [2, 2] and g1.saga.s.status == st.COMPENSATED
    retry = [w for w in written if w.topic == "decisions"][1]
    answers = [w for w in written if w.answers == retry.event.id]
    assert len(answers) == 2
    g2 = Generation()
    for w in written:
        if w is not retry:
            g2.apply(w.event)
        if w is answers[-1]:
            g2.apply(retry.event)
    assert g2.digest() == g1.digest() and g2.saga.s.parked == []
    assert [h["outcome"] for h in g2.saga.s.history].count("decision_overtaken") == 2


def test_a_first_timeout_whose_answers_came_early_still_waits_for_its_anchor() -> None:
    """Not only counted: a first timeout also moves the saga to compensating. Read before its
    anchor (a lagging topic holds the payment's completion) and after its answers, it waits."""
    world = World(gaps=(5.0,), fails=False, answers=(0.2,) * 12, undo_after_failure=(False,) * 2)
    g1, written = live(world)
    assert g1.saga.s.status == st.COMPENSATED
    timeout = next(w for w in written if w.topic == "decisions")
    answers = [w for w in written if w.answers == timeout.event.id]
    late = next(w for w in written if w.event.type == "PaymentAuthorized")
    g2 = Generation()
    order = [w for w in written if w not in (timeout, late, *answers)]
    for w in [order[0], *answers, timeout, late, *order[1:]]:
        g2.apply(w.event)
    assert g2.digest() == g1.digest() and g2.saga.s.parked == []
