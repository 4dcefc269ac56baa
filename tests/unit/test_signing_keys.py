"""Cosign keys from a tenant's Secret: what decrypts, and every hostile variant refused.

``data/cosign/`` holds a key pair written by the cosign binary itself (``COSIGN_PASSWORD=
lamina-test cosign generate-key-pair``, v3.1.3), so decryption is checked against an
independent implementation, not against an encoder of our own.
"""

from __future__ import annotations

import base64
import json
import re
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from lamina.domain.conditions import REASONS, SIGNING_KEY_INVALID, SIGNING_PASSWORD_INCORRECT
from lamina.oci.cosign_keys import (
    KEY_MAX_BYTES,
    PASSWORD_MAX_BYTES,
    SigningKeyError,
    fingerprint_of,
    public_key,
    secret_bytes,
    signing_key,
    verifies,
)

DATA = Path(__file__).parent / "data" / "cosign"
PASSWORD = b"lamina-test"


def cosign_key() -> bytes:
    return (DATA / "cosign.key").read_bytes()


def refused(key: bytes, password: bytes = PASSWORD) -> SigningKeyError:
    with pytest.raises(SigningKeyError) as caught:
        signing_key(key, password)
    assert caught.value.reason in REASONS
    return caught.value


def reencoded(change: dict[str, object]) -> bytes:
    """cosign's key with fields of its encrypted JSON replaced."""
    text = cosign_key().decode()
    body = re.search(r"-----\n(.*)\n-----END", text, re.S)
    assert body is not None
    document = json.loads(base64.b64decode(body.group(1)))
    for path, value in change.items():
        target = document
        *parents, last = path.split(".")
        for key in parents:
            target = target[key]
        target[last] = value
    encoded = base64.b64encode(json.dumps(document).encode()).decode()
    return (
        "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n"
        + "\n".join(encoded[i : i + 64] for i in range(0, len(encoded), 64))
        + "\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n"
    ).encode()


def pem(key: object, fmt: serialization.PrivateFormat, password: bytes | None = None) -> bytes:
    encryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, fmt, encryption)  # type: ignore[attr-defined]


def test_cosigns_own_key_decrypts_and_matches_its_public_key() -> None:
    key = signing_key(cosign_key(), PASSWORD)
    assert key.public_pem.strip() == (DATA / "cosign.pub").read_bytes().strip()
    assert key.fingerprint == fingerprint_of(public_key((DATA / "cosign.pub").read_bytes()))
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", key.fingerprint)


def test_a_signature_verifies_with_the_public_key_only() -> None:
    key = signing_key(cosign_key(), PASSWORD)
    signature = key.sign(b"payload")
    mine = public_key(key.public_pem)
    assert verifies(mine, b"payload", signature)
    assert not verifies(mine, b"payload!", signature)
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    assert not verifies(other, b"payload", signature)
    assert not verifies(mine, b"payload", b"not DER")


def test_a_wrong_password_says_so() -> None:
    error = refused(cosign_key(), b"not-the-password")
    assert error.reason == SIGNING_PASSWORD_INCORRECT
    assert "password" in str(error)
    assert refused(cosign_key(), b"").reason == SIGNING_PASSWORD_INCORRECT


def test_a_tampered_ciphertext_is_refused_as_not_decrypting() -> None:
    text = cosign_key().decode()
    body = re.search(r"-----\n(.*)\n-----END", text, re.S)
    assert body is not None
    document = json.loads(base64.b64decode(body.group(1)))
    raw = bytearray(base64.b64decode(document["ciphertext"]))
    raw[-1] ^= 1
    tampered = reencoded({"ciphertext": base64.b64encode(bytes(raw)).decode()})
    assert refused(tampered).reason == SIGNING_PASSWORD_INCORRECT


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"kdf.params.N": 1 << 30}, "scrypt parameters"),
        ({"kdf.params.N": 1 << 14}, "scrypt parameters"),  # cheap is refused too: not cosign's
        ({"kdf.params.r": 1024}, "scrypt parameters"),
        ({"kdf.params.p": 64}, "scrypt parameters"),
        ({"kdf.params.N": "65536"}, "scrypt parameters"),
        ({"kdf.params.N": 65536.0}, "scrypt parameters"),
        ({"kdf.params": "fast"}, "scrypt parameters"),
        ({"kdf.name": "pbkdf2"}, "kdf must be scrypt"),
        ({"cipher.name": "aes-gcm"}, "cipher must be nacl/secretbox"),
        ({"kdf.salt": "AAAA"}, "salt must be 32 bytes"),
        ({"kdf.salt": "!!!"}, "salt is not valid base64"),
        ({"kdf.salt": 7}, "salt is not a base64 string"),
        ({"cipher.nonce": base64.b64encode(b"x" * 12).decode()}, "nonce must be 24 bytes"),
        ({"ciphertext": base64.b64encode(b"x" * 8).decode()}, "impossible length"),
        ({"ciphertext": base64.b64encode(b"x" * 5000).decode()}, "impossible length"),
    ],
)
def test_hostile_encrypted_keys_are_refused_before_any_key_derivation(
    change: dict[str, object], said: str
) -> None:
    started = time.monotonic()
    error = refused(reencoded(change))
    assert error.reason == SIGNING_KEY_INVALID
    assert said in str(error)
    assert time.monotonic() - started < 1.0  # no 2^30 scrypt was attempted


def test_a_missing_field_is_named() -> None:
    text = cosign_key().decode()
    body = re.search(r"-----\n(.*)\n-----END", text, re.S)
    assert body is not None
    document = json.loads(base64.b64decode(body.group(1)))
    del document["cipher"]
    encoded = base64.b64encode(json.dumps(document).encode()).decode()
    kind = "ENCRYPTED SIGSTORE PRIVATE KEY"
    key = f"-----BEGIN {kind}-----\n{encoded}\n-----END {kind}-----\n"
    assert "has no cipher.name" in str(refused(key.encode()))


@pytest.mark.parametrize(
    ("key", "said"),
    [
        (b"", "exactly one PEM block (found 0)"),
        (b"not a key at all", "exactly one PEM block (found 0)"),
        (b"-----BEGIN PRIVATE KEY-----\n@@@@\n-----END PRIVATE KEY-----\n", "exactly one PEM"),
        (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "not a valid private"),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "'CERTIFICATE'"),
        (
            b"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\nAAAA\n"
            b"-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n",
            "not JSON",
        ),
        (
            b"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\nW10=\n"
            b"-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n",
            "not a JSON object",
        ),
        (b"x" * (KEY_MAX_BYTES + 1), "larger than"),
    ],
)
def test_what_is_not_a_key_is_refused(key: bytes, said: str) -> None:
    error = refused(key)
    assert error.reason == SIGNING_KEY_INVALID
    assert said in str(error)


def test_two_keys_in_one_secret_are_refused() -> None:
    assert "found 2" in str(refused(cosign_key() + cosign_key()))


def test_an_oversized_password_is_refused() -> None:
    assert "cosign.password is larger" in str(
        refused(cosign_key(), b"p" * (PASSWORD_MAX_BYTES + 1))
    )


def test_unencrypted_p256_keys_in_pkcs8_and_sec1_sign() -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    for fmt in (serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL):
        key = signing_key(pem(private, fmt), b"")
        assert key.fingerprint == fingerprint_of(private.public_key())


def test_pkcs8_encrypted_keys_are_refused_their_cost_is_unbounded() -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    error = refused(pem(private, serialization.PrivateFormat.PKCS8, b"pw"), b"pw")
    assert "'ENCRYPTED PRIVATE KEY'" in str(error)


@pytest.mark.parametrize(
    "private",
    [
        ec.generate_private_key(ec.SECP384R1()),
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
    ],
    ids=["p384", "rsa"],
)
def test_only_p256_signs(private: object) -> None:
    error = refused(pem(private, serialization.PrivateFormat.PKCS8), b"")
    assert "P-256" in str(error)


def test_public_keys_other_than_p256_are_refused() -> None:
    rsa_public = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    text = rsa_public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(SigningKeyError, match="not an ECDSA P-256"):
        public_key(text)
    with pytest.raises(SigningKeyError, match="not PUBLIC KEY"):
        public_key(cosign_key())


def test_secret_data_is_bounded_and_base64_checked() -> None:
    assert secret_bytes({"data": {}}, "cosign.key", 10) is None
    assert secret_bytes({"data": {"k": base64.b64encode(b"abc").decode()}}, "k", 10) == b"abc"
    with pytest.raises(SigningKeyError, match="larger than 10 bytes"):
        secret_bytes({"data": {"k": base64.b64encode(b"a" * 100).decode()}}, "k", 10)
    with pytest.raises(SigningKeyError, match="not valid base64"):
        secret_bytes({"data": {"k": "%%%"}}, "k", 10)
    with pytest.raises(SigningKeyError, match="larger than"):
        secret_bytes({"data": {"k": ["not", "a", "string"]}}, "k", 10)


class SecretsOnly:
    """A Kube that holds Secrets and counts reads (SigningKeys asks nothing else)."""

    def __init__(self, secrets: dict[tuple[str, str], dict[str, object]]) -> None:
        self.secrets = secrets
        self.reads: list[tuple[str, str]] = []

    async def get_secret(self, namespace: str, name: str) -> dict[str, object] | None:
        self.reads.append((namespace, name))
        return self.secrets.get((namespace, name))


def key_secret(version: str, password: bytes = PASSWORD) -> dict[str, object]:
    return {
        "metadata": {"uid": "u1", "resourceVersion": version},
        "data": {
            "cosign.key": base64.b64encode(cosign_key()).decode(),
            "cosign.password": base64.b64encode(password).decode(),
        },
    }


def test_keys_are_read_where_named_cached_by_version_and_failures_are_reasons() -> None:
    import asyncio  # noqa: PLC0415

    from lamina.domain.conditions import SIGNING_SECRET_NOT_FOUND  # noqa: PLC0415
    from lamina.handlers.signing import SigningError, SigningKeys  # noqa: PLC0415

    kube = SecretsOnly({("team", "k"): key_secret("1"), ("ops", "default"): key_secret("9")})
    keys = SigningKeys(kube, "ops", "default")  # type: ignore[arg-type]

    async def scenario() -> None:
        from lamina.api.signing import SecretRef, SignSpec  # noqa: PLC0415

        own = keys.source("team", SignSpec(secret_ref=SecretRef(name="k")))
        default = keys.source("team", None)
        assert own is not None and default is not None
        assert (own.namespace, own.name) == ("team", "k")
        assert (default.namespace, default.name) == ("ops", "default")
        first = await keys.key(own)
        assert await keys.key(own) is first  # same resourceVersion: not decrypted again
        kube.secrets[("team", "k")] = key_secret("2", b"changed")
        with pytest.raises(SigningError) as caught:
            await keys.key(own)  # a new version is read again, and its password is wrong
        assert caught.value.reason == SIGNING_PASSWORD_INCORRECT
        assert "team" in str(caught.value) and "changed" not in str(caught.value)
        del kube.secrets[("team", "k")]
        with pytest.raises(SigningError) as caught:
            await keys.key(own)
        assert caught.value.reason == SIGNING_SECRET_NOT_FOUND
        kube.secrets[("team", "k")] = {"metadata": {"uid": "u2"}, "data": {}}
        with pytest.raises(SigningError, match=r"has no cosign\.key") as caught:
            await keys.key(own)
        assert caught.value.reason == SIGNING_KEY_INVALID
        assert (await keys.key(default)).fingerprint == first.fingerprint
        # Nothing but the named Secrets, in their own namespaces, was ever read.
        assert set(kube.reads) == {("team", "k"), ("ops", "default")}

    asyncio.run(scenario())


def test_the_default_signing_secret_is_a_setting() -> None:
    from lamina.config import OperatorConfig  # noqa: PLC0415

    assert OperatorConfig.from_env({}).signing_secret is None
    assert OperatorConfig.from_env({"LAMINA_SIGNING_SECRET": "k"}).signing_secret == "k"
    with pytest.raises(ValueError, match="signing_secret"):
        OperatorConfig.from_env({"LAMINA_SIGNING_SECRET": "Not/A/Name"})


def test_a_key_that_did_not_decrypt_is_not_derived_again_until_its_secret_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A wrong password costs one scrypt derivation, not one per retry; the derivation runs
    in a worker thread (the event loop goes on); a changed Secret is tried again."""
    import asyncio  # noqa: PLC0415
    import threading  # noqa: PLC0415

    from lamina.api.signing import SecretRef, SignSpec  # noqa: PLC0415
    from lamina.handlers import signing  # noqa: PLC0415

    derivations: list[str] = []

    def counted(pem: bytes, password: bytes) -> object:
        derivations.append(threading.current_thread().name)
        return signing_key(pem, password)

    monkeypatch.setattr(signing, "signing_key", counted)
    kube = SecretsOnly({("team", "k"): key_secret("1", b"pw-Xq7")})
    keys = signing.SigningKeys(kube, "ops", None)  # type: ignore[arg-type]

    async def scenario() -> None:
        source = keys.source("team", SignSpec(secret_ref=SecretRef(name="k")))
        assert source is not None
        said = []
        for _ in range(3):
            with pytest.raises(signing.SigningError) as caught:
                await keys.key(source)
            said.append((caught.value.reason, str(caught.value)))
        assert len(derivations) == 1  # three retries, one derivation
        assert said == [said[0]] * 3
        assert said[0][0] == SIGNING_PASSWORD_INCORRECT
        assert 'Secret "k"' in said[0][1] and "pw-Xq7" not in said[0][1]
        # Data replaced under the same resourceVersion (a restored backup): tried again.
        kube.secrets[("team", "k")] = key_secret("1", b"also-wrong")
        with pytest.raises(signing.SigningError):
            await keys.key(source)
        assert len(derivations) == 2
        # The Secret fixed: a new version decrypts.
        kube.secrets[("team", "k")] = key_secret("2")
        assert (await keys.key(source)).fingerprint
        assert len(derivations) == 3
        # The failure cache keeps no key material, only its hash.
        remembered = repr(keys._failed)
        assert "pw-Xq7" not in remembered and cosign_key().decode()[40:80] not in remembered

    asyncio.run(scenario())
    assert threading.main_thread().name not in derivations
