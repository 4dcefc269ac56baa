"""A small typed async facade over kubernetes_asyncio.

Handlers say *what* to read or patch in Lamina's terms; the wire details (plural names,
content types, 404 handling) live only here.  One instance is shared per operator process.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, cast

import aiohttp
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

from lamina.api.meta import GROUP, VERSION
from lamina.domain.api_failures import ApiFailure
from lamina.kube.streams import ends_initial_events, event_of, json_lines

MERGE_PATCH = "application/merge-patch+json"
# How long one watch request lasts before the server ends it (the caller watches again).
WATCH_SECONDS = 300
# At most this much JSON of a streaming list is parsed and handed over at once.
BATCH_BYTES = 4 * 1024 * 1024


def api_failure(error: BaseException) -> ApiFailure | None:
    """What the API server said, from its ``Status`` body; None for errors that are not the
    API's (a bug is not an API failure and must not be dressed as one).

    ``str(ApiException())`` is a wall of headers, or empty: the body's ``reason`` and
    ``message`` are what name the problem (``NotFound: namespaces "x" not found``).
    """
    if isinstance(error, ApiException):
        body: Any = error.body
        try:
            parsed = json.loads(body.decode() if isinstance(body, bytes) else body or "")
        except (ValueError, UnicodeDecodeError):
            parsed = None
        status: dict[str, Any] = parsed if isinstance(parsed, dict) else {}
        found = status.get("details")
        details: dict[str, Any] = found if isinstance(found, dict) else {}
        code = int(error.status or status.get("code") or 0)
        reason = str(status.get("reason") or error.reason or "Unknown")
        message = str(status.get("message") or (body if isinstance(body, str) else "") or "")
        return ApiFailure(
            code,
            reason,
            message[:2000],
            kind=details.get("kind") if isinstance(details.get("kind"), str) else None,
            name=details.get("name") if isinstance(details.get("name"), str) else None,
        )
    if isinstance(error, aiohttp.ClientError | OSError | TimeoutError):
        return ApiFailure(0, "Unreachable", str(error) or type(error).__name__)
    return None


def describe_error(error: BaseException) -> str:
    """One line for a log: the API's reason and message, else the exception and its text."""
    failure = api_failure(error)
    if failure is not None:
        return str(failure)
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


class Kube:
    """Reads and status patches for Lamina's resources, and the Pods commits target."""

    def __init__(self, api: client.ApiClient) -> None:
        self._api = api
        self._custom = client.CustomObjectsApi(api)
        self._core = client.CoreV1Api(api)
        self._batch = client.BatchV1Api(api)
        # Whether the API server offers streaming lists (None: not asked yet).
        self._streamed_lists: bool | None = None

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

    async def list_pages(
        self, plural: str, namespace: str | None, limit: int = 500
    ) -> AsyncGenerator[tuple[list[dict[str, Any]], str]]:
        """The objects in batches of at most ``limit`` (so a big listing is never all in
        memory at once), each with the list's resourceVersion (to watch from, after the last
        batch; only the last one's is sure to be set).

        A streaming list (:mod:`lamina.kube.streams`) where the API server offers one, else a
        paged LIST.  A server without the streaming list (before Kubernetes 1.32, or with the
        WatchList feature off) refuses the request at once (400 or 422): the paged LIST is
        used from then on.  Any other refusal of the stream takes the paged LIST this time:
        a resource's watch cache answers 429 while it is still filling (an API server just
        started, a CRD just established), where etcd answers the LIST at once.
        """
        if self._streamed_lists is not False:
            try:
                response = await self._watch_request(
                    plural,
                    namespace,
                    [("sendInitialEvents", "true"), ("resourceVersionMatch", "NotOlderThan")],
                )
            except ApiException as error:
                if error.status in (400, 422):
                    self._streamed_lists = False
            else:
                self._streamed_lists = True
                async with contextlib.aclosing(self._initial_events(response, limit)) as batches:
                    async for batch in batches:
                        yield batch
                return
        async with contextlib.aclosing(self._paged_list(plural, namespace, limit)) as pages:
            async for page in pages:
                yield page

    async def _initial_events(
        self, response: aiohttp.ClientResponse, limit: int
    ) -> AsyncGenerator[tuple[list[dict[str, Any]], str]]:
        """A streaming list's objects in batches of at most ``limit`` objects and
        :data:`BATCH_BYTES` of their JSON (a tenant may make its Images about 1 MiB each:
        500 of those parsed at once would be most of the operator's memory)."""
        batch: list[dict[str, Any]] = []
        size = 0
        try:
            async for line in json_lines(response.content.iter_any()):
                kind, obj = event_of(line)
                if ends_initial_events(kind, obj):
                    yield batch, str((obj.get("metadata") or {}).get("resourceVersion", ""))
                    return
                if kind == "DELETED":
                    # The initial events are a snapshot; a deletion among them (seen at scale)
                    # cannot be undone in batches already given: list again (what this
                    # listing put in the store and is gone then is dropped by that one).
                    raise ApiException(status=0, reason="a deletion during the streaming list")
                if kind in ("ADDED", "MODIFIED"):
                    batch.append(obj)
                    size += len(line)
                    if len(batch) >= limit or size >= BATCH_BYTES:
                        yield batch, ""
                        batch, size = [], 0
            # A server that takes the request but never ends its initial events (some
            # aggregated or virtual storage does not): the paged LIST from now on.
            self._streamed_lists = False
            raise ApiException(status=0, reason="the streaming list ended before its bookmark")
        finally:
            response.close()  # the caller watches on from the bookmark's version

    async def _paged_list(
        self, plural: str, namespace: str | None, limit: int
    ) -> AsyncGenerator[tuple[list[dict[str, Any]], str]]:
        token = ""
        while True:
            params: dict[str, Any] = {"limit": limit, **({"_continue": token} if token else {})}
            if namespace is None:
                listed = await self._custom.list_cluster_custom_object(
                    GROUP, VERSION, plural, **params
                )
            else:
                listed = await self._custom.list_namespaced_custom_object(
                    GROUP, VERSION, namespace, plural, **params
                )
            meta = listed.get("metadata") or {}
            yield (
                cast(list[dict[str, Any]], listed.get("items", [])),
                str(meta.get("resourceVersion", "")),
            )
            token = str(meta.get("continue") or "")
            if not token:
                return

    async def _watch_request(
        self, plural: str, namespace: str | None, query: list[tuple[str, str]]
    ) -> aiohttp.ClientResponse:
        """A watch of one of Lamina's kinds, its response unread (a non-2xx answer raises)."""
        scope = f"/namespaces/{namespace}" if namespace is not None else ""
        return await self._watch(f"/apis/{GROUP}/{VERSION}{scope}/{plural}", query)

    async def _watch(self, path: str, query: list[tuple[str, str]]) -> aiohttp.ClientResponse:
        response: aiohttp.ClientResponse = await self._api.call_api(
            path,
            "GET",
            query_params=[
                ("watch", "true"),
                ("allowWatchBookmarks", "true"),
                ("timeoutSeconds", str(WATCH_SECONDS)),
                *query,
            ],
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
            _preload_content=False,
            _return_http_data_only=True,
            # The server ends the watch; a connection silent for longer than that is dead.
            _request_timeout=aiohttp.ClientTimeout(sock_connect=30, sock_read=WATCH_SECONDS + 60),
        )
        if not 200 <= response.status <= 299:
            body = await response.content.read(4096)
            response.close()
            error = ApiException(status=response.status, reason=response.reason)
            error.body = body
            raise error
        return response

    async def watch_objects(
        self, plural: str, namespace: str | None, resource_version: str
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """``(ADDED | MODIFIED | DELETED | BOOKMARK, object)`` from ``resource_version`` on,
        until the server ends the watch (410 Gone, raised: relist).  Events of any size an
        object can have (:mod:`lamina.kube.streams`)."""
        response = await self._watch_request(
            plural, namespace, [("resourceVersion", resource_version)]
        )
        try:
            async for line in json_lines(response.content.iter_any()):
                yield event_of(line)
        finally:
            response.close()

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

    async def create_returning(
        self, plural: str, namespace: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        """Create one of Lamina's objects and return it as stored (a generated name filled)."""
        created = await self._custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, plural, body
        )
        return cast(dict[str, Any], created)

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

    async def read_pod_log(
        self, namespace: str, name: str, container: str, limit_bytes: int
    ) -> bytes:
        """A container's log as bytes, at most ``limit_bytes + 1`` of them (the API's own
        ``limitBytes`` may answer slightly more, so the stream is cut here too: one byte
        over the limit says the log was larger)."""
        # Unparsed (the generated client would decode it to a str): the raw response.
        response: Any = await self._core.read_namespaced_pod_log(
            name,
            namespace,
            container=container,
            limit_bytes=limit_bytes + 1,
            _preload_content=False,
        )
        try:
            data = bytearray()
            async for chunk in response.content.iter_chunked(1 << 16):
                data += chunk
                if len(data) > limit_bytes:
                    break
            return bytes(data[: limit_bytes + 1])
        finally:
            response.release()

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

    async def delete_secret(self, namespace: str, name: str) -> None:
        """Delete a Secret; one that is gone already is fine."""
        try:
            await self._core.delete_namespaced_secret(name, namespace)
        except ApiException as error:
            if error.status != 404:
                raise

    async def create_event(self, body: dict[str, Any]) -> bool:
        """Create a core/v1 Event; False when one of that name exists."""
        try:
            await self._core.create_namespaced_event(
                body["metadata"]["namespace"],
                body,  # type: ignore[arg-type]  # a dict body is sent as is
            )
        except ApiException as error:
            if error.status == 409:
                return False
            raise
        return True

    async def patch_event(
        self, namespace: str, name: str, patch: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Merge-patch an Event (its count and last time); None when it is gone (expired)."""
        try:
            patched = await self._core.patch_namespaced_event(
                name,
                namespace,
                patch,
                _content_type=MERGE_PATCH,  # type: ignore[call-arg]
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return self._plain(patched)

    async def get_event(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self._plain(await self._core.read_namespaced_event(name, namespace))
        except ApiException as error:
            if error.status == 404:
                return None
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

    async def watch_jobs(
        self, namespace: str, selector: str
    ) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
        """The namespace's Jobs matching ``selector``: first ``("LISTED", every Job)``, then
        ``(ADDED | MODIFIED | DELETED, [the Job])`` per change until the server ends the
        watch; call again to relist."""
        listed = await self._batch.list_namespaced_job(namespace, label_selector=selector)
        yield "LISTED", [self._plain(job) for job in listed.items]
        async with watch.Watch() as stream:
            async for event in stream.stream(
                self._batch.list_namespaced_job,
                namespace,
                label_selector=selector,
                resource_version=listed.metadata.resource_version,
                timeout_seconds=WATCH_SECONDS,
            ):
                yield str(event["type"]), [cast(dict[str, Any], event["raw_object"])]

    async def namespace_exists(self, name: str) -> bool:
        """Whether the namespace exists (by a list, which the operator's role allows)."""
        listed = await self._core.list_namespace(field_selector=f"metadata.name={name}")
        return bool(listed.items)

    async def can_i(self, verb: str, group: str, resource: str, namespace: str) -> bool:
        """Whether these credentials may ``verb`` ``resource`` in ``namespace`` (a
        SelfSubjectAccessReview, which every authenticated user may make)."""
        review = await client.AuthorizationV1Api(self._api).create_self_subject_access_review(
            {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SelfSubjectAccessReview",
                "spec": {
                    "resourceAttributes": {
                        "verb": verb,
                        "group": group,
                        "resource": resource,
                        "namespace": namespace,
                    }
                },
            }  # type: ignore[arg-type]  # a dict body is sent as is
        )
        return bool(review.status.allowed)
