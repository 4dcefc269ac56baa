"""Cosign signing keys, read from a tenant's Secret: every byte of it is hostile.

A key pair made by ``cosign generate-key-pair`` (``k8s://NS/NAME`` writes exactly this
Secret: ``cosign.key``, ``cosign.pub``, ``cosign.password``) is a PEM block
``ENCRYPTED SIGSTORE PRIVATE KEY`` (or the older ``ENCRYPTED COSIGN PRIVATE KEY``) whose body
is JSON: scrypt parameters and salt, a NaCl secretbox nonce and the ciphertext of a PKCS#8
private key (go-securesystemslib's ``encrypted`` format).  The key derivation's cost comes
from the Secret, so only the three parameter sets that format ever writes are accepted (as
cosign itself does): anything else could make the operator spend minutes or gigabytes.  An
unencrypted PEM ``PRIVATE KEY`` / ``EC PRIVATE KEY`` is accepted too; a PKCS#8
``ENCRYPTED PRIVATE KEY`` is refused (its PBKDF2 iteration count is unbounded).

Only ECDSA P-256 keys sign (what cosign generates, and verifies with SHA-256).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import nacl.exceptions
import nacl.secret
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from lamina.domain.conditions import SIGNING_KEY_INVALID, SIGNING_PASSWORD_INCORRECT

PRIVATE_KEY = "cosign.key"
PUBLIC_KEY = "cosign.pub"
PASSWORD = "cosign.password"

# Bounds on what is read from a Secret (a cosign key is about 650 bytes).
KEY_MAX_BYTES = 16 * 1024
PASSWORD_MAX_BYTES = 1024
PUBLIC_KEY_MAX_BYTES = 16 * 1024
_CIPHERTEXT_MAX_BYTES = 4096
# go-securesystemslib's legacy, standard and OWASP parameter sets: (N, r, p).
SCRYPT_PARAMETERS = frozenset({(32768, 8, 1), (65536, 8, 1), (131072, 8, 1)})
_SCRYPT_SALT_BYTES = 32
_COSIGN_PEM_TYPES = ("ENCRYPTED SIGSTORE PRIVATE KEY", "ENCRYPTED COSIGN PRIVATE KEY")
_PLAIN_PEM_TYPES = ("PRIVATE KEY", "EC PRIVATE KEY")
_PEM = re.compile(rb"-----BEGIN ([A-Z0-9 ]{1,64})-----\r?\n([A-Za-z0-9+/=\r\n]*?)-----END \1-----")


class SigningKeyError(ValueError):
    """The key cannot be used; ``reason`` is the condition's (a catalogued reason)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class SigningKey:
    """A usable private key, its public half as cosign writes it, and its fingerprint."""

    private: ec.EllipticCurvePrivateKey
    public_pem: bytes
    fingerprint: str

    def sign(self, payload: bytes) -> bytes:
        """ECDSA P-256 over SHA-256, ASN.1 DER: what cosign's annotation holds (base64)."""
        return self.private.sign(payload, ec.ECDSA(hashes.SHA256()))


def fingerprint_of(public: ec.EllipticCurvePublicKey) -> str:
    """``sha256:`` + hex of the DER SubjectPublicKeyInfo (``openssl pkey -pubin -outform
    DER | sha256sum`` gives the same)."""
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(der).hexdigest()


def _bad(message: str) -> SigningKeyError:
    return SigningKeyError(SIGNING_KEY_INVALID, message)


def _single_pem(data: bytes, what: str) -> tuple[str, bytes]:
    blocks = _PEM.findall(data)
    if len(blocks) != 1:
        raise _bad(f"{what} must hold exactly one PEM block (found {len(blocks)})")
    kind, body = blocks[0]
    try:
        der = base64.b64decode(re.sub(rb"\s", b"", body), validate=True)
    except binascii.Error as error:
        raise _bad(f"{what}: the PEM block is not valid base64") from error
    return kind.decode(), der


def _decode_field(document: Mapping[str, Any], *path: str) -> Any:
    value: Any = document
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            raise _bad(f"the encrypted key has no {'.'.join(path)}")
        value = value[key]
    return value


def _b64_field(document: Mapping[str, Any], *path: str) -> bytes:
    value = _decode_field(document, *path)
    if not isinstance(value, str):
        raise _bad(f"the encrypted key's {'.'.join(path)} is not a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as error:
        raise _bad(f"the encrypted key's {'.'.join(path)} is not valid base64") from error


def decrypt_cosign_key(body: bytes, password: bytes) -> bytes:
    """The PKCS#8 DER inside go-securesystemslib's encrypted JSON (scrypt + secretbox)."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise _bad("the encrypted key is not JSON") from error
    if not isinstance(document, dict):
        raise _bad("the encrypted key is not a JSON object")
    if _decode_field(document, "kdf", "name") != "scrypt":
        raise _bad("the encrypted key's kdf must be scrypt")
    if _decode_field(document, "cipher", "name") != "nacl/secretbox":
        raise _bad("the encrypted key's cipher must be nacl/secretbox")
    params = _decode_field(document, "kdf", "params")
    if not isinstance(params, dict):
        raise _bad("the encrypted key's scrypt parameters are not an object")
    n, r, p = (params.get(k) for k in ("N", "r", "p"))
    if not all(type(v) is int for v in (n, r, p)) or (n, r, p) not in SCRYPT_PARAMETERS:
        raise _bad(
            "the encrypted key's scrypt parameters are not one of the sets cosign writes "
            "(N 32768, 65536 or 131072; r 8; p 1)"
        )
    salt = _b64_field(document, "kdf", "salt")
    nonce = _b64_field(document, "cipher", "nonce")
    ciphertext = _b64_field(document, "ciphertext")
    if len(salt) != _SCRYPT_SALT_BYTES:
        raise _bad(f"the encrypted key's salt must be {_SCRYPT_SALT_BYTES} bytes")
    if len(nonce) != nacl.secret.SecretBox.NONCE_SIZE:
        raise _bad(f"the encrypted key's nonce must be {nacl.secret.SecretBox.NONCE_SIZE} bytes")
    if not nacl.secret.SecretBox.MACBYTES < len(ciphertext) <= _CIPHERTEXT_MAX_BYTES:
        raise _bad("the encrypted key's ciphertext has an impossible length")
    assert isinstance(n, int) and isinstance(r, int) and isinstance(p, int)
    key = hashlib.scrypt(
        password, salt=salt, n=n, r=r, p=p, dklen=32, maxmem=2 * 128 * r * n + (1 << 20)
    )
    try:
        return nacl.secret.SecretBox(key).decrypt(ciphertext, nonce)
    except nacl.exceptions.CryptoError as error:
        raise SigningKeyError(
            SIGNING_PASSWORD_INCORRECT,
            "the key does not decrypt with the password in cosign.password "
            "(wrong password, or a corrupted key)",
        ) from error


def _ecdsa_p256(key: object, what: str) -> ec.EllipticCurvePrivateKey:
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise _bad(f"{what} is not an ECDSA key (only ECDSA P-256 keys sign)")
    if not isinstance(key.curve, ec.SECP256R1):
        raise _bad(f"{what} is on curve {key.curve.name}; only ECDSA P-256 keys sign")
    return key


def signing_key(key_pem: bytes, password: bytes) -> SigningKey:
    """Parse and (if encrypted) decrypt ``key_pem``; refuse anything but ECDSA P-256."""
    if len(key_pem) > KEY_MAX_BYTES:
        raise _bad(f"cosign.key is larger than {KEY_MAX_BYTES} bytes")
    if len(password) > PASSWORD_MAX_BYTES:
        raise _bad(f"cosign.password is larger than {PASSWORD_MAX_BYTES} bytes")
    kind, der = _single_pem(key_pem, "cosign.key")
    if kind in _COSIGN_PEM_TYPES:
        plain = decrypt_cosign_key(der, password)
        try:
            private = serialization.load_der_private_key(plain, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as error:
            raise _bad("the decrypted key is not a PKCS#8 private key") from error
    elif kind in _PLAIN_PEM_TYPES:
        try:
            private = serialization.load_der_private_key(der, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as error:
            raise _bad(f"cosign.key: the {kind} block is not a valid private key") from error
    else:
        raise _bad(
            f"cosign.key holds a {kind!r} PEM block; expected ENCRYPTED SIGSTORE PRIVATE KEY "
            "(cosign generate-key-pair), PRIVATE KEY or EC PRIVATE KEY"
        )
    key = _ecdsa_p256(private, "cosign.key")
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return SigningKey(key, public_pem, fingerprint_of(key.public_key()))


def public_key(pem: bytes) -> ec.EllipticCurvePublicKey:
    """A PEM public key (cosign.pub), ECDSA P-256 only."""
    if len(pem) > PUBLIC_KEY_MAX_BYTES:
        raise _bad(f"the public key is larger than {PUBLIC_KEY_MAX_BYTES} bytes")
    kind, der = _single_pem(pem, "the public key")
    if kind != "PUBLIC KEY":
        raise _bad(f"the public key is a {kind!r} PEM block, not PUBLIC KEY")
    try:
        key = serialization.load_der_public_key(der)
    except (ValueError, UnsupportedAlgorithm) as error:
        raise _bad("the public key is not a valid SubjectPublicKeyInfo") from error
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise _bad("the public key is not an ECDSA P-256 key")
    return key


def verifies(key: ec.EllipticCurvePublicKey, payload: bytes, signature: bytes) -> bool:
    try:
        key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


def secret_bytes(secret: Mapping[str, Any], key: str, limit: int) -> bytes | None:
    """A Secret's ``data[key]`` decoded (None when absent); bounded before decoding."""
    encoded = (secret.get("data") or {}).get(key)
    if encoded is None:
        return None
    if not isinstance(encoded, str) or len(encoded) > (limit * 4) // 3 + 4:
        raise _bad(f"{key} is larger than {limit} bytes")
    try:
        return base64.b64decode(encoded, validate=True)
    except binascii.Error as error:
        raise _bad(f"{key} is not valid base64 in the Secret's data") from error
