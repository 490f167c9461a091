"""Request and response bodies (they also make the published OpenAPI schema).

Request models are built per app (`request_models`) so that the limits in the settings (text
length, batch size, k) appear in the schema and are enforced by validation. Responses are
assembled as JSON text without going through these models (much faster for large batches); tests
validate real responses against them.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StrictInt,
    StrictStr,
    WithJsonSchema,
    field_validator,
)


def _categorical_value(value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ValueError("a categorical value is a string, an integer or null")


#: A categorical value: a string or an integer (null: missing).
CategoricalValue = Annotated[
    Any,
    PlainValidator(_categorical_value),
    WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}]}),
]


def request_models(max_text_length: int, max_batch_size: int, max_k: int) -> tuple[type, type]:
    """``(PredictItem, PredictRequest)`` with the configured limits."""

    class PredictItem(BaseModel):
        """One description, with the model's categorical variables as extra fields (names and
        values: see ``GET /model``)."""

        model_config = ConfigDict(
            extra="allow",
            json_schema_extra={"examples": [{"text": "Boulangerie pâtisserie artisanale"}]},
        )
        __pydantic_extra__: dict[str, CategoricalValue] = Field(init=False)

        text: Annotated[StrictStr, Field(max_length=max_text_length)] = Field(
            description="The activity description, as written.",
        )

        @field_validator("text")
        @classmethod
        def _not_blank(cls, value: str) -> str:
            if not value.strip():
                raise ValueError("must not be empty or blank")
            return value

    class PredictRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")

        items: list[PredictItem] = Field(
            min_length=1,
            max_length=max_batch_size,
            description=f"The descriptions to code (at most {max_batch_size}).",
        )
        k: StrictInt | None = Field(
            None, ge=1, le=max_k, description="Codes returned per description (default: server's)."
        )

    return PredictItem, PredictRequest


# -- responses ------------------------------------------------------------------------------------
class LevelCode(BaseModel):
    code: str
    label: str


class Candidate(BaseModel):
    code: str = Field(description="Code at the finest level of the nomenclature.")
    label: str
    probability: float = Field(ge=0, le=1)
    levels: dict[str, LevelCode] = Field(
        description="The code and label at every level, broadest first (e.g. section, "
        "division, group, class, subclass)."
    )


class ModelRef(BaseModel):
    name: str
    version: str


class PredictionResult(BaseModel):
    id: str = Field(description="Id of the prediction (and of its record in the prediction log).")
    predictions: list[Candidate] = Field(description="The top-k codes, most probable first.")
    ic: float = Field(description="Confidence index: p1 - p2.")
    auto: bool = Field(description="Automatic-coding decision: ic >= threshold.")
    model: ModelRef = Field(description="The model that answered.")


class SinglePrediction(PredictionResult):
    threshold: float


class BatchPrediction(BaseModel):
    model: ModelRef
    threshold: float
    k: int
    results: list[PredictionResult] = Field(description="One result per item, in order.")


class NomenclatureNode(BaseModel):
    code: str
    level: str
    label: str


class NomenclatureEntry(NomenclatureNode):
    nomenclature: dict[str, str] = Field(description="Name and version.")
    ancestors: list[NomenclatureNode] = Field(description="From the broadest level down.")
    children: list[NomenclatureNode]
    predictable: bool = Field(description="Whether the model can predict this code.")


class ModelDescription(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    name: str
    version: str
    source: str = Field(description="registry, local or uri")
    uri: str
    requested: str
    alias: str | None
    run_id: str | None
    model_uuid: str | None
    loaded_at: str
    load_seconds: float
    threshold: float = Field(description="The threshold the API applies.")
    model_threshold: float = Field(description="The threshold saved with the model.")
    default_k: int
    max_k: int
    classes: int
    nomenclature: dict[str, Any]
    categorical: dict[str, list[str] | None] = Field(
        description="Categorical variables and the values the model knows (null: any value)."
    )
    text_column: str
    metrics: dict[str, float]
    params: dict[str, str]
    tags: dict[str, str]
    info: dict[str, Any]
    registry: dict[str, Any]


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    ready: bool
    reason: str
    model: ModelRef | None = None


class ErrorItem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorBody(BaseModel):
    message: str = Field(description="Every problem, one per line, each naming its field.")
    detail: list[ErrorItem]


class ErrorBody(BaseModel):
    detail: str
