"""``minilstm serve [CHECKPOINT_OR_RUN_DIR]``: a LibreTranslate-compatible translation server with dynamic batching.

Serves ``POST /translate``, ``/detect``, ``/translate_file``, ``/suggest``, ``GET /languages``,
``/frontend/settings``, ``/health``, ``/metrics``, ``/openapi.json`` and a page at ``/``
(uvicorn and Starlette: ``pip install "minilstm[serve]"``). Without a checkpoint it serves the small model shipped in
the package. SIGTERM or Ctrl-C: stop accepting connections, answer every request a client has already sent (those on
connections still waiting to be accepted, or sent but not yet read, included: drain.py), exit 0.
"""

import argparse
import importlib.util
import logging
import signal
import socket
import sys
from pathlib import Path

from ..backends import available_backends, default_backend_name
from ..checkpoint import load_checkpoint, resolve_checkpoint
from ..cli import non_negative_float, positive_int
from ..decoding import add_decoding_flags, check_decoding_flags
from ..errors import MinilstmError
from ..units import describe_units


def port_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number in 0..65535, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m minilstm.serve", description=__doc__.split("\n")[0])
    p.add_argument("checkpoint", type=Path, nargs="?", help="a checkpoint directory, or a training run's --out (then "
                   "its best/); default: the model shipped with minilstm")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=port_number, default=5000, help="port (0: any free port; the ready line says "
                   "which)")
    p.add_argument("--backend", default=default_backend_name(),
                   help=f"array backend: {', '.join(available_backends())}")
    p.add_argument("--max-batch", type=positive_int, default=64, help="most sentences decoded at once")
    p.add_argument("--max-delay-ms", type=non_negative_float, default=5.0,
                   help="how long the oldest waiting sentence may wait for others to join its batch (not after a "
                   "batch of one sentence, until a batch holds more)")
    add_decoding_flags(p, sampling=False, beam_help="; beams beyond the best are the n-best alternatives a "
                       "request may ask for")
    p.add_argument("--char-limit", type=positive_int, default=1000, help="most characters in one text")
    p.add_argument("--batch-limit", type=positive_int, default=64, help="most texts in one request")
    p.add_argument("--max-queue", type=positive_int, default=1024,
                   help="most sentences waiting to be decoded; a request beyond it gets 429")
    p.add_argument("--disable-files-translation", action="store_true",
                   help="refuse POST /translate_file (403), as LibreTranslate's flag of that name")
    p.add_argument("--api-key", default=None, help="require this api_key in every /translate request (403 "
                   "without it)")
    p.add_argument("--http", default="auto", choices=["auto", "httptools", "h11"],
                   help="uvicorn's HTTP parser (auto: httptools, in C, where installed, as the serve extra does)")
    p.add_argument("--loop", default="auto", choices=["auto", "uvloop", "asyncio"],
                   help="uvicorn's event loop (auto: uvloop where installed)")
    p.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"],
                   help="uvicorn's log level (info: one line per request)")
    return p


def _import_server():
    try:
        import prometheus_client  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn
    except ImportError as e:
        raise MinilstmError(f"minilstm serve needs the serve extra ({e.name} is not installed): "
                            'pip install "minilstm[serve]"') from None
    return uvicorn


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket, bound before the model loads: a port in use is said at once, and port 0 gets a free
    port the ready line names."""
    try:
        family, kind, proto = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][:3]
        # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on such sockets; without it a response's headers
        # and body go out as two segments held ~40 ms apart on keep-alive connections (Nagle + delayed ACK)
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as e:
        raise MinilstmError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.max_queue < args.batch_limit:
        raise MinilstmError(f"--max-queue ({args.max_queue}) is below --batch-limit ({args.batch_limit}): a request "
                            "of that many texts could never be queued")
    check_decoding_flags(args)
    uvicorn = _import_server()
    for name, flag in ((args.http, "--http"), (args.loop, "--loop")):
        if name not in ("auto", "h11", "asyncio") and importlib.util.find_spec(name) is None:
            raise MinilstmError(f"{flag} {name}: {name} is not installed (pip install {name}, or {flag} auto)")
    from .app import Metrics, Settings, create_app
    from .batcher import Batcher
    from .drain import DrainingServer
    from .file_store import FileStore
    from .translator import Translator

    if args.checkpoint is None:
        from ..models import DEFAULT_MODEL

        path, note = DEFAULT_MODEL, None
        if not (path / "config.json").is_file():
            raise MinilstmError(f"no model was shipped with this install ({path} is missing); pass a checkpoint or "
                                "a training run: minilstm serve runs/seq2seq")
    else:
        path, note = resolve_checkpoint(args.checkpoint)
    if note:
        print(note, file=sys.stderr)
    sock = _listen(args.host, args.port)
    model = load_checkpoint(path, backend=args.backend).model
    # The weights never change here: fold the embeddings into the kernels once (Seq2Seq.folded), not per batch (for
    # thousands of pieces a fold is a few hundred million multiply-adds).
    translator = Translator(model.folded(), args.beam_width, args.length_penalty)
    metrics = Metrics()
    batcher = Batcher(translator.decode, args.max_batch, args.max_delay_ms / 1000, args.max_queue, metrics)
    batcher.start(warmup=translator.warmup)
    settings = Settings(args.beam_width, args.char_limit, args.batch_limit, args.api_key)
    name = f"the shipped model {path.name}" if args.checkpoint is None else str(path)
    name += f", {describe_units(model.target_vocab.units.name)}"
    description = f"{name} ({model.backend.describe()})"
    files = None if args.disable_files_translation else FileStore()
    app = create_app(translator, batcher, settings, metrics, description=name, files=files)
    logging.basicConfig(format="%(levelname)s: %(message)s")

    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    ready = (f"ready: serving {description} on http://{shown}:{port} (max batch {args.max_batch}, max delay "
             f"{args.max_delay_ms:g} ms, beam width {args.beam_width}"
             + (f", length penalty {args.length_penalty:g}" if args.length_penalty else "") + ")")
    # Until uvicorn's own handlers are in place, a SIGINT or SIGTERM is kept and acted on once they are; after the
    # stop, uvicorn re-raises the signal it caught, which these handlers then ignore, and a graceful stop exits 0.
    early_signals = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda sig, _: early_signals.append(sig))

    class Server(DrainingServer):
        async def startup(self, sockets=None):
            await super().startup(sockets)
            print(ready, flush=True)  # said once signals reach uvicorn: a stop sent after this line is not lost
            if early_signals:
                self.handle_exit(early_signals[0], None)

        def handle_exit(self, sig, frame):
            batcher.flush()  # from now on decode what is queued without waiting for more to join it
            super().handle_exit(sig, frame)

    server = Server(uvicorn.Config(app, log_level=args.log_level, lifespan="off", access_log=args.log_level in (
        "info", "debug"), http=args.http, loop=args.loop))
    sock.listen(2048)
    try:
        server.run(sockets=[sock])
    finally:
        batcher.stop(timeout=0 if server.force_exit else None)  # a second Ctrl-C: leave at once
        if files is not None:
            files.close()
    if server.force_exit:
        print("stopped at once (a second Ctrl-C): requests still in progress, if any, got no answer", flush=True)
        return 130
    print("stopped: every accepted request was answered", flush=True)
    return 0
