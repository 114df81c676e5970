"""The OpenAPI 3 description of ``minilstm serve``'s API (what /openapi.json serves)."""

from .requests import FLAGS, INTEGER, SOURCES, TARGETS, Settings


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
            "format": {"type": "string", "enum": ["text", "html", "", None], "default": "text", "nullable": True,
                       "description": "text, or html: the text inside the markup is translated, the markup kept"},
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
                                                    "format": {"type": "string", "enum": ["text", "html", ""]},
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
    key = {"type": "string", "nullable": True}
    detect_schema = {"type": "object", "required": ["q"], "properties": {
        "q": {**texts, "minLength": 1, "description": "Text whose language to identify"}, "api_key": key}}
    detect_form = {"type": "object", "required": ["q"], "properties": {"q": {**text, "minLength": 1},
                                                                        "api_key": {"type": "string"}}}
    file_form = {"type": "object", "required": ["file", "source", "target"], "properties": {
        "file": {"type": "string", "format": "binary", "description": "A .txt or .html file, UTF-8"},
        "source": {"type": "string", "enum": list(SOURCES)}, "target": {"type": "string", "enum": list(TARGETS)},
        "api_key": {"type": "string"}}}
    suggest_form = {"type": "object", "required": ["q", "s", "source", "target"], "properties": {
        name: {"type": "string"} for name in ("q", "s", "source", "target")}}
    language = {"type": "object", "required": ["code", "name"],
                "properties": {"code": {"type": "string"}, "name": {"type": "string"}}}
    settings_schema = {"type": "object", "required": [
        "charLimit", "frontendTimeout", "apiKeys", "keyRequired", "suggestions", "filesTranslation",
        "supportedFilesFormat", "language"], "properties": {
        "charLimit": {"type": "integer"}, "frontendTimeout": {"type": "integer"}, "apiKeys": {"type": "boolean"},
        "keyRequired": {"type": "boolean"}, "suggestions": {"type": "boolean"},
        "filesTranslation": {"type": "boolean"}, "supportedFilesFormat": string_list,
        "language": {"type": "object", "required": ["source", "target"],
                     "properties": {"source": language, "target": language}}}}

    def json_answer(description, schema):
        return {"200": {"description": description, "content": {"application/json": {"schema": schema}}}}

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
            "/detect": {"post": {
                "summary": "Identify the language of a text (a list: of the texts together)",
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": detect_schema},
                    "application/x-www-form-urlencoded": {"schema": detect_form}}},
                "responses": {**json_answer("The likeliest languages, best first", {
                    "type": "array", "items": {"$ref": "#/components/schemas/Detected"}}),
                    **errors(400, 403, 413)}}},
            "/translate_file": {"post": {
                "summary": "Translate a .txt or .html file; the answer is the URL to download it from (once)",
                "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": file_form}}},
                "responses": {**json_answer("Where to download the translation", {
                    "type": "object", "required": ["translatedFileUrl"],
                    "properties": {"translatedFileUrl": {"type": "string"}}}),
                    **errors(400, 403, 413, 429, 500, 503)}}},
            "/download_file/{filename}": {"get": {
                "summary": "A translated file (served once, then deleted)",
                "parameters": [{"name": "filename", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "The file", "content": {
                    "text/plain": {"schema": {"type": "string"}}, "text/html": {"schema": {"type": "string"}}}},
                    **errors(400, 404)}}},
            "/suggest": {"post": {
                "summary": "Suggest a translation (disabled on this server: always 403)",
                "requestBody": {"required": True, "content": {
                    "application/x-www-form-urlencoded": {"schema": suggest_form}}},
                "responses": {"200": {"description": "Never: suggestions are disabled"}, **errors(403)}}},
            "/frontend/settings": {"get": {"summary": "What this server supports (LibreTranslate's shape)",
                                           "responses": json_answer("Settings", settings_schema)}},
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
