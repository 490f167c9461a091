"""A service's log file: size-based rotation, tail and follow.

The service writes straight to the file (opened with ``O_APPEND``), so it needs no pipe to the
platform and can outlive it. Rotation is therefore *copy-then-truncate*, as logrotate's
``copytruncate``: the current content is copied to ``<name>.1`` (older copies shift up to
``<name>.<backups>``) and the file is truncated in place; with ``O_APPEND`` the service simply
continues at the new end. Lines written between the copy and the truncation (microseconds) can
be lost; while the platform is stopped, nothing rotates.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections import deque
from collections.abc import AsyncIterator, Callable
from pathlib import Path

POLL_S = 0.2


def rotate_if_needed(path: Path, max_bytes: int, backups: int) -> bool:
    """Rotate ``path`` if it is larger than ``max_bytes``; True if it did."""
    try:
        if path.stat().st_size <= max_bytes:
            return False
    except FileNotFoundError:
        return False
    for index in range(backups - 1, 0, -1):
        older = path.with_name(f"{path.name}.{index}")
        if older.exists():
            os.replace(older, path.with_name(f"{path.name}.{index + 1}"))
    if backups > 0:
        shutil.copyfile(path, path.with_name(f"{path.name}.1"))
    with open(path, "r+b") as handle:
        handle.truncate(0)
    return True


def tail_lines(path: Path, count: int) -> list[str]:
    """The last ``count`` lines, reaching into ``<name>.1`` when the current file is short."""
    if count <= 0:
        return []
    lines: deque[str] = deque(maxlen=count)
    for source in (path.with_name(f"{path.name}.1"), path):
        with contextlib.suppress(FileNotFoundError), open(source, "rb") as handle:
            for raw in handle:
                lines.append(raw.decode(errors="replace").rstrip("\r\n"))
    return list(lines)


async def follow_lines(path: Path, tail: int, keep_going: Callable[[], bool]) -> AsyncIterator[str]:
    """Yield the last ``tail`` lines, then new lines as they are written, for as long as
    ``keep_going()`` is true. Survives rotation (the file shrinks: start again at 0)."""
    for line in tail_lines(path, tail):
        yield line
    position = _size(path)
    partial = b""
    while keep_going():
        size = _size(path)
        if size < position:  # truncated by rotation
            position, partial = 0, b""
        if size > position:
            with open(path, "rb") as handle:
                handle.seek(position)
                chunk = handle.read(size - position)
            position += len(chunk)
            *complete, partial = (partial + chunk).split(b"\n")
            for raw in complete:
                yield raw.decode(errors="replace").rstrip("\r")
        else:
            await asyncio.sleep(POLL_S)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def append_line(path: Path, line: str) -> None:
    """A platform note in the service's log (start, stop, exit), so users see them in context."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line.rstrip("\n") + "\n")
