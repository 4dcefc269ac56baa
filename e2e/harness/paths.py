"""Where the harness's scripts live in the repository (the package sits in <repo>/e2e/)."""

from __future__ import annotations

from pathlib import Path

E2E = Path(__file__).resolve().parent.parent
REPO = E2E.parent
BUILD_SCRIPT = E2E / "lib" / "build-binaries.sh"
VERSIONS_SH = E2E / "lib" / "versions.sh"
REGISTRY_SCRIPT = E2E / "registry"
IMAGES_SCRIPT = E2E / "lib" / "build-images.sh"
PACKAGES_SH = E2E / "lib" / "packages.sh"
KIND_YAML = E2E / "kind.yaml"
