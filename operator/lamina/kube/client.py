"""A small typed async facade over kubernetes_asyncio.

Handlers say *what* to read or patch in Lamina's terms; the wire details (plural names,
content types, 404 handling) live only here.  One instance is shared per operator process.
"""

from __future__ import annotations

import os
from typing import Any, cast

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from lamina.api.meta import GROUP, VERSION

MERGE_PATCH = "application/merge-patch+json"


class Kube:
    """Reads and status patches for Lamina's resources, and the Pods commits target."""

    def __init__(self, api: client.ApiClient) -> None:
        self._api = api
        self._custom = client.CustomObjectsApi(api)
        self._core = client.CoreV1Api(api)

    @classmethod
    async def connect(cls) -> Kube:
        """In-cluster when running in a pod, else the kubeconfig (``$KUBECONFIG``)."""
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        else:
            # Read $KUBECONFIG now, not when kubernetes_asyncio was imported.
            paths = [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
            await config.load_kube_config(config_file=paths[0] if paths else None)
        return cls(client.ApiClient())

    async def close(self) -> None:
        await self._api.close()

    async def patch_status(
        self, plural: str, namespace: str, name: str, status: dict[str, Any]
    ) -> bool:
        """Merge-patch ``status`` of one object; False when the object is gone."""
        try:
            await self._custom.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                namespace,
                plural,
                name,
                {"status": status},
                _content_type=MERGE_PATCH,  # type: ignore[call-arg]  # CRs take no strategic merge
            )
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        return True

    async def list_objects(self, plural: str, namespace: str | None) -> list[dict[str, Any]]:
        """All objects of one of Lamina's kinds in a namespace (None: all), as plain dicts."""
        if namespace is None:
            listed = await self._custom.list_cluster_custom_object(GROUP, VERSION, plural)
        else:
            listed = await self._custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, plural
            )
        return cast(list[dict[str, Any]], listed.get("items", []))

    async def get_object(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        """One of Lamina's objects, or None when absent."""
        try:
            found = await self._custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, name
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return cast(dict[str, Any], found)

    async def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Pod as a plain dict (camelCase, as on the wire), or None when absent."""
        try:
            pod = await self._core.read_namespaced_pod(name, namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return cast(dict[str, Any], self._api.sanitize_for_serialization(pod))
