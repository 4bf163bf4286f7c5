"""The routes: ``POST /v1/audio/transcriptions``, ``GET /v1/models``, ``/health``, ``/metrics``, and the page at ``/``.

A transcription request is admitted to the queue (503 with ``Retry-After`` when it is full), its upload is
streamed into a temporary folder of its own (413 beyond ``--max-upload-mb``), its fields are checked (400),
its audio is read once to check it and measure it (400 with the message ``asr-s2s transcribe`` prints for
that file; 413 beyond ``--max-duration-s``), and it is queued for the decoder. The folder is removed when
the response ends, whatever happens; a client that goes away cancels its request. Errors are OpenAI's
error objects; no traceback reaches a client (the server's log keeps it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from asr_s2s.audio import SAMPLE_RATE_HZ, stream_audio
from asr_s2s.errors import AsrS2SError, AudioLoadError, TranscriptionCancelled
from asr_s2s.server import ServerSettings
from asr_s2s.server.batcher import Batcher, InternalError, Job, QueueFull
from asr_s2s.server.fields import TranscriptionRequest, parse_request
from asr_s2s.server.metrics import MEDIA_TYPE, Metrics
from asr_s2s.server.openai_schema import ApiError, delta_event, done_event, error_body, response_body, spoken, sse
from asr_s2s.server.upload import CURL_HINT, Upload, receive_upload
from asr_s2s.transcriber import Transcriber
from asr_s2s.transcription import AudioInput, FileResult, Segment, TranscribeOptions

log = logging.getLogger("asr_s2s.server")
PAGE_DIR = Path(__file__).resolve().parent / "page"
CLIENT_GONE = 499  # nginx's status for a request whose client closed the connection (only ever logged)
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; connect-src 'self' blob:; media-src 'self' blob:; "
                               "style-src 'self' 'unsafe-inline'; img-src 'self' data:",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
}


@dataclass
class ServerState:
    """What the routes share: the one transcriber (used only by the decoding thread), options, limits, counters."""

    transcriber: Transcriber
    options: TranscribeOptions
    settings: ServerSettings
    metrics: Metrics = field(default_factory=Metrics)
    batcher: Batcher = field(init=False)
    model_id: str = field(init=False)
    created: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self) -> None:
        self.batcher = Batcher(self.transcriber, self.metrics, self.settings.queue_size, self.settings.batch_wait_s,
                               self.settings.max_batch_files)
        self.model_id = self.transcriber.model_id or "asr-s2s"
        self.reads = asyncio.Semaphore(2)  # uploads checked at once, each in a worker thread

    def tokens_of(self, text: str) -> list[int]:
        try:
            return self.transcriber.model.tokenizer.encode(text)
        except AsrS2SError:
            return []


def create_app(transcriber: Transcriber, options: TranscribeOptions, settings: ServerSettings) -> Starlette:
    """The ASGI app serving ``transcriber`` with ``options`` (the decoding thread runs while the app does)."""
    state = ServerState(transcriber, options, settings)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        state.batcher.start()
        try:
            yield
        finally:
            state.batcher.stop()

    routes = [
        Route("/", page, methods=["GET"]), Route("/app.js", page, methods=["GET"]),
        Route("/health", health, methods=["GET"]), Route("/metrics", metrics, methods=["GET"]),
        Route("/v1/models", models, methods=["GET"]), Route("/v1/models/{model_id:path}", models, methods=["GET"]),
        Route("/v1/audio/transcriptions", transcriptions, methods=["POST"]),
    ]
    handlers = {ApiError: _api_error, HTTPException: _http_error, Exception: _internal_error}
    app = Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan,
                    middleware=[Middleware(CountRequests, metrics=state.metrics)])
    app.state.server = state
    return app


# -- errors and counting -----------------------------------------------------------------
async def _api_error(request: Request, exc: ApiError) -> Response:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


async def _http_error(request: Request, exc: HTTPException) -> Response:
    kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
    return JSONResponse(error_body(f"{request.method} {request.url.path}: {exc.detail}", kind),
                        status_code=exc.status_code, headers=exc.headers)


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return JSONResponse(error_body("internal server error; the server's log says why", "server_error"), status_code=500)


class CountRequests:
    """ASGI middleware counting each HTTP response by route and status (500 for one that raised)."""

    def __init__(self, app, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = [500]

        async def counting_send(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            self.metrics.request(scope["path"], status[0])


def _authorize(request: Request, state: ServerState) -> None:
    key = state.settings.api_key
    if key is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    challenge = {"WWW-Authenticate": "Bearer"}
    if not header.strip():
        raise ApiError(401, "no API key: this server needs 'Authorization: Bearer KEY' (the key it was started with)",
                       code="invalid_api_key", headers=challenge)
    if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), key.encode()):
        raise ApiError(401, "incorrect API key (send 'Authorization: Bearer KEY' with the server's key)",
                       code="invalid_api_key", headers=challenge)


# -- small routes ----------------------------------------------------------------------------
async def page(request: Request) -> Response:
    name, kind = ("app.js", "text/javascript") if request.url.path == "/app.js" else ("index.html", "text/html")
    body = await asyncio.to_thread((PAGE_DIR / name).read_bytes)
    return Response(body, media_type=f"{kind}; charset=utf-8", headers={**PAGE_HEADERS, "Cache-Control": "no-cache"})


async def health(request: Request) -> Response:
    state: ServerState = request.app.state.server
    queue = state.batcher.state()
    ok = state.batcher.alive
    return JSONResponse({"status": "ok" if ok else "decoder stopped", "model": state.model_id,
                         "queue_length": queue.length, "queue_capacity": queue.capacity, "decoding": queue.decoding},
                        status_code=200 if ok else 503)


async def metrics(request: Request) -> Response:
    state: ServerState = request.app.state.server
    return Response(state.metrics.render(state.batcher.state()), media_type=MEDIA_TYPE)


async def models(request: Request) -> Response:
    state: ServerState = request.app.state.server
    _authorize(request, state)
    entry = {"id": state.model_id, "object": "model", "created": state.created, "owned_by": "asr-s2s"}
    wanted = request.path_params.get("model_id")
    if wanted is None:
        return JSONResponse({"object": "list", "data": [entry]})
    if wanted != state.model_id:
        raise ApiError(404, f"model {wanted!r} does not exist here; this server has {state.model_id!r}",
                       param="model", code="model_not_found")
    return JSONResponse(entry)


# -- transcriptions ------------------------------------------------------------------------
async def transcriptions(request: Request) -> Response:
    """``POST /v1/audio/transcriptions``: OpenAI's form, answered in OpenAI's shapes."""
    state: ServerState = request.app.state.server
    _authorize(request, state)
    try:
        ticket = state.batcher.admit()
    except QueueFull as full:
        raise _busy(state, full) from None
    folder = tempfile.TemporaryDirectory(prefix="asr-s2s-serve-", dir=state.settings.upload_dir)
    try:
        job, asked = await _prepare(request, state, Path(folder.name), ticket)
        state.batcher.submit(job)
    except QueueFull as full:  # the server began to stop meanwhile
        state.batcher.release(ticket)
        folder.cleanup()
        raise _busy(state, full) from None
    except ClientDisconnect:
        state.batcher.release(ticket)
        folder.cleanup()
        return Response(status_code=CLIENT_GONE)
    except BaseException:
        state.batcher.release(ticket)
        folder.cleanup()
        raise
    if job.stream:
        return StreamingResponse(_events(request, state, job, folder), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    try:
        outcome = await _wait(request, state, job)
        if outcome is None:
            return Response(status_code=CLIENT_GONE)
        body, media_type = response_body(_result(outcome, job), asked.response_format, asked.granularities,
                                         state.tokens_of)
        return Response(body, media_type=media_type)
    finally:
        folder.cleanup()


def _busy(state: ServerState, full: QueueFull) -> ApiError:
    return ApiError(503, f"the server is busy ({state.settings.queue_size} requests are waiting, its --queue-size); "
                         f"retry after {full.retry_after_s} s", type="server_error", code="queue_full",
                    headers={"Retry-After": str(full.retry_after_s)})


async def _prepare(request: Request, state: ServerState, folder: Path, ticket) -> tuple[Job, TranscriptionRequest]:
    """Read and check the request: its upload, fields and audio. :raises ApiError: for each problem."""
    upload = await receive_upload(request, folder, state.settings.max_upload_bytes)
    _check_file_field(upload)
    asked = parse_request(upload.fields)
    options = _options(state, asked)
    if options.word_timestamps and state.transcriber.model.ctc is None:
        raise ApiError(400, "word timestamps need a CTC head, and this server's model has none",
                       param="timestamp_granularities[]")
    async with state.reads:
        audio_s = await asyncio.to_thread(_measure, upload, state.settings.max_duration_s)
    job = Job(AudioInput(upload.filename, str(upload.path)), options, audio_s, asyncio.get_running_loop(), ticket,
              stream=asked.stream)
    return job, asked


def _check_file_field(upload: Upload) -> None:
    if upload.file_field not in (None, "file"):
        raise ApiError(400, f"the audio came in field {upload.file_field!r}; {CURL_HINT}", param=upload.file_field)
    if "file" in upload.fields:
        raise ApiError(400, f"field 'file' holds text, not a file; {CURL_HINT}", param="file")
    if upload.path is None:
        raise ApiError(400, f"no audio: the form has no field 'file'; {CURL_HINT}", param="file")


def _options(state: ServerState, asked: TranscriptionRequest) -> TranscribeOptions:
    for name in asked.overrides.get("scorers", {}):
        try:
            state.transcriber.registry.get("scorer", name)
        except AsrS2SError as exc:
            raise ApiError(400, f"scorer {name!r}: {exc}", param="scorer") from None
    try:
        return state.options.with_overrides(**asked.overrides)
    except AsrS2SError as exc:
        raise ApiError(400, str(exc)) from None


def _measure(upload: Upload, max_duration_s: float) -> float:
    """Read the uploaded audio once, as ``transcribe`` will: its length in seconds.

    :raises ApiError: 400 with the message ``asr-s2s transcribe`` gives for the file (named as the client named
        it), 413 beyond ``max_duration_s``.
    """
    samples, limit = 0, int(max_duration_s * SAMPLE_RATE_HZ)
    try:
        with contextlib.closing(stream_audio(upload.path, name=upload.filename)) as blocks:
            for block in blocks:
                samples += len(block)
                if samples > limit:
                    raise ApiError(413, f"{upload.filename}: audio is over {samples / SAMPLE_RATE_HZ:.1f} s long; this "
                                        f"server takes at most {max_duration_s:g} s (--max-duration-s)", param="file",
                                   code="audio_too_long")
    except AudioLoadError as exc:
        raise ApiError(400, _named(str(exc), str(upload.path), upload.filename), param="file",
                       code="invalid_audio") from None
    except OSError as exc:
        raise ApiError(400, f"{upload.filename}: cannot read: {exc.strerror or exc}", param="file",
                       code="invalid_audio") from None
    return samples / SAMPLE_RATE_HZ


def _named(message: str, path: str, name: str) -> str:
    """``message`` with the upload's path in the temporary folder replaced by the client's name for the file."""
    return message.replace(path, name).replace(str(Path(path).parent) + "/", "")


def _result(outcome: FileResult | BaseException, job: Job):
    """The transcription of a finished job. :raises ApiError: for a failed one."""
    if isinstance(outcome, FileResult) and outcome.ok:
        return outcome.transcription
    error = outcome.error if isinstance(outcome, FileResult) else outcome
    if isinstance(error, TranscriptionCancelled):  # only the server's stop cancels a request whose client waits
        raise ApiError(503, "the server is stopping; retry on its next start", type="server_error",
                       code="server_stopping")
    if isinstance(error, InternalError) or not isinstance(error, AsrS2SError):
        raise ApiError(500, str(error) if isinstance(error, InternalError) else "internal server error",
                       type="server_error")
    raise ApiError(400, _named(str(error), str(job.input.audio), job.input.name), param="file")


async def _disconnected(request: Request) -> None:
    """Return once the client has gone away (the body is read by then, so ``receive`` says only that)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _wait(request: Request, state: ServerState, job: Job) -> FileResult | BaseException | None:
    """The job's outcome, or None when the client went away first (the job is cancelled)."""
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({job.future, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if job.future.done():
        return job.future.result()
    state.batcher.cancel(job)
    log.info("%s: the client went away; its transcription was cancelled", job.input.name)
    return None


async def _events(request: Request, state: ServerState, job: Job, folder: tempfile.TemporaryDirectory):
    """``stream=true``: a delta event per segment with text as it is decoded, then the done event (or an error)."""
    watcher = asyncio.ensure_future(_disconnected(request))
    sent = 0
    try:
        while True:
            getter = asyncio.ensure_future(job.events.get())
            await asyncio.wait({getter, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                getter.cancel()
                return
            item = getter.result()
            if isinstance(item, Segment):
                if spoken([item]):
                    yield sse(delta_event(sent, item, first=sent == 0))
                    sent += 1
                continue
            try:
                yield sse(done_event(_result(item, job)))
            except ApiError as exc:
                yield sse(exc.body())
            return
    finally:
        watcher.cancel()
        if not job.future.done():
            state.batcher.cancel(job)
        folder.cleanup()

