"""The error every user-fixable problem of autocode derives from (bad input, a missing or wrong
file, a wrong setting), and the one place where the command-line tools turn it into one line
on stderr and exit code 2, never a traceback. Each module keeps its own subclass
(``DataError``, ``NomenclatureError``...), so callers can still tell them apart."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class UserError(Exception):
    """An error the user can fix: its message says what is wrong and what to do."""


@contextlib.contextmanager
def reported(*also: type[Exception]) -> Iterator[None]:
    """User errors (a missing file, and the types in ``also``) become ``error: <message>`` on
    stderr and exit code 2."""
    caught: tuple[type[Exception], ...] = (UserError, FileNotFoundError, *also)
    try:
        yield
    except caught as exc:
        from rich.console import Console

        Console(stderr=True).print(f"[red]error:[/red] {exc}", highlight=False)
        raise SystemExit(2) from None
