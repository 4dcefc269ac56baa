"""The advertise address's own network device (a /32 on a `dummy` link, or a port-less bridge
on kernels without the dummy driver): `up` adds it, `down` deletes it."""

from __future__ import annotations

import json
import shutil
import subprocess

from harness.errors import Fail
from harness.files import read_json, write_file
from harness.parse import ipv4_addresses
from harness.settings import Settings


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    ip_bin = shutil.which("ip") or "/usr/sbin/ip"
    r = subprocess.run([ip_bin, *args], capture_output=True, text=True, check=False)
    if check and r.returncode != 0:
        raise Fail(f"`ip {' '.join(args)}` failed: {r.stderr.strip()}")
    return r


def local_addresses() -> dict[str, str]:
    """IPv4 address -> device name, for every address on this machine."""
    return ipv4_addresses(ip("-o", "-4", "addr", "show").stdout)


def link_exists(name: str) -> bool:
    return ip("link", "show", "dev", name, check=False).returncode == 0


def ensure_netdev(s: Settings) -> str:
    """Make the advertise address a local address; returns a one-line description."""
    rec_path = s.run / "netdev.json"
    rec = read_json(rec_path)
    addrs = local_addresses()
    owner = addrs.get(s.advertise)
    if owner and owner != s.netdev:
        return f"advertise address {s.advertise} already on {owner} (not ours, left alone)"
    if not link_exists(s.netdev):
        kind = None
        r = None
        for candidate in ("dummy", "bridge"):
            # dummy is the natural choice; kernels built without it (this VM's) still have
            # bridges, and a bridge without ports is just as inert: no carrier, no traffic
            # beyond the local route of its own /32.
            r = ip("link", "add", s.netdev, "type", candidate, check=False)
            if r.returncode == 0:
                kind = candidate
                break
        if kind is None:
            err = r.stderr.strip() if r else ""
            raise Fail(
                f"could not create network device {s.netdev} (dummy or bridge): "
                f"{err} -- run as root, or set LAMINA_ADVERTISE_ADDRESS to a "
                "non-loopback address this machine already has"
            )
        rec = {"name": s.netdev, "kind": kind, "address": s.advertise}
        write_file(rec_path, json.dumps(rec) + "\n")
        # No IPv6 link-local address: nothing but our /32 lives on the device.
        ip("link", "set", "dev", s.netdev, "addrgenmode", "none", check=False)
    elif rec is None:
        # Same name as ours but no record (state dir wiped while it existed): it is ours by name.
        rec = {"name": s.netdev, "kind": "adopted", "address": s.advertise}
        write_file(rec_path, json.dumps(rec) + "\n")
    if owner != s.netdev:
        ip("addr", "add", f"{s.advertise}/32", "dev", s.netdev)
    ip("link", "set", "dev", s.netdev, "up")
    return f"{s.netdev} ({rec.get('kind')}) with {s.advertise}/32"


def remove_netdev(s: Settings) -> str | None:
    rec = read_json(s.run / "netdev.json")
    if not rec:
        return None
    name = str(rec["name"])
    gone = not link_exists(name)
    if not gone:
        ip("link", "del", "dev", name)
    (s.run / "netdev.json").unlink()
    return f"{name} (was already gone)" if gone else name


def netdev_ok(s: Settings) -> tuple[bool, str]:
    owner = local_addresses().get(s.advertise)
    if owner:
        return True, f"{s.advertise} on {owner}"
    return False, f"{s.advertise} is not a local address"
