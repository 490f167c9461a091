"""The injection context has Onyxia's shape, disabled blocks when services are absent, and is
deterministic given a seeded random generator."""

from __future__ import annotations

import base64
import json
import random

from datalab.onyxia_context import (
    ContextProject,
    ContextUser,
    GitContext,
    KubernetesContext,
    RegionContext,
    S3Context,
    VaultContext,
    build_context,
)

USER = ContextUser(idep="bob", email="bob@example.org", ip="192.0.2.4", lang="fr")
PROJECT = ContextProject(id="project-sandbox", password="sandbox-pw")


def test_keys_used_by_onyxia_charts_are_all_present() -> None:
    context = build_context(USER, PROJECT, rng=random.Random(0))
    expected = {
        "user": {"idep", "name", "email", "password", "ip", "lang", "darkMode"},
        "project": {"id", "password", "basic"},
        "service": {"oneTimePassword"},
        "s3": {
            "isEnabled", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
            "AWS_DEFAULT_REGION", "AWS_S3_ENDPOINT", "AWS_BUCKET_NAME", "port",
            "pathStyleAccess", "workingDirectoryPath", "objectNamePrefix", "isAnonymous",
        },
        "vault": {"VAULT_ADDR", "VAULT_TOKEN", "VAULT_MOUNT", "VAULT_TOP_DIR"},
        "git": {"name", "email", "credentials_cache_duration", "token"},
        "k8s": {
            "domain", "randomSubdomain", "ingressClassName", "ingress", "route", "istio",
            "initScriptUrl", "useCertManager", "certManagerClusterIssuer",
        },
        "region": {
            "defaultIpProtection", "defaultNetworkPolicy", "allowedURIPattern", "customValues",
            "tolerations", "nodeSelector", "startupProbe", "sliders", "resources", "from",
        },
        "proxyInjection": {"httpProxyUrl", "httpsProxyUrl", "noProxy"},
        "packageRepositoryInjection": {"pypiProxyUrl", "condaProxyUrl", "cranProxyUrl"},
        "certificateAuthorityInjection": {"cacerts", "pathToCaBundle"},
    }  # fmt: skip
    for block, keys in expected.items():
        assert keys <= set(context[block]), (block, keys - set(context[block]))
    json.dumps(context)  # plain JSON


def test_missing_s3_and_vault_give_disabled_empty_blocks() -> None:
    context = build_context(USER, PROJECT, rng=random.Random(0))
    assert context["s3"]["isEnabled"] is False
    assert context["s3"]["AWS_ACCESS_KEY_ID"] == ""
    assert context["vault"]["VAULT_TOKEN"] == ""
    assert context["vault"]["isEnabled"] is False


def test_s3_endpoint_is_split_like_onyxia_and_keeps_the_full_url() -> None:
    s3 = S3Context(
        "http://127.0.0.1:8333", "AK", "SK", "ST", region="eu-west-3", bucket="user-bob",
        object_name_prefix="work",
    )  # fmt: skip
    block = build_context(USER, PROJECT, s3=s3, rng=random.Random(0))["s3"]
    assert block["AWS_S3_ENDPOINT"] == "127.0.0.1"
    assert block["port"] == 8333
    assert block["url"] == "http://127.0.0.1:8333"
    assert block["workingDirectoryPath"] == "user-bob/work/"
    assert (block["AWS_ACCESS_KEY_ID"], block["AWS_SECRET_ACCESS_KEY"]) == ("AK", "SK")
    assert block["AWS_DEFAULT_REGION"] == "eu-west-3"
    https = build_context(
        USER, PROJECT, s3=S3Context("https://s3.example.org"), rng=random.Random(0)
    )
    assert https["s3"]["port"] == 443


def test_s3_refresh_endpoint_is_given_to_services() -> None:
    s3 = S3Context(
        "http://127.0.0.1:8333", "AK", "SK", "ST",
        credentials_url="http://127.0.0.1:8000/api/storage/credentials/refresh",
        credentials_authorization="Bearer jwt",
    )  # fmt: skip
    block = build_context(USER, PROJECT, s3=s3, rng=random.Random(0))["s3"]
    assert block["credentialsUrl"] == "http://127.0.0.1:8000/api/storage/credentials/refresh"
    assert block["credentialsAuthorization"] == "Bearer jwt"
    without = build_context(USER, PROJECT, rng=random.Random(0))["s3"]
    assert without["credentialsUrl"] == without["credentialsAuthorization"] == ""


def test_anonymous_s3_hides_credentials() -> None:
    s3 = S3Context(
        "https://s3.example.org", "AK", "SK", is_anonymous=True, credentials_authorization="B"
    )
    block = build_context(USER, PROJECT, s3=s3, rng=random.Random(0))["s3"]
    assert block["AWS_ACCESS_KEY_ID"] == block["AWS_SECRET_ACCESS_KEY"] == ""
    assert block["credentialsAuthorization"] == ""


def test_seeded_generator_makes_it_deterministic_and_default_is_random() -> None:
    first = build_context(USER, PROJECT, rng=random.Random(42))
    again = build_context(USER, PROJECT, rng=random.Random(42))
    assert first == again
    otp = first["service"]["oneTimePassword"]
    assert len(otp) == 20 and otp.isalnum()
    assert first["k8s"]["randomSubdomain"].isdigit()
    unseeded = {build_context(USER, PROJECT)["service"]["oneTimePassword"] for _ in range(3)}
    assert len(unseeded) == 3


def test_user_project_git_vault_region_values() -> None:
    region = RegionContext(
        default_ip_protection=True,
        resources={"cpuLimit": "2"},
        kubernetes=KubernetesContext(domain="lab.example.org", ingress_class_name="nginx"),
        pypi_proxy_url="https://pypi.internal/simple",
    )
    context = build_context(
        USER,
        PROJECT,
        region,
        vault=VaultContext("http://vault:8200/", token="t", mount="kv", top_dir="bob"),
        git=GitContext(name="Bob", email="bob@example.org", credentials_cache_duration=3600),
        rng=random.Random(0),
    )
    assert context["user"]["name"] == "bob"  # display name defaults to the idep
    assert context["user"]["lang"] == "fr"
    # as Onyxia: the project's service password, also as the user's, and basic as project:pw
    assert context["project"]["password"] == context["user"]["password"] == "sandbox-pw"
    assert base64.b64decode(context["project"]["basic"]).decode() == "project-sandbox:sandbox-pw"
    assert context["vault"]["VAULT_ADDR"] == "http://vault:8200"
    assert context["git"]["credentials_cache_duration"] == 3600
    assert context["region"]["defaultIpProtection"] is True
    assert context["region"]["resources"] == {"cpuLimit": "2"}
    assert context["k8s"]["domain"] == "lab.example.org"
    assert context["k8s"]["ingressClassName"] == "nginx"
    assert context["packageRepositoryInjection"]["pypiProxyUrl"] == "https://pypi.internal/simple"


def test_git_identity_defaults_to_the_user() -> None:
    context = build_context(USER, PROJECT, rng=random.Random(0))
    assert context["git"]["name"] == "bob"
    assert context["git"]["email"] == "bob@example.org"
