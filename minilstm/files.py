"""Writing outputs: an output directory checked before any work starts, files replaced whole, and a full disk (or any
other OSError) turned into one ``MinilstmError`` that names the path and what was being written.

Why: an hour of training that ends in a traceback because ``--out`` was a file, or because the disk filled while a
checkpoint was written, is an hour lost. The directory is checked up front; a write that fails leaves the previous
file as it was and no temporary file behind.
"""

import contextlib
import os
import tempfile
from pathlib import Path

from .errors import MinilstmError


def describe_os_error(error: OSError) -> str:
    """``No space left on device`` rather than ``[Errno 28] No space left on device: '/long/tmp/name'``."""
    return error.strerror or str(error)


def fsync_dir(path: Path):
    """Make a rename inside ``path`` durable (where the platform allows opening a directory)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def prepare_output_dir(path: Path, flag: str = "--out") -> Path:
    """Create ``path`` (with missing parents) and check that a file can be written into it, or say in one error
    what is wrong. Parents created here are removed again when the directory itself cannot be made."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise MinilstmError(f"{flag} {path} is an existing file, not a directory; pass a directory (it is created "
                            "if missing)")
    missing = []
    for candidate in (path, *path.parents):
        if candidate.exists():
            break
        missing.append(candidate)
    created = []
    try:
        for directory in reversed(missing):
            directory.mkdir()
            created.append(directory)
        with tempfile.TemporaryFile(dir=path):
            pass  # a write that works, not just a permission bit (root ignores those; a read-only mount does not)
    except OSError as e:
        for directory in reversed(created):
            directory.rmdir()
        blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            reason = f"{blocker} is a file"
        else:
            reason = describe_os_error(e)
        action = "write into" if not missing else "create"
        raise MinilstmError(f"cannot {action} the {flag} directory {path}: {reason}; pass a directory that can be "
                            "created and written") from None
    return path


def write_bytes_atomic(path: Path, data: bytes, what: str):
    """Write ``data`` to ``path`` whole or not at all: a temporary file beside it, fsync'ed, renamed over it. An
    OSError (a full disk, a read-only file system) is one ``MinilstmError`` naming ``path`` and ``what`` it holds;
    the previous ``path`` is left as it was."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(e, OSError):
            raise MinilstmError(f"cannot write {what} to {path}: {describe_os_error(e)}; the previous {path.name} "
                                "(if any) is unchanged") from None
        raise


def write_text_atomic(path: Path, text: str, what: str):
    write_bytes_atomic(path, text.encode("utf-8"), what)
