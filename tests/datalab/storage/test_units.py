"""Pure parts of storage and secrets: key and path rules, snippets, export lines, settings."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import boto3
import pytest
import typer

from datalab.cli.storage import parse_duration, split_path
from datalab.config import ConfigError, load_settings
from datalab.errors import Forbidden, InvalidInput
from datalab.identity.access import Principal
from datalab.platform import Platform
from datalab.secrets.store import check_data, export_lines
from datalab.storage import botocore_session
from datalab.storage.keys import check_bucket, check_key
from datalab.storage.seaweedfs import role_policy
from datalab.storage.service import S3Credentials, StorageService
from datalab.storage.snippets import LANGUAGES, snippets

ALICE = Principal(1, "alice", False, "project-team", "member", "token")


@pytest.mark.parametrize("key", ["a", "data/x.csv", "dir/", "é/ü.parquet", "a.b/c..d"])
def test_valid_keys(key: str) -> None:
    assert check_key(key) == key


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("", "empty"),
        ("/abs", "start with '/'"),
        ("../x", "'..'"),
        ("a/./b", "'.'"),
        ("a//b", "empty segment"),
        ("a\x00b", "control"),
        ("x" * 1025, "1024 bytes"),
    ],
)
def test_invalid_keys_name_the_problem(key: str, problem: str) -> None:
    with pytest.raises(InvalidInput, match=problem):
        check_key(key)


def test_buckets_are_the_personal_and_the_current_project() -> None:
    assert check_bucket(ALICE, "user-alice", "user-alice") == "user-alice"
    assert check_bucket(ALICE, "project-team", "user-alice") == "project-team"
    with pytest.raises(Forbidden, match="project-team, user-alice"):
        check_bucket(ALICE, "user-bob", "user-alice")


def test_role_policy_is_scoped_by_token_claims() -> None:
    resources = role_policy()["Statement"][0]["Resource"]
    assert resources == [
        "arn:aws:s3:::${jwt:bucket}",
        "arn:aws:s3:::${jwt:bucket}/*",
        "arn:aws:s3:::${jwt:project_bucket}",
        "arn:aws:s3:::${jwt:project_bucket}/*",
    ]


def test_snippets_use_the_current_credentials() -> None:
    credentials = S3Credentials("ASIAKEY", "secret", "session", datetime.now(UTC))
    code = snippets("http://127.0.0.1:8333", "us-east-1", credentials, "user-alice", "a/b.csv")
    assert set(code) == set(LANGUAGES)
    for text in code.values():
        assert "ASIAKEY" in text and "session" in text
    assert "read_csv" in code["pandas"] and "s3://user-alice/a/b.csv" in code["duckdb"]
    assert "MC_HOST_datalab=http://ASIAKEY:secret:session@127.0.0.1:8333" in code["mc"]
    compile(code["boto3"], "boto3", "exec")
    compile(code["pandas"], "pandas", "exec")


def test_secret_data_and_export_lines() -> None:
    assert check_data({"A_1": "x", "PORT": 5432}) == {"A_1": "x", "PORT": "5432"}
    with pytest.raises(InvalidInput, match="'1A'"):
        check_data({"1A": "hidden-value"})
    with pytest.raises(InvalidInput, match="at least one"):
        check_data({})
    assert export_lines({"B": "it's", "A": "$HOME"}) == (
        "export A='$HOME'\nexport B='it'\"'\"'s'\n"
    )


def test_cli_paths_and_durations() -> None:
    assert split_path("s3://user-alice/a/b") == ("user-alice", "a/b")
    assert split_path("user-alice") == ("user-alice", "")
    assert [parse_duration(d) for d in ("90", "30m", "12h", "7d")] == [90, 1800, 43200, 604800]
    with pytest.raises(typer.BadParameter):
        parse_duration("soon")


def test_external_modes_need_their_settings(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"storage\.endpoint_url"):
        Platform.create(load_settings(None, data_dir=tmp_path, storage={"mode": "external"}))
    with pytest.raises(ConfigError, match=r"secrets\.address"):
        Platform.create(
            load_settings(
                None, data_dir=tmp_path, storage={"mode": "disabled"}, secrets={"mode": "external"}
            )
        )
    with pytest.raises(ConfigError, match="credentials_ttl_s"):
        load_settings(None, data_dir=tmp_path, storage={"credentials_ttl_s": 60})


def test_the_endpoint_subset_resolves_s3_and_sts_as_botocore_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    botocore_session.session.cache_clear()
    try:
        ours = botocore_session.session()
        assert (botocore_session.data_dir() / "endpoints.json").is_file()
        assert str(tmp_path) in botocore_session.data_dir().as_posix()
        resolver = ours._session._get_internal_component("endpoint_resolver")
        full = boto3.session.Session()._session._get_internal_component("endpoint_resolver")
        for service in botocore_session.SERVICES:
            for region in ("us-east-1", "eu-west-3", "aws-global", "cn-north-1", "fr-par"):
                assert resolver.construct_endpoint(service, region) == full.construct_endpoint(
                    service, region
                ), (service, region)
        assert resolver.construct_endpoint("ec2", "eu-west-3") is not None  # partition defaults
        assert len(resolver._endpoint_data["partitions"][0]["services"]) == 2
    finally:
        botocore_session.session.cache_clear()


def test_share_links_point_at_the_public_s3_url(tmp_path: Path) -> None:
    def storage(**public: str) -> StorageService:
        external = {
            "mode": "external",
            "endpoint_url": "http://minio.internal:9000",
            "access_key_id": "admin",
            "secret_access_key": "admin-secret",
        }
        settings = load_settings(
            None, data_dir=tmp_path, storage={**external, **public}, secrets={"mode": "disabled"}
        )
        platform = Platform.create(settings)
        platform.db.dispose()
        assert platform.storage is not None
        return platform.storage

    assert storage().public_url == "http://minio.internal:9000"  # default: the endpoint
    public = storage(public_url="https://s3.example.org/")
    assert public.public_url == "https://s3.example.org"
    url = public.presigned_get("user-alice", "reports/r 1.csv", 600)
    assert url.startswith("https://s3.example.org/user-alice/reports/r%201.csv?")
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in url and "X-Amz-SignedHeaders=host" in url
    with pytest.raises(ConfigError, match="public_url"):
        load_settings(None, data_dir=tmp_path, storage={"public_url": "s3.example.org"})
