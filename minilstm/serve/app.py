"""The HTTP side of ``minilstm serve``: a LibreTranslate-compatible API on Starlette, the page, the metrics.

``POST /translate`` takes a JSON object or a form (``q``, ``source``, ``target``, ``format``, ``alternatives``,
``api_key``) and answers ``{"translatedText": ...}`` as LibreTranslate does; errors are ``{"error": "..."}`` with
its status codes and wording. The sentences go to the ``Batcher``; nothing here calls the model.
"""

import asyncio
import hmac
import json
import re
import unicodedata
import urllib.parse
from dataclasses import dataclass
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
from .translator import Answer

STATIC = Path(__file__).parent / "static"
LANGUAGES = [{"code": "en", "name": "English", "targets": ["fr"]}, {"code": "fr", "name": "French", "targets": []}]
SOURCES, TARGETS = ("en", "auto"), ("fr",)
# Control characters refused in a text (NUL and the like); tab, newline and carriage return are text.
ALLOWED_CONTROLS = "\t\n\r"
INTEGER = "-?[0-9]+"  # the alternatives parameter as a string
FLAGS = ("true", "false", "1", "0")  # the attention parameter as a string
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
TIME_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


@dataclass
class Settings:
    beam_width: int = 1
    char_limit: int = 1000  # characters per text
    batch_limit: int = 64  # texts per request
    api_key: str | None = None

    @property
    def body_limit(self) -> int:
        """Bytes a /translate body may have: every text at the limit, each character at its longest encoding (a
        percent-encoded 4-byte UTF-8 character is 12 bytes), plus 64 KiB for the rest; at least 1 MiB."""
        return max(1 << 20, self.batch_limit * self.char_limit * 12 + (64 << 10))


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


def json_response(content, status: int = 200, headers: dict | None = None) -> Response:
    """JSON as UTF-8; a string holding a lone surrogate (echoed from a request) is written escaped instead."""
    try:
        body = json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError:
        body = json.dumps(content, separators=(",", ":")).encode("ascii")
    return Response(body, status, headers, media_type="application/json")


def error_response(status: int, message: str, headers: dict | None = None) -> Response:
    return json_response({"error": message}, status, headers)


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


# -- reading a request -----------------------------------------------------------------------------------------


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to be larger than ``limit`` (from Content-Length, before
    reading any of it; else while it streams in)."""
    too_large = ApiError(413, f"Invalid request: body too large (limit {limit} bytes)")
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def is_json(request: Request) -> bool:
    kind = media_type(request)
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


async def read_params(request: Request, body: bytes) -> dict:
    """The request's parameters: its JSON object, or its query string and form fields (strings)."""
    if is_json(request):
        try:
            params = json.loads(body)
        except UnicodeDecodeError:
            raise ApiError(400, "Invalid request: the body is not valid UTF-8") from None
        except (ValueError, RecursionError):
            raise ApiError(400, "Invalid JSON format") from None
        if not isinstance(params, dict):
            raise ApiError(400, "Invalid JSON format")
        return params
    params = dict(request.query_params)
    if media_type(request) == "multipart/form-data":
        async def replay():
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            async with Request(request.scope, replay).form(max_files=0) as form:
                for name, value in form.items():
                    if not isinstance(value, str):
                        raise ApiError(400, f"Invalid request: {name} parameter must be text, not a file")
                    params[name] = value
        except ApiError:
            raise
        except Exception as e:  # noqa: BLE001 - python-multipart's and Starlette's parse errors
            raise ApiError(400, f"Invalid request: malformed multipart form ({e})") from None
        return params
    try:  # application/x-www-form-urlencoded, or no type given (curl -d sends the former)
        text = body.decode("utf-8")
        params.update(urllib.parse.parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="strict"))
    except UnicodeDecodeError:
        raise ApiError(400, "Invalid request: the body is not valid UTF-8") from None
    return params


@dataclass
class TranslateRequest:
    texts: list[str]
    batch: bool  # q was a list
    alternatives: int
    auto: bool  # source was "auto"
    attention: bool  # the attention maps were asked for


def _string_param(params: dict, name: str, required: bool) -> str | None:
    value = params.get(name)
    if value is None or value == "":
        if required:
            raise ApiError(400, f"Invalid request: missing {name} parameter")
        return None
    if not isinstance(value, str):
        raise ApiError(400, f"Invalid request: {name} parameter must be a string")
    return value


def _check_text(text: str):
    """Refuse what no sentence holds: lone surrogates (not Unicode text) and control characters such as NUL."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, "Invalid request: q is not valid Unicode (it holds a lone surrogate)") from None
    for ch in text:
        if unicodedata.category(ch) == "Cc" and ch not in ALLOWED_CONTROLS:
            raise ApiError(400, f"Invalid request: q holds the control character U+{ord(ch):04X}")


def parse_translate(params: dict, settings: Settings, form: bool) -> TranslateRequest:
    """Check a /translate request in LibreTranslate's order and with its messages; raise ApiError(400)."""
    q = params.get("q")
    if q is None:
        raise ApiError(400, "Invalid request: missing q parameter")
    batch = isinstance(q, list)
    texts = q if batch else [q]
    if not all(isinstance(text, str) for text in texts):
        raise ApiError(400, "Invalid request: q must be a string or a list of strings")
    source = _string_param(params, "source", required=True)
    target = _string_param(params, "target", required=True)
    if form:  # as LibreTranslate: line endings to LF, so that the limit counts the same characters
        texts = ["\n".join(text.splitlines()) for text in texts]
    if batch and len(texts) > settings.batch_limit:
        raise ApiError(400, f"Invalid request: request ({len(texts)}) exceeds text limit ({settings.batch_limit})")
    for text in texts:
        if len(text) > settings.char_limit:
            raise ApiError(400, f"Invalid request: request ({len(text)}) exceeds text limit ({settings.char_limit})")
    for text in texts:
        _check_text(text)
    if source not in SOURCES:
        raise ApiError(400, f"{source} is not supported")
    if target not in TARGETS:
        raise ApiError(400, f"{target} is not supported")
    text_format = _string_param(params, "format", required=False) or "text"
    if text_format != "text":
        raise ApiError(400, f"{text_format} format is not supported")
    _string_param(params, "api_key", required=False)
    alternatives = params.get("alternatives")
    alternatives = 0 if alternatives is None else _alternatives(alternatives)
    attention = params.get("attention")
    if not (attention is None or isinstance(attention, bool) or (isinstance(attention, str) and attention in FLAGS)):
        raise ApiError(400, "Invalid request: attention parameter must be true or false")
    wants_attention = attention is True or attention in ("true", "1")
    return TranslateRequest(texts, batch, alternatives, source == "auto", wants_attention)


def _alternatives(value) -> int:
    """How many alternatives were asked for: an integer, or its digits as a string (a form); below 0 counts as 0
    (as in LibreTranslate)."""
    try:
        if isinstance(value, str) and re.fullmatch(INTEGER, value):
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return max(0, value)
    except ValueError:  # more digits than Python converts
        pass
    raise ApiError(400, "Invalid request: alternatives parameter is not a number")


# -- the app ---------------------------------------------------------------------------------------------------


def create_app(translator, batcher, settings: Settings, metrics: Metrics, description: str = "") -> Starlette:
    """``translator.split(text) -> (known text, dropped characters)``; ``batcher`` decodes the known texts into
    ``translator.Answer``s."""

    def check_key(params: dict):
        if settings.api_key is None:
            return
        key = params.get("api_key")
        if not isinstance(key, str) or not hmac.compare_digest(key.encode(errors="surrogatepass"),
                                                               settings.api_key.encode(errors="surrogatepass")):
            raise ApiError(403, "Invalid API key")

    async def translate(request: Request) -> Response:
        with metrics.request_seconds.time():
            try:
                return await _translate(request)
            except ApiError as e:
                return error_response(e.status, e.message, e.headers)
            except ClientDisconnect:  # gone while sending its body: nobody to answer
                return Response(status_code=499)

    async def _translate(request: Request) -> Response:
        body = await read_body(request, settings.body_limit)
        params = await read_params(request, body)
        check_key(params)
        req = parse_translate(params, settings, form=not is_json(request))
        answers: list = [Answer("", [], [] if translator.has_attention else None)] * len(req.texts)
        dropped = []
        to_decode = []  # (position, known text)
        for k, text in enumerate(req.texts):
            known, lost = translator.split(text)
            dropped.append(lost)
            if known.strip():
                to_decode.append((k, known))
        if to_decode:
            try:
                job = batcher.submit([text for _, text in to_decode])
            except QueueFull as e:
                raise ApiError(429, f"Slowdown: the queue is full ({e.args[0]} sentences waiting); retry later",
                               {"Retry-After": "1"}) from None
            except Closed:
                raise ApiError(503, "The server is shutting down") from None
            decoded = await _answer_or_disconnect(request, job)
            if decoded is None:
                return Response(status_code=499)  # nobody is listening (nginx's "client closed request")
            for (k, _), answer in zip(to_decode, decoded, strict=True):
                answers[k] = answer
        translations = [answer.translation for answer in answers]
        result = {"translatedText": translations if req.batch else translations[0]}
        if req.alternatives > 0:
            alternatives = [answer.alternatives[: req.alternatives] for answer in answers]
            result["alternatives"] = alternatives if req.batch else alternatives[0]
        if req.attention and translator.has_attention:
            maps = [answer.attention for answer in answers]
            result["attention"] = maps if req.batch else maps[0]
        if req.auto:
            detected = {"confidence": 100.0, "language": "en"}
            result["detectedLanguage"] = [detected] * len(req.texts) if req.batch else detected
        if any(dropped):
            result["droppedCharacters"] = dropped if req.batch else dropped[0]
        return json_response(result)

    async def _answer_or_disconnect(request: Request, job):
        """The job's answers, or None when the client disconnects first (its queued sentences are then skipped)."""

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
            return None
        return job.future.result()  # an error of the decoder propagates: a 500 for this request alone

    async def languages(request: Request) -> Response:
        return json_response(LANGUAGES)

    async def health(request: Request) -> Response:
        return json_response({"status": "ok"})

    async def frontend_settings(request: Request) -> Response:
        return json_response({"charLimit": settings.char_limit, "batchLimit": settings.batch_limit,
                              "beamWidth": settings.beam_width, "keyRequired": settings.api_key is not None,
                              "attention": translator.has_attention,
                              "model": description})

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
        Route("/translate", translate, methods=["POST"]),
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


def openapi_schema(settings: Settings) -> dict:
    """The OpenAPI 3 description of the API (what /openapi.json serves)."""
    error = {"$ref": "#/components/schemas/Error"}
    text_or_list = {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
    # What a text may be: at most char_limit characters, no control characters but tab, newline, return.
    text = {"type": "string", "maxLength": settings.char_limit,
            "pattern": "^[^\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f-\\u009f]*$"}
    texts = {"anyOf": [text, {"type": "array", "items": text, "maxItems": settings.batch_limit}]}

    def errors(*codes):
        return {str(code): {"description": "Error", "content": {"application/json": {"schema": error}}}
                for code in codes}

    request_schema = {
        "type": "object",
        "required": ["q", "source", "target"],
        "properties": {
            "q": {**texts, "description": f"Text(s) to translate (at most {settings.char_limit} characters each, "
                  f"{settings.batch_limit} texts)"},
            "source": {"type": "string", "enum": list(SOURCES), "description": "Source language code"},
            "target": {"type": "string", "enum": list(TARGETS), "description": "Target language code"},
            # The optional parameters may also be null (absent).
            "format": {"type": "string", "enum": ["text", "", None], "default": "text", "nullable": True},  # "": text
            "alternatives": {"anyOf": [{"type": "integer"}, {"type": "string", "pattern": f"^{INTEGER}$"}],
                             "default": 0, "nullable": True,
                             "description": f"Alternative translations (n-best of the beam search, at most "
                                            f"{settings.beam_width - 1} here; below 0 counts as 0)"},
            "api_key": {"type": "string", "nullable": True},
            "attention": {"anyOf": [{"type": "boolean"}, {"type": "string", "enum": list(FLAGS)}], "nullable": True,
                          "description": "also return the attention weights (models with attention, greedy "
                                         "decoding)"},
        },
    }
    # A form has strings only (no lists, no null).
    form_schema = {**request_schema, "properties": {**request_schema["properties"], "q": text,
                                                    "format": {"type": "string", "enum": ["text", ""]},
                                                    "alternatives": {"type": "string", "pattern": f"^{INTEGER}$"},
                                                    "api_key": {"type": "string"},
                                                    "attention": {"type": "string", "enum": list(FLAGS)}}}
    string_list = {"type": "array", "items": {"type": "string"}}
    matrix = {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}
    translate_response = {
        "type": "object",
        "required": ["translatedText"],
        "properties": {
            "translatedText": text_or_list,
            "alternatives": {"anyOf": [string_list, {"type": "array", "items": string_list}]},
            "detectedLanguage": {"anyOf": [{"$ref": "#/components/schemas/Detected"},
                                           {"type": "array", "items": {"$ref": "#/components/schemas/Detected"}}]},
            "attention": {"description": "Attention weights: a row per output character (and the end), a column per "
                                         "input character", "anyOf": [matrix, {"type": "array", "items": matrix}]},
            "droppedCharacters": {"description": "Characters the model never saw, left out of the translation",
                                  "anyOf": [string_list, {"type": "array", "items": string_list}]},
        },
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "minilstm serve", "version": "1.0",
                 "description": "A LibreTranslate-compatible English-to-French translation API"},
        "paths": {
            "/translate": {"post": {
                "summary": "Translate text from English to French",
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": request_schema},
                    "application/x-www-form-urlencoded": {"schema": form_schema}}},
                "responses": {"200": {"description": "Translated text", "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Translation"}}}},
                    **errors(400, 403, 413, 429, 500, 503)}}},
            "/languages": {"get": {"summary": "Supported languages", "responses": {"200": {
                "description": "Languages", "content": {"application/json": {"schema": {
                    "type": "array", "items": {"type": "object", "required": ["code", "name", "targets"],
                                               "properties": {"code": {"type": "string"},
                                                              "name": {"type": "string"},
                                                              "targets": string_list}}}}}}}}},
            "/health": {"get": {"summary": "Health check", "responses": {"200": {
                "description": "OK", "content": {"application/json": {"schema": {
                    "type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}}}}}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {
                "description": "Metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
        },
        "components": {"schemas": {
            "Translation": translate_response,
            "Detected": {"type": "object", "properties": {"confidence": {"type": "number"},
                                                          "language": {"type": "string"}}},
            "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
        }},
    }
