"""A committed image joins the lineage: an Image object records it, Layer objects its layers.

The Image is created by the operator (it is the operator's object, so writing its spec is not
writing a user's spec) with ``spec.commit`` naming the ContainerCommit, which marks it as a
snapshot that is never rebuilt.  Its parent is the Image whose digest the container ran, when
there is one in the namespace (so a commit of a committed image stacks in the tree), otherwise
the container's image reference pinned by digest.
"""

from __future__ import annotations

from datetime import UTC, datetime

from lamina.api.commit import ContainerCommitSpec
from lamina.api.meta import API_VERSION
from lamina.api.signing import SignatureStatus
from lamina.domain.commit_outcome import CommitResult
from lamina.domain.labels import label_value
from lamina.domain.manifest_facts import layer_facts
from lamina.handlers.recording import ensure_layers
from lamina.handlers.registry_access import PushedImage
from lamina.kube import Kube


async def _parent_spec(
    kube: Kube, namespace: str, result: CommitResult
) -> tuple[dict[str, str], str | None]:
    """The parent (an Image of the namespace when one has the digest the container ran) and
    its digest.  A pod that names an Image by tag runs the index its tag names
    (``status.indexDigest``: the image and its attestations); the lineage is the image's own
    digest, the one children pin."""
    for image in await kube.list_objects("images", namespace):
        status = image.get("status") or {}
        if result.parent_digest and result.parent_digest in (
            status.get("digest"),
            status.get("indexDigest"),
        ):
            return {"image": image["metadata"]["name"]}, status.get("digest")
    ref = result.parent_ref or ""
    repository = ref.split("@", 1)[0]
    pinned = f"{repository}@{result.parent_digest}" if result.parent_digest else ref
    return {"ref": pinned}, result.parent_digest


async def record_committed_image(
    kube: Kube,
    *,
    namespace: str,
    commit: str,
    spec: ContainerCommitSpec,
    result: CommitResult,
    pushed: PushedImage,
    signature: SignatureStatus | None = None,
) -> None:
    parent, parent_digest = await _parent_spec(kube, namespace, result)
    body = {
        "apiVersion": API_VERSION,
        "kind": "Image",
        "metadata": {
            "name": commit,
            "labels": {
                "lamina.dev/commit": label_value(commit),
                "app.kubernetes.io/managed-by": "lamina",
            },
        },
        "spec": {
            "parent": parent,
            "commit": {"name": commit},
            "output": {
                "repository": spec.output.repository,
                "tags": [spec.output.tag],
                "insecure": spec.output.insecure,
                **({"pushSecret": spec.output.push_secret} if spec.output.push_secret else {}),
                # The key that signed it signs what is attached later (its SBOM) too.
                **({"sign": spec.output.sign.wire()} if spec.output.sign else {}),
            },
        },
    }
    await kube.create_object("images", namespace, body)
    image = await kube.get_object("images", namespace, commit)
    if image is None or (image.get("spec") or {}).get("commit", {}).get("name") != commit:
        raise RuntimeError(
            f'an Image named "{commit}" exists and does not record this commit; '
            "rename the ContainerCommit"
        )
    inherited = len(pushed.manifest.get("layers") or []) - 1
    facts = layer_facts(pushed.manifest, pushed.config, inherited)
    now = datetime.now(UTC).replace(microsecond=0).isoformat()
    await kube.patch_status(
        "images",
        namespace,
        commit,
        {
            "digest": result.digest,
            "imageRef": result.image,
            "parent": {**parent, "digest": parent_digest},
            "layers": [fact.image_layer() for fact in facts],
            "indexDigest": result.index_digest,
            "attestations": [fact.status() for fact in pushed.attestations] or None,
            "history": [
                {
                    "digest": result.digest,
                    "parentDigest": parent_digest,
                    "reason": f"Committed by ContainerCommit {commit}",
                    "builtAt": now,
                }
            ],
            **({"signature": signature.wire()} if signature is not None else {}),
        },
    )
    await ensure_layers(kube, namespace, image["metadata"], facts)
