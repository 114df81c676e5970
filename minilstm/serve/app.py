"""The HTTP side of ``minilstm serve``: a LibreTranslate-compatible API on Starlette, the page, the metrics.

``POST /translate`` takes a JSON object, a form or the query string (``q``, ``source``, ``target``, ``format``,
``alternatives``, ``api_key``) and answers ``{"translatedText": ...}`` as LibreTranslate does; so do ``/detect``,
``/translate_file`` (with ``/download_file``), ``/suggest`` (disabled), ``/languages`` and ``/frontend/settings``.
Errors are ``{"error": "..."}`` with LibreTranslate's status codes and wording. The sentences go to the ``Batcher``;
nothing here calls the model.
"""

import asyncio
import hmac
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .batcher import Closed, QueueFull
from .detect import default_detector, unsupported_message
from .file_store import FileStore, StoreFull
from .markup import HtmlDocument, MarkupError
from .openapi import openapi_schema
from .requests import (
    SOURCES,
    TARGETS,
    ApiError,
    File,
    Settings,
    check_limits,
    check_text,
    error_response,
    is_json,
    json_response,
    parse_translate,
    read_body,
    read_params,
    string_param,
)

STATIC = Path(__file__).parent / "static"
LANGUAGES = [{"code": "en", "name": "English", "targets": ["fr"]}, {"code": "fr", "name": "French", "targets": []}]
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
FILE_FORMATS = {".txt": "text", ".html": "html", ".htm": "html"}  # /translate_file's, by extension
FRONTEND_TIMEOUT_MS = 2000  # what /frontend/settings tells a page to wait for an answer (LibreTranslate's default)
TIME_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    """What /metrics shows; a registry of its own, so that several apps can live in one process (tests)."""

    def __init__(self):
        self.registry = r = CollectorRegistry()
        self.requests = Counter("minilstm_http_requests", "HTTP requests by path and status", ["path", "status"],
                                registry=r)
        self.sentences = Counter("minilstm_sentences_decoded", "Sentences decoded", registry=r)
        self.skipped = Counter("minilstm_sentences_skipped", "Queued sentences not decoded: their client went away",
                               registry=r)
        self.batch_size = Histogram("minilstm_batch_size", "Sentences per decoded batch", buckets=BATCH_BUCKETS,
                                    registry=r)
        self.queue_wait = Histogram("minilstm_queue_wait_seconds", "Time a sentence waited in the queue",
                                    buckets=TIME_BUCKETS, registry=r)
        self.decode_seconds = Histogram("minilstm_decode_seconds", "Time to decode one batch", buckets=TIME_BUCKETS,
                                        registry=r)
        self.request_seconds = Histogram("minilstm_translate_seconds", "Time to answer a /translate request",
                                         buckets=TIME_BUCKETS, registry=r)
        self.queue_depth = Gauge("minilstm_queue_depth", "Sentences waiting to be decoded", registry=r)


class CountRequests:
    """ASGI middleware: count every HTTP response by path (known paths only) and status."""

    def __init__(self, app, metrics: Metrics, paths):
        self.app, self.metrics, self.paths = app, metrics, set(paths)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = 0  # no response started: the client went away

        async def sending(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception:
            status = status or 500
            raise
        finally:
            path = scope["path"] if scope["path"] in self.paths else "other"
            self.metrics.requests.labels(path, str(status)).inc()


class Disconnected(Exception):
    """The client went away before its answer was ready."""


def plain_text(text: str, html: bool) -> str:
    """What a text says: an HTML text's prose, one segment a line (what language identification reads)."""
    if not html:
        return text
    try:
        return "\n".join(HtmlDocument.parse(text).texts)
    except MarkupError as e:
        raise ApiError(400, str(e)) from None


# -- the app ---------------------------------------------------------------------------------------------------


def create_app(translator, batcher, settings: Settings, metrics: Metrics, description: str = "", detector=None,
               files: FileStore | None = None) -> Starlette:
    """``translator.plan(texts, html)`` turns texts into sentences to decode and back; ``batcher`` decodes
    sentences into ``translator.Answer``s; ``detector`` identifies languages (``detect.LanguageDetector``);
    ``files`` keeps translated files until their download (None: file translation is off)."""
    detector = detector or default_detector().load()

    def check_key(params: dict):
        if settings.api_key is None:
            return
        key = params.get("api_key")
        if not isinstance(key, str) or not hmac.compare_digest(key.encode(errors="surrogatepass"),
                                                               settings.api_key.encode(errors="surrogatepass")):
            raise ApiError(403, "Invalid API key")

    def api(handler, timer=None):
        """An endpoint that answers an ``ApiError`` as LibreTranslate does, and nothing to a client that left."""

        async def endpoint(request: Request) -> Response:
            try:
                if timer is None:
                    return await handler(request)
                with timer.time():
                    return await handler(request)
            except ApiError as e:
                return error_response(e.status, e.message, e.headers)
            except (ClientDisconnect, Disconnected):  # nobody is listening (nginx's "client closed request")
                return Response(status_code=499)

        return endpoint

    def detect_source(text: str) -> dict:
        """The language ``source=auto`` finds in ``text``; a 400 naming it unless it is English (LibreTranslate's
        words, with the language found rather than "auto")."""
        found = detector.detect(text)[0]
        if found["language"] != "en":
            raise ApiError(400, unsupported_message(found["language"]))
        return found

    async def translate_texts(request: Request, texts: list[str], html: bool) -> list:
        """Each text's ``TextAnswer``: its sentences decoded with those of every other request (at most a batch's
        worth queued at a time, so that a long text never needs more than the queue holds)."""
        try:
            plan = translator.plan(texts, html)
        except MarkupError as e:
            raise ApiError(400, str(e)) from None
        decoded = []
        for start in range(0, len(plan.sentences), batcher.max_batch):
            try:
                job = batcher.submit(plan.sentences[start : start + batcher.max_batch])
            except QueueFull as e:
                raise ApiError(429, f"Slowdown: the queue is full ({e.args[0]} sentences waiting); retry later",
                               {"Retry-After": "1"}) from None
            except Closed:
                raise ApiError(503, "The server is shutting down") from None
            decoded += await _answer_or_disconnect(request, job)
        return plan.assemble(decoded)

    async def translate(request: Request) -> Response:
        body = await read_body(request, settings.body_limit)
        params = await read_params(request, body)
        check_key(params)
        req = parse_translate(params, settings, form=not is_json(request))
        detected = [detect_source(plain_text(text, req.html)) for text in req.texts] if req.auto else None
        answers = await translate_texts(request, req.texts, req.html)

        def per_request(values):
            return values if req.batch else values[0]

        result = {"translatedText": per_request([answer.translation for answer in answers])}
        if req.alternatives > 0:
            result["alternatives"] = per_request([answer.alternatives[: req.alternatives] for answer in answers])
        if req.attention and translator.has_attention and not req.html:
            result["attention"] = per_request([answer.attention for answer in answers])
        if detected is not None:
            result["detectedLanguage"] = per_request(detected)
        if any(answer.dropped for answer in answers):
            result["droppedCharacters"] = per_request([answer.dropped for answer in answers])
        return json_response(result)

    async def detect(request: Request) -> Response:
        params = await read_params(request, await read_body(request, settings.body_limit))
        check_key(params)
        string_param(params, "api_key", required=False)
        q = params.get("q")
        if not q:
            raise ApiError(400, "Invalid request: missing q parameter")
        texts = q if isinstance(q, list) else [q]
        if not all(isinstance(text, str) for text in texts):
            raise ApiError(400, "Invalid request: q must be a string or a list of strings")
        check_limits(texts, settings)
        for text in texts:
            check_text(text)
        return json_response(detector.detect("\n".join(texts)))

    async def translate_file(request: Request) -> Response:
        if files is None:
            raise ApiError(403, "Files translation are disabled on this server.")
        body = await read_body(request, settings.file_body_limit)
        params = await read_params(request, body, files=True)
        check_key(params)
        upload = params.get("file")
        if not isinstance(upload, File):
            raise ApiError(400, "Invalid request: missing file parameter")
        for name in ("source", "target"):
            if not params.get(name):
                raise ApiError(400, f"Invalid request: missing {name} parameter")
        if upload.filename == "":
            raise ApiError(400, "Invalid request: empty file")
        extension = Path(upload.filename).suffix.lower()
        if extension not in FILE_FORMATS:
            raise ApiError(400, "Invalid request: file format not supported")
        source, target = params["source"], params["target"]
        if source not in SOURCES:
            raise ApiError(400, f"{source} is not supported")
        if target not in TARGETS:
            raise ApiError(400, f"{target} is not supported")
        try:
            text = upload.content.decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(400, "Invalid request: the file is not valid UTF-8 text") from None
        if len(text) > settings.file_char_limit:
            raise ApiError(400, f"Invalid request: file ({len(text)} characters) exceeds file limit "
                                f"({settings.file_char_limit})")
        check_text(text, "the file")
        html = FILE_FORMATS[extension] == "html"
        if source == "auto":
            detect_source(plain_text(text, html))
        [answer] = await translate_texts(request, [text], html)
        try:
            name = files.put(upload.filename, answer.translation.encode("utf-8"))
        except StoreFull as e:
            raise ApiError(429, f"Slowdown: {e}; retry later", {"Retry-After": "10"}) from None
        return json_response({"translatedFileUrl": str(request.url_for("download_file", filename=name))})

    async def download_file(request: Request) -> Response:
        if files is None:
            raise ApiError(400, "Files translation are disabled on this server.")
        taken = files.take(request.path_params["filename"])
        if taken is None:
            raise ApiError(404, "Not Found: no such file (each translated file is served once, for "
                                f"{files.ttl / 60:g} minutes)")
        name, content = taken
        kind = FILE_FORMATS[Path(name).suffix.lower()]
        return Response(content, media_type=f"text/{'html' if kind == 'html' else 'plain'}; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})

    async def suggest(request: Request) -> Response:
        raise ApiError(403, "Suggestions are disabled on this server.")

    async def _answer_or_disconnect(request: Request, job):
        """The job's answers; ``Disconnected`` when the client disconnects first (its queued sentences are then
        skipped)."""
        async def disconnected():
            while (await request.receive())["type"] != "http.disconnect":
                pass

        watch = asyncio.ensure_future(disconnected())
        try:
            await asyncio.wait({job.future, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watch.cancel()
        if not job.future.done():
            job.cancel()
            job.future.cancel()
            raise Disconnected
        return job.future.result()  # an error of the decoder propagates: a 500 for this request alone

    async def languages(request: Request) -> Response:
        return json_response(LANGUAGES)

    async def health(request: Request) -> Response:
        return json_response({"status": "ok"})

    async def frontend_settings(request: Request) -> Response:
        """LibreTranslate's settings (what its clients read), then this server's own."""
        return json_response({
            "charLimit": settings.char_limit, "frontendTimeout": FRONTEND_TIMEOUT_MS, "apiKeys": False,
            "keyRequired": settings.api_key is not None, "suggestions": False, "filesTranslation": files is not None,
            "supportedFilesFormat": list(FILE_FORMATS) if files is not None else [],
            "language": {"source": {"code": "en", "name": "English"}, "target": {"code": "fr", "name": "French"}},
            "batchLimit": settings.batch_limit, "beamWidth": settings.beam_width,
            "attention": translator.has_attention, "model": description})

    async def metrics_endpoint(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def openapi(request: Request) -> Response:
        return json_response(openapi_schema(settings))

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8")

    async def http_error(request: Request, exc) -> Response:  # 404, 405 (with its Allow header)
        return error_response(exc.status_code, exc.detail, exc.headers)

    async def server_error(request: Request, exc) -> Response:
        return error_response(500, f"Cannot translate text: {type(exc).__name__}: {exc}")

    routes = [
        Route("/", index, methods=["GET"]),
        Route("/translate", api(translate, metrics.request_seconds), methods=["POST"]),
        Route("/detect", api(detect), methods=["POST"]),
        Route("/translate_file", api(translate_file), methods=["POST"]),
        Route("/download_file/{filename}", api(download_file), methods=["GET"], name="download_file"),
        Route("/suggest", api(suggest), methods=["POST"]),
        Route("/languages", languages, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/frontend/settings", frontend_settings, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/spec", openapi, methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    paths = [route.path for route in routes if isinstance(route, Route)]
    middleware = [
        Middleware(CountRequests, metrics=metrics, paths=paths),
        Middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["GET", "POST"],
                   allow_headers=["Authorization", "Content-Type"]),
    ]
    from starlette.exceptions import HTTPException

    return Starlette(routes=routes, middleware=middleware,
                     exception_handlers={HTTPException: http_error, Exception: server_error})
