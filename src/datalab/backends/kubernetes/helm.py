"""Helm releases through helm-python-sdk (Helm's own Go SDK, in this process): the releases
datalab makes are ordinary Helm releases (``helm list -n user-alice``, ``helm get values``).

The SDK's calls block: they run in threads, one at a time per release (concurrent writes to
one release corrupt its history), with one SDK client per namespace (its status and uninstall
act in the client's namespace).
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

from datalab.backends.base import BackendError, ServiceNotFound
from datalab.errors import BackendConflict

LABELS = {"datalab.io/managed": "true"}  # on the release's records, so list() finds ours
NAME_IN_USE = "a name that is still in use"  # Helm: "cannot re(-)use a name that..."


class Releases:
    def __init__(self, kubeconfig: Path | None, context: str | None) -> None:
        self.kubeconfig = kubeconfig
        self.context = context
        self._clients: dict[str, Any] = {}
        self._clients_lock = threading.Lock()
        self._locks: defaultdict[tuple[str, str], asyncio.Lock] = defaultdict(asyncio.Lock)

    def _client(self, namespace: str) -> Any:
        import helm_python  # Helm's Go runtime (~60 MB): loaded with the first release

        with self._clients_lock:
            client = self._clients.get(namespace)
            if client is None:
                client = self._clients[namespace] = helm_python.Config(
                    kubeconfig_path=self.kubeconfig,
                    kube_context=self.context,
                    namespace=namespace,
                )
            return client

    async def _call(self, namespace: str, name: str, action: str, /, *args: Any, **kw: Any) -> Any:
        import helm_python

        async with self._locks[(namespace, name)]:
            client = self._client(namespace)
            try:
                return await asyncio.to_thread(getattr(client, action), *args, **kw)
            except helm_python.HelmNotFoundError:
                raise ServiceNotFound(f"no release {name!r} in namespace {namespace!r}") from None
            except helm_python.HelmError as exc:
                if NAME_IN_USE in str(exc):
                    raise BackendConflict(
                        f"a Helm release named {name!r} already exists in namespace "
                        f"{namespace!r}, made outside datalab: choose another name, or remove "
                        f"it (helm uninstall {name} -n {namespace})"
                    ) from None
                raise BackendError(f"helm {action} of {name!r} in {namespace!r}: {exc}") from None

    async def install(
        self, namespace: str, name: str, chart_dir: Path, values: dict[str, Any]
    ) -> dict[str, Any]:
        release: dict[str, Any] = await self._call(
            namespace, name, "install", str(chart_dir), name, values,
            namespace=namespace, labels=LABELS, description="datalab launch",
        )  # fmt: skip
        return release

    async def upgrade(
        self, namespace: str, name: str, chart_dir: Path, values: dict[str, Any], why: str
    ) -> dict[str, Any]:
        release: dict[str, Any] = await self._call(
            namespace, name, "upgrade", str(chart_dir), name, values,
            namespace=namespace, labels=LABELS, description=why, reset_values=True,
        )  # fmt: skip
        return release

    async def uninstall(self, namespace: str, name: str) -> None:
        await self._call(namespace, name, "uninstall", name, ignore_not_found=True)

    async def status(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            release: dict[str, Any] = await self._call(namespace, name, "status", name)
        except ServiceNotFound:
            return None
        return release

    async def names(self) -> list[tuple[str, str]]:
        """``(namespace, release)`` of every release datalab made, in every namespace."""
        import helm_python

        client = self._client("default")
        try:
            listing = await asyncio.to_thread(client.list, all_states=True, all_namespaces=True)
        except helm_python.HelmError as exc:
            raise BackendError(f"helm list: {exc}") from None
        return [
            (str(r.get("namespace", "")), str(r.get("name", "")))
            for r in listing or []
            if (r.get("labels") or {}).items() >= LABELS.items()
        ]
