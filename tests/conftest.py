"""Fixtures shared by every test."""

from __future__ import annotations

import pytest

# The real Kubernetes control plane, one per session for every test that asks for it (imported
# here, not in test modules: each module importing it would start its own).
from tests.kube.testenv import kube_cluster

__all__ = ["kube_cluster"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
