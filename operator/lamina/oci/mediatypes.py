"""Media types, and how Docker's map onto OCI's.

Lamina writes OCI image manifests, always, whatever the parent's media types (see
:mod:`lamina.oci.image` for why).  Docker schema 2 and OCI describe the same bytes, so a
parent's Docker-typed layer or config is carried over by translating its media type; the
blob and its digest are unchanged.
"""

from __future__ import annotations

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_NONDISTRIBUTABLE_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_FOREIGN_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

MANIFESTS = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEXES = (OCI_INDEX, DOCKER_LIST)
ACCEPT_MANIFESTS = ", ".join((*MANIFESTS, *INDEXES))

_DOCKER_TO_OCI = {
    DOCKER_MANIFEST: OCI_MANIFEST,
    DOCKER_LIST: OCI_INDEX,
    DOCKER_CONFIG: OCI_CONFIG,
    DOCKER_LAYER_GZIP: OCI_LAYER_GZIP,
    DOCKER_FOREIGN_GZIP: OCI_NONDISTRIBUTABLE_GZIP,
}


def as_oci(media_type: str) -> str:
    """The OCI media type for the same bytes (OCI types pass through unchanged)."""
    return _DOCKER_TO_OCI.get(media_type, media_type)


def layer_media_type(compression: str) -> str:
    return OCI_LAYER_ZSTD if compression == "zstd" else OCI_LAYER_GZIP
