"""What clients of a LibreTranslate server send, against real ``minilstm serve`` processes on loopback: paragraphs,
Mastodon's HTML statuses with ``source=auto``, ``/detect``, lists as repeated form fields, ``/translate_file`` and
its downloads, ``/suggest``, ``/frontend/settings``, and bad markup and files, after which the server goes on."""

import pytest

httpx = pytest.importorskip("httpx", reason="the serve tests need the serve extra: pip install '.[serve]'")
pytest.importorskip("uvicorn", reason="the serve tests need the serve extra: pip install '.[serve]'")
html5lib = pytest.importorskip("html5lib", reason="the HTML tests compare tag trees with html5lib (the test extra)")

from serve_helpers import Server, save_tiny_model  # noqa: E402

from minilstm.checkpoint import load_checkpoint  # noqa: E402
from minilstm.models import DEFAULT_MODEL  # noqa: E402
from minilstm.units import describe_units  # noqa: E402

BACKEND = "numba"
pytestmark = pytest.mark.skipif(not (DEFAULT_MODEL / "config.json").is_file(), reason="no shipped model")

PARAGRAPH = "I am very tired today. I want to go home. Where is my bag?"
SENTENCES = ["I am very tired today.", "I want to go home.", "Where is my bag?"]
# A status as Mastodon sends it for translation: a mention, a link (its visible text split by invisible spans), a
# line break, a hashtag, an entity.
STATUS = ('<p><span class="h-card" translate="no"><a href="https://mastodon.social/@bob" class="u-url mention">@'
          '<span>bob</span></a></span> I am very tired today.<br>Where is my bag? <a href="https://example.com/'
          'lost" target="_blank" rel="nofollow noopener"><span class="invisible">https://</span><span class="">'
          'example.com/lost</span><span class="invisible"></span></a></p><p>I <b>really</b> like cats &amp; '
          'dogs. <a href="https://mastodon.social/tags/cats" class="mention hashtag" rel="tag">#<span>cats</span>'
          '</a></p>')


@pytest.fixture(scope="module")
def shipped():
    srv = Server(None, "--backend", BACKEND)
    yield srv
    assert srv.stop() == 0


@pytest.fixture(scope="module")
def shipped_model():
    return load_checkpoint(DEFAULT_MODEL, backend=BACKEND).model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny model's server with small limits: 200 characters a text, 4 texts (so files of 800 characters)."""
    checkpoint = save_tiny_model(tmp_path_factory.mktemp("api") / "tiny")
    srv = Server(checkpoint, "--backend", BACKEND, "--char-limit", 200, "--batch-limit", 4)
    yield srv
    assert srv.stop() == 0


def post(url, path="/translate", **kwargs):
    return httpx.post(url + path, timeout=120, **kwargs)


def tag_tree(markup: str) -> list:
    """Every element of the parsed document in order: its tag, its attributes, its depth."""
    out = []
    stack = [(html5lib.parse(markup, namespaceHTMLElements=False), 0)]
    while stack:
        element, depth = stack.pop()
        out.append((element.tag, sorted(element.attrib.items()), depth))
        stack.extend((child, depth + 1) for child in reversed(list(element)))
    return out


def test_a_paragraph_comes_back_as_its_sentences_translated(shipped, shipped_model):
    alone = shipped_model.translate(SENTENCES, split_sentences=False)
    r = post(shipped.url, json={"q": PARAGRAPH, "source": "en", "target": "fr"})
    assert r.status_code == 200, r.text
    assert r.json() == {"translatedText": " ".join(alone)}
    assert sum(r.json()["translatedText"].count(mark) for mark in ".?!") == 3
    # Line breaks and blank lines come back where they were; a form's CRLF is a line break (as in LibreTranslate).
    r = post(shipped.url, data={"q": "I am very tired today.\r\n\r\nWhere is my bag?", "source": "en",
                                "target": "fr"})
    assert r.json() == {"translatedText": f"{alone[0]}\n\n{alone[2]}"}
    # The library's translate does the same.
    assert shipped_model.translate([PARAGRAPH]) == [" ".join(alone)]


def test_a_mastodon_status_keeps_its_markup_and_gets_its_prose_translated(shipped, shipped_model):
    r = post(shipped.url, json={"q": STATUS, "source": "auto", "target": "fr", "format": "html"})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["detectedLanguage"]["language"] == "en"
    out = answer["translatedText"]
    assert tag_tree(out) == tag_tree(STATUS)
    for kept in ('<a href="https://mastodon.social/@bob" class="u-url mention">@<span>bob</span></a>',
                 '<span class="invisible">https://</span><span class="">example.com/lost</span>',
                 '<a href="https://mastodon.social/tags/cats" class="mention hashtag" rel="tag">#<span>cats</span>'
                 '</a>', "<br>"):
        assert kept in out
    sentence, question = shipped_model.translate(["I am very tired today.", "Where is my bag?"],
                                                 split_sentences=False)
    assert sentence in out and question in out and "tired" not in out and "Where" not in out
    # A list of statuses, as JSON: one answer each.
    r = post(shipped.url, json={"q": [STATUS, "<p>Where is my bag?</p>"], "source": "en", "target": "fr",
                                "format": "html"})
    assert r.status_code == 200 and r.json()["translatedText"] == [out, f"<p>{question}</p>"]


FRENCH = "Je suis très fatigué aujourd'hui et je veux rentrer à la maison."
GERMAN = "Ich bin heute sehr müde und möchte nach Hause gehen."
SPANISH = "Estoy muy cansado hoy y quiero volver a casa."


def test_detect_answers_as_libretranslate_from_json_form_and_query(shipped):
    for text, code in ((PARAGRAPH, "en"), (FRENCH, "fr"), (GERMAN, "de"), (SPANISH, "es")):
        for kwargs in ({"json": {"q": text}}, {"data": {"q": text}}, {"params": {"q": text}},
                       {"files": {"q": (None, text)}}):
            r = post(shipped.url, "/detect", **kwargs)
            assert r.status_code == 200, r.text
            found = r.json()
            assert isinstance(found, list) and found[0]["language"] == code, (text, found)
            assert all(0 <= d["confidence"] <= 100 for d in found)
            assert [d["confidence"] for d in found] == sorted((d["confidence"] for d in found), reverse=True)
    r = post(shipped.url, "/detect", json={})
    assert (r.status_code, r.json()) == (400, {"error": "Invalid request: missing q parameter"})


def test_source_auto_refuses_a_text_that_is_not_english_naming_its_language(shipped):
    for text, code in ((FRENCH, "fr"), (GERMAN, "de"), (SPANISH, "es")):
        r = post(shipped.url, json={"q": text, "source": "auto", "target": "fr"})
        assert r.status_code == 400 and r.json()["error"].startswith(f"{code} is not supported"), r.text
    r = post(shipped.url, json={"q": [PARAGRAPH, "Where is my bag?"], "source": "auto", "target": "fr"})
    assert [d["language"] for d in r.json()["detectedLanguage"]] == ["en", "en"]


def test_repeated_form_fields_and_the_query_string_make_a_list(shipped, shipped_model):
    texts = ["Go.", "I am cold."]
    expected = shipped_model.translate(texts)
    r = post(shipped.url, content="q=Go.&q=I+am+cold.&source=en&target=fr",
             headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.json() == {"translatedText": expected}
    r = post(shipped.url, files=[("q", (None, "Go.")), ("q", (None, "I am cold.")), ("source", (None, "en")),
                                 ("target", (None, "fr"))])
    assert r.json() == {"translatedText": expected}
    r = post(shipped.url, params=[("q", "Go."), ("q", "I am cold."), ("source", "en"), ("target", "fr")])
    assert r.json() == {"translatedText": expected}
    r = post(shipped.url, params={"q": "Go.", "source": "en", "target": "fr"})  # one q: a string
    assert r.json() == {"translatedText": expected[0]}


def test_translate_file_txt_and_html_downloaded_once(shipped, shipped_model):
    text = f"{PARAGRAPH}\n\nI am cold.\n"
    alone = shipped_model.translate([*SENTENCES, "I am cold."], split_sentences=False)
    r = post(shipped.url, "/translate_file", files={"file": ("note.txt", text.encode()), "source": (None, "en"),
                                                     "target": (None, "fr")})
    assert r.status_code == 200, r.text
    url = r.json()["translatedFileUrl"]
    assert url.startswith(shipped.url + "/download_file/") and url.endswith(".note.txt")
    download = httpx.get(url)
    assert download.status_code == 200 and 'filename="note.txt"' in download.headers["content-disposition"]
    assert download.text == f"{' '.join(alone[:3])}\n\n{alone[3]}\n"
    gone = httpx.get(url)
    assert gone.status_code == 404 and "error" in gone.json()
    r = post(shipped.url, "/translate_file", files={"file": ("status.html", STATUS.encode()),
                                                     "source": (None, "auto"), "target": (None, "fr")})
    assert r.status_code == 200, r.text
    page = httpx.get(r.json()["translatedFileUrl"])
    assert "text/html" in page.headers["content-type"] and tag_tree(page.text) == tag_tree(STATUS)
    assert httpx.get(shipped.url + "/download_file/..%2F..%2Fetc%2Fpasswd").status_code == 404


BAD_FILES = [  # (files, status, error)
    ({"source": (None, "en"), "target": (None, "fr")}, 400, "Invalid request: missing file parameter"),
    ({"file": (None, "not a file"), "source": (None, "en"), "target": (None, "fr")}, 400,
     "Invalid request: missing file parameter"),
    ({"file": ("a.txt", b"Hi."), "target": (None, "fr")}, 400, "Invalid request: missing source parameter"),
    ({"file": ("a.txt", b"Hi."), "source": (None, "en")}, 400, "Invalid request: missing target parameter"),
    ({"file": ("a.pdf", b"%PDF-1.4"), "source": (None, "en"), "target": (None, "fr")}, 400,
     "Invalid request: file format not supported"),
    ({"file": ("a.txt", b"Hi."), "source": (None, "de"), "target": (None, "fr")}, 400, "de is not supported"),
    ({"file": ("a.txt", b"Hi \xff."), "source": (None, "en"), "target": (None, "fr")}, 400,
     "Invalid request: the file is not valid UTF-8 text"),
    ({"file": ("a.txt", b"Hi \x00."), "source": (None, "en"), "target": (None, "fr")}, 400,
     "Invalid request: the file holds the control character U+0000"),
    ({"file": ("a.txt", b"Hi. " * 250), "source": (None, "en"), "target": (None, "fr")}, 400,
     "Invalid request: file (1000 characters) exceeds file limit (800)"),
    ({"file": ("a.txt", b"x" * 5_000_000), "source": (None, "en"), "target": (None, "fr")}, 413, None),
    ({"file": ("a.html", b"<p>Hi <b>there.</p>"), "source": (None, "en"), "target": (None, "fr")}, 400, None),
]


@pytest.mark.parametrize("files,status,error", BAD_FILES, ids=range(len(BAD_FILES)))
def test_bad_files_get_one_json_error_and_the_server_goes_on(tiny, files, status, error):
    r = post(tiny.url, "/translate_file", files=files)
    assert r.status_code == status and "error" in r.json(), r.text
    if error is not None:
        assert r.json() == {"error": error}
    assert post(tiny.url, json={"q": "Hi.", "source": "en", "target": "fr"}).status_code == 200


BAD_HTML = [  # (markup, what the error says)
    ("<p>Hi <b>there.</p>", "malformed HTML"),
    ("<p>Hi.</p></div>", "malformed HTML"),
    ("<div>" * 100 + "Hi." + "</div>" * 100, None),  # fine: not too deep
    ("<p>Hi &#0; there.</p>", None),
    ("<p>Hi &bogus; &amp there &lt;b&gt;.</p>", None),
    ("<p>Hi.</p><!-- unclosed comment", None),
]


@pytest.mark.parametrize("markup,error", BAD_HTML, ids=range(len(BAD_HTML)))
def test_bad_html_gets_a_json_error_or_an_answer_and_the_server_goes_on(tiny, markup, error):
    r = post(tiny.url, json={"q": markup[:200], "source": "en", "target": "fr", "format": "html"}) \
        if len(markup) <= 200 else None
    big = httpx.post(tiny.url + "/translate_file", timeout=120, files={
        "file": ("page.html", markup.encode()), "source": (None, "en"), "target": (None, "fr")})
    for answer in (r, big):
        if answer is None:
            continue
        assert answer.status_code in (200, 400), answer.text
        if error is not None:
            assert answer.status_code == 400 and error in answer.json()["error"]
    assert post(tiny.url, json={"q": "Hi.", "source": "en", "target": "fr"}).status_code == 200


def test_ten_megabytes_of_nesting_and_invalid_utf8_get_4xx_and_the_server_goes_on(tmp_path):
    checkpoint = save_tiny_model(tmp_path / "tiny")
    srv = Server(checkpoint, "--backend", BACKEND, "--char-limit", 11_000_000, "--batch-limit", 1,
                 "--disable-files-translation")
    try:
        nested = "<div>" * 2_000_000 + "Hi." + "</div>" * 2_000_000  # 22 MB: 10 MB of opening tags
        r = post(srv.url, json={"q": nested[:11_000_000], "source": "en", "target": "fr", "format": "html"})
        assert r.status_code == 400 and "deeper" in r.json()["error"], r.text[:300]
        r = post(srv.url, content=b'{"q": "<p>Hi\xff.</p>", "source": "en", "target": "fr", "format": "html"}',
                 headers={"Content-Type": "application/json"})
        assert (r.status_code, r.json()) == (400, {"error": "Invalid request: the body is not valid UTF-8"})
        r = post(srv.url, "/translate_file", files={"file": ("a.txt", b"Hi."), "source": (None, "en"),
                                                    "target": (None, "fr")})
        assert (r.status_code, r.json()) == (403, {"error": "Files translation are disabled on this server."})
        settings = httpx.get(srv.url + "/frontend/settings").json()
        assert settings["filesTranslation"] is False and settings["supportedFilesFormat"] == []
        assert post(srv.url, json={"q": "Hi.", "source": "en", "target": "fr"}).status_code == 200
    finally:
        assert srv.stop() == 0


def test_suggest_and_frontend_settings_as_libretranslate(shipped, shipped_model):
    for kwargs in ({"json": {"q": "Hi.", "s": "Salut.", "source": "en", "target": "fr"}}, {"data": {}}):
        r = post(shipped.url, "/suggest", **kwargs)
        assert (r.status_code, r.json()) == (403, {"error": "Suggestions are disabled on this server."})
    settings = httpx.get(shipped.url + "/frontend/settings").json()
    assert settings["language"] == {"source": {"code": "en", "name": "English"},
                                    "target": {"code": "fr", "name": "French"}}
    assert settings["charLimit"] == 1000 and settings["keyRequired"] is False and settings["apiKeys"] is False
    assert settings["suggestions"] is False and settings["filesTranslation"] is True
    assert settings["supportedFilesFormat"] == [".txt", ".html", ".htm"]
    assert isinstance(settings["frontendTimeout"], int)
    units = describe_units(shipped_model.target_vocab.units.name)
    assert settings["model"] == f"the shipped model {DEFAULT_MODEL.name}, {units}"  # the page's model line


def test_the_page_names_a_character_models_units(tiny):
    assert httpx.get(tiny.url + "/frontend/settings").json()["model"].endswith("tiny, characters")
