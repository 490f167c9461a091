"""Predictions: GET /predict (one description) and POST /predict (a batch), each record made
durable in the prediction log before the answer."""

from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from autocode.serve import schemas
from autocode.serve.auth import Principal
from autocode.serve.loader import LoadedModel
from autocode.serve.routes.common import PROTECTED, authenticated, validation_error
from autocode.serve.settings import Settings
from autocode.serve.state import ApiState, JSONBytes

Auth = Annotated[Principal, Depends(authenticated)]


def router_for(state: ApiState) -> APIRouter:
    """The routes, with the limits of ``state.settings`` in their validation and schema."""
    settings = state.settings
    _, request_model = schemas.request_models(
        settings.max_text_length, settings.max_batch_size, settings.max_k
    )
    router = APIRouter()

    @router.get(
        "/predict", response_model=schemas.SinglePrediction, tags=["predictions"], **PROTECTED
    )
    async def predict_one(
        request: Request,
        principal: Auth,
        text: Annotated[
            str,
            Query(
                max_length=settings.max_text_length,
                description="The activity description. The model's categorical variables may "
                "be given as further query parameters (names: GET /model).",
            ),
        ],
        k: Annotated[int | None, Query(ge=1, le=settings.max_k)] = None,
    ) -> Response:
        """Code one description (query parameters)."""
        model = state.model()
        errors = []
        if not text.strip():
            errors.append(
                {
                    "loc": ["query", "text"],
                    "msg": "must not be empty or blank",
                    "type": "value_error",
                }
            )
        extras = {
            key: value for key, value in request.query_params.items() if key not in ("text", "k")
        }
        errors += _categorical_errors(model, settings, ["query"], extras)
        if errors:
            raise validation_error(errors)
        item: dict[str, Any] = {"text": text, **extras}
        categorical = _categorical_columns(model, settings, [extras])
        k = k or settings.default_k
        ids, coded, threshold = await state.predict(
            request, principal, model, [text], [item], categorical, k
        )
        body = state.result_json(model, ids[0], coded[0], f',"threshold":{threshold!r}')
        return JSONBytes(body.encode())

    @router.post(
        "/predict", response_model=schemas.BatchPrediction, tags=["predictions"], **PROTECTED
    )
    async def predict_batch(
        request: Request,
        principal: Auth,
        payload: request_model,  # type: ignore[valid-type]  # built for these settings
    ) -> Response:
        """Code a batch of descriptions, each with optional categorical variables."""
        model = state.model()
        items = payload.items  # type: ignore[attr-defined]  # (its class is built at run time)
        extras = [dict(item.__pydantic_extra__ or {}) for item in items]
        errors: list[dict[str, Any]] = []
        for index, fields in enumerate(extras):
            errors += _categorical_errors(model, settings, ["body", "items", index], fields)
            if len(errors) >= 50:
                break
        if errors:
            raise validation_error(errors)
        texts = [item.text for item in items]
        inputs = [{"text": item.text, **fields} for item, fields in zip(items, extras, strict=True)]
        categorical = _categorical_columns(model, settings, extras)
        k = payload.k or settings.default_k  # type: ignore[attr-defined]  # (as above)
        ids, coded, threshold = await state.predict(
            request, principal, model, texts, inputs, categorical, k
        )
        results = ",".join(state.result_json(model, i, c) for i, c in zip(ids, coded, strict=True))
        body = (
            f'{{"model":{model.json_ref},"threshold":{threshold!r},"k":{k},"results":[{results}]}}'
        )
        return JSONBytes(body.encode())

    return router


def _categorical_errors(
    model: LoadedModel, settings: Settings, where: list[Any], fields: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """422 details for unknown categorical variables and (with ``reject``) unknown values."""
    predictor = model.predictor
    errors = []
    for name, value in fields.items():
        loc = [*where, name]
        if name not in predictor.categorical:
            known = ", ".join(predictor.categorical) or "none"
            errors.append(
                {
                    "loc": loc,
                    "type": "extra_forbidden",
                    "msg": f"unknown field; this model's categorical variables: {known}",
                }
            )
        elif settings.unknown_categorical == "reject" and predictor.unknown_value(name, value):
            values = sorted(predictor.vocabularies.get(name) or [])
            shown = ", ".join(values[:20]) + (", ..." if len(values) > 20 else "")
            errors.append(
                {
                    "loc": loc,
                    "type": "value_error",
                    "msg": f"unknown value {str(value)[:50]!r}; known values: {shown}",
                }
            )
    return errors


def _categorical_columns(
    model: LoadedModel, settings: Settings, extras: Sequence[Mapping[str, Any]]
) -> dict[str, list[Any]] | None:
    predictor = model.predictor
    if not predictor.categorical:
        return None
    columns: dict[str, list[Any]] = {}
    for name in predictor.categorical:
        values = [fields.get(name) for fields in extras]
        if settings.unknown_categorical == "ignore":
            values = [
                None if v is not None and predictor.unknown_value(name, v) else v for v in values
            ]
        columns[name] = values
    return columns
