"""Errors of catalogs, charts and values resolution.

They subclass :class:`datalab.errors.DatalabError` so that the API answers with a 4xx and the
message as is, and the CLI prints the message without a traceback.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from datalab.errors import DatalabError, InvalidInput, NotFound


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
