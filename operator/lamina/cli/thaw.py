"""``lamina thaw``: thaw a container that a killed committer may have left frozen.

The committer thaws in every exit path it can see, but SIGKILL (an OOM kill, a node-pressure
eviction) cannot be seen.  The operator then runs this on the container's node.  Thawing a
container that is not frozen is harmless, so it is always safe to run.
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "thaw",
        help="thaw a container's cgroup (after a committer was killed while it was frozen)",
        description="Thaw the cgroup of the container with this ID on this node.",
    )
    parser.add_argument("--container-id", required=True, help="containerd://ID or cri-o://ID")
    parser.add_argument("--proc-root", default="/proc", help="the host's /proc")
    parser.add_argument("--cgroup-root", default="/sys/fs/cgroup", help="the host's cgroupfs")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from lamina.snapshot.container import ContainerNotFound, find_init_process  # noqa: PLC0415
    from lamina.snapshot.freezer import CgroupFreezer  # noqa: PLC0415

    try:
        process = find_init_process(args.container_id, args.proc_root)
    except ContainerNotFound as error:
        # Gone containers are not frozen: nothing to do, and not a failure.
        print(json.dumps({"thawed": False, "reason": str(error)}))
        return 0
    freezer = CgroupFreezer.for_cgroups(process.cgroups, args.cgroup_root)
    was_frozen = freezer.is_frozen()
    freezer.thaw()
    print(json.dumps({"thawed": True, "wasFrozen": was_frozen, "pid": process.pid}))
    return 0
