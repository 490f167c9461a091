"""Schemathesis against ``/api/openapi.json`` of a real platform (in-process; the real embedded
SeaweedFS and OpenBao behind the storage and secrets endpoints), as an authenticated
administrator: generated requests, valid and invalid, for every operation, with every check.
Any server error (5xx) or answer the schema does not describe fails the test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.generation import GenerationMode
from schemathesis.python import asgi

from datalab.app import create_app
from datalab.identity import accounts
from datalab.platform import Platform

from .conftest import ADMIN_PASSWORD
from .storage.conftest import embedded_settings

pytestmark = pytest.mark.slow

#: generated requests per operation and generation mode (about 60 operations, 2 modes)
EXAMPLES = 12
MIN_CASES = 1000
#: what the API answers to a request the schema allows but the platform refuses (documented on
#: every operation: see datalab.api.responses)
ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "413", "422", "429"]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, dict[str, str]]]:
    settings_ = embedded_settings(tmp_path_factory.mktemp("fuzz") / "data")
    platform = Platform.create(settings_)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DATALAB_ADMIN_PASSWORD", ADMIN_PASSWORD)
        platform.ensure_admin()
    with platform.db.session() as session:
        _, token = accounts.create_token(
            session, accounts.get_user(session, "admin"), "fuzz", ttl_days=1
        )
    config = schemathesis.Config.from_dict(
        {"checks": {"positive_data_acceptance": {"expected-statuses": ACCEPTED}}}
    )
    schema = schemathesis.openapi.from_asgi(
        "/api/openapi.json", create_app(platform), config=config
    )
    try:
        yield schema, {"Authorization": f"Bearer {token}"}
    finally:
        asgi.shutdown_lifespans()  # the platform stops with the app's lifespan


def test_every_operation_answers_as_documented(api: tuple[Any, dict[str, str]]) -> None:
    schema, headers = api
    load_all_checks()
    checks = list(CHECKS.get_all())
    cases = 0
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate],  # no shrinking: failures as found
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: Any) -> None:
                nonlocal cases
                cases += 1
                case.call_and_validate(headers=headers, checks=checks)

            try:
                run()
            except Unsatisfiable:  # nothing to make invalid (an operation without parameters)
                assert mode is GenerationMode.NEGATIVE, operation.label
            except (Exception, BaseExceptionGroup) as exc:  # every failing operation is reported
                failures.append(f"{operation.label} ({mode.value}):\n{exc}")
    assert not failures, "\n\n".join(failures)
    assert cases >= MIN_CASES, f"only {cases} generated requests"
