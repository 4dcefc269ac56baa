"""How much of a registry's answer the client reads, and why these numbers.

A registry is untrusted input: an Image's ``parent.ref`` may name any registry, and an answer
read whole could be as large as the registry likes (a 2 GiB "manifest" would get the operator
OOM-killed, and again after every restart).  Every body is therefore read up to a limit for its
kind; the announced ``Content-Length`` is checked before reading and the bytes are counted
while reading, so an absent or lying length gets no further.

- Manifests and indexes: 4 MiB, the limit the distribution spec sets for manifests (registries
  such as distribution itself refuse larger PUTs, so no real image has a larger one).
- Image configs: 8 MiB.  A config holds env, labels and one history entry per layer; real
  ones are a few KiB to a few hundred KiB.  Twice the manifest limit leaves room for images
  with very long histories while bounding memory.
- Token answers: 1 MiB.  A token is a JWT or an opaque string of a few KiB at most (cloud
  registries' are the largest, around 2-4 KiB).
- Error bodies: 64 KiB, read only to take the ``code`` values of the JSON error envelope.
- Blobs (layers) are never read into memory: they are streamed, hashed, and cut off at the
  descriptor's size when it is known.
"""

from __future__ import annotations

MANIFEST_LIMIT = 4 << 20
CONFIG_LIMIT = 8 << 20
TOKEN_LIMIT = 1 << 20
ERROR_BODY_LIMIT = 64 << 10
# Redirects followed for one request (GET and HEAD only), as browsers and Docker do.
MAX_REDIRECTS = 5
# A 429 whose Retry-After is longer than this is not waited for inside one request: the
# caller (the parent poller) backs off for the whole registry instead.
MAX_RETRY_AFTER_IN_CLIENT = 30.0


def mebibytes(limit: int) -> str:
    """``4 MiB (4194304 bytes)``: the limit as the messages name it."""
    if limit >= 1 << 20 and limit % (1 << 20) == 0:
        return f"{limit >> 20} MiB ({limit} bytes)"
    if limit >= 1 << 10 and limit % (1 << 10) == 0:
        return f"{limit >> 10} KiB ({limit} bytes)"
    return f"{limit} bytes"
