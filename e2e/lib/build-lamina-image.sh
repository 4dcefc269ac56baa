#!/usr/bin/env bash
# Lamina's own image for the local cluster, built the way users build it: from the repository's
# Dockerfile, by BuildKit, inside the cluster.
#
#   e2e/lib/build-lamina-image.sh [--namespace NS] REGISTRY_HOST:PORT
#                        build (unless the registry has it) and push; prints the reference
#   e2e/lib/build-lamina-image.sh --wheelhouse
#                        make the wheelhouse (set-up: the only step that reaches PyPI); prints
#                        its directory
#   e2e/lib/build-lamina-image.sh --wheelhouse-path
#                        print the wheelhouse's directory (made or not)
#
# Pods cannot reach PyPI (no traffic leaves the machine), so `e2e/setup` downloads Lamina's
# dependencies and its build backend once, as wheels for CPython 3.11 on manylinux x86_64, into
# $LAMINA_CACHE/wheels/lamina-<hash of pyproject.toml>.  The build context is the Dockerfile,
# pyproject.toml, README.md and operator/ plus that wheelhouse under wheelhouse/, which the
# Dockerfile installs from (`pip --no-index --find-links`) when it is there; without it
# (`docker build .` elsewhere) pip uses the network as usual.
#
# The build is a Job in NS (default lamina-system, created if missing) running the cluster's
# BuildKit image daemonless and privileged (as Lamina's own build Jobs do), with the context
# mounted from this host by hostPath: the node tier's node is this machine (on kind the node
# is a container, which does not see this host's files: there, `docker build` the Dockerfile).  The base image
# (library/python:3.11-slim, made offline by build-images.sh) comes from the cluster's registry.
# The tag is a hash of the context, so a changed operator gets a new tag and nodes never run a
# stale cached image.  kubectl is `e2e/cluster kubectl` with the caller's environment.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=versions.sh
source "$repo/e2e/lib/versions.sh"
pip="${PIP:-$repo/.venv/bin/pip}"
kubectl=("$repo/e2e/cluster" kubectl)
BUILD_TIMEOUT="${LAMINA_IMAGE_BUILD_TIMEOUT:-900}"

log() { printf '[lamina-image] %s\n' "$*" >&2; }

wheelhouse_path() {
  local key
  key="$(sha256sum "$repo/pyproject.toml" | cut -c1-16)"
  echo "$LAMINA_CACHE/wheels/lamina-cp311-$key"
}

make_wheelhouse() {
  local dir tmp
  dir="$(wheelhouse_path)"
  if [ -f "$dir/.done" ]; then echo "$dir"; return 0; fi
  tmp="$dir.tmp.$$"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  # The runtime dependencies and the build backend, read from pyproject.toml (one source).
  local requirements
  requirements="$("$repo/.venv/bin/python" - "$repo/pyproject.toml" <<'PY'
import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))
print("\n".join([*project["project"]["dependencies"], *project["build-system"]["requires"]]))
PY
)"
  # pip takes platform tags literally: every manylinux glibc level up to bookworm's 2.36.
  local platforms=(--platform any --platform manylinux2014_x86_64) v
  for v in 5 12 17 24 27 28 31 34 35 36; do platforms+=(--platform "manylinux_2_${v}_x86_64"); done
  log "downloading wheels for the in-cluster image build into $dir"
  printf '%s\n' "$requirements" > "$tmp/requirements.txt"
  "$pip" download --quiet --disable-pip-version-check --dest "$tmp" \
    --python-version 3.11 --implementation cp --abi cp311 --abi abi3 --abi none \
    "${platforms[@]}" --only-binary=:all: \
    -r "$tmp/requirements.txt" >&2
  rm -f "$tmp/requirements.txt"
  touch "$tmp/.done"
  rm -rf "$dir"
  mv "$tmp" "$dir"
  echo "$dir"
}

case "${1:-}" in
  --wheelhouse-path) wheelhouse_path; exit 0 ;;
  --wheelhouse) make_wheelhouse; exit 0 ;;
esac

namespace=lamina-system
if [ "${1:-}" = "--namespace" ]; then namespace="${2:?--namespace NS}"; shift 2; fi
registry="${1:?usage: $0 [--namespace NS] REGISTRY_HOST:PORT | --wheelhouse | --wheelhouse-path}"
wheels="$(wheelhouse_path)"
[ -f "$wheels/.done" ] || { log "no wheelhouse in $wheels: run e2e/setup"; exit 1; }

tag="$(cd "$repo" && find Dockerfile pyproject.toml README.md operator -type f \
  ! -name '*.pyc' ! -path '*/__pycache__/*' | LC_ALL=C sort | xargs sha256sum \
  | { cat; echo "$wheels"; } | sha256sum | cut -c1-16)"
ref="$registry/lamina:$tag"
if skopeo inspect --tls-verify=false "docker://$ref" >/dev/null 2>&1; then
  echo "$ref"
  exit 0
fi

t0=$SECONDS
context="$LAMINA_CACHE/contexts/lamina-$tag"
rm -rf "$context"
mkdir -p "$context/wheelhouse"
trap 'rm -rf "$context"' EXIT
(cd "$repo" && cp -r Dockerfile pyproject.toml README.md "$context/" \
  && tar -c --exclude=__pycache__ --exclude='*.pyc' operator | tar -x -C "$context")
cp "$wheels"/*.whl "$context/wheelhouse/"

"${kubectl[@]}" create namespace "$namespace" --dry-run=client -o yaml \
  | "${kubectl[@]}" apply -f - >/dev/null
job="lamina-image-$tag"
"${kubectl[@]}" -n "$namespace" delete job "$job" --ignore-not-found --wait=true >/dev/null
log "building $ref from the Dockerfile in the cluster (Job $namespace/$job)"
"${kubectl[@]}" -n "$namespace" apply -f - >/dev/null <<YAML
apiVersion: v1
kind: ConfigMap
metadata: {name: $job}
data:
  buildkitd.toml: |
    [registry."$registry"]
      http = true
      insecure = true
---
apiVersion: batch/v1
kind: Job
metadata:
  name: $job
  labels: {app.kubernetes.io/name: lamina-image-build, app.kubernetes.io/part-of: lamina}
spec:
  backoffLimit: 0
  activeDeadlineSeconds: $BUILD_TIMEOUT
  ttlSecondsAfterFinished: 600
  template:
    metadata:
      labels: {app.kubernetes.io/name: lamina-image-build}
    spec:
      restartPolicy: Never
      automountServiceAccountToken: false
      containers:
        - name: build
          image: docker.io/moby/buildkit:$BUILDKIT_VERSION
          command: [buildctl-daemonless.sh]
          args:
            - build
            - --frontend=dockerfile.v0
            - --local=context=/context
            - --local=dockerfile=/context
            - --opt=build-arg:PYTHON_IMAGE=$registry/library/python:3.11-slim
            - --output=type=image,name=$ref,push=true,registry.insecure=true
          env:
            - {name: BUILDKITD_FLAGS, value: --config /etc/buildkit/buildkitd.toml}
          securityContext: {privileged: true}
          volumeMounts:
            - {name: context, mountPath: /context, readOnly: true}
            - {name: buildkitd, mountPath: /etc/buildkit}
            - {name: state, mountPath: /var/lib/buildkit}
      volumes:
        - name: context
          hostPath: {path: "$context", type: Directory}
        - name: buildkitd
          configMap: {name: $job}
        - name: state
          emptyDir: {}
YAML

deadline=$((SECONDS + BUILD_TIMEOUT + 60))
while :; do
  state="$("${kubectl[@]}" -n "$namespace" get job "$job" \
    -o 'jsonpath={.status.succeeded}/{.status.failed}')"
  case "$state" in
    1/*) break ;;
    */[1-9]*)
      log "build failed; the build's log:"
      "${kubectl[@]}" -n "$namespace" logs "job/$job" --tail=60 >&2 || true
      exit 1 ;;
  esac
  if [ $SECONDS -ge $deadline ]; then
    log "build did not finish in ${BUILD_TIMEOUT}s"
    "${kubectl[@]}" -n "$namespace" describe job "$job" >&2 || true
    "${kubectl[@]}" -n "$namespace" logs "job/$job" --tail=60 >&2 || true
    exit 1
  fi
  sleep 2
done
"${kubectl[@]}" -n "$namespace" delete configmap "$job" --ignore-not-found >/dev/null
log "built and pushed $ref in $((SECONDS - t0))s"
echo "$ref"
