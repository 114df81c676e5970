"""Reading a request to ``minilstm serve`` as LibreTranslate reads it: the body (bounded), the parameters (a JSON
object, or the query string and an urlencoded or multipart form, a repeated form field being a list), and the checks of
``/translate`` in LibreTranslate's order with its messages. Errors are ``ApiError``s, answered ``{"error": "..."}``.
"""

import json
import re
import unicodedata
import urllib.parse
from dataclasses import dataclass

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response

SOURCES, TARGETS = ("en", "auto"), ("fr",)
FORMATS = ("text", "html")
# Control characters refused in a text (NUL and the like); tab, newline and carriage return are text.
ALLOWED_CONTROLS = "\t\n\r"
INTEGER = "-?[0-9]+"  # the alternatives parameter as a string
FLAGS = ("true", "false", "1", "0")  # the attention parameter as a string


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

    @property
    def file_char_limit(self) -> int:
        """Characters a file to translate may have: as many as a request's texts together."""
        return self.batch_limit * self.char_limit

    @property
    def file_body_limit(self) -> int:
        """Bytes a /translate_file body may have: the file at its longest UTF-8 encoding, plus 64 KiB."""
        return self.file_char_limit * 4 + (64 << 10)


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


@dataclass
class File:
    """A file sent in a multipart form."""

    filename: str
    content: bytes


def _merge(params: dict, pairs) -> None:
    """Add form or query fields to ``params``: a field named more than once is a list where it is ``q`` (how a form
    sends a list of texts), and its first value otherwise (as LibreTranslate reads it)."""
    for name, value in pairs:
        if name not in params:
            params[name] = value
        elif name == "q":
            params[name] = (params[name] if isinstance(params[name], list) else [params[name]]) + [value]


async def read_params(request: Request, body: bytes, files: bool = False) -> dict:
    """The request's parameters: its JSON object, or its query string and form fields (strings; a repeated ``q`` a
    list; the form's fields before the query string's). With ``files``, a multipart form's files are ``File``s;
    without, a file is refused."""
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
    params: dict = {}
    if media_type(request) == "multipart/form-data":
        async def replay():
            return {"type": "http.request", "body": body, "more_body": False}

        fields = []
        try:
            async with Request(request.scope, replay).form(max_files=1 if files else 0) as form:
                for name, value in form.multi_items():
                    if isinstance(value, UploadFile):
                        if not files:
                            raise ApiError(400, f"Invalid request: {name} parameter must be text, not a file")
                        value = File(value.filename or "", await value.read())
                    fields.append((name, value))
        except ApiError:
            raise
        except Exception as e:  # noqa: BLE001 - python-multipart's and Starlette's parse errors
            raise ApiError(400, f"Invalid request: malformed multipart form ({e})") from None
        _merge(params, fields)
    else:
        try:  # application/x-www-form-urlencoded, or no type given (curl -d sends the former)
            text = body.decode("utf-8")
            _merge(params, urllib.parse.parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="strict"))
        except UnicodeDecodeError:
            raise ApiError(400, "Invalid request: the body is not valid UTF-8") from None
    _merge(params, request.query_params.multi_items())
    return params


@dataclass
class TranslateRequest:
    texts: list[str]
    batch: bool  # q was a list
    alternatives: int
    auto: bool  # source was "auto"
    attention: bool  # the attention maps were asked for
    html: bool  # format html: translate the text of the markup, keep the markup


def string_param(params: dict, name: str, required: bool) -> str | None:
    value = params.get(name)
    if value is None or value == "":
        if required:
            raise ApiError(400, f"Invalid request: missing {name} parameter")
        return None
    if not isinstance(value, str):
        raise ApiError(400, f"Invalid request: {name} parameter must be a string")
    return value


def check_limits(texts: list[str], settings: Settings):
    """At most ``batch_limit`` texts of at most ``char_limit`` characters each (LibreTranslate's message)."""
    if len(texts) > settings.batch_limit:
        raise ApiError(400, f"Invalid request: request ({len(texts)}) exceeds text limit ({settings.batch_limit})")
    for text in texts:
        if len(text) > settings.char_limit:
            raise ApiError(400, f"Invalid request: request ({len(text)}) exceeds text limit ({settings.char_limit})")


def check_text(text: str, name: str = "q"):
    """Refuse what no sentence holds: lone surrogates (not Unicode text) and control characters such as NUL."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, f"Invalid request: {name} is not valid Unicode (it holds a lone surrogate)") from None
    for ch in text:
        if unicodedata.category(ch) == "Cc" and ch not in ALLOWED_CONTROLS:
            raise ApiError(400, f"Invalid request: {name} holds the control character U+{ord(ch):04X}")


def parse_translate(params: dict, settings: Settings, form: bool) -> TranslateRequest:
    """Check a /translate request in LibreTranslate's order and with its messages; raise ApiError(400)."""
    q = params.get("q")
    if q is None:
        raise ApiError(400, "Invalid request: missing q parameter")
    batch = isinstance(q, list)
    texts = q if batch else [q]
    if not all(isinstance(text, str) for text in texts):
        raise ApiError(400, "Invalid request: q must be a string or a list of strings")
    source = string_param(params, "source", required=True)
    target = string_param(params, "target", required=True)
    if form:  # as LibreTranslate: line endings to LF, so that the limit counts the same characters
        texts = ["\n".join(text.splitlines()) for text in texts]
    check_limits(texts, settings)
    for text in texts:
        check_text(text)
    if source not in SOURCES:
        raise ApiError(400, f"{source} is not supported")
    if target not in TARGETS:
        raise ApiError(400, f"{target} is not supported")
    text_format = string_param(params, "format", required=False) or "text"
    if text_format not in FORMATS:
        raise ApiError(400, f"{text_format} format is not supported")
    string_param(params, "api_key", required=False)
    alternatives = params.get("alternatives")
    alternatives = 0 if alternatives is None else _alternatives(alternatives)
    attention = params.get("attention")
    if not (attention is None or isinstance(attention, bool) or (isinstance(attention, str) and attention in FLAGS)):
        raise ApiError(400, "Invalid request: attention parameter must be true or false")
    wants_attention = attention is True or attention in ("true", "1")
    return TranslateRequest(texts, batch, alternatives, source == "auto", wants_attention, text_format == "html")


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
