"""Writing a file so that a reader never sees half of it: a temporary file beside it, fsynced, renamed
over it in one step, and the directory fsynced so the rename survives a crash."""

import contextlib
import os
import tempfile
from pathlib import Path


def write_text_atomic(path, text: str) -> None:
    """Replace ``path`` with ``text`` in one rename; the directory must exist."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def write_json_atomic(path, data, *, indent: int | None = 2) -> None:
    """Replace ``path`` with ``data`` as JSON (values JSON cannot hold written as strings)."""
    import json

    write_text_atomic(path, json.dumps(data, indent=indent, default=str))


def fsync_dir(path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
