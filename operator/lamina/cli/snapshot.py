"""``lamina snapshot``: commit an overlay upperdir (or a running container's) as a new image.

This is the program a ContainerCommit's Job runs on the pod's node; it also works by hand on
explicit directories.  With ``--container-id`` the directories come from containerd (the task
bundle, the shim, the shim's mount table: :mod:`lamina.snapshot.runtime`), never from the
container; what does not check out is refused with the reason.  It prints one JSON document
(the operator reads it from the termination message) and exits 0, or prints
``lamina snapshot: <reason>`` on stderr and exits 1 (2 for bad arguments).

``python -m lamina.cli.snapshot ARGS`` runs the same command without importing the rest of
the ``lamina`` CLI (the operator's kopf and Kubernetes client): about 0.25 s and 37 MiB instead
of about 0.9 s and 85 MiB before the first byte is read, which matters for the "1 KiB change in
under a second" target.  The commit Job uses that form.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lamina.cli.committer import CommitRequest, commit
from lamina.domain.attestations import CommitSource
from lamina.oci.auth import InvalidCredentials
from lamina.oci.errors import RegistryError
from lamina.oci.hosts import InvalidRegistryConfig, RegistryHosts
from lamina.oci.image import ConfigChanges
from lamina.oci.reference import InvalidReference, parse_reference
from lamina.snapshot.freezer import CgroupFreezer, FreezeFailed
from lamina.snapshot.mountinfo import NotOverlay
from lamina.snapshot.runtime import (
    CRI_NAMESPACE,
    DEFAULT_ROOT,
    DEFAULT_STATE,
    ContainerdLayout,
    RuntimeRefused,
    locate_container,
)
from lamina.snapshot.tarstream import ChangedWhileReading
from lamina.snapshot.upper import UnsupportedOverlay, UpperWalk

_EXPECTED_FAILURES = (
    RegistryError,
    InvalidRegistryConfig,
    InvalidReference,
    InvalidCredentials,
    UnsupportedOverlay,
    ChangedWhileReading,
    RuntimeRefused,
    NotOverlay,
    FreezeFailed,
    LookupError,
    OSError,
    ValueError,
)


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "snapshot",
        help="commit an overlay upperdir or a running container as a new image",
        description=(
            "Turn an overlay upperdir (with its lower dirs) into an OCI layer on top of the "
            "parent image and push the result.  Prints a JSON result."
        ),
        # Every value the operator passes comes as --name=VALUE; no abbreviations, so no
        # value can be taken for another option.
        allow_abbrev=False,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--upper", type=Path, help="the overlay upperdir")
    source.add_argument(
        "--container-id",
        help="containerd://ID: the container's overlay, as its containerd shim mounted it",
    )
    parser.add_argument(
        "--containerd-root",
        default=DEFAULT_ROOT,
        help="containerd's root directory (its overlayfs snapshots are under it)",
    )
    parser.add_argument(
        "--containerd-state", default=DEFAULT_STATE, help="containerd's state directory"
    )
    parser.add_argument(
        "--containerd-namespace",
        default=CRI_NAMESPACE,
        help="the containerd namespace of the container (the CRI's is k8s.io)",
    )
    parser.add_argument(
        "--lower",
        default="",
        help="lower dirs, topmost first, colon-separated (as in mountinfo's lowerdir=)",
    )
    parser.add_argument("--parent", required=True, help="the parent image reference")
    parser.add_argument("--to", required=True, help="where to push: registry/repo[:tag]")
    parser.add_argument(
        "--insecure", action="store_true", help="the --to registry speaks plain HTTP"
    )
    parser.add_argument(
        "--insecure-registry",
        action="append",
        default=[],
        metavar="HOST",
        help="another registry (e.g. the parent's) that speaks plain HTTP; repeatable",
    )
    parser.add_argument("--compression", choices=("gzip", "zstd"), default="gzip")
    parser.add_argument("--threads", type=int, default=2, help="compression threads")
    parser.add_argument("--message", help="history comment of the new layer")
    parser.add_argument("--author", help="author of the new image")
    parser.add_argument(
        "--created-by", default="lamina snapshot", help="history created_by (names the commit)"
    )
    parser.add_argument(
        "--exclude", action="append", default=[], metavar="PATH", help="leave PATH out"
    )
    parser.add_argument(
        "--mount-target",
        action="append",
        default=[],
        metavar="PATH",
        help="a bind-mount target whose stub file is left out (--container-id reads them "
        "from the task's OCI spec)",
    )
    parser.add_argument(
        "--userxattr", action="store_true", help="overlay markers are user.overlay.*"
    )
    parser.add_argument(
        "--change-json",
        default=None,
        help='config changes as JSON, e.g. {"env":[{"name":"A","value":"1"}],"cmd":["sh"]}',
    )
    parser.add_argument(
        "--commit-json",
        default=None,
        help="message, author, exclude and changes as one JSON object, instead of their options "
        "(what the operator passes: free text then never meets the option parser)",
    )
    parser.add_argument(
        "--source-json",
        default=None,
        help="who asked for the commit and of which container, as one JSON object "
        "(namespace, name, uid, pod, container, containerID, node): the committed image's "
        "provenance names them",
    )
    parser.add_argument(
        "--docker-config",
        type=Path,
        default=os.environ.get("LAMINA_DOCKER_CONFIG"),
        help="a .dockerconfigjson file with registry credentials ($LAMINA_DOCKER_CONFIG)",
    )
    parser.add_argument("--pause", action="store_true", help="freeze the container while reading")
    parser.add_argument(
        "--host-root",
        default="/",
        help="where the node's root filesystem is seen (runtime paths are prefixed)",
    )
    parser.add_argument("--proc-root", default="/proc", help="the host's /proc")
    parser.add_argument("--cgroup-root", default="/sys/fs/cgroup", help="the host's cgroupfs")
    parser.add_argument("--retries", type=int, default=4, help="retries for 5xx/connection errors")
    parser.set_defaults(run=run)


def main(argv: list[str] | None = None) -> int:
    """``python -m lamina.cli.snapshot``: this command alone, with its light imports."""
    parser = argparse.ArgumentParser(prog="lamina")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["snapshot", *(sys.argv[1:] if argv is None else argv)])
    exit_code: int = args.run(args)
    return exit_code


def run(args: argparse.Namespace) -> int:
    try:
        request = build_request(args)
        result = asyncio.run(commit(request))
    except _EXPECTED_FAILURES as error:
        sys.stderr.write(f"lamina snapshot: {error}\n")
        return 1
    sys.stdout.write(json.dumps(result, indent=2) + "\n")
    return 0


@dataclass(frozen=True)
class CommitValues:
    """The free text of a commit: what a ContainerCommit's spec says, never trusted as argv."""

    message: str | None = None
    author: str | None = None
    exclude: tuple[str, ...] = ()
    changes: dict[str, Any] | None = None


_COMMIT_KEYS = frozenset({"message", "author", "exclude", "changes"})


def commit_values(args: argparse.Namespace) -> CommitValues:
    """From ``--commit-json`` or from the separate options (never both).

    The operator uses ``--commit-json``: a JSON object is one argv element that starts with
    ``{``, so no value inside can be read as an option, nor mangled the way argparse drops a
    value of exactly ``--``.
    """
    if args.commit_json is None:
        changes = json.loads(args.change_json) if args.change_json else None
        if changes is not None and not isinstance(changes, dict):
            raise ValueError("--change-json must be a JSON object")
        return CommitValues(args.message, args.author, tuple(args.exclude), changes)
    if args.message is not None or args.author is not None or args.exclude or args.change_json:
        raise ValueError(
            "--commit-json replaces --message, --author, --exclude and --change-json: "
            "give one or the other"
        )
    data = json.loads(args.commit_json)
    if not isinstance(data, dict):
        raise ValueError("--commit-json must be a JSON object")
    if unknown := sorted(set(data) - _COMMIT_KEYS):
        raise ValueError(f"--commit-json: unknown keys {unknown}")
    for key in ("message", "author"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise ValueError(f"--commit-json: {key} must be a string")
    exclude = data.get("exclude") or []
    if not isinstance(exclude, list) or not all(isinstance(path, str) for path in exclude):
        raise ValueError("--commit-json: exclude must be a list of strings")
    changes = data.get("changes")
    if changes is not None and not isinstance(changes, dict):
        raise ValueError("--commit-json: changes must be a JSON object")
    return CommitValues(data.get("message"), data.get("author"), tuple(exclude), changes)


def build_request(args: argparse.Namespace) -> CommitRequest:
    # The parent is read through the node's mirrors ($LAMINA_REGISTRY_CONFIG), as the node
    # pulled it; the result still names it as the container did.
    hosts = RegistryHosts.from_environment()
    named_parent = parse_reference(args.parent)
    parent = hosts.pull_from(named_parent)
    target = parse_reference(args.to)
    if target.digest:
        raise ValueError("--to takes a tag, not a digest")
    insecure = set(args.insecure_registry) | hosts.insecure
    if args.insecure:
        insecure.add(target.registry)
    docker_config = None
    if args.docker_config is not None:
        try:
            docker_config = json.loads(Path(args.docker_config).read_text())
        except ValueError as error:
            raise InvalidCredentials(f"{args.docker_config}: not JSON: {error}") from error
    values = commit_values(args)
    changes = ConfigChanges()
    if values.changes is not None:
        changes = ConfigChanges.from_json(values.changes)
    freeze: Callable[[], contextlib.AbstractContextManager[Callable[[], float]]] | None = None
    if args.upper is not None:
        if args.pause:
            raise ValueError("--pause needs --container-id")
        walk = UpperWalk.create(
            args.upper,
            [lower for lower in args.lower.split(":") if lower],
            userxattr=args.userxattr,
            exclude=values.exclude,
            mount_targets=args.mount_target,
        )
    else:
        layout = ContainerdLayout.create(
            root=args.containerd_root,
            state=args.containerd_state,
            namespace=args.containerd_namespace,
            host_root=args.host_root,
            proc_root=args.proc_root,
        )
        container = locate_container(args.container_id, layout)
        walk = UpperWalk.create(
            container.upper,
            container.lowers,
            userxattr=container.userxattr,
            exclude=values.exclude,
            mount_targets=[*container.mount_targets, *map(os.fsencode, args.mount_target)],
        )
        if args.pause:
            freezer = CgroupFreezer.for_cgroups(container.cgroups, args.cgroup_root)
            freeze = freezer.frozen
    return CommitRequest(
        walk=walk,
        parent=parent,
        parent_name=named_parent,
        target=target,
        insecure=frozenset(insecure),
        docker_config=docker_config,
        compression=args.compression,
        threads=args.threads,
        created_by=args.created_by,
        message=values.message,
        author=values.author,
        changes=changes,
        retries=args.retries,
        freeze=freeze,
        source=None
        if args.source_json is None
        else CommitSource.from_json(json.loads(args.source_json)),
    )


if __name__ == "__main__":
    sys.exit(main())
