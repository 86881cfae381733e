"""The HTTP ingress: OpenAI's Videos API (`/v1/videos`), the model list, and health, on Serve's HTTP port.

Each Router replica builds this app over itself (`Router.__serve_build_asgi_app__`), so the HTTP API
shares the Router's validation, admission, API keys, job store and result store with gRPC: one
implementation of the rules, two wire formats (`serve/http_wire.py` is the HTTP one). Errors carry
OpenAI's error JSON, the HTTP status of their gRPC code, and `x-should-retry: false` where a retry
cannot help, which the SDK honours.
"""

from __future__ import annotations

import importlib.resources
import json
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
from fastapi import FastAPI
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse

from serve import http_wire
from serve.auth import METADATA_KEY, Caller
from serve.catalog import get_spec
from serve.cold_start import expected_cold_start
from serve.errors import InvalidArgument, NotFound, NotReady, error_status, unwrapped
from serve.job_records import JobState
from serve.request import MAX_IMAGE_BYTES
from serve.results import JOB_ID_PATTERN, PROGRESSIVE_MIME

if TYPE_CHECKING:
    from serve.router import Router

# The image (base64 in JSON is 4/3 of it) and every other field fit; a larger body is refused unread.
MAX_BODY_BYTES = MAX_IMAGE_BYTES * 4 // 3 + (1 << 20)
# A multipart field of a dict, as the SDK sends one: `input_reference[image_url]`.
NESTED_FIELD = re.compile(r"^(\w+)\[(\w+)\]$")
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")

Handler = Callable[[Request], Awaitable[Response]]


def _error_response(error: BaseException) -> JSONResponse:
    code, message = error_status(error)
    status, body = http_wire.error_body(code, message, getattr(unwrapped(error), "field", None))
    headers = {} if status in http_wire.RETRYABLE else {"x-should-retry": "false"}
    return JSONResponse(body, status_code=status, headers=headers)


def _caller(router: Router, request: Request) -> Caller:
    """The caller named by `Authorization: Bearer <key>`, checked as gRPC's metadata is."""
    return router.auth.authenticate(
        [(METADATA_KEY, value) for value in request.headers.getlist(METADATA_KEY)]
    )


def _video_id(request: Request) -> str:
    video_id = request.path_params["video_id"]
    if not JOB_ID_PATTERN.fullmatch(video_id):
        raise NotFound(f"video {video_id!r} does not exist: ids are the 32 hex characters create returned")
    return video_id


async def _body_bytes(request: Request) -> bytes:
    """The request body, refused (INVALID_ARGUMENT) past MAX_BODY_BYTES without reading the rest."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise InvalidArgument("body", f"{declared} bytes is more than the limit of {MAX_BODY_BYTES}")
    data = bytearray()
    async for piece in request.stream():
        data += piece
        if len(data) > MAX_BODY_BYTES:
            raise InvalidArgument("body", f"more than the limit of {MAX_BODY_BYTES} bytes")
    return bytes(data)


async def _create_body(request: Request) -> dict[str, Any]:
    """The create body as a dict, from JSON or a multipart form (an uploaded file becomes its bytes)."""
    data = await _body_bytes(request)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in FORM_TYPES:

        async def replay() -> dict[str, Any]:
            return {"type": "http.request", "body": data, "more_body": False}

        body: dict[str, Any] = {}
        async with Request(request.scope, replay).form(max_files=1, max_fields=64) as form:
            for key, value in form.multi_items():
                value = await value.read() if isinstance(value, UploadFile) else value
                if nested := NESTED_FIELD.fullmatch(key):
                    body.setdefault(nested[1], {})[nested[2]] = value
                else:
                    body[key] = value
        return body
    if content_type != "application/json":
        raise InvalidArgument(
            "content-type", f"{content_type or 'none'}: send application/json or multipart/form-data"
        )
    try:
        body = json.loads(data or b"{}")
    except ValueError as error:
        raise InvalidArgument("body", f"is not JSON: {error}") from None
    if not isinstance(body, dict):
        raise InvalidArgument("body", "must be a JSON object")
    return body


def build_http_app(router: Router) -> FastAPI:
    """The HTTP API of one Router replica."""
    from serve.router import Call  # the Router's module imports this one when it builds the app

    app = FastAPI(title="videogen-serve", description="OpenAI-compatible video generation", version="1")
    ttl_s = router.config.job_ttl_s
    poll_headers = {"openai-poll-after-ms": str(http_wire.POLL_AFTER_MS)}

    def route(method: str, path: str, name: str) -> Callable[[Handler], Handler]:
        """Register `handler` under `name`: errors become OpenAI error JSON, every answer is counted."""

        def decorate(handler: Handler) -> Handler:
            async def endpoint(request: Request) -> Response:
                call = Call(name)
                try:
                    response = await handler(request)
                except Exception as error:
                    call.fail(None, error)  # counted as the gRPC side counts it
                    return _error_response(error)
                call.count(grpc.StatusCode.OK)
                return response

            app.add_api_route(path, endpoint, methods=[method], name=name, include_in_schema=True)
            return handler

        return decorate

    @app.exception_handler(HTTPException)
    async def unknown_route(request: Request, error: HTTPException) -> JSONResponse:
        code = "NOT_FOUND" if error.status_code == 404 else "INVALID_ARGUMENT"
        message = f"{request.method} {request.url.path}: {error.detail}"
        status, body = http_wire.error_body(code, message, None)
        return JSONResponse(
            body, status_code=error.status_code if status == 404 else 405, headers={"x-should-retry": "false"}
        )

    @route("POST", "/v1/videos", "CreateVideo")
    async def create(request: Request) -> Response:
        caller = _caller(router, request)
        body = http_wire.parse_create(await _create_body(request))
        deployment = router.deployment(body.model)
        limits = get_spec(deployment.name).limits_for(deployment.tiny)
        image = http_wire.reference_image(body.input_reference)
        fields = http_wire.request_fields(body, limits, image)
        record = await router.submit(
            caller, fields, request.headers.get("idempotency-key", ""), body.webhook_url
        )
        return JSONResponse(http_wire.video_object(record, ttl_s), headers=poll_headers)

    @route("GET", "/v1/videos", "ListVideos")
    async def list_videos(request: Request) -> Response:
        caller = _caller(router, request)
        query = request.query_params
        limit_text = query.get("limit", str(http_wire.DEFAULT_PAGE))
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= http_wire.MAX_PAGE:
            raise InvalidArgument("limit", f"{limit_text!r} is outside [1, {http_wire.MAX_PAGE}]")
        order = query.get("order", "desc")
        if order not in ("asc", "desc"):
            raise InvalidArgument("order", f"{order!r} is not asc or desc")
        after = query.get("after", "")
        records, has_more = await router.list_jobs(caller, after, int(limit_text), order == "desc")
        return JSONResponse(http_wire.video_list(records, has_more, ttl_s))

    @route("GET", "/v1/videos/{video_id}", "RetrieveVideo")
    async def retrieve(request: Request) -> Response:
        record = await router.find_job(_video_id(request), _caller(router, request))
        return JSONResponse(http_wire.video_object(record, ttl_s), headers=poll_headers)

    @route("DELETE", "/v1/videos/{video_id}", "DeleteVideo")
    async def delete(request: Request) -> Response:
        video_id = _video_id(request)
        await router.delete_job(video_id, _caller(router, request))
        return JSONResponse(http_wire.deleted(video_id))

    @route("GET", "/v1/videos/{video_id}/content", "DownloadVideo")
    async def content(request: Request) -> Response:
        video_id = _video_id(request)
        record = await router.find_job(video_id, _caller(router, request))
        variant = request.query_params.get("variant", "video")
        if variant != "video":
            raise InvalidArgument("variant", f"{variant!r}: only 'video' is made")
        if not record.ended and get_spec(record.model).progressive:
            # A long clip while it is made: the bytes so far, then each section as it comes, in one
            # chunked response that ends with the whole file; a job that fails meanwhile cuts it off
            # (no final chunk), so no client takes the part for the whole.
            chunks = router.video_chunks(record, router.config.router.chunk_bytes)
            return StreamingResponse(
                (data async for _, _, data, _ in chunks),
                media_type=PROGRESSIVE_MIME,
                headers={"cache-control": "no-store", "x-videogen-growing": "true"},
            )
        if record.state is not JobState.SUCCEEDED or record.summary is None:
            raise NotReady(
                f"video {video_id} is {record.state.value}: its content exists once it is completed"
            )
        path = router.results.find(video_id)
        # Starlette's FileResponse answers Range requests (206) itself.
        return FileResponse(path, media_type=record.summary.mime_type, content_disposition_type="inline")

    @route("POST", "/v1/videos/extensions", "ExtendVideo")
    async def extend(request: Request) -> Response:
        _caller(router, request)
        raise InvalidArgument(
            "video",
            "extending a finished video is not supported; for a long clip, ask a long-clip model for the "
            "whole duration at once (those with ListModels section_frames > 0 stream it section by section)",
        )

    @route("POST", "/v1/videos/{video_id}/remix", "RemixVideo")
    async def remix(request: Request) -> Response:
        _caller(router, request)
        raise InvalidArgument("video_id", "remix is not supported: create a new video with another prompt")

    @route("GET", "/v1/models", "ListModelsHttp")
    async def models(request: Request) -> Response:
        _caller(router, request)
        data = [
            http_wire.model_object(
                get_spec(deployment.name), deployment, expected_cold_start(router.results.root, deployment)
            )
            for deployment in router.config.models
        ]
        return JSONResponse({"object": "list", "data": data})

    page = (importlib.resources.files("serve") / "static" / "index.html").read_text()

    @app.get("/", include_in_schema=False)
    async def try_it() -> Response:
        """The try-it page: a form over this API (serve/static/index.html)."""
        return HTMLResponse(page)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        """Liveness: this Router replica answers."""
        return JSONResponse({"status": "SERVING"})

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> Response:
        """Readiness, as grpc.health says per model: 200 when every model (or `?model=`) is SERVING."""
        wanted = request.query_params.getlist("model") or [model.name for model in router.config.models]
        states = {}
        for name in wanted:
            model = router.config.model(name)
            if model is None:
                return _error_response(NotFound(f"model {name!r} is not deployed"))
            states[name] = "SERVING" if await router.health.serving(model) else "NOT_SERVING"
        ready = all(state == "SERVING" for state in states.values())
        return JSONResponse(
            {"status": "SERVING" if ready else "NOT_SERVING", "models": states}, 200 if ready else 503
        )

    return app
