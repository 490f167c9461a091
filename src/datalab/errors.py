"""Every error type of the platform, in one module at the bottom of the layers (any module may
raise any of them without importing the layer that usually does).

Errors a user can cause subclass :class:`DatalabError`, each with its HTTP status: the API turns
them into ``{"error": {"code": ..., "message": ...}}``; the CLI prints the message and exits
non-zero. The others (:class:`ConfigError`, :class:`BackendError`, :class:`EmbeddedServerError`,
:class:`InvalidToken`) are caught where they are raised and turned into one of those or into a
message at start.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


class DatalabError(Exception):
    status: int = 400
    code: str = "bad_request"

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class Unauthenticated(DatalabError):
    status, code = 401, "unauthenticated"


class Forbidden(DatalabError):
    status, code = 403, "forbidden"


class NotFound(DatalabError):
    status, code = 404, "not_found"


class Conflict(DatalabError):
    status, code = 409, "conflict"


class InvalidInput(DatalabError):
    status, code = 422, "invalid"


class QuotaExceeded(DatalabError):
    status, code = 403, "quota_exceeded"


class TooManyRequests(DatalabError):
    status, code = 429, "too_many_requests"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# -- configuration, embedded servers, tokens ----------------------------------------------------


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key and the problem."""


class EmbeddedServerError(Exception):
    """An embedded server did not start or become healthy; the message says why."""


class InvalidToken(Exception):
    """A token that this issuer did not sign, or that has expired or is for someone else."""


# -- execution backends and their environments --------------------------------------------------


class BackendError(Exception):
    """An error a user can act on (bad recipe, quota, unknown service). Message is shown as is."""


class ServiceNotFound(BackendError):
    pass


class BackendUnreachable(BackendError):
    """The backend's infrastructure does not answer (the cluster's API server): not the user's
    doing; the message names what and why."""


class BackendConflict(BackendError):
    """What the service needs is taken in the backend's infrastructure (a Helm release of that
    name made outside the platform, a namespace being deleted); the message says what to do."""


class ExecutionUnavailable(DatalabError):
    """Services cannot be started or changed now: the backend is unreachable (503)."""

    status = 503
    code = "backend_unavailable"


class EnvBuildError(BackendError):
    """The environment could not be built; the message carries the installer's error."""


# -- catalogs, charts and values ----------------------------------------------------------------


class CatalogError(DatalabError):
    """Something about a catalog or a chart is wrong; the message says what."""

    status, code = 400, "catalog_error"


class ChartNotFound(CatalogError, NotFound):
    """A catalog, chart or chart version does not exist. The message lists what exists."""

    status, code = 404, "not_found"


class ChartInvalid(CatalogError):
    """A chart exists but is malformed (listed as broken in its catalog)."""

    status, code = 422, "chart_invalid"


class SchemaError(CatalogError):
    """A chart's values schema cannot be resolved (bad ``$ref``, bad x-onyxia keyword...)."""

    status, code = 422, "schema_error"


@dataclass(frozen=True)
class ValueProblem:
    """One problem with the values: where, which rule, and what was given (masked if secret)."""

    path: str  # JSON path like ``resources.limits.cpu`` or ``extraEnvVars[0].name``
    constraint: str  # the rule that failed: ``type``, ``readonly``, ``additionalProperties``...
    message: str  # a sentence naming what to fix
    value: Any = None  # the offending value, already masked when it is a secret

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "constraint": self.constraint,
            "message": self.message,
            "value": self.value,
        }


class ValuesError(InvalidInput):
    """Values given by the user (or a saved configuration) do not fit the chart.

    ``problems`` lists every problem found, not only the first; ``str()`` gives all of them.
    """

    code = "invalid_values"

    def __init__(self, problems: Sequence[ValueProblem] | str, *, chart: str | None = None):
        if isinstance(problems, str):
            problems = [ValueProblem(path="", constraint="syntax", message=problems)]
        self.problems = list(problems)
        prefix = f"invalid values for chart {chart!r}" if chart else "invalid values"
        lines = [f"- {p.path + ': ' if p.path else ''}{p.message}" for p in self.problems]
        message = (
            prefix + ":\n" + "\n".join(lines)
            if len(lines) > 1
            else f"{prefix}: " + (lines[0][2:] if lines else "unknown problem")
        )
        super().__init__(message, details=[p.to_json() for p in self.problems])


# -- identity -----------------------------------------------------------------------------------


class OidcUnavailable(DatalabError):
    status = 503
    code = "oidc_unavailable"


class ProviderSignInRequired(DatalabError):
    status = 401
    code = "provider_sign_in_required"


# -- object storage and secrets -----------------------------------------------------------------


class StorageUnavailable(DatalabError):
    status = 503
    code = "storage_unavailable"


class StorageDisabled(DatalabError):
    status = 503
    code = "storage_disabled"


class PayloadTooLarge(DatalabError):
    status = 413
    code = "payload_too_large"


class SecretsUnavailable(DatalabError):
    status = 503
    code = "secrets_unavailable"


class SecretsDisabled(DatalabError):
    status = 503
    code = "secrets_disabled"


class VaultError(DatalabError):
    """Vault failed a request (the message is Vault's, which never echoes values)."""

    status = 502
    code = "secrets_error"


class VaultRefused(InvalidInput):
    """Vault refused a request as invalid (400): something the caller can fix, e.g. a path."""


class VaultDenied(DatalabError):
    """Vault answered 403: the token may not do this, or is no longer valid."""

    status = 403
    code = "forbidden"
