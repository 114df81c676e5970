"""Stopping ``minilstm serve`` under load: every request a client has sent is answered (or its connection refused),
none is reset, with either HTTP parser and either event loop."""

import asyncio
import collections
import importlib.util
import json
import signal
import socket

import pytest

httpx = pytest.importorskip("httpx", reason="the serve tests need the serve extra: pip install '.[serve]'")
uvicorn = pytest.importorskip("uvicorn", reason="the serve tests need the serve extra: pip install '.[serve]'")

from serve_helpers import Server, save_tiny_model  # noqa: E402

from minilstm.checkpoint import load_checkpoint  # noqa: E402


def installed(*names):
    return all(name in ("h11", "asyncio") or importlib.util.find_spec(name) for name in names)


# (--http, --loop): each parser with each loop, where installed
STACKS = [stack for stack in [("httptools", "uvloop"), ("h11", "asyncio"), ("httptools", "asyncio"),
                              ("h11", "uvloop")] if installed(*stack)]
BACKEND = "numpy"  # shutdown does not depend on the backend, and numpy starts fastest (each repeat starts a server)
TEXT = "Go."


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("serve") / "tiny")


async def burst_then_sigterm(srv, sigterm_after: float) -> collections.Counter:
    """20 requests on kept-alive connections (left open, idle), then 100 at once, each on a new connection, with
    SIGTERM ``sigterm_after`` seconds into them; counts each request's outcome: its status, or the error's name."""
    body = {"q": TEXT, "source": "en", "target": "fr"}
    async with httpx.AsyncClient(base_url=srv.url, timeout=60) as earlier:
        assert {(await earlier.post("/translate", json=body)).status_code for _ in range(20)} == {200}
        new_connections = httpx.Limits(max_connections=None, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=srv.url, timeout=60, limits=new_connections) as client:
            async def one():
                try:
                    r = await client.post("/translate", json=body)
                except httpx.HTTPError as e:
                    return type(e).__name__
                return r.status_code, r.text, r.headers.get("connection")

            asyncio.get_running_loop().call_later(sigterm_after, srv.proc.send_signal, signal.SIGTERM)
            return collections.Counter(await asyncio.gather(*(one() for _ in range(100))))


@pytest.mark.slow
def test_sigterm_during_a_burst_of_new_connections_loses_no_request(checkpoint):
    """SIGTERM at different moments of a burst (a few ms in, the burst is connecting; later, requests are being
    read or decoded), 20 times over the parsers and loops: each request is answered (a 200 with its translation, or
    a 503), or its connection refused; none is reset or closed unanswered, and the server exits 0."""
    answer = {"translatedText": load_checkpoint(checkpoint, backend=BACKEND).model.translate([TEXT])[0]}

    def answered_or_refused(outcome) -> bool:
        if isinstance(outcome, str):  # an error's name: refused, or lost
            return outcome == "ConnectError"
        status, text, _ = outcome
        return (status, json.loads(text)) == (200, answer) or status == 503 and "error" in json.loads(text)

    seen = collections.Counter()
    for repeat in range(20):
        http, loop = STACKS[repeat % len(STACKS)]
        srv = Server(checkpoint, "--backend", BACKEND, "--http", http, "--loop", loop)
        try:
            outcomes = asyncio.run(burst_then_sigterm(srv, sigterm_after=0.005 * (repeat % 10)))
            assert srv.proc.wait(30) == 0
            assert srv.proc.stdout.read().strip() == "stopped: every accepted request was answered"
        finally:
            srv.stop()
        lost = {outcome: n for outcome, n in outcomes.items() if not answered_or_refused(outcome)}
        assert not lost, f"repeat {repeat} (--http {http} --loop {loop}): {lost} of 100 requests lost"
        seen.update(outcomes)
    # The stop came while requests were in progress: some answers said Connection: close
    assert any(outcome[2] == "close" for outcome in seen if not isinstance(outcome, str)), seen


async def hello(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]})
    await send({"type": "http.response.body", "body": b"hello"})


@pytest.mark.parametrize("http, loop", [stack for stack in [("h11", "asyncio"), ("httptools", "uvloop")]
                                        if installed(*stack)])
def test_connections_waiting_in_the_accept_queue_at_the_stop_are_answered(http, loop, monkeypatch):
    """Connections the event loop had not accepted when the stop came (there for an instant in a real burst, made
    to wait here by closing the loop's listener first) are accepted and answered with Connection: close; one that
    sends no request is closed after the grace; a client connecting after the stop is refused."""
    from minilstm.serve import _listen, drain

    monkeypatch.setattr(drain, "FIRST_REQUEST_GRACE", 0.2)

    server = drain.DrainingServer(uvicorn.Config(hello, lifespan="off", http=http, loop=loop, log_level="warning"))
    listener = _listen("127.0.0.1", 0)
    listener.listen(64)
    address = listener.getsockname()

    async def scenario():
        serving = asyncio.ensure_future(server.serve(sockets=[listener]))
        while not server.started:
            await asyncio.sleep(0.01)
        for each in server.servers:
            each.close()  # the loop accepts no more: new connections wait in the accept queue
        waiting = [socket.create_connection(address, timeout=10) for _ in range(6)]
        for client in waiting[1:]:
            client.sendall(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        server.should_exit = True
        await serving
        return waiting

    with asyncio.Runner(loop_factory=server.config.get_loop_factory()) as runner:
        silent, *waiting = runner.run(scenario())
    with silent:
        assert silent.recv(4096) == b""
    for client in waiting:
        with client:
            answer = b""
            while chunk := client.recv(4096):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"\r\n\r\nhello"), answer
        assert b"\r\nconnection: close\r\n" in answer.lower(), answer
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=10)
