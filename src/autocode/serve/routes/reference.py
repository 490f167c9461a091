"""Reference: a code of the model's nomenclature (GET /nomenclature/{code}) and the model being
served (GET /model)."""

import math
from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request
from fastapi.responses import Response

from autocode.serve import schemas
from autocode.serve.auth import Principal
from autocode.serve.routes.common import PROTECTED, api_state, authenticated
from autocode.serve.state import JSONBytes, dumps

Auth = Annotated[Principal, Depends(authenticated)]
router = APIRouter()


@router.get(
    "/nomenclature/{code}",
    response_model=schemas.NomenclatureEntry,
    tags=["nomenclature"],
    **PROTECTED,
)
async def nomenclature_entry(
    request: Request,
    principal: Auth,
    code: Annotated[
        str,
        Path(max_length=32, description="A code, in any usual format (01.11Z, 0111Z, 01.1, A)."),
    ],
) -> Response:
    """A code of the model's nomenclature: its label, ancestors and children."""
    model = api_state(request).model()
    nomenclature = model.coder.nomenclature
    found = nomenclature.find(code)
    if found is None:
        raise HTTPException(
            404, f"{code!r} is not a code of {nomenclature.name} {nomenclature.version}"
        )

    def describe(c: str) -> dict[str, str]:
        n = nomenclature.nodes[c]
        return {"code": n.code, "level": n.level, "label": n.label}

    leaves = nomenclature.leaves_under(found)
    body = {
        **describe(found),
        "nomenclature": {"name": nomenclature.name, "version": nomenclature.version},
        "ancestors": [describe(c) for c in reversed(nomenclature.ancestors(found))],
        "children": [describe(c) for c in nomenclature.children(found)],
        "predictable": any(leaf in model.predictor.codes for leaf in leaves),
    }
    return JSONBytes(dumps(body))


@router.get("/model", response_model=schemas.ModelDescription, tags=["model"], **PROTECTED)
async def model_description(request: Request, principal: Auth) -> Response:
    """The model being served, its metrics (from its MLflow run) and what it accepts."""
    state = api_state(request)
    settings = state.settings
    model = state.model()
    coder = model.coder
    predictor = model.predictor
    nomenclature = coder.nomenclature
    body = {
        "name": model.name,
        "version": model.version,
        "source": model.source_kind,
        "uri": model.uri,
        "requested": model.requested,
        "alias": model.alias,
        "run_id": model.run_id,
        "model_uuid": model.model_uuid,
        "loaded_at": model.loaded_at,
        "load_seconds": round(model.load_seconds, 3),
        "threshold": state.threshold(model),
        "model_threshold": predictor.model_threshold,
        "default_k": settings.default_k,
        "max_k": settings.max_k,
        "classes": predictor.n_classes,
        "nomenclature": {
            "name": nomenclature.name,
            "version": nomenclature.version,
            "levels": list(nomenclature.levels),
        },
        "categorical": {
            name: sorted(values) if values is not None else None
            for name, values in predictor.vocabularies.items()
        },
        "text_column": predictor.text_column,
        "metrics": {k: v for k, v in model.metrics.items() if math.isfinite(v)},
        "params": model.params,
        "tags": model.tags,
        "info": finite(coder.info or {}),
        "registry": model.registry,
    }
    return JSONBytes(dumps(body))


def finite(value: Any) -> Any:
    """``value`` with non-finite floats as None (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value
