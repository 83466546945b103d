"""The OpenAPI 3.1 document of the egress service's JSON API (served at ``api/openapi.json``).

Authentication is the hub's: a browser session (cookie, with JupyterHub's ``_xsrf`` token sent
as ``X-XSRFToken`` on requests that change something) or a hub API token of a service.
Refusals are ``{"status": N, "message": "<sentence>"}`` with 400, 403, 404, 409 or 422.
Every write (POST, PUT, DELETE) accepts an ``Idempotency-Key`` header: a retry with the same
key and request returns the first answer and changes nothing.
"""

from __future__ import annotations

from typing import Any

#: Actions a form or an API call can take on a request, and the core method doing it.
REQUEST_ACTIONS: dict[str, str] = {
    "submit": "submit",
    "withdraw": "withdraw",
    "review": "submit_review",
    "return": "return_request",
    "approve": "approve",
    "reject": "reject",
    "release": "release",
    "revoke": "revoke",
}


_ERROR = {"$ref": "#/components/responses/Refused"}
_REQ = {
    "name": "request_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
}
_ID = {"type": "integer", "minimum": 1, "maximum": 999_999_999_999}
_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "A key the client makes for this write (8 to 128 of A-Z a-z 0-9 - _ . :). "
    "The first answer is kept for the signed-in user and key for 24 hours: a retry of the same "
    "request gets it again (header `Idempotent-Replayed: true`) and changes nothing; the same "
    "key with another request is refused with 422; a retry while the first is still running "
    "with 409.",
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{8,128}$"},
}
_FILE = {"name": "file_id", "in": "path", "required": True, "schema": _ID}
_PREFER = {
    "name": "Prefer",
    "in": "header",
    "required": False,
    "description": "`return=representation` (RFC 7240): answer this write with the whole "
    "request, as `GET /api/requests/{request_id}` gives it, instead of what the write changed "
    "(its id, state and the changed part: one read less on the service)",
    "schema": {"type": "string"},
}
_GROUP = {
    "name": "group",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"},
}


#: A trusted re-execution as the API lists it.
_REEXECUTION: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "notebook_path": {"type": "string"},
        "notebook_sha256": {"type": "string"},
        "parameters": {"type": "object"},
        "requested_by": {"type": "string"},
        "requested_at": {"type": "string"},
        "status": {"enum": ["queued", "completed", "failed", "timeout", "refused"]},
        "finished_at": {"type": ["string", "null"]},
        "reason": {"type": "string"},
        "outputs": {"type": "array", "items": {"type": "object"}},
    },
}

_VERDICT = {"enum": ["pass", "review", "fail", None]}
_TEXTS = {"type": "array", "items": {"type": "string"}}

#: A file of a request, with its automatic checks (``egress.files.sdc_badge``).
_REQUEST_FILE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "path": {"type": "string"},
        "group": {"type": "string"},
        "sha256": {"type": "string"},
        "release_sha256": {"type": "string"},
        "size": {"type": "integer"},
        "release_size": {"type": "integer"},
        "kind": {"type": "string"},
        "added_at": {"type": "string"},
        "changed_in_round": {"type": "integer"},
        "votes": {"type": "object"},
        "viewed": {
            "type": "boolean",
            "description": "checkers who see the file's contents: whether they ticked this "
            "version of the file as viewed (their own tick; absent for everyone else)",
        },
        "decision": {"type": "string"},
        "check": {
            "type": "object",
            "properties": {
                "outcome": {"type": "string"},
                "warnings": _TEXTS,
                "changes": _TEXTS,
                "flagged_cells": {"type": "array", "items": {"type": "object"}},
                "flagged_cell_count": {"type": "integer"},
                "redacted": {
                    "type": "boolean",
                    "description": "true in the view of project members and administrators "
                    "(what a browser shows has left the enclave): verdicts and counts only; "
                    "the cells, warnings, changes, "
                    "per-cell findings and the library's sentences are left out (checkers see "
                    "them).",
                },
                "warning_count": {"type": "integer"},
                "change_count": {"type": "integer"},
                "sdc": {
                    "type": ["object", "null"],
                    "description": "The SDC record of a CSV/TSV of numbers. `verdict` is the "
                    "badge's (never better than `count_rules.verdict`, the service's count-table "
                    "rules, nor than the library's record); `statistic` is the statistic the "
                    "library's record claims (null: unknown); `checked` false with `reason` "
                    "for a table the service could not read as numbers.",
                    "properties": {
                        "checked": {"type": "boolean"},
                        "verdict": _VERDICT,
                        "summary": {"type": "string"},
                        "reasons": _TEXTS,
                        "statistic": {"type": ["string", "null"]},
                        "params": {"type": "object"},
                        "count_rules": {"type": "object"},
                        "reason": {"type": "string"},
                    },
                },
                "library": {
                    "type": ["object", "null"],
                    "description": "The researcher's library's record of this file, from "
                    "results.json in its folder: `matched` (same name and sha256: its "
                    "verdict, statistic, reasons, parameters and `relaxed` parameters, each "
                    "with the library's and the project's value), `changed` (the file was "
                    "changed after the library checked it: no verdict shown), `no_record` or "
                    "`unreadable`. Always the researcher's claim (`label`).",
                    "properties": {
                        "status": {"enum": ["matched", "changed", "no_record", "unreadable"]},
                        "message": {"type": "string"},
                        "label": {"type": "string"},
                        "results_json": {"type": "string"},
                        "uid": {"type": "string"},
                        "recorded_sha256": {"type": ["string", "null"]},
                        "statistic": {"type": ["string", "null"]},
                        "verdict": _VERDICT,
                        "reasons": _TEXTS,
                        "params": {"type": ["object", "null"]},
                        "relaxed": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "name": {"type": "string"},
                                    "library": {},
                                    "project": {},
                                },
                            },
                        },
                    },
                },
                "badge": {
                    "type": ["object", "null"],
                    "description": "What checkers are shown (the request and file pages "
                    "render this): `verdict` (null: not checked), `text`, `summary`, "
                    "`sentences` (why it is not better), `verified_by`, `params` (the "
                    "project's parameters in force).",
                    "properties": {
                        "verdict": _VERDICT,
                        "text": {"type": "string"},
                        "summary": {"type": "string"},
                        "sentences": _TEXTS,
                        "verified_by": {"type": ["string", "null"]},
                        "count_rules_verdict": _VERDICT,
                        "statistic": {"type": ["string", "null"]},
                        "statistic_source": {"type": ["string", "null"]},
                        "params": {"type": ["object", "null"]},
                        "library_status": {"type": ["string", "null"]},
                        "version": {"type": "integer"},
                    },
                },
            },
        },
    },
}

#: The fields a request's summary and its full view share.
_COMMON: dict[str, Any] = {
    "id": {"type": "string"},
    "project": {"type": "string"},
    "author": {"type": "string"},
    "title": {"type": "string"},
    "state": {"type": "string"},
    "state_label": {"type": "string", "description": "the state in words, for people"},
    "state_tone": {"type": "string", "description": "the badge colour family of the state"},
    "turn": {"type": "string"},
    "round": {"type": "integer"},
    "reviews_required": {"type": "integer"},
    "reviews_in": {"type": "integer"},
}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _op(
    summary: str,
    response: dict[str, Any],
    *,
    params: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
    status: str = "200",
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "parameters": params or [],
        "responses": {status: response, "400": _ERROR, "403": _ERROR, "404": _ERROR},
    }
    if body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": body}},
        }
        op["responses"]["409"] = _ERROR
        op["responses"]["422"] = _ERROR
    return op


def _break_glass_paths() -> dict[str, Any]:
    """Break glass (``egress.operations.break_glass``): the checkers' list, the hub's reports."""
    text = {"type": "string"}
    session = {
        "type": "object",
        "properties": {
            "session": text,
            "user": text,
            "reason": text,
            "target": text,
            "activated": text,
            "until": text,
            "active": {"type": "boolean"},
            "ended": {"type": ["string", "null"]},
            "ended_why": {"type": ["string", "null"]},
            "servers_opened": {"type": "array", "items": {"type": "object"}},
        },
    }
    report = {
        "type": "object",
        "required": ["event", "session", "user"],
        "properties": {
            "event": {"enum": ["activated", "used", "ended"]},
            "session": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
            "user": text,
            "reason": {"type": "string", "minLength": 10, "maxLength": 500},
            "target": text,
            "until": text,
            "server": text,
            "why": text,
        },
    }
    events = _op(
        "The hub reports a break-glass step (Authorization: Bearer <key derived from the "
        "service's hub token>; not for users)",
        _json({"type": "object"}, "Written to the audit log"),
        body=report,
        status="201",
    )
    return {
        "/api/break-glass": {
            "get": _op(
                "Break-glass sessions, newest first (output checkers and administrators)",
                _json({"type": "array", "items": session}),
            )
        },
        "/api/break-glass/events": {"post": events},
    }


_REQUEST_FILE_REF = {"$ref": "#/components/schemas/RequestFile"}
#: The writes that answer with what they changed, or with the whole request when the client
#: sends ``Prefer: return=representation`` (egress/web/api.py)
_FULL_VIEW_ON_PREFER = {
    "/api/requests/{request_id}/files",
    "/api/requests/{request_id}/files/{file_id}",
    "/api/requests/{request_id}/groups/{group}",
    *(f"/api/requests/{{request_id}}/{action}" for action in REQUEST_ACTIONS),
}


def _written(**changed: dict[str, Any]) -> dict[str, Any]:
    """A write's answer: the request's id and state, and the part the write changed."""
    return {
        "type": "object",
        "required": ["id", "state", *changed],
        "properties": {"id": {"type": "string"}, "state": {"type": "string"}, **changed},
    }


def openapi_document(prefix: str = "/services/egress/") -> dict[str, Any]:
    """The document; ``servers`` points at the service's prefix behind the hub's proxy."""
    summary = {"$ref": "#/components/schemas/RequestSummary"}
    detail = {"$ref": "#/components/schemas/Request"}
    obj = {"type": "object"}
    paths: dict[str, Any] = {
        "/api/whoami": {
            "get": _op(
                "The signed-in user, their projects and whether they check outputs",
                _json(
                    {
                        "type": "object",
                        "properties": {
                            "name": {"type": "string"},
                            "projects": {"type": "array", "items": {"type": "string"}},
                            "output_checker": {"type": "boolean"},
                        },
                    }
                ),
            )
        },
        "/api/projects/{project}/outputs": {
            "get": _op(
                "Files in a project's outputs folder that can be added to a request",
                _json(obj),
                params=[
                    {
                        "name": "project",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
            )
        },
        "/api/requests": {
            "get": _op(
                "Requests the user may see, most recently updated first, one page at a time "
                '(a `Link: <...>; rel="next"` header points at the next page)',
                _json({"type": "array", "items": summary}),
                params=[
                    {
                        "name": "limit",
                        "in": "query",
                        "description": "requests per page (default 100)",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 500},
                    },
                    {
                        "name": "after",
                        "in": "query",
                        "description": "the position the previous page's `next` link gives",
                        "schema": {"type": "string"},
                    },
                    {"name": "project", "in": "query", "schema": {"type": "string"}},
                    {"name": "state", "in": "query", "schema": {"type": "string"}},
                    {"name": "mine_to_review", "in": "query", "schema": {"type": "boolean"}},
                    {
                        "name": "older_than_days",
                        "in": "query",
                        "schema": {"type": "number", "minimum": 0, "maximum": 36500},
                    },
                ],
            ),
            "post": _op(
                "Start a draft request in a project",
                _json(summary, "Created"),
                body={
                    "type": "object",
                    "required": ["project", "title"],
                    "properties": {"project": {"type": "string"}, "title": {"type": "string"}},
                },
                status="201",
            ),
        },
        "/api/requests/{request_id}": {
            "get": _op("A request as the user may see it", _json(detail), params=[_REQ])
        },
        "/api/requests/{request_id}/files": {
            "post": _op(
                "Add (snapshot and check) a file from the project's outputs folder; answers "
                "with the request's id and state and the file's entry (`replaced`, "
                "`content_changed`: whether it replaced a file of the same path, with "
                "other bytes)",
                _json(_written(file=_REQUEST_FILE_REF), "Added"),
                params=[_REQ],
                body={
                    "type": "object",
                    "required": ["path"],
                    "properties": {"path": {"type": "string"}, "group": {"type": "string"}},
                },
                status="201",
            )
        },
        "/api/requests/{request_id}/files/{file_id}": {
            "delete": {
                **_op(
                    "Remove a file from a draft; answers with the request's id and state and "
                    "the removed file's id",
                    _json(_written(removed_file_id=_ID)),
                    params=[_REQ, _FILE],
                ),
            }
        },
        "/api/requests/{request_id}/files/{file_id}/preview": {
            "get": _op(
                "A file's preview made by the service, for project members and checkers: "
                "kind, size, hashes, a table's shape and its checks' verdicts and counts, "
                "never its bytes (audited as FILE_PREVIEWED)",
                _json(
                    {
                        "type": "object",
                        "properties": {
                            "request_id": {"type": "string"},
                            "file_id": {"type": "integer"},
                            "path": {"type": "string"},
                            "kind": {"type": "string"},
                            "size": {"type": "integer"},
                            "sha256": {"type": "string"},
                            "release_sha256": {"type": "string"},
                            "shape": {
                                "type": ["object", "null"],
                                "properties": {
                                    "rows": {"type": "integer"},
                                    "columns": {"type": "integer"},
                                },
                            },
                            "check": {"type": ["object", "null"]},
                        },
                    }
                ),
                params=[_REQ, _FILE],
            )
        },
        "/api/requests/{request_id}/files/{file_id}/vote": {
            "put": _op(
                "Vote on a file (checkers)",
                _json(obj),
                params=[_REQ, _FILE],
                body={
                    "type": "object",
                    "required": ["vote"],
                    "properties": {"vote": {"enum": ["approve", "request_changes", "undecided"]}},
                },
            )
        },
        "/api/requests/{request_id}/votes": {
            "post": _op(
                "Bulk votes of the signed-in checker, in the safe direction only: request "
                "changes on, or reset, every file (or the listed ones)",
                _json(
                    {
                        "type": "object",
                        "properties": {"changed": {"type": "array", "items": {"type": "string"}}},
                    }
                ),
                params=[_REQ],
                body={
                    "type": "object",
                    "required": ["vote"],
                    "properties": {
                        "vote": {"enum": ["request_changes", "undecided"]},
                        "file_ids": {
                            "type": "array",
                            "items": _ID,
                            "minItems": 1,
                            "maxItems": 1000,
                        },
                    },
                },
            )
        },
        "/api/requests/{request_id}/groups/{group}": {
            "put": _op(
                "Set a file group's context and disclosure controls; answers with the "
                "request's id and state and the group as set",
                _json(
                    _written(
                        group={
                            "type": "object",
                            "properties": {
                                "name": {"type": "string"},
                                "context": {"type": "string"},
                                "controls": {"type": "string"},
                            },
                        }
                    )
                ),
                params=[_REQ, _GROUP],
                body={
                    "type": "object",
                    "properties": {"context": {"type": "string"}, "controls": {"type": "string"}},
                },
            )
        },
        "/api/requests/{request_id}/comments": {
            "post": _op(
                "Comment on a request (private: checkers only)",
                _json(obj, "Created"),
                params=[_REQ],
                body={
                    "type": "object",
                    "required": ["body"],
                    "properties": {
                        "body": {"type": "string"},
                        "visibility": {"enum": ["public", "private"]},
                        "file_id": {"oneOf": [_ID, {"type": "null"}]},
                    },
                },
                status="201",
            )
        },
        "/api/requests/{request_id}/record": {
            "get": _op("The signed release record", _json(obj), params=[_REQ])
        },
        "/api/requests/{request_id}/files/{file_id}/reexecute": {
            "post": _op(
                "Ask for a trusted re-execution of a notebook of the request (checkers while "
                "it is reviewed; its author while it is theirs or just submitted). Queued: "
                "poll the re-execution until its status is no longer `queued`",
                _json(_REEXECUTION, "Queued"),
                params=[_REQ, _FILE],
                body={
                    "type": "object",
                    "properties": {
                        "parameters": {
                            "type": "object",
                            "description": "papermill parameters: names are Python "
                            "identifiers, values JSON",
                        }
                    },
                },
                status="202",
            )
        },
        "/api/requests/{request_id}/reexecutions": {
            "get": _op(
                "The request's trusted re-executions, newest first",
                _json({"type": "array", "items": _REEXECUTION}),
                params=[_REQ],
            )
        },
        "/api/requests/{request_id}/reexecutions/{reexecution_id}": {
            "get": _op(
                "One trusted re-execution: its outputs (sha256), the submitted files compared "
                "byte for byte, per file the run's SDC verdict (computed inside the notebook's "
                "process), the service's own recomputation (count tables) and the verdict "
                "shown (the worst of the two), the researcher's own metadata (not verified), "
                "the SDC parameters forced in the run, what re-execution proves and does not "
                "(`proves`, `does_not_prove`), the log and the service's signed record",
                _json(
                    {
                        **_REEXECUTION,
                        "properties": {
                            **_REEXECUTION["properties"],
                            "comparison": {"type": "array", "items": obj},
                            "proves": {"type": "string"},
                            "does_not_prove": {"type": "string"},
                            "sdc_params": {"type": "object"},
                            "project_sdc_params": {"type": "object"},
                            "sdc_params_problem": {"type": "string"},
                            "record": {"type": ["object", "null"]},
                            "log": {"type": "string"},
                        },
                    }
                ),
                params=[
                    _REQ,
                    {
                        "name": "reexecution_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
                    },
                ],
            )
        },
        "/api/audit/verify": {
            "get": _op(
                "Verify the audit log's hash chain and replay it against the data",
                _json(
                    {
                        "type": "object",
                        "properties": {
                            "ok": {"type": "boolean"},
                            "events_checked": {"type": "integer"},
                            "first_bad_seq": {"type": ["integer", "null"]},
                            "problem": {"type": ["string", "null"]},
                        },
                    }
                ),
            )
        },
    }
    paths["/api/requests/{request_id}/files/{file_id}"]["delete"]["responses"]["409"] = _ERROR
    for action in REQUEST_ACTIONS:
        if action == "release":
            said = (
                "Release the request; answers with its id, its state (`released`) and the "
                "signed release record (`release`)"
            )
            answer = _written(release=obj)
        else:
            said = f"{action.capitalize()} the request; answers with its summary as it now is"
            answer = summary
        paths[f"/api/requests/{{request_id}}/{action}"] = {
            "post": _op(said, _json(answer), params=[_REQ])
        }
        paths[f"/api/requests/{{request_id}}/{action}"]["post"]["responses"]["409"] = _ERROR
    for path, operations in paths.items():  # every write takes an Idempotency-Key
        for method in ("post", "put", "delete"):
            if method in operations:
                operations[method]["parameters"] = [
                    *operations[method]["parameters"],
                    _IDEMPOTENCY_KEY,
                    *([_PREFER] if path in _FULL_VIEW_ON_PREFER else []),
                ]
                if path in _FULL_VIEW_ON_PREFER:  # or the whole request, on Prefer
                    for status in ("200", "201"):
                        content = operations[method]["responses"].get(status, {}).get("content")
                        if content:
                            media = content["application/json"]
                            media["schema"] = {"anyOf": [media["schema"], detail]}
                operations[method]["responses"].setdefault("409", _ERROR)
                operations[method]["responses"].setdefault("422", _ERROR)
    paths.update(_break_glass_paths())
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Havre egress (output checking) API",
            "version": "1",
            "description": __doc__,
        },
        "servers": [{"url": prefix.rstrip("/")}],
        "paths": paths,
        "components": {
            "responses": {
                "Refused": _json(
                    {
                        "type": "object",
                        "required": ["status", "message"],
                        "properties": {
                            "status": {"type": "integer"},
                            "message": {"type": "string"},
                            "problems": {"type": "array", "items": {"type": "string"}},
                        },
                    },
                    "Refused, with the reason",
                )
            },
            "schemas": {
                "RequestFile": _REQUEST_FILE,
                "RequestSummary": {
                    "type": "object",
                    "properties": {**_COMMON, "files": {"type": "integer"}},
                },
                "Request": {
                    "type": "object",
                    "properties": {
                        **_COMMON,
                        "files": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/RequestFile"},
                        },
                        "allowed": {"type": "array", "items": {"type": "string"}},
                        "groups": {"type": "array", "items": obj},
                        "comments": {"type": "array", "items": obj},
                        "release": {"type": ["object", "null"]},
                    },
                },
            },
        },
    }
