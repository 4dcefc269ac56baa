#!/bin/sh
# BuildKit's SBOM scanner protocol (frontend/attestations/sbom): BuildKit mounts the image's
# root filesystem read-only at $BUILDKIT_SCAN_SOURCE and an empty directory at
# $BUILDKIT_SCAN_DESTINATION; each file written there is one in-toto statement, whose subject
# BuildKit sets to the image.  This writes one: syft's SPDX 2.3 JSON of the root filesystem.
set -eu
src="${BUILDKIT_SCAN_SOURCE:?BUILDKIT_SCAN_SOURCE is not set: run by BuildKit as an SBOM generator}"
out="${BUILDKIT_SCAN_DESTINATION:?BUILDKIT_SCAN_DESTINATION is not set}"
tmp="${TMPDIR:-/tmp}/sbom.spdx.json"
syft scan "dir:$src" --quiet --source-name image --output "spdx-json=$tmp"
{
  printf '{"_type":"https://in-toto.io/Statement/v0.1","predicateType":"https://spdx.dev/Document","subject":[],"predicate":'
  cat "$tmp"
  printf '}\n'
} > "$out/sbom.spdx.json"
rm -f "$tmp"
