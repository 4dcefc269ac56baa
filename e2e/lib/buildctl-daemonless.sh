#!/bin/sh
# buildctl-daemonless.sh: start an ephemeral buildkitd, run `buildctl "$@"` against it, stop it.
# Behaves like BuildKit's own examples/buildctl-daemonless/buildctl-daemonless.sh (root mode):
#   BUILDKITD_FLAGS               extra buildkitd flags (e.g. --config /etc/buildkit/buildkitd.toml)
#   BUILDCTL_CONNECT_RETRIES_MAX  how many times to wait for buildkitd (default 50, ~0.2s apart)
# On failure to start, buildkitd's log is printed.  Part of Lamina's e2e builder image.
# Lamina's build Jobs pass every value from an Image's spec as one argument in "$@" (never
# through BUILDKITD_FLAGS, which is the operator's constant and is split into words on purpose,
# as upstream does); this script never evaluates its arguments.
set -eu
: "${BUILDCTL:=buildctl}"
: "${BUILDKITD:=buildkitd}"
: "${BUILDKITD_FLAGS:=}"
: "${BUILDCTL_CONNECT_RETRIES_MAX:=50}"

tmp=$(mktemp -d /tmp/buildctl-daemonless.XXXXXX)
addr="unix://$tmp/buildkitd.sock"
# shellcheck disable=SC2086
$BUILDKITD $BUILDKITD_FLAGS --addr="$addr" >"$tmp/log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$tmp"' EXIT

try=0
until $BUILDCTL --addr="$addr" debug workers >/dev/null 2>&1; do
  if [ "$try" -ge "$BUILDCTL_CONNECT_RETRIES_MAX" ] || ! kill -0 "$pid" 2>/dev/null; then
    echo "buildctl-daemonless.sh: buildkitd did not come up on $addr" >&2
    echo "========== buildkitd log ==========" >&2
    cat "$tmp/log" >&2
    exit 1
  fi
  sleep 0.2
  try=$((try + 1))
done
$BUILDCTL --addr="$addr" "$@"
