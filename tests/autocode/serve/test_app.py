"""The API in-process (httpx ASGI transport) on a local model directory: predictions and their
agreement with the model, records, auth, validation, nomenclature, model, metrics, OpenAPI."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pandas as pd
import pytest

from autocode.serve import schemas
from autocode.serve.app import ConfigurationError, create_app
from autocode.serve.settings import Settings

from .conftest import AppClient, Credentials, running_app, settings_for, spool_records

pytestmark = pytest.mark.anyio

TEXTS = [
    "Boulangerie pâtisserie artisanale",
    "restaurant traditionnel",
    "vente de pizzas à emporter",
    "fabrication de glaces et sorbets",
    "traiteur pour mariages",
    "123 !!!",  # nothing left after preprocessing: still coded
]


@pytest.fixture(scope="module")
async def api(
    model_dir: Path, credentials: Credentials, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[AppClient]:
    spool = tmp_path_factory.mktemp("spool")
    settings = settings_for(
        model_dir, spool, credentials, batch_max_items=4, max_batch_size=50, max_text_length=200
    )
    async with running_app(settings) as client:
        client.headers.update(credentials.headers)
        client.spool = spool
        yield client


# -- predictions ----------------------------------------------------------------------------------
async def test_get_predict_matches_the_model(api, small_coder) -> None:
    response = await api.get("/predict", params={"text": TEXTS[0], "k": 3})
    assert response.status_code == 200, response.text
    body = schemas.SinglePrediction.model_validate(response.json())
    expected = small_coder.predict(pd.DataFrame({"text": [TEXTS[0]]}), k=3).iloc[0]
    assert [c.code for c in body.predictions] == [expected[f"code_{i}"] for i in (1, 2, 3)]
    for rank, candidate in enumerate(body.predictions, start=1):
        assert candidate.probability == pytest.approx(expected[f"proba_{rank}"], abs=1e-6)
        assert candidate.label == expected[f"label_{rank}"]
        assert list(candidate.levels) == ["section", "division", "group", "class", "subclass"]
        assert candidate.levels["subclass"].code == candidate.code
    top = body.predictions[0]
    for level in ("section", "division", "group", "class"):
        assert top.levels[level].code == expected[level]
        assert top.levels[level].label == expected[f"{level}_label"]
    assert body.ic == pytest.approx(expected["ic"], abs=1e-6)
    assert body.auto == bool(expected["auto"]) and body.threshold == small_coder.threshold
    assert body.model.name == "model" and body.model.version.startswith("local-")


async def test_post_predict_batch_matches_the_model(api, small_coder) -> None:
    # 6 items > batch_max_items: coded in two model calls
    response = await api.post("/predict", json={"items": [{"text": t} for t in TEXTS]})
    assert response.status_code == 200, response.text
    body = schemas.BatchPrediction.model_validate(response.json())
    assert body.k == 5 and len(body.results) == len(TEXTS)
    expected = small_coder.predict(pd.DataFrame({"text": TEXTS}), k=5)
    for result, (_, row) in zip(body.results, expected.iterrows(), strict=True):
        assert [c.code for c in result.predictions] == [row[f"code_{i}"] for i in range(1, 6)]
        probabilities = [c.probability for c in result.predictions]
        assert probabilities == sorted(probabilities, reverse=True)
        assert result.ic == pytest.approx(row["ic"], abs=1e-6)
        assert result.ic == pytest.approx(probabilities[0] - probabilities[1], abs=2e-6)
        assert result.auto == (result.ic >= body.threshold)
        assert result.model == body.model
    assert len({r.id for r in body.results}) == len(TEXTS)


async def test_ic_is_p1_minus_p2_even_for_k_1(api) -> None:
    one = (await api.get("/predict", params={"text": TEXTS[1], "k": 1})).json()
    two = (await api.get("/predict", params={"text": TEXTS[1], "k": 2})).json()
    assert len(one["predictions"]) == 1
    assert one["ic"] == two["ic"] < one["predictions"][0]["probability"]


async def test_every_answered_prediction_is_in_the_spool_when_the_response_arrives(api) -> None:
    response = await api.post("/predict", json={"items": [{"text": t} for t in TEXTS[:3]], "k": 2})
    results = response.json()["results"]
    # no waiting: the record was fsynced before the response was sent
    records = {r["id"]: r for r in spool_records(api.spool)}
    for index, result in enumerate(results):
        record = records[result["id"]]
        assert record["input"] == {"text": TEXTS[index]}
        assert record["codes"] == [c["code"] for c in result["predictions"]]
        assert record["probabilities"] == [c["probability"] for c in result["predictions"]]
        assert record["ic"] == result["ic"] and record["auto"] == result["auto"]
        assert record["model"] == result["model"]
        assert record["route"] == "POST /predict" and record["client"].startswith("key:")
        assert record["batch"] == {"size": 3, "index": index} and record["k"] == 2
        assert record["latency_ms"] > 0 and record["ts"].endswith("Z")


# -- auth -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/predict?text=boulangerie"),
        ("POST", "/predict"),
        ("GET", "/model"),
        ("GET", "/nomenclature/10.71C"),
    ],
)
async def test_protected_routes_need_credentials(anonymous, method, path) -> None:
    body = {"items": [{"text": "x"}]} if method == "POST" else None
    response = await anonymous.request(method, path, json=body)
    assert response.status_code == 401, response.text
    assert "authentication required" in response.json()["detail"]
    assert response.headers["www-authenticate"].startswith('Basic realm="autocode"')
    assert "Bearer" in response.headers["www-authenticate"]
    response = await anonymous.request(method, path, json=body, headers={"X-API-Key": ""})
    assert response.status_code == 401


@pytest.fixture
def anonymous(api, credentials):
    """The client without its API key for one test."""
    key = api.headers.pop("X-API-Key")
    yield api
    api.headers["X-API-Key"] = key


async def test_public_routes(anonymous) -> None:
    assert (await anonymous.get("/health")).json() == {"status": "ok"}
    ready = (await anonymous.get("/ready")).json()
    assert ready["ready"] is True and ready["model"]["version"].startswith("local-")
    assert (await anonymous.get("/metrics")).status_code == 200
    assert (await anonymous.get("/openapi.json")).status_code == 200
    assert (await anonymous.get("/docs")).status_code == 200


async def test_api_keys_bearer_basic_and_revocation(anonymous, credentials) -> None:
    url = "/predict?text=restaurant"
    assert (await anonymous.get(url, headers={"X-API-Key": credentials.key})).status_code == 200
    bearer = {"Authorization": f"Bearer {credentials.key}"}
    assert (await anonymous.get(url, headers=bearer)).status_code == 200
    wrong = await anonymous.get(url, headers={"X-API-Key": credentials.key + "x"})
    assert wrong.status_code == 401 and wrong.json()["detail"] == "invalid or revoked API key"

    def basic(user: str, password: str) -> dict[str, str]:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    assert (
        await anonymous.get(url, headers=basic("alice", credentials.password))
    ).status_code == 200
    # cached: the second verification does not pay argon2 again, and still checks the password
    assert (
        await anonymous.get(url, headers=basic("alice", credentials.password))
    ).status_code == 200
    for headers in (
        basic("alice", "wrong-password"),
        basic("bob", credentials.password),
        {"Authorization": "Basic not-base64!"},
    ):
        response = await anonymous.get(url, headers=headers)
        assert response.status_code == 401, headers
        assert "WWW-Authenticate" in response.headers

    # a second key, used, then revoked: refused within a second, without a restart
    entry, second = credentials.keys.add("second-app")
    await anyio.sleep(1.1)
    response = await anonymous.get(url, headers={"X-API-Key": second})
    assert response.status_code == 200
    record = next(r for r in spool_records(anonymous.spool) if r["id"] == response.json()["id"])
    assert record["client"] == f"key:{entry.id}"
    credentials.keys.revoke("second-app")
    await anyio.sleep(1.1)
    assert (await anonymous.get(url, headers={"X-API-Key": second})).status_code == 401
    assert (await anonymous.get(url, headers={"X-API-Key": credentials.key})).status_code == 200


def test_no_credentials_refuses_to_start(model_dir, tmp_path) -> None:
    with pytest.raises(ConfigurationError, match="no credentials configured"):
        create_app(Settings(model=str(model_dir), log_dir=tmp_path))
    with pytest.raises(ConfigurationError, match="models:/<name>@<alias>"):
        create_app(Settings(model="models:/only-a-name", log_dir=tmp_path, allow_anonymous=True))


# -- validation -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "field", "fragment"),
    [
        ({"items": [{"text": ""}]}, "body.items[0].text", "empty or blank"),
        ({"items": [{"text": "ok"}, {"text": "   "}]}, "body.items[1].text", "empty or blank"),
        ({"items": [{"text": "x" * 201}]}, "body.items[0].text", "at most 200 characters"),
        ({"items": [{"text": "ok"}] * 51}, "body.items", "at most 50 items"),
        ({"items": []}, "body.items", "at least 1 item"),
        ({"items": [{"text": 12}]}, "body.items[0].text", "valid string"),
        ({"items": [{"text": None}]}, "body.items[0].text", "valid string"),
        ({"items": [{}]}, "body.items[0].text", "Field required"),
        ({"items": "boulangerie"}, "body.items", "valid list"),
        ({"items": [{"text": "ok"}], "k": "3"}, "body.k", "valid integer"),
        ({"items": [{"text": "ok"}], "k": 0}, "body.k", "greater than or equal to 1"),
        ({"items": [{"text": "ok"}], "k": 21}, "body.k", "less than or equal to 20"),
        ({"items": [{"text": "ok"}], "extra": 1}, "body.extra", "Extra inputs"),
        ({"items": [{"text": "ok", "nature": "10"}]}, "body.items[0].nature", "unknown field"),
        ({"items": [{"text": "ok", "nature": [1]}]}, "body.items[0].nature", ""),
        ([{"text": "ok"}], "body", "valid dictionary"),
    ],
)
async def test_invalid_batches_are_422_naming_the_field(api, body, field, fragment) -> None:
    response = await api.post("/predict", json=body)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["message"].split("\n")[0].startswith(field + ":"), problem["message"]
    assert fragment in problem["message"]
    schemas.ValidationErrorBody.model_validate(problem)
    assert "x" * 201 not in response.text  # over-long inputs are not echoed back


@pytest.mark.parametrize(
    ("params", "field", "fragment"),
    [
        ({"text": ""}, "query.text", "empty or blank"),
        ({"text": "  "}, "query.text", "empty or blank"),
        ({"text": "x" * 201}, "query.text", "at most 200 characters"),
        ({}, "query.text", "Field required"),
        ({"text": "ok", "k": "three"}, "query.k", "valid integer"),
        ({"text": "ok", "k": "0"}, "query.k", "greater than or equal to 1"),
        ({"text": "ok", "surface": "12"}, "query.surface", "unknown field"),
    ],
)
async def test_invalid_queries_are_422_naming_the_field(api, params, field, fragment) -> None:
    response = await api.get("/predict", params=params)
    assert response.status_code == 422, response.text
    assert response.json()["message"].startswith(field + ":")
    assert fragment in response.json()["message"]


async def test_malformed_bodies_are_client_errors(api) -> None:
    headers = {"content-type": "application/json"}
    for content in (b'{"items": [', b"\xff\xfe\x00garbage", b"", b"null"):
        response = await api.post("/predict", content=content, headers=headers)
        assert response.status_code == 422, (content, response.text)
        assert response.json()["message"].startswith("body")
    response = await api.post("/predict", content=b'{"items": [', headers=headers)
    assert response.json()["message"] == "body (character 11): JSON decode error"
    huge = b'{"items": [{"text": "' + b"x" * 200_000 + b'"}]}'
    assert len(huge) > 50 * (4 * 200 + 1024) + 64 * 1024  # the default body limit
    response = await api.post("/predict", content=huge, headers=headers)
    assert response.status_code == 413


# -- categorical variables ------------------------------------------------------------------------
async def test_categorical_variables(categorical_model_dir, credentials, tmp_path) -> None:
    settings = settings_for(categorical_model_dir, tmp_path / "spool", credentials)
    async with running_app(settings) as client:
        client.headers.update(credentials.headers)
        model = (await client.get("/model")).json()
        assert model["categorical"] == {"nature": ["10", "20"], "surface": ["1", "2", "3"]}

        ok = await client.post(
            "/predict",
            json={
                "items": [
                    {"text": "bar tabac", "nature": "10", "surface": 2},
                    {"text": "restaurant", "nature": None},
                    {"text": "traiteur"},
                ]
            },
        )
        assert ok.status_code == 200, ok.text
        assert ok.json()["results"][0]["predictions"][0]["code"].startswith("56.")
        record = spool_records(tmp_path / "spool")[0]
        assert record["input"] == {"text": "bar tabac", "nature": "10", "surface": 2}

        bad = await client.post(
            "/predict",
            json={
                "items": [
                    {"text": "bar", "nature": "99"},
                    {"text": "bar", "surface": "4", "colour": "red"},
                ]
            },
        )
        assert bad.status_code == 422
        message = bad.json()["message"]
        assert "body.items[0].nature: unknown value '99'; known values: 10, 20" in message
        assert "body.items[1].surface: unknown value '4'" in message
        assert (
            "body.items[1].colour: unknown field; this model's categorical variables: "
            "nature, surface" in message
        )
        # types are checked first: a boolean is neither a string nor an integer
        wrong = await client.post("/predict", json={"items": [{"text": "b", "nature": True}]})
        assert wrong.status_code == 422 and wrong.json()["message"] == (
            "body.items[0].nature: a categorical value is a string, an integer or null"
        )

        single = await client.get("/predict", params={"text": "bar", "nature": "20"})
        assert single.status_code == 200
        unknown = await client.get("/predict", params={"text": "bar", "nature": "30"})
        assert unknown.status_code == 422 and "query.nature: unknown value" in unknown.text

    lenient = settings_for(
        categorical_model_dir, tmp_path / "spool2", credentials, unknown_categorical="ignore"
    )
    async with running_app(lenient) as client:
        client.headers.update(credentials.headers)
        response = await client.post("/predict", json={"items": [{"text": "bar", "nature": "99"}]})
        assert response.status_code == 200
        # an integer beyond 64 bits (ignored: unknown) is logged exactly as it came
        huge = {"text": "café-bar", "nature": 10**30}
        response = await client.post("/predict", json={"items": [huge]})
        assert response.status_code == 200
        records = {r["id"]: r for r in spool_records(tmp_path / "spool2")}
        assert records[response.json()["results"][0]["id"]]["input"] == huge


# -- nomenclature, model, metrics, OpenAPI --------------------------------------------------------
async def test_nomenclature(api) -> None:
    response = await api.get("/nomenclature/1071c")
    assert response.status_code == 200
    entry = schemas.NomenclatureEntry.model_validate(response.json())
    assert (entry.code, entry.level, entry.predictable) == ("10.71C", "subclass", True)
    assert [a.code for a in entry.ancestors] == ["C", "10", "10.7", "10.71"]
    assert entry.ancestors[1].label == "Industries alimentaires" and entry.children == []
    division = (await api.get("/nomenclature/10")).json()
    assert division["level"] == "division" and "10.7" in [c["code"] for c in division["children"]]
    assert division["ancestors"] == [
        {"code": "C", "level": "section", "label": "Industrie manufacturière"}
    ]
    missing = await api.get("/nomenclature/99.99Z")
    assert missing.status_code == 404 and "is not a code of NAF" in missing.json()["detail"]


async def test_model_description(api, small_coder) -> None:
    body = schemas.ModelDescription.model_validate((await api.get("/model")).json())
    assert body.source == "local" and body.classes == len(small_coder.classifier.classes)
    assert body.threshold == body.model_threshold == small_coder.threshold
    assert body.nomenclature["levels"] == ["section", "division", "group", "class", "subclass"]
    assert body.categorical == {} and body.info["training_rows"] > 0


async def test_metrics(api) -> None:
    await api.post("/predict", json={"items": [{"text": t} for t in TEXTS[:4]]})
    await api.get("/predict", params={"text": "boulangerie"})
    await api.get("/predict", params={"text": ""})
    text = (await api.get("/metrics")).text
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    post_ok = 'autocode_api_requests_total{method="POST",route="/predict",status="200"}'
    assert samples[post_ok] >= 1
    assert samples['autocode_api_requests_total{method="GET",route="/predict",status="422"}'] >= 1
    assert (
        'autocode_api_request_duration_seconds_bucket{le="0.01",method="GET",'
        'route="/predict"}' in samples
    )
    version = (await api.get("/model")).json()["version"]
    predicted = sum(
        v
        for k, v in samples.items()
        for auto in ("true", "false")
        if k.startswith(f'autocode_api_predictions_total{{auto="{auto}",model_version="{version}"')
    )
    assert predicted >= 5
    assert 0 <= samples["autocode_api_auto_coding_rate"] <= 1
    assert (
        samples[f'autocode_api_model_info{{name="model",source="local",version="{version}"}}'] == 1
    )
    assert samples["autocode_api_model_loaded"] == 1
    assert samples["autocode_api_log_records_total"] >= 5
    assert samples["autocode_api_log_commit_seconds_count"] >= 1
    # unmatched paths are one label value, not one per path
    await api.get("/no/such/path/12345")
    assert "/no/such/path" not in (await api.get("/metrics")).text


async def test_openapi(api) -> None:
    schema = (await api.get("/openapi.json")).json()
    assert {"/predict", "/nomenclature/{code}", "/model", "/health", "/ready", "/metrics"} <= set(
        schema["paths"]
    )
    assert set(schema["components"]["securitySchemes"]) == {"ApiKey", "Bearer", "Basic"}
    assert schema["paths"]["/predict"]["post"]["security"] == [
        {"ApiKey": []},
        {"Bearer": []},
        {"Basic": []},
    ]
    assert "security" not in schema["paths"]["/health"]["get"]
    item = schema["components"]["schemas"]["PredictItem"]
    assert item["properties"]["text"]["maxLength"] == 200
    request = schema["components"]["schemas"]["PredictRequest"]
    assert request["properties"]["items"]["maxItems"] == 50
    assert "422" in schema["paths"]["/predict"]["post"]["responses"]


# -- readiness and the local model directory ------------------------------------------------------
async def test_not_ready_until_the_model_loads_then_follows_the_directory(
    model_dir, categorical_model_dir, credentials, tmp_path
) -> None:
    target = tmp_path / "served-model"
    settings = settings_for(target, tmp_path / "spool", credentials, poll_interval_s=0.2)
    async with running_app(settings, wait_ready=False) as client:
        client.headers.update(credentials.headers)
        await anyio.sleep(0.3)
        ready = await client.get("/ready")
        assert ready.status_code == 503 and ready.json()["ready"] is False
        assert "not found" in ready.json()["reason"]
        response = await client.get("/predict", params={"text": "boulangerie"})
        assert response.status_code == 503 and response.headers["retry-after"] == "5"
        assert (await client.get("/health")).status_code == 200

        shutil.copytree(model_dir, target)  # appears: loaded at the next retry
        from .conftest import wait_until_ready

        first = (await wait_until_ready(client, 30))["model"]["version"]
        # `autocode train` rewrites the directory: the new model is loaded and swapped in
        staging = tmp_path / "staging"
        shutil.copytree(categorical_model_dir, staging)
        shutil.rmtree(target)
        staging.rename(target)
        for _ in range(150):
            body = (await client.get("/model")).json()
            if body.get("version") not in (None, first):
                break
            await anyio.sleep(0.1)
        assert body["version"] != first and body["categorical"]["nature"] == ["10", "20"]
        coded = (await client.get("/predict", params={"text": "bar"})).json()
        assert coded["model"]["version"] == body["version"]


async def test_threshold_setting_overrides_the_model(model_dir, credentials, tmp_path) -> None:
    settings = settings_for(model_dir, tmp_path / "spool", credentials, threshold=0.0)
    async with running_app(settings) as client:
        client.headers.update(credentials.headers)
        body = (await client.get("/predict", params={"text": "restaurant"})).json()
        assert body["threshold"] == 0.0 and body["auto"] is True
        assert (await client.get("/model")).json()["threshold"] == 0.0


async def test_logging_off_and_anonymous_mode(model_dir, tmp_path) -> None:
    settings = Settings(
        model=str(model_dir), log_enabled=False, allow_anonymous=True, log_dir=tmp_path / "unused"
    )
    async with running_app(settings) as client:
        response = await client.get("/predict", params={"text": "restaurant"})
        assert response.status_code == 200
    assert not (tmp_path / "unused").exists()


def test_response_models_are_json_serialisable() -> None:
    # the schemas are used for docs only: make sure they stay valid JSON schemas
    for model in (schemas.BatchPrediction, schemas.SinglePrediction, schemas.ModelDescription):
        json.dumps(model.model_json_schema())


async def test_a_new_version_that_fails_to_load_is_not_served(
    model_dir, credentials, tmp_path
) -> None:
    target = tmp_path / "model"
    shutil.copytree(model_dir, target)
    settings = settings_for(target, tmp_path / "spool", credentials, poll_interval_s=0.1)
    async with running_app(settings) as client:
        client.headers.update(credentials.headers)
        before = (await client.get("/model")).json()["version"]
        mlmodel = target / "MLmodel"
        uuid = before.removeprefix("local-")
        text = mlmodel.read_text()
        mlmodel.write_text(text.replace(f"model_uuid: {uuid}", "model_uuid: " + "f" * 32))
        (target / "artifacts" / "coder" / "coder.json").write_text("{}")  # a broken model
        await anyio.sleep(1.0)
        assert (await client.get("/model")).json()["version"] == before
        assert (await client.get("/ready")).status_code == 200
        response = await client.get("/predict", params={"text": "boulangerie"})
        assert response.status_code == 200 and response.json()["model"]["version"] == before
        metrics = (await client.get("/metrics")).text
        assert 'autocode_api_model_loads_total{outcome="error"}' in metrics
