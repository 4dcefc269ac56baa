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
        self._batch = client.BatchV1Api(api)

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
    ) -> dict[str, Any] | None:
        """Merge-patch ``status`` of one object: the object as patched (with its new
        resourceVersion), or None when the object is gone."""
        try:
            patched = await self._custom.patch_namespaced_custom_object_status(
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
                return None
            raise
        return cast(dict[str, Any], patched)

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

    def _plain(self, obj: Any) -> dict[str, Any]:
        return cast(dict[str, Any], self._api.sanitize_for_serialization(obj))

    async def create_object(self, plural: str, namespace: str, body: dict[str, Any]) -> bool:
        """Create one of Lamina's objects; False when it already exists."""
        try:
            await self._custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, body
            )
        except ApiException as error:
            if error.status == 409:
                return False
            raise
        return True

    async def patch_object(
        self, plural: str, namespace: str, name: str, patch: dict[str, Any]
    ) -> None:
        """Merge-patch one of Lamina's objects (the operator only patches objects it owns)."""
        await self._custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            plural,
            name,
            patch,
            _content_type=MERGE_PATCH,  # type: ignore[call-arg]
        )

    async def delete_object(self, plural: str, namespace: str, name: str) -> None:
        try:
            await self._custom.delete_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, name
            )
        except ApiException as error:
            if error.status != 404:
                raise

    async def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self._plain(await self._batch.read_namespaced_job(name, namespace))
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    async def create_job(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create a Job, or return the existing one of that name (adoption after a restart)."""
        namespace = body["metadata"]["namespace"]
        try:
            created = await self._batch.create_namespaced_job(
                namespace,
                body,  # type: ignore[arg-type]  # a dict body is sent as is
            )
            return self._plain(created)
        except ApiException as error:
            if error.status != 409:
                raise
        found = await self.get_job(namespace, body["metadata"]["name"])
        if found is None:
            raise RuntimeError(f"Job {body['metadata']['name']} vanished while being adopted")
        return found

    async def delete_job(self, namespace: str, name: str) -> None:
        """Delete a Job and (in the background) its pods."""
        try:
            await self._batch.delete_namespaced_job(
                name, namespace, propagation_policy="Background"
            )
        except ApiException as error:
            if error.status != 404:
                raise

    async def list_jobs(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        listed = await self._batch.list_namespaced_job(namespace, label_selector=selector)
        return [self._plain(job) for job in listed.items]

    async def create_config_map(self, body: dict[str, Any]) -> None:
        try:
            await self._core.create_namespaced_config_map(
                body["metadata"]["namespace"],
                body,  # type: ignore[arg-type]  # a dict body is sent as is
            )
        except ApiException as error:
            if error.status != 409:
                raise

    async def get_config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self._plain(await self._core.read_namespaced_config_map(name, namespace))
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    async def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        listed = await self._core.list_namespaced_pod(namespace, label_selector=selector)
        return [self._plain(pod) for pod in listed.items]

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self._plain(await self._core.read_namespaced_secret(name, namespace))
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    async def create_secret(self, body: dict[str, Any]) -> None:
        try:
            await self._core.create_namespaced_secret(
                body["metadata"]["namespace"],
                body,  # type: ignore[arg-type]  # a dict body is sent as is
            )
        except ApiException as error:
            if error.status != 409:
                raise

    async def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Pod as a plain dict (camelCase, as on the wire), or None when absent."""
        try:
            pod = await self._core.read_namespaced_pod(name, namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return cast(dict[str, Any], self._api.sanitize_for_serialization(pod))
