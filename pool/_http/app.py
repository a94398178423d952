"""The gateway's FastAPI application: routes, auth, limits and error handling.

Owns: the HTTP surface (paths, status codes, what each documents in /openapi.json).
State lives in the :class:`~._link.PoolLink` it is given; this module keeps none.

Auth: every route needs ``Authorization: Bearer <token>`` (``/openapi.json`` too) except
``GET /healthz`` (it says only whether the pool is reachable) and ``GET /`` (the dashboard
page: static HTML that carries no data; the page asks for the token and sends it with every
data request). A
missing or wrong token is a 401 with ``WWW-Authenticate: Bearer`` and a JSON error.

Errors are JSON ``{"error": "<what to change>", "detail": ...}``: 4xx for bad input (422
names the field), 404 for an unknown execution or worker, 409 for a conflict (a live id
reused, a group whose budget is used up), 413 for a body over the limit, 503 while the pool
is unreachable. An unexpected exception becomes a 500 JSON error as a last resort only.

Blocking pool calls run in worker threads (``anyio.to_thread``); waiting for an
execution's end never holds a thread: it awaits the ``ended`` event the link delivers on
the loop, raced against the client's disconnect (the ASGI ``http.disconnect`` message).
"""

from __future__ import annotations

import asyncio
import functools
import sys
import traceback
from pathlib import Path as FsPath
from typing import Annotated, Any, Awaitable, Callable, Literal, Mapping, TypeVar

import anyio.to_thread
from fastapi import Body, Depends, FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from fastapi.security import HTTPBearer
from pydantic_core import to_jsonable_python
from starlette.exceptions import HTTPException

from .._exceptions import BudgetExceeded, PoolBroken, PoolClosed, QueueFull
from .._models import ExecutionResult
from ..shared import ExecutionStatus, InterruptReason
from . import _metrics
from ._auth import token_matches
from ._link import PoolLink, PoolUnavailable
from ._schemas import (LIVE, CancelManyRequest, CancelManyResult, CancelRequest, CancelResult, ErrorBody,
                       ExecutionDetail, ExecutionList, ExecutionRow, Health, SubmitRequest, Submitted, TimelineStep,
                       WorkerCancelResult, WorkerList)  # fmt: skip

__all__ = ("create_app", "MAX_BODY")

MAX_BODY = 1 << 20  # bytes of a request body (a submission's input included)
SSE_KEEPALIVE_S = 15.0  # a comment line this often on an idle event stream (proxies, dead peers)
SSE_RETRY_MS = 2000  # what EventSource waits before it reconnects
OUTCOME_WAIT_S = 30.0  # an ended execution's outcome is in the supervisor's history: this is only a safety bound
DASHBOARD = FsPath(__file__).with_name("dashboard.html")
_PLACEHOLDER = ("<!doctype html><meta charset=utf-8><title>interrupt-pool</title>"
                "<p>The interrupt-pool dashboard is not installed in this build. The API is under "
                "<code>/v1/</code>; its description is <code>/openapi.json</code> (with the bearer token).</p>")  # fmt: skip

T = TypeVar("T")
ExecId = Annotated[str, Path(min_length=1, max_length=256, description="The execution's id")]


def _err(description: str) -> dict[str, Any]:
    # The content is spelt out (not model=): a text/plain route's errors are still JSON.
    return {"description": description, "content": {"application/json": {"schema": ErrorBody.model_json_schema()}}}


Responses = dict[int | str, dict[str, Any]]
R401: Responses = {401: _err("No token, or a wrong one: send Authorization: Bearer <token>")}
R503: Responses = {503: _err("The pool is not reachable (not running, or it stopped): start it with pool serve --name NAME")}
R_BODY: Responses = {400: _err("The body is not valid JSON"), 413: _err("The body is larger than the gateway accepts (1 MiB)"),
          422: _err("A field is missing or invalid; the error names it")}  # fmt: skip
R422: Responses = {422: _err("A parameter is invalid; the error names it")}
R404: Responses = {404: _err("The pool has no such execution (it keeps a bounded history of ended ones)")}
R409: Responses = {409: _err("Conflict: the id is in use by a live execution, or the group's budget is used up")}


def _jsonable(value: Any) -> Any:
    """An agent's value as JSON: as is when it is JSON already, else its best JSON form
    (pydantic's), else its repr."""
    try:
        return to_jsonable_python(value, fallback=repr, bytes_mode="base64")
    except Exception:  # a value whose own serialisation raises: its repr still says what it was
        return repr(value)


def _outcome(out: ExecutionResult) -> ExecutionResult:
    return out.model_copy(update={"value": _jsonable(out.value)})


def _timeline_from(steps: Mapping[str, int | None]) -> list[TimelineStep]:
    requested = steps.get("requested")
    out = []
    for name in ("requested", "observed", "sigterm", "sigkill", "ended"):
        ns = steps.get(name)
        if ns:
            after = (ns - requested) / 1e9 if requested else None
            out.append(TimelineStep(step=name, mono_ns=ns, after_s=after))
    return out


def _outcome_timeline(out: ExecutionResult) -> list[TimelineStep]:
    i = out.interrupt
    if i is None:
        return []
    return _timeline_from({"requested": i.requested_ns, "observed": i.observed_ns, "sigterm": i.sigterm_ns,
                           "sigkill": i.sigkill_ns, "ended": i.ended_ns})  # fmt: skip


def _error(status: int, message: str, detail: Any = None, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "detail": detail}, status_code=status, headers=headers)


class _BodyLimit:
    """Pure ASGI middleware: a body over ``limit`` bytes is refused with 413 before any route
    reads it (by its Content-Length, or while a chunked one is read). The ``receive`` it hands
    on is the server's own after the body, so routes still see ``http.disconnect``. A refused
    body of up to ``DRAIN_FACTOR * limit`` bytes is read and dropped first, so the client,
    still sending, reads the 413 instead of a reset connection; a larger one is cut off."""

    DRAIN_FACTOR = 16

    def __init__(self, app: Callable, limit: int):
        self.app, self.limit = app, limit

    async def _refuse(self, receive: Callable, send: Callable, status: int, message: str, drain: bool) -> None:
        if drain:
            size = 0
            while size <= self.DRAIN_FACTOR * self.limit:
                msg = await receive()
                if msg["type"] != "http.request":
                    return  # the client went away
                size += len(msg.get("body", b""))
                if not msg.get("more_body"):
                    break
        body = JSONResponse({"error": message, "detail": None}).body
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or ())
        length = headers.get(b"content-length")
        too_big = (f"the request body is larger than {self.limit} bytes; send a smaller input (or pass large data "
                   "by reference, e.g. a path or a URL)")  # fmt: skip
        if length is not None:
            if not length.isdigit():
                return await self._refuse(receive, send, 400, "the Content-Length header is not a number", False)
            if int(length) > self.limit:
                drain = int(length) <= self.DRAIN_FACTOR * self.limit
                return await self._refuse(receive, send, 413, too_big, drain)
            return await self.app(scope, receive, send)
        if b"chunked" not in headers.get(b"transfer-encoding", b"").lower():
            return await self.app(scope, receive, send)
        chunks, size = [], 0
        while True:
            msg = await receive()
            if msg["type"] != "http.request":
                return  # the client went away while sending
            chunks.append(msg.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return await self._refuse(receive, send, 413, too_big, bool(msg.get("more_body")))
            if not msg.get("more_body"):
                break
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _until_disconnect(request: Request) -> None:
    """Returns when the client has gone (the body was read already: the next ASGI message is
    the disconnect, whenever it comes)."""
    while True:
        msg = await request.receive()
        if msg["type"] == "http.disconnect":
            return


async def _unless_disconnected(request: Request, work: Awaitable[Any]) -> tuple[bool, Any]:
    """(True, result) once ``work`` is done, or (False, None) if the client disconnected first
    (``work`` is then cancelled)."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_until_disconnect(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (task, gone):
            if not t.done():
                t.cancel()
    if task.done() and not task.cancelled():
        return True, task.result()
    return False, None


def create_app(link: PoolLink, token: str, cors: list[str] | None = None, max_body: int = MAX_BODY) -> FastAPI:
    """The gateway for ``link``'s pool, requiring ``token``."""

    async def lifespan(app: FastAPI):
        link.loop = asyncio.get_running_loop()
        try:
            await anyio.to_thread.run_sync(link.get)
        except PoolUnavailable as exc:
            print(f"pool http: {exc}", file=sys.stderr, flush=True)
        yield
        await anyio.to_thread.run_sync(link.close)

    app = FastAPI(title="interrupt-pool", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None,
                  description="Submit, watch and stop agent executions of one named interrupt-pool. Every route but "
                              "/healthz (and the dashboard page at /) needs Authorization: Bearer <token>.")  # fmt: skip
    bearer = HTTPBearer(auto_error=False, description="The gateway's token (POOL_HTTP_TOKEN or its token file)")

    async def require_token(request: Request, _cred: Any = Depends(bearer)) -> None:
        if not token_matches(token, request.headers.get("authorization")):
            raise HTTPException(401, "missing or wrong bearer token: send 'Authorization: Bearer <token>' with the "
                                     "token from POOL_HTTP_TOKEN or the gateway's token file",
                                headers={"WWW-Authenticate": 'Bearer realm="interrupt-pool"'})  # fmt: skip

    auth = [Depends(require_token)]

    async def run(fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kw))

    async def pool_():
        return await run(link.get)

    # -- errors ---------------------------------------------------------------------

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> Response:
        return _error(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        parts = []
        for e in errors[:3]:
            loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body" or len(e.get("loc", ())) == 1)
            parts.append(f"{loc or 'body'}: {e.get('msg')}")
        status = 400 if any(e.get("type") == "json_invalid" for e in errors) else 422
        return _error(status, "invalid request: " + "; ".join(parts), to_jsonable_python(errors, fallback=repr))

    @app.exception_handler(PoolUnavailable)
    async def _unavailable(request: Request, exc: PoolUnavailable) -> Response:
        return _error(503, str(exc))

    @app.exception_handler(PoolBroken)
    @app.exception_handler(PoolClosed)
    async def _broken(request: Request, exc: Exception) -> Response:
        return _error(503, str(link.unavailable(f"the connection broke: {exc}")))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> Response:
        traceback.print_exception(exc, file=sys.stderr)
        return _error(500, f"the gateway failed on {request.method} {request.url.path} ({type(exc).__name__}: "
                           f"{exc}); this is a bug in interrupt-pool's gateway, please report it")  # fmt: skip

    # -- open routes ------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    async def dashboard() -> Response:
        try:
            return HTMLResponse(DASHBOARD.read_text(encoding="utf-8"))
        except OSError:
            return HTMLResponse(_PLACEHOLDER)

    @app.get("/openapi.json", include_in_schema=False, dependencies=auth)
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/healthz", response_model=Health, summary="Whether the gateway reaches the pool (no auth)")
    async def healthz() -> Health:
        try:
            pool = await pool_()
        except PoolUnavailable as exc:
            return Health(reachable=False, pool=link.name, error=str(exc))
        return Health(reachable=True, pool=link.name, supervisor_pid=pool.supervisor_pid)

    # -- executions ---------------------------------------------------------------------

    async def wait_ended(pool: Any, execution_id: str, fut: asyncio.Future) -> ExecutionResult:
        """The outcome of ``execution_id`` once it has ended; ``fut`` (from link.watch, taken
        before the caller acted) is set by its ``ended`` event."""
        try:
            status = await run(pool.status)
            row = next((r for r in status["executions"] if r["id"] == execution_id), None)
            if row is not None and row["status"] in LIVE:
                await fut
        finally:
            link.unwatch(execution_id, fut)
        return await run(pool.outcome, execution_id, OUTCOME_WAIT_S)

    @app.post("/v1/executions", status_code=202, dependencies=auth, summary="Submit an execution",
              responses={202: {"model": Submitted, "description": "Queued"},
                         200: {"model": ExecutionDetail, "description": "With wait=true: it has ended"},
                         **R401, **R_BODY, **R409, **R503})  # fmt: skip
    async def submit(request: Request, body: SubmitRequest,
                     wait: Annotated[bool, Query(description="Answer when it has ended, with its outcome")] = False,
                     on_disconnect: Annotated[Literal["cancel", "continue"], Query(
                         description="With wait=true: what a client that disconnects before the end means")] = "continue",
                     ) -> Response:  # fmt: skip
        pool = await pool_()

        def submit_() -> Any:
            if body.group is not None:
                pool.group(body.group)  # created without a budget if new; left as it is otherwise
            return pool.submit(body.agent, body.input, id=body.id, timeout=body.timeout, budget=body.budget,
                               group=body.group, priority=body.priority)  # fmt: skip

        try:
            ex = await run(submit_)
        except BudgetExceeded as exc:
            raise HTTPException(409, str(exc)) from None
        except QueueFull as exc:
            raise HTTPException(409, str(exc)) from None
        except ValueError as exc:
            # a live id reused is a conflict; everything else the pool refuses is bad input
            raise HTTPException(409 if "already in use" in str(exc) else 422, str(exc)) from None
        except (TypeError, RecursionError, OverflowError) as exc:
            raise HTTPException(422, f"{exc}" if not isinstance(exc, RecursionError)
                                else "the input is nested too deeply to send; flatten it") from None  # fmt: skip
        url = f"/v1/executions/{ex.id}"
        if not wait:
            return JSONResponse(Submitted(id=ex.id, status=ex.status, url=url).model_dump(mode="json"),
                                status_code=202, headers={"Location": url})  # fmt: skip
        done, out = await _unless_disconnected(request, ex.wait())
        if not done:
            if on_disconnect == "cancel":
                await run(pool.cancel, ex.id, "graceful", InterruptReason.USER_CANCELLED,
                          "the HTTP client waiting for it disconnected (on_disconnect=cancel)")  # fmt: skip
            return Response(status_code=499)  # nobody reads it: the client has gone
        if out.error is not None and out.error.type in ("PoolBroken", "SupervisorDied", "ClientDisconnected",
                                                        "PoolClosed"):  # fmt: skip
            raise link.unavailable(f"the gateway lost the pool before {ex.id!r} ended: {out.error.message}")
        detail = ExecutionDetail(id=out.id, status=out.status, live=False, outcome=_outcome(out),
                                 timeline=_outcome_timeline(out))  # fmt: skip
        return JSONResponse(detail.model_dump(mode="json"), status_code=200, headers={"Location": url})

    @app.get("/v1/executions", response_model=ExecutionList, dependencies=auth, summary="List executions",
             responses={**R401, **R422, **R503})  # fmt: skip
    async def list_executions(
        status: Annotated[ExecutionStatus | None, Query(description="Only this status")] = None,
        group: Annotated[str | None, Query(max_length=256, description="Only this group")] = None,
        limit: Annotated[int, Query(ge=1, le=1000, description="Page size")] = 100,
        offset: Annotated[int, Query(ge=0, le=10**9, description="Rows to skip (next_offset of the previous page)")] = 0,
    ) -> ExecutionList:
        pool = await pool_()
        st = await run(pool.status)
        rows = [r for r in st["executions"] if (status is None or r["status"] == status.value)
                and (group is None or r.get("group") == group)]  # fmt: skip
        page = rows[offset : offset + limit]
        nxt = offset + limit if offset + limit < len(rows) else None
        return ExecutionList(items=[ExecutionRow(**r) for r in page], total=len(rows), offset=offset, limit=limit,
                             next_offset=nxt)  # fmt: skip

    @app.get("/v1/executions/{execution_id}", response_model=ExecutionDetail, dependencies=auth,
             summary="One execution: live info, or its outcome and stop timeline",
             responses={**R401, **R404, **R422, **R503})  # fmt: skip
    async def get_execution(execution_id: ExecId) -> ExecutionDetail:
        pool = await pool_()
        st = await run(pool.status)
        row = next((r for r in st["executions"] if r["id"] == execution_id), None)
        if row is None:
            raise HTTPException(404, f"pool {link.name!r} has no execution {execution_id!r} (it keeps the last "
                                     f"{st.get('history_limit')} ended ones); list them with GET /v1/executions")  # fmt: skip
        if row["status"] in LIVE:
            steps = dict(link.timelines.get(execution_id) or {})
            return ExecutionDetail(id=execution_id, status=row["status"], live=True, row=ExecutionRow(**row),
                                   timeline=_timeline_from(steps))  # fmt: skip
        try:
            out = await run(pool.outcome, execution_id, OUTCOME_WAIT_S)
        except KeyError:
            raise HTTPException(404, f"execution {execution_id!r} has just left the pool's history") from None
        return ExecutionDetail(id=execution_id, status=out.status, live=False, row=ExecutionRow(**row),
                               outcome=_outcome(out), timeline=_outcome_timeline(out))  # fmt: skip

    @app.get("/v1/executions/{execution_id}/logs", response_class=PlainTextResponse, dependencies=auth,
             summary="What an execution printed (stdout and stderr, its tools' included)",
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "The output"},
                        **R401, **R404, 409: _err("The pool does not capture output (log_dir=None)"),
                        **R422, **R503})  # fmt: skip
    async def logs(execution_id: ExecId) -> PlainTextResponse:
        pool = await pool_()
        if pool.log_dir is None:
            raise HTTPException(409, f"pool {link.name!r} does not capture output (it runs with log_dir=None)")
        from .._supervisor.output import read_log

        text = await run(read_log, pool.log_dir, execution_id)
        if not text and not await run(pool.has, execution_id):
            raise HTTPException(404, f"pool {link.name!r} has no execution {execution_id!r}")
        return PlainTextResponse(text)

    @app.post("/v1/executions/cancel", response_model=CancelManyResult, dependencies=auth,
              summary="Cancel many executions: by ids, group or status (given together, all must match)",
              responses={**R401, **R_BODY, 404: _err("The pool has no such group"), **R503})  # fmt: skip
    async def cancel_many(body: CancelManyRequest) -> CancelManyResult:
        if body.ids is None and body.group is None and body.status is None:
            raise HTTPException(422, "say which executions to cancel: give ids, group or status (e.g. "
                                     '{"status": ["running"]})')  # fmt: skip
        pool = await pool_()
        if body.group is not None and body.ids is None and body.status is None:
            try:
                n = await run(pool.cancel_group, body.group, body.mode, InterruptReason.USER_CANCELLED, body.reason)
            except ValueError as exc:
                raise HTTPException(404, str(exc)) from None
            return CancelManyResult(cancelled=n, ids=[])
        st = await run(pool.status)
        wanted = set(body.ids) if body.ids is not None else None
        statuses = set(body.status) if body.status is not None else set(LIVE)
        targets = [r["id"] for r in st["executions"] if r["status"] in statuses and r["status"] in LIVE
                   and (wanted is None or r["id"] in wanted) and (body.group is None or r.get("group") == body.group)]

        def cancel_all() -> list[str]:
            return [i for i in targets
                    if pool.cancel(i, body.mode, InterruptReason.USER_CANCELLED, body.reason)]  # fmt: skip

        done = await run(cancel_all)
        return CancelManyResult(cancelled=len(done), ids=done)

    @app.post("/v1/executions/{execution_id}/cancel", response_model=CancelResult, dependencies=auth,
              summary="Cancel one execution; with wait=true answer once it has ended and its processes are gone",
              responses={**R401, **R404, **R_BODY, **R503})  # fmt: skip
    async def cancel(request: Request, execution_id: ExecId, body: Annotated[CancelRequest | None, Body()] = None,
                     wait: Annotated[bool, Query(description="Answer once it has ended, with its outcome")] = False,
                     ) -> Response:  # fmt: skip
        body = body or CancelRequest()
        pool = await pool_()
        fut = link.watch(execution_id) if wait else None
        try:
            ok = await run(pool.cancel, execution_id, body.mode, InterruptReason.USER_CANCELLED, body.reason)
            if not ok and not await run(pool.has, execution_id):
                raise HTTPException(404, f"pool {link.name!r} has no execution {execution_id!r}; list them with "
                                         "GET /v1/executions")  # fmt: skip
            if fut is None:
                return JSONResponse(CancelResult(id=execution_id, cancelled=ok).model_dump(mode="json"))
            done, out = await _unless_disconnected(request, wait_ended(pool, execution_id, fut))
        finally:
            if fut is not None:
                link.unwatch(execution_id, fut)
        if not done:
            return Response(status_code=499)  # the client has gone; the stop goes on
        res = CancelResult(id=execution_id, cancelled=ok, outcome=_outcome(out), timeline=_outcome_timeline(out))
        return JSONResponse(res.model_dump(mode="json"))

    # -- workers ------------------------------------------------------------------------

    @app.get("/v1/workers", response_model=WorkerList, dependencies=auth, summary="The pool's workers",
             responses={**R401, **R503})  # fmt: skip
    async def workers() -> WorkerList:
        pool = await pool_()
        return WorkerList(workers=await run(pool.workers))

    @app.post("/v1/workers/{worker_id}/cancel", response_model=WorkerCancelResult, dependencies=auth,
              summary="Stop whatever execution this worker runs",
              responses={**R401, 404: _err("The pool has no such worker"), **R_BODY, **R503})  # fmt: skip
    async def cancel_worker(worker_id: Annotated[int, Path(ge=0, le=2**31 - 1)],
                            body: Annotated[CancelRequest | None, Body()] = None) -> WorkerCancelResult:  # fmt: skip
        body = body or CancelRequest()
        pool = await pool_()
        ws = {w.id: w for w in await run(pool.workers)}
        if worker_id not in ws:
            raise HTTPException(404, f"pool {link.name!r} has no worker {worker_id}; its workers are "
                                     f"{sorted(ws) or 'none'} (GET /v1/workers)")  # fmt: skip
        ok = await run(pool.cancel_worker, worker_id, body.mode, InterruptReason.USER_CANCELLED, body.reason)
        return WorkerCancelResult(worker_id=worker_id, cancelled=ok, execution_id=ws[worker_id].execution_id)

    # -- events and metrics ---------------------------------------------------------------

    @app.get("/v1/events", dependencies=auth, response_class=StreamingResponse,
             summary="Server-Sent Events; resume with Last-Event-ID",
             responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}},
                              "description": "An endless stream: 'id: N' and 'data: <event JSON>' per event"},
                        **R401, 400: _err("Last-Event-ID is not a number"), **R422, **R503})  # fmt: skip
    async def events(last_event_id: Annotated[str | None, Header(
                        alias="Last-Event-ID", description="The id of the last event received: the ones after it "
                                                           "that the gateway still holds are sent first")] = None,
                     ) -> StreamingResponse:  # fmt: skip
        last: int | None = None
        if last_event_id is not None and last_event_id.strip():
            text = last_event_id.strip()
            if not text.isdigit() or len(text) > 30:
                raise HTTPException(400, f"Last-Event-ID {last_event_id[:40]!r} is not the id of an event this gateway "
                                         "sent (a whole number); reconnect without it to start from now")  # fmt: skip
            last = int(text)
        await pool_()
        sub, replay, gap = link.subscribe(last)

        def frame(eid: int | None, data: str) -> str:
            return (f"id: {eid}\n" if eid is not None else "") + f"data: {data}\n\n"

        async def stream():
            import json

            try:
                yield f"retry: {SSE_RETRY_MS}\n\n"
                sent = last or 0
                if gap is not None:
                    yield frame(gap["seq"], json.dumps(gap, separators=(",", ":")))
                for eid, data in replay:
                    yield frame(eid, data)
                    sent = eid
                while True:
                    while sub.items:
                        eid, data = sub.items.popleft()
                        if eid > sent:  # (an event both replayed and queued is sent once)
                            sent = eid
                            yield frame(eid, data)
                    if sub.overflow:
                        yield frame(None, json.dumps({"kind": "gap", "message": "this client fell too far behind; "
                                                      f"reconnect with Last-Event-ID: {sent}"}))  # fmt: skip
                        return
                    if sub.closed:
                        return
                    sub.wake.clear()
                    try:
                        await asyncio.wait_for(sub.wake.wait(), SSE_KEEPALIVE_S)
                    except asyncio.TimeoutError:
                        yield ": keepalive\n\n"
            finally:
                link.unsubscribe(sub)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})  # fmt: skip

    @app.get("/metrics", response_class=PlainTextResponse, dependencies=auth, summary="Prometheus metrics",
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                              "description": "Prometheus text format 0.0.4"}, **R401, **R503})  # fmt: skip
    async def metrics() -> PlainTextResponse:
        pool = await pool_()
        st = await run(pool.status)
        text = _metrics.render(st, link.stop_latency, {"sse_clients": len(link.subscribers),
                                                        "events": link.events_seen})  # fmt: skip
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    app.add_middleware(_BodyLimit, limit=max_body)
    if cors:
        app.add_middleware(CORSMiddleware, allow_origins=list(cors), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type", "Last-Event-ID"])  # fmt: skip
    return app
