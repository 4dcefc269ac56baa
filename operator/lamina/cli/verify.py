"""``lamina verify IMAGE``: does IMAGE carry a cosign signature that verifies with the key?

IMAGE is an Image or ContainerCommit of the namespace (its recorded digest is checked, and
the public key is ``cosign.pub`` of the Secret its ``spec.output.sign`` names, unless
``--key`` is given) or a reference ``REGISTRY/REPO[:TAG][@DIGEST]`` (then ``--key`` is
needed).  The check is cosign's own, done offline: the ``sha256-<hex>.sig`` tag's simple
signing payloads must claim the digest and verify with the key; there is no transparency log
here, so it is what ``cosign verify --key KEY --insecure-ignore-tlog=true`` checks.

Exit status: 0 verified, 1 not verified (the reason is printed), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
from pathlib import Path
from typing import Any

VERIFIED, NOT_VERIFIED, USAGE = 0, 1, 2


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "verify",
        help="verify an image's cosign signature against a public key",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    parser.add_argument("image", help="an Image or ContainerCommit name, or an image reference")
    parser.add_argument("-n", "--namespace", default="default", help="namespace (default: default)")
    parser.add_argument("--key", type=Path, help="the public key (cosign.pub, PEM)")
    parser.add_argument("--insecure", action="store_true", help="the registry speaks plain HTTP")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = os.environ.get("LAMINA_REGISTRY_CONFIG")
    return asyncio.run(verify(args, Path(settings).read_text() if settings else None))


def _is_reference(text: str) -> bool:
    return "/" in text or "@" in text


async def _from_object(args: argparse.Namespace) -> tuple[str, bool, bytes | None, str | None]:
    """(image@digest, insecure, public key from the Secret or None, recorded fingerprint)."""
    from lamina.kube import Kube  # noqa: PLC0415 - only the object form talks to the API

    kube = await Kube.connect()
    try:
        for plural in ("images", "containercommits"):
            found = await kube.get_object(plural, args.namespace, args.image)
            if found is not None:
                break
        else:
            raise LookupError(
                f'no Image or ContainerCommit "{args.image}" in namespace {args.namespace}'
            )
        spec, status = found.get("spec") or {}, found.get("status") or {}
        output = spec.get("output") or {}
        ref = status.get("imageRef") or (status.get("image") or {}).get("ref")
        if not ref and status.get("digest") and output.get("repository"):
            ref = f"{output['repository']}@{status['digest']}"
        if not ref:
            raise LookupError(f"{plural[:-1]} {args.image} has no pushed image yet")
        pem = None
        secret_name = ((output.get("sign") or {}).get("secretRef") or {}).get("name")
        if args.key is None and secret_name:
            secret = await kube.get_secret(args.namespace, secret_name)
            encoded = ((secret or {}).get("data") or {}).get("cosign.pub")
            if encoded:
                pem = base64.b64decode(encoded)
        fingerprint = (status.get("signature") or {}).get("keyFingerprint")
        return str(ref), bool(output.get("insecure")), pem, fingerprint
    finally:
        await kube.close()


async def verify(args: argparse.Namespace, registry_settings: str | None = None) -> int:
    import aiohttp  # noqa: PLC0415

    from lamina.oci.client import RegistryClient  # noqa: PLC0415
    from lamina.oci.cosign_keys import SigningKeyError, fingerprint_of, public_key  # noqa: PLC0415
    from lamina.oci.errors import RegistryError  # noqa: PLC0415
    from lamina.oci.hosts import RegistryHosts  # noqa: PLC0415
    from lamina.oci.reference import InvalidReference, parse_reference  # noqa: PLC0415
    from lamina.oci.signatures import find_signature  # noqa: PLC0415

    recorded = None
    pem = None
    insecure = args.insecure
    try:
        if _is_reference(args.image):
            text = args.image
        else:
            text, object_insecure, pem, recorded = await _from_object(args)
            insecure = insecure or object_insecure
        if args.key is not None:
            pem = args.key.read_bytes()
        if pem is None:
            print(
                "NOT VERIFIED: no public key: give --key cosign.pub "
                "(or a cosign.pub in the Secret that spec.output.sign names)"
            )
            return USAGE
        key = public_key(pem)
        ref = parse_reference(text)
    except (LookupError, OSError, SigningKeyError, InvalidReference) as error:
        print(f"NOT VERIFIED: {error}")
        return USAGE if isinstance(error, (OSError, InvalidReference)) else NOT_VERIFIED
    hosts = RegistryHosts.parse(registry_settings) if registry_settings else RegistryHosts()
    fingerprint = fingerprint_of(key)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        client = RegistryClient(
            session, insecure=set(hosts.insecure) | ({ref.registry} if insecure else set())
        )
        try:
            digest = ref.digest or (await client.get_manifest(ref)).digest
            found = await find_signature(client, ref, digest, key)
        except (RegistryError, OSError, TimeoutError, aiohttp.ClientError) as error:
            print(f"NOT VERIFIED: {ref.name}: the registry could not be read: {error}")
            return NOT_VERIFIED
    image = f"{ref.name}@{digest}"
    if found.manifest_digest is None:
        print(f"NOT VERIFIED: {image} has no signature (no tag {digest.replace(':', '-')}.sig)")
        return NOT_VERIFIED
    if found.verified == 0:
        print(
            f"NOT VERIFIED: none of the {found.checked} signature(s) of {image} verifies "
            f"with key {fingerprint}"
        )
        return NOT_VERIFIED
    print(f"Verified OK: {image}")
    print(f"  key:       {fingerprint}")
    print(f"  signature: {found.manifest_digest} ({found.verified} of {found.checked} verify)")
    if found.docker_reference:
        print(f"  signed as: {found.docker_reference}")
    if recorded and recorded != fingerprint:
        print(f"  note: status.signature.keyFingerprint is {recorded}, not this key")
    return VERIFIED
