"""Sentence pairs from tab-separated files: the built-in subset, a ``--data`` file (plain or gzip), the download.

Every problem the user can cause (a missing or malformed file, a failed download) is raised as
:class:`~minilstm.errors.MinilstmError` with a one-line message that names the place and says what to do; the
command-line tools print it and exit 2.
"""

from __future__ import annotations

import contextlib
import gzip
import http.client
import io
import operator
import os
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from importlib.resources import files
from pathlib import Path, PurePosixPath

from .errors import MinilstmError

DEFAULT_URL = "https://www.manythings.org/anki/fra-eng.zip"
"""Where the full English-French file comes from (Tatoeba sentences, packaged by manythings.org)."""

DEFAULT_DATA = files("minilstm") / "default_data" / "fra-eng-10k.txt.gz"
"""The built-in subset: the first 10,000 lines of the 2019-04-07 ``fra.txt`` (what the Keras example uses).

Shipped so that training works out of the box without a download; see ``default_data/ATTRIBUTION.txt``.
"""

DEFAULT_NUM_PAIRS = 10_000
"""Number of sentence pairs in :data:`DEFAULT_DATA`."""

USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
"""manythings.org answers HTTP 406 to urllib's own ``Python-urllib/3.x`` User-Agent (and to none at all)."""

_DATA_HINT = (
    "pass --data PATH to a tab-separated English<TAB>French file, or omit --data for the built-in subset"
)


# --------------------------------------------------------------------------------------------------- reading


def _describe(path) -> str:
    return str(path)


@contextlib.contextmanager
def _open_binary(path):
    """Open ``path`` (str, PathLike or importlib Traversable) for binary reading, gunzipping ``*.gz``."""
    p = path if hasattr(path, "is_dir") and hasattr(path, "open") else Path(path)
    name = _describe(path)
    if p.is_dir():
        raise MinilstmError(f"data path is a directory, not a file: {name} ({_DATA_HINT})")
    if not p.is_file():
        raise MinilstmError(f"data file not found: {name} ({_DATA_HINT})")
    try:
        raw = p.open("rb")
    except OSError as exc:
        raise MinilstmError(f"cannot open data file {name}: {exc.strerror or exc}") from None
    with raw:
        if p.name.endswith(".gz"):
            with gzip.GzipFile(fileobj=raw, mode="rb") as gz:
                yield gz
        else:
            yield raw


def read_pairs(path, num_samples: int | None = None) -> list[tuple[str, str]]:
    """Read ``english<TAB>french[<TAB>attribution]`` lines from a UTF-8 file (``*.gz`` is gunzipped).

    Like the Keras example, the first ``num_samples`` lines are taken (``None`` = all) and a third column
    (the attribution that newer manythings.org releases add) is ignored. Reading stops after ``num_samples``
    pairs, so only those lines are validated and ``--num-samples 10000`` on the full 167k-line file is fast.

    Unlike the example (which splits on "\\n" and drops the last element, assuming a trailing newline), a
    final line without a newline is kept, a CRLF line ending loses its "\\r", a UTF-8 BOM is ignored, and
    trailing empty lines are fine. Everything else that would silently shift or corrupt the data is an error
    with its file and line number: invalid UTF-8, an empty line followed by more pairs, a line without a tab,
    more than three columns, an empty English or French side.
    """
    if num_samples is not None:
        num_samples = operator.index(num_samples)
        if num_samples < 1:
            raise MinilstmError(f"--num-samples must be at least 1, got {num_samples}")
    name = _describe(path)
    pairs: list[tuple[str, str]] = []
    blank_at = 0  # line number of the first empty line not (yet) known to be trailing
    with _open_binary(path) as f:
        try:
            for lineno, raw in enumerate(f, 1):
                line = raw[:-1] if raw.endswith(b"\n") else raw
                if line.endswith(b"\r"):
                    line = line[:-1]
                if lineno == 1 and line.startswith(b"\xef\xbb\xbf"):
                    line = line[3:]
                if not line:
                    blank_at = blank_at or lineno
                    continue
                if blank_at:
                    raise MinilstmError(f"{name}:{blank_at}: empty line between sentence pairs (remove it)")
                pairs.append(_parse_line(line, name, lineno))
                if len(pairs) == num_samples:
                    break
        except (OSError, EOFError, zlib.error) as exc:  # unreadable or corrupt .gz, I/O error
            raise MinilstmError(f"cannot read data file {name}: {exc}") from None
    if not pairs:
        raise MinilstmError(f"{name}: no sentence pairs found, the file is empty ({_DATA_HINT})")
    return pairs


def _parse_line(line: bytes, name: str, lineno: int) -> tuple[str, str]:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MinilstmError(
            f"{name}:{lineno}: not valid UTF-8 (byte 0x{line[exc.start]:02x} at byte {exc.start + 1}"
            " of the line); the file must be UTF-8 text"
        ) from None
    cols = text.split("\t")
    if len(cols) == 1:
        raise MinilstmError(f"{name}:{lineno}: expected 'english<TAB>french', found no tab")
    if len(cols) > 3:
        raise MinilstmError(
            f"{name}:{lineno}: expected 'english<TAB>french' (optionally <TAB>attribution),"
            f" found {len(cols)} tab-separated columns"
        )
    english, french = cols[0], cols[1]
    if not english.strip():
        raise MinilstmError(f"{name}:{lineno}: the English side (first column) is empty")
    if not french.strip():
        raise MinilstmError(f"{name}:{lineno}: the French side (second column) is empty")
    return english, french


def resolve_pairs(data=None, num_samples: int | None = None) -> list[tuple[str, str]]:
    """The pairs the CLI trains on: ``--data PATH`` if given, else the built-in 10,000-pair subset.

    For a user's file, asking for more samples than it has gives what is there (as the Keras example does;
    the summary line "Number of samples" shows it). For the built-in subset it is an error instead, because
    the user most likely expected the full file and would silently train on a different problem.
    ``num_samples=None`` means all pairs of the chosen file.
    """
    if data is not None:
        return read_pairs(data, num_samples)
    pairs = read_pairs(DEFAULT_DATA, num_samples)
    if num_samples is not None and len(pairs) < num_samples:
        raise MinilstmError(
            f"the built-in data subset has {len(pairs):,} sentence pairs but --num-samples asks for"
            f" {num_samples:,}; pass --data PATH to the full fra.txt (from {DEFAULT_URL})"
            " or lower --num-samples"
        )
    return pairs


def load_default_pairs(num_samples: int | None = None) -> list[tuple[str, str]]:
    """The built-in subset's first ``num_samples`` pairs (error if fewer); see :func:`resolve_pairs`."""
    return resolve_pairs(None, num_samples)


# ---------------------------------------------------------------------------------------------- download


def download(dest_dir, url: str = DEFAULT_URL, timeout: float = 60) -> Path:
    """Download the manythings.org zip and extract its ``fra.txt`` into ``dest_dir``; return that path.

    The site rejects urllib's default User-Agent with HTTP 406 (a problem users of the Keras example hit), so
    a browser-like one is sent. ``fra.txt`` is written to a temporary file in ``dest_dir`` and renamed over
    the target, so an interrupted download never leaves a truncated ``fra.txt`` that later looks valid.
    """
    hint = f"download {url} by hand, unzip it and pass --data PATH/TO/fra.txt"
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        raise MinilstmError(f"download of {url} failed: HTTP {exc.code} {exc.reason} ({hint})") from None
    except urllib.error.URLError as exc:
        raise MinilstmError(f"download of {url} failed: {exc.reason} ({hint})") from None
    except (OSError, http.client.HTTPException, ValueError) as exc:  # timeouts, resets, bad URLs
        raise MinilstmError(f"download of {url} failed: {exc or type(exc).__name__} ({hint})") from None

    try:
        archive = zipfile.ZipFile(io.BytesIO(body))
    except zipfile.BadZipFile:
        raise MinilstmError(
            f"download of {url} did not give a zip archive ({len(body):,} bytes) ({hint})"
        ) from None
    dest = Path(dest_dir)
    target = dest / "fra.txt"
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
        member = next((m for m in members if PurePosixPath(m.filename).name == "fra.txt"), None)
        if member is None:
            names = ", ".join(m.filename for m in members) or "nothing"
            raise MinilstmError(f"the zip archive from {url} has no fra.txt (it holds {names}) ({hint})")
        try:
            dest.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=dest, prefix=".fra.txt.", suffix=".part")
        except OSError as exc:
            raise MinilstmError(f"cannot write to {dest}: {exc.strerror or exc}") from None
        try:
            with os.fdopen(fd, "wb") as out, archive.open(member) as src:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
            _remove(tmp)
            raise MinilstmError(f"the zip archive from {url} is damaged: {exc} ({hint})") from None
        except OSError as exc:
            _remove(tmp)
            raise MinilstmError(f"cannot write {target}: {exc.strerror or exc}") from None
        except BaseException:
            _remove(tmp)
            raise
    return target


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
