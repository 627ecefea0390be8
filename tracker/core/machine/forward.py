"""Forward: the saga's progress through its steps, in whatever order their events arrive."""

from __future__ import annotations

from tracker.core import state as st
from tracker.core.events import Event
from tracker.core.machine.decisions import Decisions
from tracker.core.state import StepState


class Forward(Decisions):
    def activate_next(self, at: float, e: Event) -> None:
        """Make the first step not yet done pending, or complete the saga."""
        s, d = self.s, self.d
        nxt = next((i for i, step in enumerate(s.steps) if step.state != st.DONE), None)
        if nxt is None:
            s.status, s.current, s.ended_at = st.COMPLETED, None, at
            self.outcome("SagaCompleted", at, e.id)
            self.outcomes.append("saga_completed")  # "completed" alone is a step's outcome
            return
        if nxt == s.current:
            return
        s.current = nxt
        step = s.steps[nxt]
        # It became pending with the latest of the completions before it (reordering).
        started = max([at] + [x.completed_at for x in s.steps[:nxt] if x.completed_at is not None])
        step.state, step.started_at = st.ACTIVE, started
        timeout = d.steps[nxt].timeout
        step.due = None if timeout is None else started + timeout
        # A recorded decision taken at this very point goes first: live, it was taken before
        # any event that may still be waiting here (early completions) was applied.
        self.drain()

    def start(self, e: Event) -> None:
        s, d = self.s, self.d
        s.status, s.started_at = st.RUNNING, e.time
        s.steps = [StepState.waiting() for _ in d.steps]
        if d.ttl is not None:
            s.ttl_due = e.time + d.ttl
        role = d.role(e.type)
        if role is not None and role[0] == "complete":  # the start event completes step 0
            self.mark_done(0, e)
        self.record(e, "started", 0 if role and role[0] == "complete" else None)
        self.activate_next(e.time, e)
        early, s.early = s.early, []
        # Apply what waited, in event-time order (stable for equal times: arrival order).
        for raw in sorted(early, key=lambda r: r["time"]):
            self.service(Event.from_dict(raw), replayed=True)

    def mark_done(self, i: int, e: Event) -> None:
        step = self.s.steps[i]
        step.state, step.completed_at, step.completed_by = st.DONE, e.time, e.id
        step.due = None
        self.check_order(i)

    def check_order(self, i: int) -> None:
        """Drift (``conformance``): step ``i`` completed, in event time, before the step the
        definition puts before it, or after the one it puts after it. Arrival order alone is
        not drift (transport reorders); once per saga."""
        s, t = self.s, self.s.steps[i].completed_at
        if t is None or s.counts.get("steps_out_of_order"):
            return
        before = s.steps[i - 1].completed_at if i > 0 else None
        after = s.steps[i + 1].completed_at if i + 1 < len(s.steps) else None
        if (before is not None and before > t) or (after is not None and after < t):
            self.count("steps_out_of_order")
            self.outcomes.append("steps_out_of_order")

    def service(self, e: Event, *, replayed: bool = False) -> None:
        s, d = self.s, self.d
        for k, v in e.keys.items():
            s.keys.setdefault(k, v)
        for k, v in e.trace.items():
            s.trace.setdefault(k, v)
        role = d.role(e.type)
        if role is None:
            self.record(e, "ignored", detail="event type has no role in this saga")
            return
        what, i = role
        if s.status == st.AWAITING_START and e.type != d.start:
            if len(s.early) >= d.limits.early_events:
                self.count("early_overflow")
                self.record(e, "early_overflow", detail=f"more than {d.limits.early_events} events before the start")
                return
            s.early = [*s.early, e.to_dict()]  # replaced, never changed in place (``SagaState.copy``)
            self.count("early")
            self.record(e, "early", i if i >= 0 else None, detail="waiting for the start event")
            return
        if s.status == st.AWAITING_START:
            if s.orphaned:
                self.outcomes.append("orphan_adopted")
            self.start(e)
            return
        if what == "confirm" and s.status == st.FAILED_NEEDS_MANUAL and s.steps[i].state == st.COMPENSATION_FAILED:
            self.confirm_after_giving_up(i, e)  # the service undid it after all
            return
        if s.terminal:
            self.count("late")
            self.record(e, "late", i if i >= 0 else None, detail=f"saga already {s.status}")
            if what == "complete" and s.steps and s.steps[i].completed_at is None:
                # Fenced, but the timeline keeps when an implied step really completed.
                s.steps[i].completed_at, s.steps[i].completed_by = e.time, e.id
                if s.steps[i].state == st.TIMED_OUT:
                    self.outcomes.append("completed_after_timeout")
            return
        if what == "start":
            self.record(e, "ignored", detail="saga already started")
            return
        if replayed:
            self.count("early_applied")
        if what == "complete":
            self.complete(i, e)
        elif what == "fail":
            self.fail(i, e)
        elif what == "confirm":
            self.confirm(i, e)

    def complete(self, i: int, e: Event) -> None:
        s, step = self.s, self.s.steps[i]
        if step.completed_at is not None:
            self.record(e, "redundant", i, detail="step already completed")
            return
        if s.status == st.COMPENSATING:
            prior = step.state
            step.completed_at, step.completed_by = e.time, e.id
            if prior in (st.WAITING, st.ACTIVE, st.TIMED_OUT, st.FAILED):
                # The stalled or failed step did happen after all: it must be undone too.
                step.state, step.due = st.DONE, None
                self.record(e, "late_completion", i, detail=f"step was {prior}; compensating it")
                if prior == st.TIMED_OUT:
                    self.outcomes.append("completed_after_timeout")
                self.compensate_step(i, e.time, e.id, tracker_emits=s.compensated_by == "tracker")
            else:  # already being undone, implied by a later step's failure
                self.record(e, "late_completion", i, detail=f"step is already {prior}")
            return
        reordered = s.current is not None and i > s.current
        self.mark_done(i, e)
        if reordered:
            step.out_of_order = True
            self.count("reordered")
        self.record(e, "reordered" if reordered else "completed", i)
        if i == s.current:
            s.current = None
            self.activate_next(e.time, e)

    def fail(self, i: int, e: Event) -> None:
        s, step = self.s, self.s.steps[i]
        if step.state != st.DONE:
            step.state, step.failed_at, step.due = st.FAILED, e.time, None
        else:
            step.failed_at = e.time  # contradicts its completion: compensate it like the others
        if s.status == st.COMPENSATING:
            self.record(e, "failed", i, detail="already compensating")
            return
        self.record(e, "failed", i)
        # A service acts only after the step before it completed: a failure at step i means
        # steps before it completed, even if their events are still in flight.
        for j in range(i):
            if s.steps[j].state in (st.WAITING, st.ACTIVE):
                s.steps[j].state, s.steps[j].due = st.DONE, None
                self.count("implied_completions")
        self.begin_compensation(f"step {self.d.steps[i].name} failed: {e.type}", e.time, e.id, tracker_emits=False, at_step=i)
