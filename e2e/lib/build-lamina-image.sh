#!/usr/bin/env bash
# Makes Lamina's own image for the local cluster and pushes it; prints its reference.
#
#   e2e/lib/build-lamina-image.sh REGISTRY_HOST:PORT
#
# The Dockerfile is the canonical build (`docker build .` where Docker exists).  Inside this
# cluster a build pod may not reach PyPI (no traffic leaves the machine), so the same content
# is assembled on the host instead: the local registry's python:3.11-slim (made by
# build-images.sh) plus one layer holding Lamina and its dependencies, installed by the host's
# pip into /usr/local/lib/python3.11/dist-packages.  The tag is a hash of the sources, so a
# changed operator gets a new tag and nodes never run a stale cached image.
set -euo pipefail

registry="${1:?usage: $0 REGISTRY_HOST:PORT}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=versions.sh
source "$repo/e2e/lib/versions.sh"
pip="${PIP:-$repo/.venv/bin/pip}"

log() { printf '[lamina-image] %s\n' "$*" >&2; }

tag="$(cd "$repo" && find operator pyproject.toml -type f \( -name '*.py' -o -name '*.toml' -o -name py.typed \) \
  | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-16)"
ref="$registry/lamina:$tag"
if skopeo inspect --tls-verify=false "docker://$ref" >/dev/null 2>&1; then
  echo "$ref"
  exit 0
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/lamina-image.XXXXXX")"
trap 'rm -rf "$work"' EXIT
stage="$work/layer"
site="$stage/usr/local/lib/python3.11/dist-packages"
mkdir -p "$site" "$stage/usr/local/bin"
log "installing lamina and its dependencies for python3.11 into the image layer"
# Lamina's own wheel first: pip installs --platform-pinned (binary-only) sets from wheels.
"$pip" wheel --quiet --no-deps --wheel-dir "$work/wheels" "$repo" >&2
"$pip" install --quiet --no-compile --disable-pip-version-check \
  --python-version 3.11 --platform manylinux2014_x86_64 --only-binary=:all: \
  --implementation cp --target "$site" "$work"/wheels/*.whl >&2
rm -rf "$site/bin"
cat > "$stage/usr/local/bin/lamina" <<'PY'
#!/usr/bin/python3
import sys

from lamina.cli.main import main

sys.exit(main())
PY
chmod 0755 "$stage/usr/local/bin/lamina"

log "assembling $ref on library/python:3.11-slim"
skopeo copy --quiet --src-tls-verify=false \
  "docker://$registry/library/python:3.11-slim" "oci:$work/oci:lamina" >&2
umoci insert --image "$work/oci:lamina" "$stage" / >&2
umoci config --image "$work/oci:lamina" --config.entrypoint lamina --config.cmd operator \
  --config.env PYTHONUNBUFFERED=1 --config.env PYTHONDONTWRITEBYTECODE=1 >&2
skopeo copy --quiet --dest-tls-verify=false "oci:$work/oci:lamina" "docker://$ref" >&2
echo "$ref"
