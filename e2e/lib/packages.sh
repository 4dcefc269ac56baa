# shellcheck shell=bash
# Debian packages the test tiers need, installed only when missing.
#
#   source e2e/lib/packages.sh
#   ensure_packages docker-registry skopeo umoci attr
#
# ensure_packages PKG...  installs the PKGs that `dpkg-query` does not report as installed,
#                         running `apt-get update` first (at most once per shell, and only when
#                         something is missing).  Idempotent: a second call with the same
#                         packages does nothing and prints nothing.  Needs root (or sudo) and
#                         Debian's package mirrors; fails with apt's own message otherwise.
#
# Environment: LAMINA_APT_UPDATED=1 skips the `apt-get update` (set it when you just ran one).

ensure_packages() {
    local missing=() pkg
    for pkg in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q '^install ok installed$'; then
            missing+=("$pkg")
        fi
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    local sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    if [ "${LAMINA_APT_UPDATED:-0}" != 1 ]; then
        echo "packages: apt-get update (to install ${missing[*]})" >&2
        "${sudo[@]}" apt-get update -qq >&2 || return 1
        export LAMINA_APT_UPDATED=1
    fi
    echo "packages: installing ${missing[*]}" >&2
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >&2
}
