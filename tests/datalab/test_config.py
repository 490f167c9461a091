from __future__ import annotations

import re
from pathlib import Path

import pytest

from datalab.config import ConfigError, Settings, load_settings

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("DATALAB_CONFIG", "DATALAB_SERVER__PORT", "DATALAB_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def test_defaults_are_valid(tmp_path: Path) -> None:
    settings = load_settings(None, data_dir=tmp_path)
    assert settings.server.port == 8000
    assert settings.db_url == f"sqlite:///{tmp_path / 'datalab.db'}"
    assert settings.catalogs[0].id == "datalab"


def test_yaml_file_then_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "datalab.yaml"
    config.write_text("server:\n  port: 9000\n  host: 0.0.0.0\nregion:\n  user_prefix: u-\n")
    settings = load_settings(config)
    assert (settings.server.port, settings.server.host) == (9000, "0.0.0.0")
    assert settings.region.user_prefix == "u-"
    monkeypatch.setenv("DATALAB_SERVER__PORT", "9100")
    assert load_settings(config).server.port == 9100


def test_config_file_from_environment_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "elsewhere.yaml"
    config.write_text("instance_name: insee-lab\n")
    monkeypatch.setenv("DATALAB_CONFIG", str(config))
    assert load_settings().instance_name == "insee-lab"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("server:\n  port: 99999\n", r"server\.port: .*less than or equal to 65535.*99999"),
        ("server:\n  prot: 80\n", r"server\.prot: unknown setting"),
        ("region:\n  user_prefix: 'User_'\n", r"region\.user_prefix: .*lowercase"),
        (
            "backend:\n  name: docker\n",
            r"backend\.name: .*no backend 'docker' is installed; "
            r"choose kubernetes or local or memory",
        ),
        ("- a\n- b\n", r"must contain a mapping"),
        ("server: [\n", r"not valid YAML"),
        ("storage:\n  web_identity: oidc\n", r"storage\.web_identity is 'oidc' but oidc\.enabled"),
        (
            "oidc: {enabled: true}\nsecrets:\n  web_identity: oidc\n",
            r"secrets\.web_identity 'oidc' needs secrets\.mode 'external'",
        ),
        (
            "oidc: {enabled: true}\nstorage: {mode: external, endpoint_url: http://s3, "
            "access_key_id: k, web_identity: oidc}\n",
            r"storage\.sts_role_arn is not set",
        ),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, text: str, expected: str) -> None:
    config = tmp_path / "datalab.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=expected):
        load_settings(config)


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read config file .*nope\.yaml"):
        load_settings(tmp_path / "nope.yaml")


def test_secrets_are_masked(tmp_path: Path) -> None:
    settings = load_settings(
        None,
        data_dir=tmp_path,
        database_url="postgresql+psycopg://datalab:s3cr3t-pw@db:5432/datalab",
        security={"session_secret": "very-secret-key"},
    )
    shown = str(settings.masked())
    assert "s3cr3t-pw" not in shown
    assert "very-secret-key" not in shown
    assert "db:5432" in shown


def _keys(schema: dict, defs: dict, prefix: str = "") -> set[str]:
    keys = set()
    for name, prop in schema.get("properties", {}).items():
        key = f"{prefix}{name}"
        keys.add(key)
        ref = prop.get("$ref") or next(
            (a["$ref"] for a in prop.get("anyOf", []) if "$ref" in a), None
        )
        if ref and not ref.endswith("/CatalogConfig") and not ref.endswith("/Quota"):
            keys |= _keys(defs[ref.rsplit("/", 1)[-1]], defs, key + ".")
    return keys


def test_every_setting_is_documented() -> None:
    schema = Settings.model_json_schema()
    documented = set(re.findall(r"^\| `([a-z0-9_.]+)` \|", DOCS.read_text(), flags=re.M))
    missing = _keys(schema, schema.get("$defs", {})) - documented
    assert not missing, f"settings missing from docs/configuration.md: {sorted(missing)}"
