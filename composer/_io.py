"""Atomic file writes: a temporary file in the target folder, then `os.replace`.

An interrupted or failed write leaves the previous file at the target path intact.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import ComposerError


def file_mode() -> int:
    """The mode a plain `open()` would give a new file (mkstemp makes them 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def ensure_dir(folder: str | Path) -> Path:
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ComposerError(f"cannot create output folder {folder}: {exc.strerror or exc}") from None
    if not os.access(folder, os.W_OK):
        raise ComposerError(f"output folder {folder} is not writable")
    return folder


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    ensure_dir(path.parent if str(path.parent) else Path("."))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, file_mode())  # artifacts get the usual permissions, not mkstemp's 0600
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_files(folder: str | Path, files: dict[str, bytes]) -> list[Path]:
    """Write several files into `folder` (created if needed) as one step: every temporary file
    is written first, and only when all of them are complete are they moved into place, so a
    failure part-way leaves none of the new files and every earlier one intact."""
    from contextlib import ExitStack

    folder = ensure_dir(folder)
    paths = [folder / name for name in files]
    with ExitStack() as stack:
        for path, data in zip(paths, files.values()):
            tmp = stack.enter_context(atomic_path(path))
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
    return paths
