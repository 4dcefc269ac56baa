"""Pure parsers of what the kernel and the network tools print (unit-tested)."""

from __future__ import annotations

from dataclasses import dataclass


def proc_stat(raw: str) -> tuple[str, int]:
    """(state letter, start time in clock ticks since boot) from /proc/<pid>/stat."""
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[19])


def unescape_mountinfo(path: str) -> str:
    return (
        path.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
    )


@dataclass(frozen=True)
class Mount:
    mount_point: str
    optional: tuple[str, ...]  # shared:N, master:N, ...
    fstype: str


def mountinfo(text: str) -> list[Mount]:
    """The mounts of /proc/<pid>/mountinfo, in its order (oldest first)."""
    mounts = []
    for line in text.splitlines():
        pre, _, post = line.partition(" - ")
        fields = pre.split()
        mounts.append(
            Mount(unescape_mountinfo(fields[4]), tuple(fields[6:]), (post.split() or [""])[0])
        )
    return mounts


def root_propagation(mounts: list[Mount]) -> str:
    """ "shared", "slave" or "private": the propagation of the (last) mount at /."""
    kind = "private"
    for m in mounts:
        if m.mount_point == "/":
            opt = m.optional
            if any(o.startswith("shared:") for o in opt):
                kind = "shared"
            elif any(o.startswith("master:") for o in opt):
                kind = "slave"
            else:
                kind = "private"
    return kind


def mounts_under(mounts: list[Mount], roots: list[str]) -> list[str]:
    """Mount points at or below any of `roots`, oldest first."""
    return [
        m.mount_point
        for m in mounts
        if any(m.mount_point == r or m.mount_point.startswith(r.rstrip("/") + "/") for r in roots)
    ]


def cgroup_mount_points(mounts: list[Mount]) -> list[str]:
    return [m.mount_point for m in mounts if m.fstype in ("cgroup", "cgroup2")]


def ipv4_addresses(ip_o_4_addr_show: str) -> dict[str, str]:
    """IPv4 address -> device name, from `ip -o -4 addr show`."""
    found = {}
    for line in ip_o_4_addr_show.splitlines():
        parts = line.split()
        if "inet" in parts:
            found[parts[parts.index("inet") + 1].split("/")[0]] = parts[1].rstrip(":")
    return found


def bridge_ports(ip_o_link_show_master: str) -> list[str]:
    """Device names from `ip -o link show master BRIDGE` ("5: veth1@if4: <...")."""
    return [
        line.split(":")[1].strip().split("@")[0]
        for line in ip_o_link_show_master.splitlines()
        if line.strip()
    ]


def unix_socket_paths(proc_net_unix: str) -> set[str]:
    """Filesystem paths of the bound unix sockets in /proc/net/unix (abstract ones skipped)."""
    paths = set()
    for line in proc_net_unix.splitlines()[1:]:
        fields = line.split(maxsplit=7)
        if len(fields) == 8 and fields[7].startswith("/"):
            paths.add(fields[7])
    return paths


def flag_value(argv: list[str], flag: str) -> str | None:
    """The value after `flag` in a command line (`-address PATH`), or None."""
    if flag in argv[:-1]:
        return argv[argv.index(flag) + 1]
    return None
