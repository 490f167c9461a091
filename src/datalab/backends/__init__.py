"""Execution backends, found by name among the ``datalab.backends`` entry points, as JupyterHub
finds its spawners: ``local`` and ``memory`` ship with datalab, and another package adds one by
declaring an entry point to a :class:`~datalab.backends.base.Backend` subclass (see
``pyproject.toml``). ``backend.name`` in the configuration picks one; a name no entry point
declares is a configuration error."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import TYPE_CHECKING

# the configuration checks backend.name against the installed names: they are found there
from datalab.config import BACKENDS_GROUP as GROUP
from datalab.config import backend_names as backend_names

if TYPE_CHECKING:
    from datalab.backends.base import Backend


def backend_class(name: str) -> type[Backend]:
    """The backend class installed under ``name``; LookupError naming the installed ones."""
    from datalab.backends.base import Backend

    found = list(entry_points(group=GROUP, name=name))
    if not found:
        raise LookupError(
            f"no execution backend named {name!r}; installed: {', '.join(backend_names())}"
        )
    loaded = found[0].load()
    if not (isinstance(loaded, type) and issubclass(loaded, Backend)):
        raise LookupError(f"the entry point {found[0].value} is not a datalab Backend")
    return loaded
