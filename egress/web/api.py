"""The egress service's JSON API (under ``api/``, described by ``api/openapi.json``).

Refusals are JSON objects with the status and the core's sentence; bodies larger than
:data:`~egress.web.base.MAX_API_BODY` are refused before they are read. The hub's break-glass
reports come in with the hub's key, not a user session.
"""

from __future__ import annotations

import functools
import json
import logging
from datetime import timedelta
from typing import Any

from tornado import ioloop, web

from egress.domain.policy import PermissionDenied
from egress.domain.workflow import RequestState
from egress.operations import break_glass
from egress.operations.facade import EgressError
from egress.web.base import GENERIC_REFUSALS, ApiHandler, reason_phrase
from egress.web.openapi import REQUEST_ACTIONS, openapi_document
from havre.enclave.logs import security_event

log = logging.getLogger("egress.web")


class WhoAmIApi(ApiHandler):
    @web.authenticated
    async def get(self) -> None:
        actor = self.actor()
        self.send(
            {
                "name": actor.username,
                "projects": sorted(actor.projects),
                "output_checker": actor.is_checker,
            }
        )


class OutputsApi(ApiHandler):
    @web.authenticated
    async def get(self, project: str) -> None:
        self.send(await self.run(self.service.list_outputs, self.actor(), project))


class RequestsApi(ApiHandler):
    @web.authenticated
    async def get(self) -> None:
        arg = self.get_query_argument
        older = arg("older_than_days", "")
        try:
            days = float(older) if older else None
            if days is not None and not 0 <= days <= 36500:
                raise ValueError
        except ValueError:
            self._refusal = {"message": "older_than_days must be a number of days, 0 to 36500."}
            raise web.HTTPError(400) from None
        items, after = await self.page_of_requests(
            project=arg("project", None),
            state=arg("state", None),
            mine_to_review=arg("mine_to_review", "") in ("1", "true"),
            older_than=timedelta(days=days) if days is not None else None,
        )
        if after is not None:
            self.set_header("Link", f'<{self.next_page_url(after)}>; rel="next"')
        self.send(items)

    @web.authenticated
    async def post(self) -> None:
        body = self.body()
        summary = await self.run(
            self.service.create_request,
            self.actor(),
            str(body.get("project", "")),
            str(body.get("title", "")),
        )
        self.send(summary, 201)


class RequestApi(ApiHandler):
    @web.authenticated
    async def get(self, request_id: str) -> None:
        self.send(await self.run(self.service.get_request, self.actor(), request_id))


def wants_full_view(handler: ApiHandler) -> bool:
    """Whether a write asks to be answered with the whole request, as ``GET`` gives it
    (``Prefer: return=representation``, RFC 7240). Otherwise a write answers with what it
    changed: the request's id and state and the changed part (one read less per write)."""
    prefer = handler.request.headers.get("Prefer", "")
    return any(
        part.strip().lower() == "return=representation"
        for part in prefer.replace(";", ",").split(",")
    )


async def send_write_answer(
    handler: ApiHandler, request_id: str, answer: dict[str, Any], status: int = 200
) -> None:
    """Send a write's own answer, or the whole request if the client prefers it."""
    if wants_full_view(handler):
        answer = await handler.run(handler.service.get_request, handler.actor(), request_id)
    handler.send(answer, status)


class RequestActionApi(ApiHandler):
    @web.authenticated
    async def post(self, request_id: str, action: str) -> None:
        if action not in REQUEST_ACTIONS:
            raise web.HTTPError(404)
        method = getattr(self.service, REQUEST_ACTIONS[action])
        result = await self.run(method, self.actor(), request_id)
        if action == "release":  # the signed release record, and the state it leads to
            answer = {"id": request_id, "state": RequestState.RELEASED.value, "release": result}
        else:  # the request's summary as it now is (state, turn, round, reviews)
            answer = result
        await send_write_answer(self, request_id, answer)


class FilesApi(ApiHandler):
    @web.authenticated
    async def post(self, request_id: str) -> None:
        body = self.body()
        entry = await self.run(
            self.service.add_file,
            self.actor(),
            request_id,
            str(body.get("path", "")),
            str(body.get("group", "") or "main"),
        )
        state = entry.pop("request_state")
        await send_write_answer(
            self, request_id, {"id": request_id, "state": state, "file": entry}, 201
        )


class FilePreviewApi(ApiHandler):
    """The preview of a file the service makes for members (audited); never its bytes."""

    @web.authenticated
    async def get(self, request_id: str, file_id: str) -> None:
        self.send(await self.run(self.service.preview_file, self.actor(), request_id, file_id))


class FileApi(ApiHandler):
    @web.authenticated
    async def delete(self, request_id: str, file_id: str) -> None:
        removed = await self.run(self.service.remove_file, self.actor(), request_id, file_id)
        answer = {
            "id": removed["id"],
            "state": removed["state"],
            "removed_file_id": removed["file_id"],
        }
        await send_write_answer(self, request_id, answer)


class VoteApi(ApiHandler):
    @web.authenticated
    async def put(self, request_id: str, file_id: str) -> None:
        vote = str(self.body().get("vote", ""))
        self.send(await self.run(self.service.vote, self.actor(), request_id, file_id, vote))


class BulkVotesApi(ApiHandler):
    """Bulk votes on a request's files, in the safe direction only: request changes, or reset."""

    BULK = {"request_changes": "request_changes", "undecided": "reset_votes"}

    @web.authenticated
    async def post(self, request_id: str) -> None:
        body = self.body()
        vote = body.get("vote")
        if not isinstance(vote, str) or vote not in self.BULK:
            self._refusal = {
                "message": "Bulk votes go in the safe direction only: vote is request_changes "
                "or undecided (approve each file on its own, after looking at it)."
            }
            raise web.HTTPError(400)
        file_ids = body.get("file_ids")
        if file_ids is not None and not (
            isinstance(file_ids, list)
            and 0 < len(file_ids) <= 1000
            and all(type(i) is int and i > 0 for i in file_ids)
        ):
            self._refusal = {"message": "file_ids must be a list of 1 to 1000 file ids."}
            raise web.HTTPError(400)
        method = getattr(self.service, self.BULK[vote])
        changed = await self.run(method, self.actor(), request_id, file_ids)
        self.send({"changed": changed})


class GroupApi(ApiHandler):
    @web.authenticated
    async def put(self, request_id: str, group: str) -> None:
        body = self.body()
        changed = await self.run(
            self.service.set_group_context,
            self.actor(),
            request_id,
            group,
            str(body.get("context", "")),
            str(body.get("controls", "")),
        )
        state = changed.pop("request_state")
        await send_write_answer(
            self, request_id, {"id": request_id, "state": state, "group": changed}
        )


class CommentsApi(ApiHandler):
    @web.authenticated
    async def post(self, request_id: str) -> None:
        body = self.body()
        self.send(
            await self.run(
                self.service.comment,
                self.actor(),
                request_id,
                str(body.get("body", "")),
                str(body.get("visibility", "public")),
                body.get("file_id"),
            ),
            201,
        )


class RecordApi(ApiHandler):
    @web.authenticated
    async def get(self, request_id: str) -> None:
        record = await self.run(self.service.release_record, self.actor(), request_id)
        if record is None:
            self._refusal = {"message": f"Request {request_id} has no release record."}
            raise web.HTTPError(404)
        self.send(record)


class AuditVerifyApi(ApiHandler):
    @web.authenticated
    async def get(self) -> None:
        actor = self.actor()
        if not (actor.is_checker or actor.is_admin):
            self._refusal = {"message": "Only output checkers and administrators verify the log."}
            raise web.HTTPError(403)
        report = await self.run(self.service.verify_audit)
        self.send(
            {
                "ok": report.ok,
                "events_checked": report.events_checked,
                "first_bad_seq": report.first_bad_seq,
                "problem": report.problem,
            }
        )


def _reexecution_for_json(detail: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in detail.items() if k != "executed_notebook_bytes"}


class ReexecuteApi(ApiHandler):
    @web.authenticated
    async def post(self, request_id: str, file_id: str) -> None:
        body = self.body()
        entry = await self.run(
            self.service.request_reexecution,
            self.actor(),
            request_id,
            file_id,
            body.get("parameters"),
        )
        self.send(entry, 202)


class ReexecutionsApi(ApiHandler):
    @web.authenticated
    async def get(self, request_id: str) -> None:
        self.send(await self.run(self.service.list_reexecutions, self.actor(), request_id))


class ReexecutionApi(ApiHandler):
    @web.authenticated
    async def get(self, request_id: str, reexecution_id: str) -> None:
        detail = await self.run(self.service.reexecution, self.actor(), request_id, reexecution_id)
        self.send(_reexecution_for_json(detail))


class BreakGlassApi(ApiHandler):
    @web.authenticated
    async def get(self) -> None:
        self.send(await self.run(break_glass.sessions, self.service, self.actor()))


class BreakGlassEventsApi(web.RequestHandler):
    """The hub's break-glass reports (``egress.operations.break_glass``): no user session, the
    hub's key.

    Not a cookie-authenticated page, so no XSRF token: a browser can't send the key.
    """

    def check_xsrf_cookie(self) -> None:
        return None

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        message = getattr(self, "_refusal", None) or GENERIC_REFUSALS.get(status_code, "Error.")
        self.finish(json.dumps({"status": status_code, "message": message}))

    def _refuse(self, status: int, message: str) -> web.HTTPError:
        self._refusal = message
        return web.HTTPError(status, reason=reason_phrase(status))

    async def post(self) -> None:
        token = self.settings.get("hub_api_token", "")
        if not break_glass.key_matches(self.request.headers.get("Authorization"), token):
            security_event(
                log,
                "egress.refused",
                "a break-glass report with a wrong key from %s refused",
                self.request.remote_ip,
                client_ip=self.request.remote_ip,
                status=403,
                path=self.request.path,
            )
            raise self._refuse(403, "Only the hub reports break-glass events (a wrong key).")
        if len(self.request.body or b"") > 16 * 1024:
            raise self._refuse(413, "The report is larger than 16 KiB.")
        try:
            body = json.loads(self.request.body or b"null")
        except (ValueError, RecursionError):
            raise self._refuse(400, "The body must be a JSON object.") from None
        pool = self.settings["egress_executor"]
        job = functools.partial(break_glass.record, self.settings["egress_service"], body)
        try:
            written = await ioloop.IOLoop.current().run_in_executor(pool, job)
        except (PermissionDenied, EgressError) as exc:
            raise self._refuse(exc.status, exc.reason) from None
        self.set_status(201)
        self.finish(json.dumps(written))


class ApiNotFound(ApiHandler):
    """Any other address under api/: a JSON refusal, like the rest of the API."""

    def prepare(self) -> None:
        self._refusal = {"message": f"There is no API endpoint {self.request.path}."}
        raise web.HTTPError(404)


class OpenApiDocument(web.RequestHandler):
    """The API's OpenAPI document (public: it holds no data)."""

    async def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(openapi_document(self.settings["egress_prefix"])))
