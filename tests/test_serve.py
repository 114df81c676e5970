"""``minilstm serve``: real servers (``python -m minilstm.serve`` processes on free loopback ports) answering the
LibreTranslate API, checked against ``Seq2Seq.translate`` of the same checkpoint on the same backend."""

import asyncio
import importlib.util
import json
import signal
import socket
import time
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx", reason="the serve tests need the serve extra: pip install '.[serve]'")
pytest.importorskip("uvicorn", reason="the serve tests need the serve extra: pip install '.[serve]'")

from serve_helpers import Server, gauge, histogram, random_texts, save_tiny_model  # noqa: E402

from minilstm.checkpoint import load_checkpoint  # noqa: E402
from minilstm.cli import run_main  # noqa: E402

BACKEND = "numba"
KEY = "s3cret"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("serve") / "tiny")


@pytest.fixture(scope="module")
def model(checkpoint):
    return load_checkpoint(checkpoint, backend=BACKEND).model


@pytest.fixture(scope="module")
def server(checkpoint):
    srv = Server(checkpoint, "--backend", BACKEND)
    yield srv
    assert srv.stop() == 0


LENGTH_PENALTY = 3.0  # large, so that it changes some of the test texts' beams (checked below)


@pytest.fixture(scope="module")
def beam_server(checkpoint):
    srv = Server(checkpoint, "--backend", BACKEND, "--beam-width", 3, "--length-penalty", LENGTH_PENALTY, "--api-key",
                 KEY)
    yield srv
    assert srv.stop() == 0


def translate(url, **kwargs):
    return httpx.post(url + "/translate", timeout=60, **kwargs)


def assert_alive(url, model):
    """The server still answers a good request, correctly."""
    r = translate(url, json={"q": "Go.", "source": "en", "target": "fr"})
    assert r.status_code == 200, r.text
    assert r.json() == {"translatedText": model.translate(["Go."])[0]}


def test_translate_string_and_list_json_and_form(server, model):
    texts = random_texts(model.input_vocab.chars, 20, seed=1)
    expected = model.translate(texts)
    assert len(set(expected)) > 10, "the model's answers hardly depend on the input: the test would prove little"
    r = translate(server.url, json={"q": texts[0], "source": "en", "target": "fr"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.json() == {"translatedText": expected[0]}
    r = translate(server.url, json={"q": texts, "source": "en", "target": "fr", "format": "text"})
    assert r.json() == {"translatedText": expected}
    r = translate(server.url, data={"q": texts[3], "source": "en", "target": "fr"})  # form, as curl -d sends it
    assert r.json() == {"translatedText": expected[3]}
    r = translate(server.url, files={"q": (None, texts[4]), "source": (None, "en"), "target": (None, "fr")})
    assert r.json() == {"translatedText": expected[4]}  # multipart/form-data
    r = translate(server.url, json={"q": ["Go.", "I see."], "source": "auto", "target": "fr"})
    assert r.json()["translatedText"] == model.translate(["Go.", "I see."])
    assert [d["language"] for d in r.json()["detectedLanguage"]] == ["en", "en"]
    # Empty and blank texts translate to empty strings; a greedy server has no alternatives to give.
    r = translate(server.url, json={"q": ["", texts[5], "  "], "source": "en", "target": "fr", "alternatives": 2})
    assert r.json() == {"translatedText": ["", expected[5], ""], "alternatives": [[], [], []]}
    assert translate(server.url, json={"q": "", "source": "en", "target": "fr"}).json() == {"translatedText": ""}


def test_unknown_characters_are_dropped_and_reported(server, model):
    text = "Go.\u4e2d\u00e0 Hi.\u00e0"
    assert "\u4e2d" not in model.input_vocab and "\u00e0" not in model.input_vocab
    r = translate(server.url, json={"q": [text, "\u4e2d", "Hi."], "source": "en", "target": "fr"})
    assert r.status_code == 200
    first, last = model.translate(["Go. Hi.", "Hi."])
    assert r.json() == {"translatedText": [first, "", last],
                        "droppedCharacters": [["\u00e0", "\u4e2d"], ["\u4e2d"], []]}


def test_other_endpoints(server):
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    assert httpx.get(server.url + "/languages").json() == [
        {"code": "en", "name": "English", "targets": ["fr"]}, {"code": "fr", "name": "French", "targets": []}]
    schema = httpx.get(server.url + "/openapi.json").json()
    assert schema["openapi"].startswith("3.") and "/translate" in schema["paths"]
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"] and "/static/app.js" in page.text
    assert httpx.get(server.url + "/static/app.js").status_code == 200
    r = httpx.get(server.url + "/metrics")
    assert r.status_code == 200 and "minilstm_batch_size_bucket" in r.text
    r = httpx.get(server.url + "/nowhere")
    assert (r.status_code, r.json()) == (404, {"error": "Not Found"})
    r = httpx.get(server.url + "/translate")
    assert (r.status_code, r.json()) == (405, {"error": "Method Not Allowed"})


GOOD = {"q": "Go.", "source": "en", "target": "fr"}
JSON = {"Content-Type": "application/json"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
BAD_REQUESTS = [  # (request, status, error)
    ({"json": {"source": "en", "target": "fr"}}, 400, "Invalid request: missing q parameter"),
    ({"data": {"source": "en", "target": "fr"}}, 400, "Invalid request: missing q parameter"),
    ({"json": {"q": "Go."}}, 400, "Invalid request: missing source parameter"),
    ({"data": {"q": "Go.", "source": "en"}}, 400, "Invalid request: missing target parameter"),
    ({"json": {**GOOD, "source": "de"}}, 400, "de is not supported"),
    ({"data": {**GOOD, "target": "zz"}}, 400, "zz is not supported"),
    ({"json": {**GOOD, "format": "xml"}}, 400, "xml format is not supported"),
    ({"json": {**GOOD, "q": 12}}, 400, "Invalid request: q must be a string or a list of strings"),
    ({"json": {**GOOD, "q": ["Go.", None]}}, 400, "Invalid request: q must be a string or a list of strings"),
    ({"json": {**GOOD, "q": {"text": "Go."}}}, 400, "Invalid request: q must be a string or a list of strings"),
    ({"json": {**GOOD, "source": ["en"]}}, 400, "Invalid request: source parameter must be a string"),
    ({"json": {**GOOD, "alternatives": "many"}}, 400, "Invalid request: alternatives parameter is not a number"),
    ({"json": {**GOOD, "alternatives": 1.5}}, 400, "Invalid request: alternatives parameter is not a number"),
    ({"json": {**GOOD, "api_key": 1}}, 400, "Invalid request: api_key parameter must be a string"),
    ({"json": {**GOOD, "attention": "yes"}}, 400, "Invalid request: attention parameter must be true or false"),
    ({"json": {**GOOD, "attention": 1}}, 400, "Invalid request: attention parameter must be true or false"),
    ({"content": b'{"q": "Go.", "source": "en", "target": "fr"', "headers": JSON}, 400, "Invalid JSON format"),
    ({"content": b'["Go."]', "headers": JSON}, 400, "Invalid JSON format"),
    ({"content": b"[" * 200_000, "headers": JSON}, 400, "Invalid JSON format"),  # nesting deeper than Python's
    ({"content": b'{"q": "Go.", "source": "en", "target": "fr", "alternatives": NaN}', "headers": JSON}, 400,
     "Invalid request: alternatives parameter is not a number"),
    ({"json": {**GOOD, "q": "x" * 100_000}}, 400, "Invalid request: request (100000) exceeds text limit (1000)"),
    ({"json": {**GOOD, "q": ["Go."] * 10_000}}, 400, "Invalid request: request (10000) exceeds text limit (64)"),
    ({"content": b"x" * 10_000_000, "headers": JSON}, 413, "Invalid request: body too large (limit 1048576 bytes)"),
    ({"content": (b"x" * 100_000 for _ in range(100)), "headers": JSON}, 413,  # chunked: no Content-Length
     "Invalid request: body too large (limit 1048576 bytes)"),
    ({"content": b'{"q": "Go\xff.", "source": "en", "target": "fr"}', "headers": JSON}, 400,
     "Invalid request: the body is not valid UTF-8"),
    ({"content": b"q=Go\xff.&source=en&target=fr", "headers": FORM}, 400,
     "Invalid request: the body is not valid UTF-8"),
    ({"content": b"q=Go%FF.&source=en&target=fr", "headers": FORM}, 400,
     "Invalid request: the body is not valid UTF-8"),
    ({"content": b'{"q": "Go\\ud800.", "source": "en", "target": "fr"}', "headers": JSON}, 400,
     "Invalid request: q is not valid Unicode (it holds a lone surrogate)"),
    ({"json": {**GOOD, "q": "Go\x00."}}, 400, "Invalid request: q holds the control character U+0000"),
    ({"data": {**GOOD, "q": "Go\x00."}}, 400, "Invalid request: q holds the control character U+0000"),
]


@pytest.mark.parametrize("request_kwargs,status,error", BAD_REQUESTS,
                         ids=[f"{k}-{e[:40]}" for k, (_, _, e) in enumerate(BAD_REQUESTS)])
def test_bad_requests_get_one_json_error_and_the_server_goes_on(server, model, request_kwargs, status, error):
    r = translate(server.url, **request_kwargs)
    assert (r.status_code, r.json()) == (status, {"error": error})
    assert_alive(server.url, model)


def test_beam_search_answers_and_alternatives_equal_translate(beam_server, model):
    texts = random_texts(model.input_vocab.chars, 12, seed=2)
    n_best = model.translate(texts, beam_width=3, n_best=True, length_penalty=LENGTH_PENALTY)
    assert [best[0] for best in n_best] == model.translate(texts, beam_width=3, length_penalty=LENGTH_PENALTY)
    assert n_best != model.translate(texts, beam_width=3, n_best=True)  # the server's --length-penalty shows
    r = translate(beam_server.url, json={"q": texts, "source": "en", "target": "fr", "api_key": KEY})
    assert r.json() == {"translatedText": [best[0] for best in n_best]}
    r = translate(beam_server.url, data={"q": texts[0], "source": "en", "target": "fr", "alternatives": "2",
                                         "api_key": KEY})
    assert r.json() == {"translatedText": n_best[0][0], "alternatives": n_best[0][1:3]}
    r = translate(beam_server.url, json={"q": texts[:2], "source": "en", "target": "fr", "alternatives": 1,
                                         "api_key": KEY})
    assert r.json() == {"translatedText": [n_best[0][0], n_best[1][0]],
                        "alternatives": [n_best[0][1:2], n_best[1][1:2]]}
    assert httpx.get(beam_server.url + "/frontend/settings").json()["beamWidth"] == 3


@pytest.mark.parametrize("key", [None, "wrong", 7, "\ud800"])
def test_api_key(beam_server, key):
    body = {**GOOD} if key is None else {**GOOD, "api_key": key}
    r = translate(beam_server.url, content=json.dumps(body), headers=JSON)  # ASCII JSON: a lone surrogate escaped
    assert (r.status_code, r.json()) == (403, {"error": "Invalid API key"})


async def _concurrently(url, bodies, limit=None):
    limits = httpx.Limits(max_connections=limit or len(bodies), max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
        return await asyncio.gather(*(client.post("/translate", json=body) for body in bodies))


def test_200_concurrent_requests_are_batched_and_each_gets_its_own_answer(server, model):
    texts = random_texts(model.input_vocab.chars, 200, seed=3)
    expected = model.translate(texts)
    before = histogram(httpx.get(server.url + "/metrics").text, "minilstm_batch_size")
    responses = asyncio.run(_concurrently(server.url, [{"q": t, "source": "en", "target": "fr"} for t in texts]))
    assert [r.status_code for r in responses] == [200] * 200
    assert [r.json()["translatedText"] for r in responses] == expected
    after = histogram(httpx.get(server.url + "/metrics").text, "minilstm_batch_size")
    batches = after["count"] - before["count"]
    single = after["1.0"] - before["1.0"]
    assert batches - single > 0, "no batch held more than one sentence"
    assert batches < 200


def test_max_batch_1_gives_the_same_answers(checkpoint, model):
    texts = random_texts(model.input_vocab.chars, 40, seed=4)
    expected = model.translate(texts)
    srv = Server(checkpoint, "--backend", BACKEND, "--max-batch", 1)
    try:
        bodies = [{"q": t, "source": "en", "target": "fr"} for t in texts[:20]]
        bodies.append({"q": texts[20:], "source": "en", "target": "fr"})  # 20 sentences over 20 batches
        responses = asyncio.run(_concurrently(srv.url, bodies))
        assert [r.json()["translatedText"] for r in responses] == expected[:20] + [expected[20:]]
        sizes = histogram(httpx.get(srv.url + "/metrics").text, "minilstm_batch_size")
        assert sizes["count"] == sizes["1.0"] >= 40  # warm-up is not counted; every batch held one sentence
    finally:
        assert srv.stop() == 0


def test_a_client_that_goes_away_does_not_stall_the_queue(server, model):
    body = json.dumps({"q": random_texts(model.input_vocab.chars, 64, seed=5), "source": "en",
                       "target": "fr"}).encode()
    host, port = server.url.removeprefix("http://").split(":")
    head = b"POST /translate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    for sent in (len(body), len(body) // 2):  # gone after sending the whole request, or half its body
        for _ in range(3):
            with socket.create_connection((host, int(port))) as s:
                s.sendall(head % len(body) + body[:sent])
                time.sleep(0.05)
    start = time.monotonic()
    assert_alive(server.url, model)
    assert time.monotonic() - start < 10
    assert 'status="500"' not in httpx.get(server.url + "/metrics").text


def test_sigterm_under_load_answers_every_accepted_request_and_exits_0(checkpoint, model):
    texts = random_texts(model.input_vocab.chars, 60, seed=6)
    expected = model.translate(texts)
    # A long delay and a large batch: the requests wait in the queue until the server is told to stop.
    # --max-queue: exactly these requests fit; one more sentence gets 429.
    srv = Server(checkpoint, "--backend", BACKEND, "--max-delay-ms", 30_000, "--max-batch", 1000, "--max-queue",
                 len(texts), "--batch-limit", 2)

    async def scenario():
        task = asyncio.ensure_future(_concurrently(srv.url, [{"q": t, "source": "en", "target": "fr"}
                                                             for t in texts]))
        async with httpx.AsyncClient(base_url=srv.url) as client:
            deadline = time.monotonic() + 60
            while gauge((await client.get("/metrics")).text, "minilstm_queue_depth") < len(texts):
                assert time.monotonic() < deadline, "the requests never reached the queue"
                await asyncio.sleep(0.05)
            full = await client.post("/translate", json={"q": ["Go.", ""], "source": "en", "target": "fr"})
            assert (full.status_code, full.json(), full.headers["retry-after"]) == (
                429, {"error": f"Slowdown: the queue is full ({len(texts)} sentences waiting); retry later"}, "1")
        stopped_at = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        responses = await task
        return responses, time.monotonic() - stopped_at

    try:
        responses, took = asyncio.run(scenario())
        assert [r.status_code for r in responses] == [200] * len(texts)
        assert [r.json()["translatedText"] for r in responses] == expected
        assert took < 10
        assert srv.proc.wait(30) == 0
        assert srv.proc.stdout.read().strip() == "stopped: every accepted request was answered"
    finally:
        srv.stop()


def test_the_pure_python_http_stack_gives_the_same_answers_and_errors(checkpoint, model):
    """The serve extra brings httptools and uvloop, which uvicorn then picks; ``--http h11 --loop asyncio`` (what
    runs without them) answers the same, the bad requests included."""
    texts = random_texts(model.input_vocab.chars, 12, seed=7)
    srv = Server(checkpoint, "--backend", BACKEND, "--http", "h11", "--loop", "asyncio")
    try:
        r = translate(srv.url, json={"q": texts, "source": "en", "target": "fr"})
        assert r.json() == {"translatedText": model.translate(texts)}
        for request_kwargs, status, error in BAD_REQUESTS:
            if "content" in request_kwargs and not isinstance(request_kwargs["content"], bytes):
                request_kwargs = {**request_kwargs, "content": (b"x" * 100_000 for _ in range(100))}  # a fresh one
            r = translate(srv.url, **request_kwargs)
            assert (r.status_code, r.json()) == (status, {"error": error})
        assert_alive(srv.url, model)
    finally:
        assert srv.stop() == 0


def test_command_line_errors_are_one_line(tmp_path, capsys, checkpoint):
    from minilstm.serve import main

    assert run_main(main, [str(tmp_path / "nothing-here")]) == 2
    assert capsys.readouterr().err.startswith("error: checkpoint not found")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert run_main(main, [str(checkpoint), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot listen on 127.0.0.1:{port}: ") and err.count("\n") == 1
    for flags, missing in ((["--http", "httptools"], "httptools"), (["--loop", "uvloop"], "uvloop")):
        if importlib.util.find_spec(missing) is None:
            assert run_main(main, [str(checkpoint), *flags]) == 2
            assert capsys.readouterr().err == (f"error: {flags[0]} {missing}: {missing} is not installed (pip install "
                                               f"{missing}, or {flags[0]} auto)\n")
    assert run_main(main, [str(checkpoint), "--max-queue", "10"]) == 2
    assert capsys.readouterr().err == ("error: --max-queue (10) is below --batch-limit (64): a request of that many "
                                       "texts could never be queued\n")
    assert run_main(main, [str(checkpoint), "--length-penalty", "0.6"]) == 2
    assert capsys.readouterr().err == ("error: --length-penalty ranks the beams of beam search: give --beam-width 2 or "
                                       "more too\n")


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_and_no_answer_outside_the_schema(server, tmp_path):
    """A schema-driven fuzzer (schemathesis, every check: server errors, responses against the schema, invalid
    requests accepted, valid ones refused, undeclared methods) against the app's own OpenAPI schema. Where a valid
    request may be refused for its content (tests/data/schemathesis.toml says which), a 400 counts as accepted."""
    import shutil
    import subprocess
    import sys

    st = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    if st is None:
        pytest.skip("schemathesis is not installed (pip install schemathesis)")
    config = Path(__file__).parent / "data" / "schemathesis.toml"
    run = subprocess.run([st, "--config-file", str(config), "run", server.url + "/openapi.json", "--checks", "all",
                          "--max-examples", "60",
                          "--seed", "1", "--no-color"], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]


def test_keep_alive_requests_are_not_held_by_nagle(server):
    """Answers on a kept-alive connection come at once: the listening socket is TCP (proto IPPROTO_TCP), so asyncio
    sets TCP_NODELAY on each connection (without it, headers and body went out ~40 ms apart: Nagle + delayed ACK)."""
    from minilstm.serve import _listen

    with _listen("127.0.0.1", 0) as sock:
        assert sock.proto == socket.IPPROTO_TCP
    with httpx.Client(base_url=server.url) as client:
        times = []
        for _ in range(11):
            started = time.perf_counter()
            assert client.get("/health").status_code == 200
            times.append(time.perf_counter() - started)
    assert sorted(times)[5] < 0.025, times


def test_a_wait_that_gathered_nobody_is_not_paid_again():
    """The batcher waits ``max_delay`` for company; after a batch of one it takes the next sentence at once, and it
    waits again once a batch holds more than one (sentences queued together: here one request's three)."""
    from minilstm.serve.batcher import Batcher

    batches = []
    batcher = Batcher(lambda texts: batches.append(list(texts)) or list(texts), max_batch=8, max_delay=0.3,
                      max_queue=100)
    batcher.start()

    async def one(text):
        started = time.monotonic()
        await batcher.submit([text]).future
        return time.monotonic() - started

    async def scenario():
        lone = [await one(text) for text in "abc"]  # one client, one request at a time
        await batcher.submit(list("xyz")).future  # three queued together: a batch of 3, taken at once
        return lone, await one("d")  # after a batch of 3, the delay is paid again

    try:
        lone, after_company = asyncio.run(scenario())
    finally:
        batcher.stop(timeout=10)
    assert lone[0] >= 0.3 and lone[1] < 0.2 and lone[2] < 0.2, lone
    assert batches[:3] == [["a"], ["b"], ["c"]] and ["x", "y", "z"] in batches, batches
    assert after_company >= 0.3


def test_one_bad_text_fails_its_request_alone_and_requests_span_batches():
    """The batcher on its own, with a decode function that fails on one text: that request gets the error, every
    other request its answers, though they shared batches with it; a request larger than a batch is answered whole."""
    from minilstm.serve.batcher import Batcher

    batches = []

    def decode(texts):
        batches.append(list(texts))
        if "bad" in texts:
            raise ValueError("cannot decode 'bad'")
        return [text.upper() for text in texts]

    batcher = Batcher(decode, max_batch=4, max_delay=0.05, max_queue=100)
    batcher.start()

    async def scenario():
        jobs = [batcher.submit(texts) for texts in (["a", "b"], ["c", "bad", "d"], ["e"], list("fghijklmn"))]
        return await asyncio.gather(*(job.future for job in jobs), return_exceptions=True)

    try:
        first, failed, third, large = asyncio.run(scenario())
    finally:
        batcher.stop(timeout=10)
    assert (first, third, large) == (["A", "B"], ["E"], list("FGHIJKLMN"))
    assert isinstance(failed, ValueError)
    assert max(map(len, batches)) <= 4 and ["bad"] in batches  # the failing batch was decoded one text at a time


@pytest.mark.parametrize("beam_width", [1, 2, 4])
def test_n_best_begins_with_the_beam_searchs_answer(checkpoint, beam_width):
    """``translate(n_best=True)``: each text's beams, best first; the first is what ``translate`` answers, the rest
    are different strings, at most beam_width in all."""
    model = load_checkpoint(checkpoint, backend="numpy").model
    texts = random_texts(model.input_vocab.chars, 30, seed=7)
    n_best = model.translate(texts, beam_width=beam_width, n_best=True)
    assert [beams[0] for beams in n_best] == model.translate(texts, beam_width=beam_width)
    assert all(1 <= len(beams) <= beam_width and len(set(beams)) == len(beams) for beams in n_best)
    if beam_width > 1:
        assert any(len(beams) == beam_width for beams in n_best)


@pytest.mark.slow  # a float64 attention model: its compiled decoder takes ~15 s to build on a cold cache
def test_attention_maps_of_an_attention_model(tmp_path):
    """A model with attention, greedy: ``attention: true`` returns each text's weights (a row per output character
    and the end, a column per input character the model read), those ``Seq2Seq.translate`` gives, to 4 decimals."""
    import numpy as np

    checkpoint = save_tiny_model(tmp_path / "attention", attention="general", dtype="float64")
    model = load_checkpoint(checkpoint, backend=BACKEND).model
    texts = random_texts(model.input_vocab.chars, 6, seed=8)
    maps = []
    expected = model.translate(texts, attention_maps=maps)
    srv = Server(checkpoint, "--backend", BACKEND)
    try:
        assert httpx.get(srv.url + "/frontend/settings").json()["attention"] is True
        r = translate(srv.url, json={"q": texts + ["Go.\u4e2d", ""], "source": "en", "target": "fr",
                                     "attention": True})
        answer = r.json()
        assert answer["translatedText"][:6] == expected
        for weights, reference in zip(answer["attention"][:6], maps, strict=True):
            np.testing.assert_allclose(weights, reference, atol=5.1e-5)
        unknown = answer["attention"][6]  # "Go." was read: three columns
        assert np.shape(unknown)[1] == 3 and np.allclose(np.sum(unknown, axis=1), 1, atol=1e-3)
        assert answer["attention"][7] == [] and answer["droppedCharacters"][6] == ["\u4e2d"]
        r = translate(srv.url, data={"q": texts[0], "source": "en", "target": "fr", "attention": "true"})
        assert r.json()["translatedText"] == expected[0] and len(r.json()["attention"]) == len(maps[0])
        r = translate(srv.url, json={"q": texts[0], "source": "en", "target": "fr"})
        assert r.json() == {"translatedText": expected[0]}  # not asked for
    finally:
        assert srv.stop() == 0


def test_no_attention_field_for_a_model_without_attention(server, model):
    r = translate(server.url, json={**GOOD, "attention": True})
    assert r.json() == {"translatedText": model.translate(["Go."])[0]}
    assert httpx.get(server.url + "/frontend/settings").json()["attention"] is False


def test_build_ships_a_given_checkpoint_without_its_optimizer(tmp_path, capsys, checkpoint, model):
    """``python -m minilstm.models.build --from CHECKPOINT --dest DIR``: the weights as they are, no optimizer state;
    training arguments beside --from are refused in one line."""
    from minilstm.models.build import main

    assert run_main(main, ["--from", str(checkpoint), "--dest", str(tmp_path / "shipped")]) == 0
    shipped = load_checkpoint(tmp_path / "shipped", backend=BACKEND)
    assert shipped.optimizer_state is None
    assert not (tmp_path / "shipped" / "optimizer.safetensors").exists()
    for name, value in model.get_weights().items():
        assert (shipped.model.get_weights()[name] == value).all(), name
    assert run_main(main, ["--from", str(checkpoint), "--dest", str(tmp_path / "other"), "--epochs", "3"]) == 2
    assert capsys.readouterr().err.endswith("--from ships a checkpoint as it is: unexpected arguments --epochs 3\n")
    assert not (tmp_path / "other").exists()
