"""The package's one atomic file writer: write a temporary file beside the target, then
rename it into place, so a reader never sees half a file and an interrupted write
leaves the old file (or none) and no temporary file."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Callable

__all__ = ["atomic_write", "write_text_atomic", "file_mode"]


def _umask() -> int:
    """The process umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """``0o666`` less the umask: the mode of an ordinary new file (``mkstemp`` creates
    ``0o600``, ``mkdtemp`` ``0o700``; outputs get what ``open`` would give)."""
    return 0o666 & ~_umask()


def atomic_write(path, write: Callable[[IO], None], *, binary: bool = False) -> None:
    """Call ``write(handle)`` on a temporary file beside ``path``, then rename it to ``path``.

    ``handle`` is a text handle (UTF-8, no newline translation) or, with ``binary``, a
    binary one. The file gets the mode of an ordinary new file (``file_mode``). If
    ``write`` raises (or the process is interrupted), the temporary file is removed
    and ``path`` is untouched.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if binary:
            handle = os.fdopen(fd, "wb")
        else:
            handle = os.fdopen(fd, "w", encoding="utf-8", newline="")
        with handle:
            write(handle)
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text_atomic(path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (``atomic_write``)."""
    atomic_write(path, lambda handle: handle.write(text))
