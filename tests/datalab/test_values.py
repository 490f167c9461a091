"""resolve_values: precedence, validation with clear errors (paths, constraints, masked
secrets), readonly fields, unknown keys, --set and values files, the command bar."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from datalab.catalog import (
    SHIPPED_CATALOG_DIR,
    CatalogConfig,
    CatalogRegistry,
    Chart,
    HelmSource,
    ValuesError,
    load_chart_dir,
)
from datalab.onyxia_context import (
    ContextProject,
    ContextUser,
    RegionContext,
    S3Context,
    build_context,
)
from datalab.values import (
    MASK,
    equivalent_commands,
    load_values_file,
    parse_set_args,
    resolve_values,
)


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> CatalogRegistry:
    registry = CatalogRegistry(
        [CatalogConfig(id="datalab", location=str(SHIPPED_CATALOG_DIR))],
        tmp_path_factory.mktemp("cache"),
    )
    assert registry.refresh_sync() == {"datalab": None}
    return registry


@pytest.fixture
def jupyter(shipped: CatalogRegistry) -> Chart:
    return shipped.get_chart("datalab", "jupyter-python")


@pytest.fixture
def mlflow(shipped: CatalogRegistry) -> Chart:
    return shipped.get_chart("datalab", "mlflow")


def make_context(seed: int = 3, **region: Any) -> dict[str, Any]:
    return build_context(
        ContextUser(idep="alice", email="alice@example.org", ip="10.1.2.3"),
        ContextProject(id="user-alice", password="project-pw"),
        RegionContext(resources={"cpuLimit": "4000m", "memoryLimit": "8Gi"}, **region),
        s3=S3Context("http://127.0.0.1:8333", "AKALICE", "alice-secret", "tok", bucket="alice"),
        rng=random.Random(seed),
    )


def chart_from(tmp_path: Path, schema: dict[str, Any] | None, values: dict[str, Any]) -> Chart:
    path = tmp_path / "chart"
    (path / "templates").mkdir(parents=True)
    (path / "Chart.yaml").write_text("apiVersion: v2\nname: demo\nversion: 0.1.0\n")
    (path / "values.yaml").write_text(yaml.safe_dump(values))
    if schema is not None:
        (path / "values.schema.json").write_text(json.dumps(schema))
    return load_chart_dir(path, "test")


def problems(info: pytest.ExceptionInfo[ValuesError]) -> dict[str, tuple[str, Any]]:
    return {p.path: (p.constraint, p.value) for p in info.value.problems}


def test_context_is_injected_into_the_shipped_jupyter_chart(jupyter: Chart) -> None:
    context = make_context()
    resolved = resolve_values(jupyter, context)
    values = resolved.values
    assert values["security"]["password"] == context["service"]["oneTimePassword"]
    assert values["s3"] == {
        "enabled": True,
        "accessKeyId": "AKALICE",
        "secretAccessKey": "alice-secret",
        "sessionToken": "tok",
        "endpoint": "127.0.0.1",
        "url": "http://127.0.0.1:8333",
        "port": 8333,
        "defaultRegion": "us-east-1",
        "bucket": "alice",
        "pathStyleAccess": True,
        "workingDirectoryPath": "alice/",
        "credentialsUrl": "",
        "credentialsAuthorization": "",
    }
    assert values["resources"]["limits"] == {"cpu": "4000m", "memory": "8Gi"}
    assert values["resources"]["requests"] == {"cpu": "100m", "memory": "512Mi"}
    assert values["ingress"]["hostname"] == (
        f"user-alice-{context['k8s']['randomSubdomain']}-0.localhost"
    )
    assert values["git"]["email"] == "alice@example.org"
    assert values["security"]["allowlist"]["ip"] == "10.1.2.3"
    assert values["vault"]["enabled"] is False
    assert values["service"]["extraPackages"]  # values.yaml keys outside the schema stay
    # the resolved schema is for forms: defaults injected, x-onyxia hints kept
    schema = resolved.schema["properties"]
    assert schema["s3"]["properties"]["accessKeyId"]["default"] == "AKALICE"
    assert schema["security"]["properties"]["password"]["render"] == "password"
    assert "init.regionInit" in resolved.readonly and "ingress.hostname" in resolved.hidden
    assert json.loads(json.dumps(resolved.to_json()))["chart"] == "jupyter-python"


def test_same_inputs_same_json(jupyter: Chart) -> None:
    first = resolve_values(jupyter, make_context(seed=5), {"git": {"name": "A"}}, {"s3": {}})
    again = resolve_values(jupyter, make_context(seed=5), {"git": {"name": "A"}}, {"s3": {}})
    assert json.dumps(first.to_json(), sort_keys=True) == json.dumps(
        again.to_json(), sort_keys=True
    )


def test_precedence_values_yaml_schema_context_saved_overrides(tmp_path: Path) -> None:
    schema = {
        "type": "object",
        "properties": {
            "a": {"type": "string", "default": "schema"},
            "b": {
                "type": "string", "default": "schema",
                "x-onyxia": {"overwriteDefaultWith": "user.idep"},
            },
            "c": {"type": "string", "default": "schema"},
            "d": {"type": "string", "default": "schema"},
            "only_yaml": {"type": "string"},
        },
    }  # fmt: skip
    chart = chart_from(
        tmp_path, schema, {"a": "yaml", "b": "yaml", "c": "yaml", "d": "yaml", "extra": 1}
    )
    values = resolve_values(
        chart, make_context(), saved_config={"c": "saved", "d": "saved"}, overrides={"d": "user"}
    ).values
    assert values == {
        "a": "schema",
        "b": "alice",
        "c": "saved",
        "d": "user",
        "only_yaml": "",
        "extra": 1,
    }


def test_unknown_top_level_override_lists_known_keys(jupyter: Chart) -> None:
    with pytest.raises(ValuesError) as info:
        resolve_values(jupyter, make_context(), overrides={"resource": {"limits": {"cpu": "1"}}})
    [problem] = info.value.problems
    assert (problem.path, problem.constraint) == ("resource", "unknown key")
    assert "unknown key 'resource'; known keys: " in problem.message
    assert "resources" in problem.message and "s3" in problem.message
    assert info.value.status == 422


def test_saved_config_unknown_keys_are_dropped_and_readonly_refreshed(jupyter: Chart) -> None:
    saved = {"removedKey": 1, "init": {"regionInit": "https://old.example.org/init.sh"}}
    context = make_context(kubernetes=_k8s(init_script_url="https://new.example.org/init.sh"))
    values = resolve_values(jupyter, context, saved_config=saved).values
    assert "removedKey" not in values
    assert values["init"]["regionInit"] == "https://new.example.org/init.sh"


def _k8s(**kwargs: Any) -> Any:
    from datalab.onyxia_context import KubernetesContext

    return KubernetesContext(**kwargs)


def test_readonly_fields_cannot_be_overridden(jupyter: Chart) -> None:
    with pytest.raises(ValuesError) as info:
        resolve_values(
            jupyter, make_context(), overrides={"init": {"regionInit": "https://evil/x.sh"}}
        )
    assert problems(info) == {"init.regionInit": ("readonly", "https://evil/x.sh")}
    assert "init.regionInit is read-only" in str(info.value)
    # replacing or deleting the parent object is caught too
    for overrides in ({"init": None}, {"init": {"regionInit": None}}):
        with pytest.raises(ValuesError, match=r"init\.regionInit is read-only"):
            resolve_values(jupyter, make_context(), overrides=overrides)
    # giving the value it already has is harmless (a values.yaml round trip)
    resolve_values(jupyter, make_context(), overrides={"init": {"regionInit": ""}})


def test_wrong_types_enums_and_patterns_name_path_constraint_value(jupyter: Chart) -> None:
    with pytest.raises(ValuesError) as info:
        resolve_values(
            jupyter,
            make_context(),
            overrides={
                "persistence": {"enabled": "maybe", "size": "lots"},
                "service": {"image": {"pullPolicy": "Sometimes"}},
                "extraEnvVars": [{"name": "BAD-NAME", "value": "x"}, {"value": "no name"}],
                "resources": {"limits": {"cpu": ["2"]}},
            },
        )
    found = problems(info)
    assert found["persistence.enabled"] == ("type", "maybe")
    assert found["persistence.size"] == ("pattern", "lots")
    assert found["service.image.pullPolicy"] == ("enum", "Sometimes")
    assert found["extraEnvVars[0].name"] == ("pattern", "BAD-NAME")
    assert found["extraEnvVars[1]"][0] == "required"
    assert found["resources.limits.cpu"][0] == "type"
    message = str(info.value)
    assert message.startswith("invalid values for chart 'jupyter-python':\n- ")
    assert '- persistence.enabled: expected boolean, got string "maybe"' in message
    assert '- service.image.pullPolicy: "Sometimes" is not one of' in message


def test_secrets_are_masked_in_errors(jupyter: Chart) -> None:
    with pytest.raises(ValuesError) as info:
        resolve_values(
            jupyter,
            make_context(),
            overrides={"security": {"password": "short"}, "s3": {"secretAccessKey": ["leak-me"]}},
        )
    found = problems(info)
    assert found["security.password"] == ("minLength", MASK)
    assert found["s3.secretAccessKey"] == ("type", MASK)
    assert "short" not in str(info.value) and "leak-me" not in str(info.value)
    assert "leak-me" not in json.dumps(info.value.details)


def test_closed_objects_reject_unknown_nested_keys(mlflow: Chart) -> None:
    with pytest.raises(ValuesError) as info:
        resolve_values(mlflow, make_context(), overrides={"mlflow": {"worker": 2}})
    [problem] = info.value.problems
    assert (problem.path, problem.constraint) == ("mlflow", "additionalProperties")
    assert "unknown key(s) 'worker'; allowed: artifactsPrefix, backendStoreUri, workers" in (
        problem.message
    )


def test_set_args_numbers_become_strings_where_the_schema_wants_strings(jupyter: Chart) -> None:
    overrides = parse_set_args(["resources.limits.cpu=2", "resources.limits.memory=4Gi"])
    assert overrides == {"resources": {"limits": {"cpu": 2, "memory": "4Gi"}}}
    values = resolve_values(jupyter, make_context(), overrides=overrides).values
    assert values["resources"]["limits"] == {"cpu": "2", "memory": "4Gi"}
    # but a string is never turned into a boolean
    with pytest.raises(ValuesError, match=r"persistence\.enabled: expected boolean"):
        resolve_values(jupyter, make_context(), overrides={"persistence": {"enabled": "true"}})


def test_parse_set_args_helm_semantics_and_errors() -> None:
    assert parse_set_args(["a.b=c", "a.d=1", "list={x,y}", "e[0].f=true", "g=null"]) == {
        "a": {"b": "c", "d": 1},
        "list": ["x", "y"],
        "e": [{"f": True}],
        "g": None,
    }
    assert parse_set_args(["a=1", "a=2"]) == {"a": 2}
    assert parse_set_args([r"annotations.example\.com/x=1\,2"]) == {
        "annotations": {"example.com/x": "1,2"}
    }
    for bad in ["resources", "=broken", ".a=1", " =1"]:
        with pytest.raises(ValuesError, match=rf"--set '{re.escape(bad)}': expected KEY=VALUE"):
            parse_set_args([bad])
    with pytest.raises(ValuesError, match=r"--set 'a\.b=1,c': key \"c\" has no value"):
        parse_set_args(["a.b=1,c"])


def test_values_file_errors_give_line_and_column() -> None:
    assert load_values_file("s3:\n  enabled: false\n") == {"s3": {"enabled": False}}
    assert load_values_file("") == {}
    assert load_values_file('{"a": 1}') == {"a": 1}
    expected = r"values\.yaml is not valid YAML at line 3, column 2: expected ',' or '\]'"
    with pytest.raises(ValuesError, match=expected):
        load_values_file("a: 1\nb: [1, 2\nc: 3\n", source="values.yaml")
    with pytest.raises(ValuesError, match="must be a mapping of keys to values, got array"):
        load_values_file("- a\n- b\n")


def test_chart_without_schema_merges_without_key_checks(tmp_path: Path) -> None:
    chart = chart_from(tmp_path, None, {"replicas": 1, "image": {"tag": "v1"}})
    resolved = resolve_values(chart, make_context(), overrides={"image": {"tag": "v2"}, "x": 1})
    assert resolved.values == {"replicas": 1, "image": {"tag": "v2"}, "x": 1}
    assert resolved.schema == {}


def test_draft_2020_12_schema(tmp_path: Path) -> None:
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$defs": {"port": {"type": "integer", "minimum": 1}},
        "type": "object",
        "properties": {
            "port": {"$ref": "#/$defs/port", "default": 8080},
            "tags": {"type": "array", "prefixItems": [{"type": "string"}], "default": []},
        },
        "additionalProperties": False,
    }
    chart = chart_from(tmp_path, schema, {})
    assert (
        resolve_values(chart, make_context(), overrides={"tags": ["a", 1]}).values["port"] == 8080
    )
    with pytest.raises(ValuesError) as info:
        resolve_values(chart, make_context(), overrides={"tags": [1], "port": 0})
    assert problems(info) == {"port": ("minimum", 0), "tags[0]": ("type", 1)}


def test_equivalent_commands(jupyter: Chart) -> None:
    overrides = {"resources": {"limits": {"cpu": "2000m"}}, "git": {"name": "Alice, M."}}
    resolved = resolve_values(jupyter, make_context(), overrides=overrides)
    commands = equivalent_commands(
        "datalab", "jupyter-python", "1.0.0", "jupyter-a1b2", overrides, resolved.values,
        helm_source=HelmSource(
            "datalab/jupyter-python", "helm repo add datalab https://charts.example.org"
        ), namespace="user-alice",
    )  # fmt: skip
    assert commands["datalab"] == (
        "datalab launch datalab/jupyter-python --version 1.0.0 --name jupyter-a1b2 "
        "--set resources.limits.cpu=2000m --set 'git.name=Alice\\, M.'"
    )
    assert commands["helm"] == (
        "helm repo add datalab https://charts.example.org && helm upgrade --install "
        "jupyter-a1b2 datalab/jupyter-python --version 1.0.0 --namespace user-alice "
        "-f values.yaml"
    )
    assert yaml.safe_load(commands["values_yaml"]) == resolved.values
    # the --set line parses back to the same overrides
    set_args = commands["datalab"].split("--set ")[1:]
    import shlex

    parsed = parse_set_args([shlex.split(arg)[0] for arg in set_args])
    assert parsed == overrides
    # the launch's own options, so that the line launches the same service in the same project
    team = equivalent_commands(
        "datalab", "jupyter-python", "1.0.0", "nb", {}, {}, namespace="project-team",
        project="project-team", shared=True, friendly_name="Team notebook",
    )  # fmt: skip
    assert team["datalab"] == (
        "datalab launch datalab/jupyter-python --version 1.0.0 --name nb "
        "--friendly-name 'Team notebook' --shared --project project-team"
    )
    assert "--namespace project-team" in team["helm"]
    local = equivalent_commands(
        "lab", "app", "1.0", "app-1", None, {}, helm_source=HelmSource("/srv/charts/app")
    )
    assert (
        local["helm"] == "helm upgrade --install app-1 /srv/charts/app --version 1.0 -f values.yaml"
    )
    unknown = equivalent_commands("lab", "app", "1.0", "app-1", None, {})
    assert unknown["helm"].startswith("helm repo add lab <REPO_URL> && helm upgrade --install ")


def test_resolution_is_fast_once_the_schema_is_prepared(jupyter: Chart) -> None:
    import time

    context = make_context()
    resolve_values(jupyter, context)
    started = time.perf_counter()
    for _ in range(50):
        resolve_values(jupyter, context, overrides={"git": {"name": "x"}})
    assert (time.perf_counter() - started) / 50 < 0.02
