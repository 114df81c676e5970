"""Translated files waiting for their download (``POST /translate_file`` answers a URL, ``GET /download_file/NAME``
serves it once): a temporary folder of bounded size, each file deleted after its download or when it expires, the
folder removed when the server stops."""

import re
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path

from ..files import write_bytes_atomic

NAME = re.compile(r"[0-9a-f]{32}\.[A-Za-z0-9._-]{1,100}")


def safe_filename(name: str) -> str:
    """A file name that is safe in a path and a header: the base name's letters, digits, dots, dashes and
    underscores (others become underscores), at most 100 characters keeping the extension."""
    base = re.sub(r"[^A-Za-z0-9._-]", "_", name.replace("\\", "/").rsplit("/", 1)[-1]).lstrip(".") or "file"
    if len(base) > 100:
        stem, dot, ext = base.rpartition(".")
        base = (stem[: 100 - len(ext) - 1] + "." + ext) if dot and len(ext) < 20 else base[:100]
    return base


class StoreFull(Exception):
    """The store holds its most files or bytes."""


class FileStore:
    """At most ``max_files`` files and ``max_bytes`` bytes, each kept ``ttl`` seconds at most."""

    def __init__(self, max_files: int = 64, max_bytes: int = 64 << 20, ttl: float = 600.0):
        self.max_files, self.max_bytes, self.ttl = max_files, max_bytes, ttl
        self.folder = Path(tempfile.mkdtemp(prefix="minilstm-serve-files-"))
        self.entries: dict[str, tuple[float, int]] = {}  # name -> (expiry time, size)
        self.lock = threading.Lock()

    def put(self, download_name: str, content: bytes) -> str:
        """Keep ``content``; the name to download it by: a random hex token, a dot, ``download_name`` made safe."""
        with self.lock:
            self._expire()
            if len(self.entries) >= self.max_files or sum(s for _, s in self.entries.values()) + len(content) > \
                    self.max_bytes:
                raise StoreFull(f"{len(self.entries)} translated files are waiting for their download")
            name = f"{uuid.uuid4().hex}.{safe_filename(download_name)}"
            write_bytes_atomic(self.folder / name, content, "a translated file")
            self.entries[name] = (time.monotonic() + self.ttl, len(content))
            return name

    def take(self, name: str) -> tuple[str, bytes] | None:
        """The file's download name and content, deleted from the store; None when unknown or expired."""
        with self.lock:
            self._expire()
            if not NAME.fullmatch(name) or self.entries.pop(name, None) is None:
                return None
            path = self.folder / name
            content = path.read_bytes()
            path.unlink()
            return name.split(".", 1)[1], content

    def _expire(self):
        now = time.monotonic()
        for name in [n for n, (expiry, _) in self.entries.items() if expiry <= now]:
            del self.entries[name]
            (self.folder / name).unlink(missing_ok=True)

    def close(self):
        with self.lock:
            self.entries.clear()
            shutil.rmtree(self.folder, ignore_errors=True)
