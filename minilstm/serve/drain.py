"""Stopping the server without losing a request that a client has already sent.

uvicorn's own shutdown closes its listening socket and then every connection with no request in progress. Under a
burst that loses requests in three ways (seen with SIGTERM a few ms into 100 requests on new connections: up to all
100 reset): the kernel resets the connections still waiting in the listening socket's accept queue when it is
closed; a connection whose request bytes sit unread in its receive buffer counts as idle, and closing a socket with
unread data sends a reset; and most often a connection just accepted, whose client has not sent its request yet,
is closed, so that the request then arrives at a closed socket and gets a reset.

``DrainingServer`` stops instead in this order: the event loop stops accepting, but a duplicate of the listening
socket's descriptor keeps the accept queue alive until what waits in it has been accepted and handed to uvicorn's
protocol (then it is closed: later clients are refused, which a client can tell from a lost request); every
response from then on says ``Connection: close``, so no client sends another request on its connection; and a
connection with no request in progress is closed only once nothing waits in its receive buffer and it has had a
request (a new connection gets up to ``FIRST_REQUEST_GRACE`` seconds for its first). Then uvicorn's shutdown waits
for the requests in progress.

Two races remain, as with any HTTP/1.1 server: a handshake that completes between the last accept and the close
of the accept queue, and a new request sent on a kept-alive connection just as it is closed, are reset.
"""

import asyncio
import socket
import struct

import uvicorn

try:
    from fcntl import ioctl
    from termios import FIONREAD
except ImportError:  # Windows
    ioctl = None

# How long a connection accepted before the stop may take to send its first request (the client connected to send
# one; a browser's preconnection that never does holds the stop this long).
FIRST_REQUEST_GRACE = 2.0
POLL_INTERVAL = 0.005  # how often the idle connections are looked at again while draining


class CloseConnectionsWhenStopping:
    """ASGI middleware: once ``server.should_exit`` is set, each response says ``Connection: close`` (uvicorn then
    closes the connection after it, and the client sends no further request on it)."""

    def __init__(self, app, server: uvicorn.Server):
        self.app, self.server = app, server

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_and_close_when_stopping(message):
            if message["type"] == "http.response.start" and self.server.should_exit:
                message = {**message, "headers": [*message.get("headers", ()), (b"connection", b"close")]}
            await send(message)

        return await self.app(scope, receive, send_and_close_when_stopping)


def unread_bytes(connection) -> int:
    """Bytes that have arrived on ``connection`` (a uvicorn protocol) and wait in the kernel, not yet read (1 where
    they cannot be counted: such a connection is then closed only after the grace)."""
    if ioctl is None:
        return 1
    sock = connection.transport.get_extra_info("socket")
    try:
        return struct.unpack("i", ioctl(sock.fileno(), FIONREAD, b"\0" * 4))[0]
    except (AttributeError, OSError):  # no socket, or closed already: nothing will be read
        return 0


class DrainingServer(uvicorn.Server):
    """uvicorn's Server, stopping without losing a request already sent (the module doc). Wraps ``config.app`` in
    ``CloseConnectionsWhenStopping``. The accept queues it drains are those of the sockets given to ``run``."""

    def __init__(self, config: uvicorn.Config):
        config.app = CloseConnectionsWhenStopping(config.app, self)
        super().__init__(config)
        self._accept_queues: list[socket.socket] = []

    async def startup(self, sockets=None):
        # The event loop closes its listening sockets on stop; these duplicates keep each accept queue alive
        self._accept_queues = [sock.dup() for sock in sockets or ()]
        await super().startup(sockets)

    async def shutdown(self, sockets=None):
        for server in self.servers:
            server.close()
        await self._accept_waiting_connections()
        await self._close_idle_connections()
        await super().shutdown(sockets)

    def _protocol(self):
        """A new uvicorn protocol for one connection (as ``uvicorn.Server.startup`` makes them)."""
        return self.config.http_protocol_class(config=self.config, server_state=self.server_state,
                                               app_state=self.lifespan.state, _loop=asyncio.get_running_loop())

    async def _accept_waiting_connections(self):
        """Accept what waits in the accept queues, then close them (a client connecting later is refused)."""
        accepted = []
        for listener in self._accept_queues:
            with listener:
                listener.setblocking(False)
                while True:
                    try:
                        connection, _ = listener.accept()
                    except ConnectionAbortedError:
                        continue  # its client gave up while it waited
                    except OSError:  # BlockingIOError: none left; or out of descriptors (then those left are lost)
                        break
                    accepted.append(connection)
        self._accept_queues = []
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.connect_accepted_socket(self._protocol, sock) for sock in accepted),
                             return_exceptions=True)  # one reset meanwhile is its client's loss alone

    async def _close_idle_connections(self):
        """Close each connection with no request in progress once it has had a request and no bytes wait unread in
        it, until none is left but busy ones (uvicorn's shutdown waits for those), or the grace has passed, or a
        second Ctrl-C came."""
        loop = asyncio.get_running_loop()
        grace = FIRST_REQUEST_GRACE
        if self.config.timeout_graceful_shutdown is not None:
            grace = min(grace, self.config.timeout_graceful_shutdown)
        deadline = loop.time() + grace
        while True:
            waiting = False
            for connection in list(self.server_state.connections):
                cycle = getattr(connection, "cycle", None)
                if connection.transport.is_closing() or cycle is not None and not cycle.response_complete:
                    continue  # closed already, or busy (its response will say Connection: close)
                if cycle is None or unread_bytes(connection):
                    waiting = True  # its request is on the way, or here and about to be read
                else:
                    connection.shutdown()
            if not waiting or self.force_exit or loop.time() >= deadline:
                return
            await asyncio.sleep(POLL_INTERVAL)
