"""The OpenAPI 3.1 document of the HTTP API, served at /openapi.json.

Its schemas are JSON Schema 2020-12: the tests validate real responses against them.
"""

from __future__ import annotations

from typing import Any

from tracker.core import state as st
from tracker.core.events import ACTIONS
from tracker.core.summaries import MAX_LIMIT, SORTS

NUM = {"type": "number"}
NUM_OR_NULL = {"type": ["number", "null"]}
STR_OR_NULL = {"type": ["string", "null"]}
STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}


def _obj(props: dict[str, Any], required: list[str] | None = None, extra: bool = False) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": props,
        "required": required if required is not None else list(props),
        "additionalProperties": extra,
    }


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


SCHEMAS: dict[str, Any] = {
    "Error": _obj(
        {"error": {"type": "string"}, "message": {"type": "string"}, "parameter": {"type": "string"}}, ["error", "message"]
    ),
    "Step": _obj(
        {
            "name": {"type": "string"},
            "state": {"type": "string"},
            "started_at": NUM_OR_NULL,
            "due": NUM_OR_NULL,
            "completed_at": NUM_OR_NULL,
            "completed_by": STR_OR_NULL,
            "failed_at": NUM_OR_NULL,
            "out_of_order": {"type": "boolean"},
            "comp_attempts": {"type": "integer"},
            "comp_started_at": NUM_OR_NULL,
            "comp_due": NUM_OR_NULL,
            "comp_confirmed_at": NUM_OR_NULL,
            "comp_by_tracker": {"type": "boolean"},
            "compensation": STR_OR_NULL,
        }
    ),
    "HistoryEntry": _obj(
        {
            "t": NUM,
            "at": NUM,
            "id": {"type": "string"},
            "type": {"type": "string"},
            "kind": {"type": "string"},
            "outcome": {"type": "string"},
            "step": {"type": "string"},
            "detail": {"type": "string"},
        },
        ["t", "at", "id", "type", "kind", "outcome"],
    ),
    "OutboxEntry": _obj(
        {
            "id": {"type": "string"},
            "kind": {"enum": ["compensation", "outcome", "decision"]},
            "cause": {"type": "string"},
            "position": {"type": "string"},
            "confirmed": {"type": "boolean"},
            "step": STR_OR_NULL,
            "payload": {"type": "object"},
            "headers": STR_MAP,
        }
    ),
    "Saga": _obj(
        {
            "saga_id": {"type": "string"},
            "saga_type": {"type": "string"},
            "version": {"type": "string"},
            "status": {"enum": list(st.STATUSES)},
            "visible_status": {"type": "string"},
            "current": {"type": ["integer", "null"]},
            "current_step": STR_OR_NULL,
            "awaiting": _obj(
                {"step": {"type": "string"}, "events": {"type": "array", "items": {"type": "string"}}, "deadline": NUM_OR_NULL}
            ),
            "started_at": NUM_OR_NULL,
            "ended_at": NUM_OR_NULL,
            "first_seen_at": NUM_OR_NULL,
            "updated_at": NUM_OR_NULL,
            "reason": {"type": "string"},
            "trouble_step": {"type": ["integer", "null"], "description": "Index of the step where it went wrong."},
            "compensated_by": {"type": "string"},
            "steps": {"type": "array", "items": _ref("Step")},
            "keys": STR_MAP,
            "trace": STR_MAP,
            "seen": {"type": "array", "items": {"type": "string"}},
            "early": {"type": "array", "items": {"type": "object"}},
            "orphaned": {"type": "boolean"},
            "partial": {"type": "boolean", "description": "Replay: events before the retained window are missing."},
            "parked": {"type": "array", "items": {"type": "object"}, "description": "Recorded decisions awaiting their anchor."},
            "history": {"type": "array", "items": _ref("HistoryEntry")},
            "history_dropped": {"type": "integer"},
            "outbox": {"type": "array", "items": _ref("OutboxEntry")},
            "deadline": {"oneOf": [{"type": "null"}, _obj({"token": {"type": "string"}, "due": NUM})]},
            "deadline_seq": {"type": "integer"},
            "ttl_due": NUM_OR_NULL,
            "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
            "resolution": {"type": ["object", "null"]},
        },
        [
            "saga_id",
            "saga_type",
            "version",
            "status",
            "visible_status",
            "current_step",
            "steps",
            "history",
            "outbox",
            "keys",
            "deadline",
        ],
    ),
    "SagaSummary": _obj(
        {
            "saga_id": {"type": "string"},
            "saga_type": {"type": "string"},
            "version": {"type": "string"},
            "status": {"enum": list(st.STATUSES)},
            "visible_status": {"type": "string"},
            "current_step": STR_OR_NULL,
            "pending_since": NUM_OR_NULL,
            "started_at": NUM_OR_NULL,
            "updated_at": NUM_OR_NULL,
            "ended_at": NUM_OR_NULL,
            "deadline": NUM_OR_NULL,
            "keys": STR_MAP,
            "orphaned": {"type": "boolean"},
            "partial": {"type": "boolean"},
            "reason": {"type": "string"},
            "trouble_step": {**STR_OR_NULL, "description": "The step where it went wrong (failed, timed out, forced)."},
            "step_seconds": {
                "type": "object",
                "additionalProperties": NUM,
                "description": "How long each completed step took, from when it became pending.",
            },
        }
    ),
    "SagaList": _obj(
        {
            "items": {"type": "array", "items": _ref("SagaSummary")},
            "next_cursor": STR_OR_NULL,
            "partial": {"type": "boolean"},
            "missing_workers": {"type": "array", "items": {"type": "string"}},
        }
    ),
    "WorkerLag": _obj(
        {
            "worker": {"type": "string"},
            "behind": {"type": "boolean"},
            "catch_up": {"enum": ["sources", "log", "live"]},
            "input_lag": {"type": "object", "additionalProperties": {"type": "integer"}},
        }
    ),
    "Stats": _obj(
        {
            "counts": {"type": "object", "additionalProperties": {"type": "object", "additionalProperties": {"type": "integer"}}},
            "stuck": {"type": "object", "additionalProperties": {"type": "integer"}},
            "oldest_in_flight_seconds": {
                "type": "object",
                "additionalProperties": {"type": "object", "additionalProperties": NUM},
            },
            "flow": {
                "type": "object",
                "description": "Per saga type and step (every step of the current definitions, zeros included).",
                "additionalProperties": {"type": "object", "additionalProperties": _ref("FlowStep")},
            },
            "conformance": {
                "type": "object",
                "description": "Per saga type, traffic that drifts from the definitions, since each worker started.",
                "additionalProperties": _ref("Drift"),
            },
            "workers": {"type": "array", "items": _ref("WorkerLag")},
            "behind": {"type": "boolean"},
            "partial": {"type": "boolean"},
            "missing_workers": {"type": "array", "items": {"type": "string"}},
        }
    ),
    "Drift": _obj(
        {
            "undeclared_event_type": {"type": "integer", "description": "Events of a type no definition names."},
            "steps_out_of_order": {"type": "integer", "description": "Sagas whose steps completed out of order (event time)."},
            "completed_after_timeout": {"type": "integer", "description": "Steps completed after the tracker timed them out."},
            "unrequested_confirmation": {"type": "integer", "description": "Undos confirmed that nobody asked for."},
            "undeclared_types": {
                "type": "object",
                "additionalProperties": {"type": "integer"},
                "description": "The undeclared event types by name (at most 50; names cut to 100 characters).",
            },
        }
    ),
    "FlowStep": _obj(
        {
            "pending": {"type": "integer", "description": "Running, waiting for this step (the stuck ones included)."},
            "stuck": {"type": "integer", "description": "Past a deadline here, or failed_needs_manual after going wrong here."},
            "failed": {"type": "integer", "description": "Went wrong here: failed, timed out or forced, whatever came after."},
            "compensated": {"type": "integer", "description": "Went wrong here and compensated."},
            "completed": {
                "type": "integer",
                "description": "Stored sagas that completed this step after the one before (what p50/p95 count).",
            },
            "p50_seconds": {**NUM_OR_NULL, "description": "Median time the step took (interpolated in buckets)."},
            "p95_seconds": NUM_OR_NULL,
        }
    ),
    "ActionRequest": _obj(
        {
            "action": {"enum": list(ACTIONS)},
            "actor": {"type": "string", "minLength": 1, "maxLength": 200},
            "reason": {"type": "string", "maxLength": 2000},
            "seconds": {"type": "number", "exclusiveMinimum": 0},
            "id": {"type": "string", "maxLength": 200},
        },
        ["action", "actor"],
    ),
    "BatchRequest": _obj(
        {
            "action": {"enum": list(ACTIONS)},
            "actor": {"type": "string", "minLength": 1, "maxLength": 200},
            "reason": {"type": "string", "maxLength": 2000},
            "seconds": {"type": "number", "exclusiveMinimum": 0},
            "id": {"type": "string", "maxLength": 200, "description": "Idempotency key (or the Idempotency-Key header)."},
            "dry_run": {"type": "boolean", "description": "Only count the sagas the filter matches."},
        },
        ["action", "actor"],
    ),
    "BatchCount": _obj(
        {"dry_run": {"const": True}, "matched": {"type": "integer"}, "cap": {"type": "integer"}, "filter": STR_MAP}
    ),
    "BatchAccepted": _obj({"batch_id": {"type": "string"}, "matched": {"type": "integer"}, "action": {"enum": list(ACTIONS)}}),
    "BatchReport": _obj(
        {
            "batch_id": {"type": "string"},
            "action": {"enum": list(ACTIONS)},
            "actor": {"type": "string"},
            "reason": {"type": "string"},
            "created_at": NUM,
            "filter": STR_MAP,
            "matched": {"type": "integer"},
            "applied": {"type": "integer"},
            "rejected": {"type": "integer"},
            "pending": {"type": "integer", "description": "Not applied yet, or owned by a worker that did not answer."},
            "rejections": {
                "type": "array",
                "items": _obj({"saga_id": {"type": "string"}, "reason": {"type": "string"}}),
                "description": "The first 100, by saga id.",
            },
            "pending_sagas": {"type": "array", "items": {"type": "string"}, "description": "The first 100, by saga id."},
            "partial": {"type": "boolean"},
            "missing_workers": {"type": "array", "items": {"type": "string"}},
        }
    ),
    "ActionAccepted": _obj(
        {"accepted": {"const": True}, "id": {"type": "string"}, "saga_id": {"type": "string"}, "action": {"enum": list(ACTIONS)}}
    ),
    "Ready": _obj(
        {
            "ready": {"type": "boolean"},
            "active_partitions": {"type": "array", "items": {"type": "integer"}},
            "worker": {"type": "string"},
            "behind": {"type": "boolean"},
            "catch_up": {"enum": ["sources", "log", "live"]},
            "input_lag": {"type": "object", "additionalProperties": {"type": "integer"}},
            "generation": {"type": "integer", "minimum": 1, "description": "This worker's state generation."},
            "promoted": {"type": "integer", "minimum": 1, "description": "The generation that serves and acts."},
            "shadow": {"type": "boolean"},
        }
    ),
    "Alive": _obj({"status": {"const": "alive"}}),
    "Definition": _obj(
        {
            "name": {"type": "string"},
            "version": {"type": "string"},
            "current": {"type": "boolean", "description": "The version new sagas of this type start with."},
            "description": {"type": "string"},
            "topics": {"type": "array", "items": {"type": "string"}},
            "start": {"type": "string"},
            "correlation": _obj(
                {
                    "saga_id": {"type": "array", "items": {"type": "string"}},
                    "saga_id_by_event": {
                        "type": "object",
                        "additionalProperties": {"type": "array", "items": {"type": "string"}},
                    },
                    "event_type": {"type": "array", "items": {"type": "string"}},
                    "event_id": {"type": "array", "items": {"type": "string"}},
                    "event_time": {"type": "array", "items": {"type": "string"}},
                }
            ),
            "business_keys": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}},
            "ttl": NUM_OR_NULL,
            "ignore": {"type": "array", "items": {"type": "string"}},
            "compensation_policy": _obj(
                {"confirm_timeout": NUM, "max_attempts": {"type": "integer"}, "backoff": NUM, "max_delay": NUM}
            ),
            "limits": _obj(
                {
                    "seen_ids": {"type": "integer"},
                    "history": {"type": "integer"},
                    "early_events": {"type": "integer"},
                    "orphan_after": NUM,
                }
            ),
            "steps": {
                "type": "array",
                "items": _obj(
                    {
                        "name": {"type": "string"},
                        "status": {"type": "string", "description": "The user-visible status while the step is pending."},
                        "completed_by": {"type": "array", "items": {"type": "string"}},
                        "failed_by": {"type": "array", "items": {"type": "string"}},
                        "timeout": {**NUM_OR_NULL, "description": "Seconds; null waits without limit."},
                        "compensation": {
                            "oneOf": [
                                {"type": "null"},
                                _obj(
                                    {
                                        "emit": {"type": "string"},
                                        "confirmed_by": {"type": "array", "items": {"type": "string"}},
                                        "semantic": {"type": "boolean"},
                                    }
                                ),
                            ]
                        },
                    }
                ),
            },
            "warnings": {"type": "array", "items": {"type": "string"}},
        }
    ),
    "Definitions": _obj({"definitions": {"type": "array", "items": _ref("Definition")}}),
}


def _json(schema: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


ERRORS = {
    "400": _json("Error", "A bad parameter; `parameter` names it."),
    "401": _json("Error", "A token is required and was missing or wrong."),
    "500": _json("Error", "An unexpected failure (details in the worker log)."),
    "503": _json("Error", "The owning worker is unknown or did not answer (rebalancing)."),
}


def _param(name: str, description: str, schema: dict[str, Any], where: str = "query") -> dict[str, Any]:
    return {"name": name, "in": where, "required": where == "path", "description": description, "schema": schema}


def document() -> dict[str, Any]:
    saga_id = _param("saga_id", "The saga id (e.g. the order id).", {"type": "string"}, "path")
    list_params = [
        _param("saga_type", "Only sagas of this type.", {"type": "string"}),
        _param("status", "Only sagas with this status.", {"enum": list(st.STATUSES)}),
        _param("step", "Only sagas whose pending step is this one.", {"type": "string"}),
        _param("failed_step", "Only sagas that went wrong at this step (failed, timed out, forced).", {"type": "string"}),
        _param("at", "Only sagas pending at this step or gone wrong there.", {"type": "string"}),
        _param("stuck", "Past a deadline nobody acted on, or failed_needs_manual.", {"enum": ["true", "false"]}),
        _param("key", "A saga id or a business key value found in the events (e.g. an order id).", {"type": "string"}),
        _param("updated_since", "ISO 8601 time or epoch seconds.", {"type": "string"}),
        _param("sort", "Sort field.", {"enum": list(SORTS)}),
        _param("order", "asc or desc (default desc, asc for saga_id).", {"enum": ["asc", "desc"]}),
        _param("limit", f"Page size, 1 to {MAX_LIMIT} (default 50).", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}),
        _param("cursor", "`next_cursor` of the previous page.", {"type": "string"}),
    ]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "saga-tracker",
            "version": "1",
            "description": "Status of choreographed sagas, and operator actions on them.",
        },
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "SAGA_TRACKER_ACTION_TOKEN or SAGA_TRACKER_READ_TOKEN",
                }
            },
        },
        "paths": {
            "/sagas": {
                "get": {
                    "summary": "List sagas of every worker, filtered, sorted, paginated by cursor.",
                    "parameters": list_params,
                    "security": [{}, {"bearer": []}],
                    "responses": {"200": _json("SagaList", "One page; `partial` if a worker did not answer."), **ERRORS},
                }
            },
            "/definitions": {
                "get": {
                    "summary": "Every saga type and version: topics, start event, steps (completed_by, failed_by, "
                    "timeout, compensation and confirmations), policies and limits.",
                    "security": [{}, {"bearer": []}],
                    "responses": {"200": _json("Definitions", "The definitions this worker tracks with."), **ERRORS},
                }
            },
            "/sagas/stats": {
                "get": {
                    "summary": "Counts by type and status, stuck counts, oldest in-flight age per step, the flow "
                    "per step (pending, stuck, failed, compensated, p50/p95 duration), lag. Kept incrementally: no "
                    "request reads every saga.",
                    "security": [{}, {"bearer": []}],
                    "responses": {"200": _json("Stats", "Fleet-wide figures."), **ERRORS},
                }
            },
            "/sagas/actions": {
                "post": {
                    "summary": "One operator action over every saga the filters (those of GET /sagas) match: "
                    "dry_run counts them; otherwise the batch is recorded and one control record per saga "
                    "queued (id <batch id>:<saga id>). At most SAGA_TRACKER_BATCH_MAX_SAGAS sagas.",
                    "parameters": [p for p in list_params if p["name"] not in ("sort", "order", "limit", "cursor")]
                    + [
                        _param("Idempotency-Key", "The same key gives the same batch, queued once.", {"type": "string"}, "header")
                    ],
                    "security": [{"bearer": []}],
                    "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("BatchRequest")}}},
                    "responses": {
                        "200": _json("BatchCount", "dry_run: how many sagas match (even above the cap)."),
                        "202": _json("BatchAccepted", "Recorded and being queued; follow it at /batches/{batch_id}."),
                        "403": _json("Error", "Actions are disabled (no action token configured)."),
                        "413": _json("Error", "The body is larger than 64 KiB."),
                        **ERRORS,
                        "400": _json("Error", "A bad parameter, no saga matches, or more than the cap (`too_many`)."),
                        "503": _json("Error", "A worker did not answer: the match would be incomplete, so nothing is queued."),
                    },
                }
            },
            "/batches/{batch_id}": {
                "get": {
                    "summary": "A batch action's progress: matched, applied, rejected (with reasons), pending.",
                    "parameters": [_param("batch_id", "The id POST /sagas/actions returned.", {"type": "string"}, "path")],
                    "security": [{}, {"bearer": []}],
                    "responses": {"200": _json("BatchReport", "The batch."), "404": _json("Error", "No such batch."), **ERRORS},
                }
            },
            "/sagas/{saga_id}": {
                "get": {
                    "summary": "One saga's full status, from the worker that owns it.",
                    "parameters": [saga_id],
                    "security": [{}, {"bearer": []}],
                    "responses": {"200": _json("Saga", "The saga."), "404": _json("Error", "No such saga."), **ERRORS},
                }
            },
            "/sagas/{saga_id}/actions": {
                "post": {
                    "summary": "Queue an operator action (applied through the saga log; audited and idempotent).",
                    "parameters": [
                        saga_id,
                        _param("Idempotency-Key", "Makes retries of the same action a no-op.", {"type": "string"}, "header"),
                    ],
                    "security": [{"bearer": []}],
                    "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("ActionRequest")}}},
                    "responses": {
                        "202": _json("ActionAccepted", "Queued; its outcome appears in the saga's history."),
                        "403": _json("Error", "Actions are disabled (no action token configured)."),
                        "404": _json("Error", "No such saga."),
                        "413": _json("Error", "The body is larger than 64 KiB; refused before it is read whole."),
                        **ERRORS,
                    },
                }
            },
            "/healthz": {"get": {"summary": "The process is alive.", "responses": {"200": _json("Alive", "Alive.")}}},
            "/readyz": {
                "get": {
                    "summary": "Partitions assigned and tables recovered.",
                    "responses": {"200": _json("Ready", "Ready."), "503": _json("Ready", "Not ready.")},
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics of this worker.",
                    "parameters": [
                        {
                            **_param(
                                "name[]",
                                "Only these metric families' samples (by sample name, e.g. saga_tracker_events_total).",
                                {"type": "array", "items": {"type": "string"}},
                            ),
                            "style": "form",
                            "explode": True,
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "Prometheus text format.",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
        },
    }
