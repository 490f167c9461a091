"""Rendering a local recipe (``local.yaml``, see ``docs/local-recipes.md``) for one start.

Pure: the same recipe and context give the same result. Every string is a Jinja2 template
rendered in an immutable sandbox with ``StrictUndefined``, so a recipe can neither mutate the
values nor call unsafe attributes, and a typo is an error instead of an empty string.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from datalab.errors import BackendError
from datalab.onyxia_context import chosen_secret_paths

DEFAULT_READINESS_TIMEOUT_S = 180.0

_jinja = ImmutableSandboxedEnvironment(
    undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True
)


@dataclass(frozen=True)
class VaultEnv:
    """Vault KV v2 secrets whose keys the launcher turns into environment variables."""

    address: str
    token: str
    mount: str
    secrets: list[str]


@dataclass(frozen=True)
class RenderedRecipe:
    command: list[str]  # argv; argv[0] still unresolved (see resolve_command)
    env: dict[str, str]
    listen: str  # "unix" (on service.socket) or "tcp" (on service.port)
    readiness_http: str | None  # path requested where the service listens
    readiness_tcp: int | None  # port to connect to (listen: tcp)
    readiness_unix: str | None  # a socket of the service's own to connect to (listen: unix)
    readiness_timeout_s: float
    url: str | None
    password: str | None
    notes: str
    vault_env: VaultEnv | None = None


def render_recipe(recipe: dict[str, Any], context: dict[str, Any]) -> RenderedRecipe:
    """Render ``recipe`` with ``context`` (``values``, ``service``, ``env_dir``).

    Raises :class:`BackendError` naming the key of the template and the problem.
    """
    command = recipe.get("command")
    if not isinstance(command, list) or not command:
        raise BackendError("local.yaml: 'command' must be a non-empty list of strings")
    argv = [_render(arg, context, f"command[{i}]") for i, arg in enumerate(command)]
    rendered_env = {
        str(name): _render(value, context, f"env.{name}")
        for name, value in (recipe.get("env") or {}).items()
    }
    # A variable rendering to "" is left unset: recipes cannot omit a key conditionally, and
    # clients such as boto3 treat an empty AWS_ENDPOINT_URL differently from none.
    env = {name: value for name, value in rendered_env.items() if value != ""}
    listen = recipe.get("listen", "tcp")
    readiness = recipe.get("readiness") or {}
    http = tcp = unix = None
    if "http" in readiness:
        http = _render(readiness["http"], context, "readiness.http")
        if not http.startswith("/"):
            http = "/" + http
    elif listen == "unix":
        if readiness.get("tcp") not in (None, False):
            raise BackendError("local.yaml: readiness.tcp needs 'listen: tcp'")
        if "unix" in readiness:  # a server that names its own socket (PostgreSQL, Redis)
            unix = _render(readiness["unix"], context, "readiness.unix")
            if not unix.startswith("/"):
                raise BackendError(
                    f"local.yaml: readiness.unix must render to an absolute path, got {unix!r}"
                )
        # else no probe given: the socket accepting connections is the best sign of life we have
    elif "unix" in readiness:
        raise BackendError("local.yaml: readiness.unix needs 'listen: unix'")
    elif readiness.get("tcp") not in (None, False):
        tcp = _tcp_port(readiness["tcp"], context)
    else:  # no probe given: the port accepting connections is the best sign of life we have
        tcp = int(context["service"]["port"])
    timeout = float(readiness.get("timeout", DEFAULT_READINESS_TIMEOUT_S))
    optional = {
        key: _render(recipe[key], context, key) if recipe.get(key) is not None else None
        for key in ("url", "password", "notes")
    }
    return RenderedRecipe(
        command=argv,
        env=env,
        listen=listen,
        readiness_http=http,
        readiness_tcp=tcp,
        readiness_unix=unix,
        readiness_timeout_s=timeout,
        url=optional["url"],
        password=optional["password"] or None,
        notes=optional["notes"] or "",
        vault_env=_vault_env(recipe.get("vault_env"), context),
    )


def _vault_env(raw: dict[str, Any] | None, context: dict[str, Any]) -> VaultEnv | None:
    """The rendered ``vault_env`` section; None when it names no secret."""
    if not raw:
        return None
    rendered = {key: _render(raw[key], context, f"vault_env.{key}") for key in raw}
    secrets = chosen_secret_paths(rendered["secrets"])
    if not secrets:
        return None
    missing = [key for key in ("address", "token", "mount") if not rendered[key]]
    if missing:
        raise BackendError(
            f"secrets {', '.join(secrets)} are to become environment variables, but the "
            f"secrets store is not configured for this service ({', '.join(missing)} empty): "
            "enable vault in the service's values or leave vault.secret empty"
        )
    return VaultEnv(rendered["address"], rendered["token"], rendered["mount"], secrets)


def resolve_command(argv0: str, env_bin: str, path: str) -> str:
    """``argv[0]`` looked up in the environment's ``bin/`` first, then ``PATH``."""
    if "/" in argv0:
        return argv0
    found = shutil.which(argv0, path=f"{env_bin}:{path}")
    if found is None:
        raise BackendError(
            f"local.yaml: command {argv0!r} is neither in the service environment nor on PATH"
        )
    return found


def _tcp_port(raw: Any, context: dict[str, Any]) -> int:
    if raw is True:
        return int(context["service"]["port"])
    text = _render(str(raw), context, "readiness.tcp")
    try:
        return int(text)
    except ValueError:
        raise BackendError(
            f"local.yaml: readiness.tcp must render to a port, got {text!r}"
        ) from None


def _render(template: Any, context: dict[str, Any], where: str) -> str:
    if not isinstance(template, str):
        template = str(template)
    try:
        return _jinja.from_string(template).render(context)
    except jinja2.TemplateSyntaxError as exc:
        raise BackendError(f"local.yaml: {where}: template syntax error: {exc.message}") from None
    except jinja2.UndefinedError as exc:
        raise BackendError(f"local.yaml: {where}: {exc.message}") from None
    except jinja2.exceptions.SecurityError as exc:
        raise BackendError(f"local.yaml: {where}: not allowed in a recipe: {exc}") from None
