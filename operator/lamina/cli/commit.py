"""``lamina commit POD --to REPO:TAG``: ``docker commit`` for a pod's container, followed to
the pushed image.

It creates a ContainerCommit (the operator does the work) and follows its status, printing a
line whenever the phase, the reason or the node changes.  Exit status: 0 when the image is
pushed and verified, 1 when the commit failed (the reason and message are printed), 124 when
``--timeout`` passed first, 130 on Ctrl-C.  Neither a timeout nor Ctrl-C stops the commit:
it is the cluster's now, and the command says how to keep watching it.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

from lamina.api.meta import API_VERSION, REPOSITORY_PATTERN, TAG_PATTERN
from lamina.cli.views import commit_progress_line, commit_state, commit_summary

if TYPE_CHECKING:
    from lamina.kube import Kube

EXIT_FAILED = 1
EXIT_TIMEOUT = 124
EXIT_INTERRUPTED = 130
POLL_SECONDS = 0.5


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "commit",
        help="snapshot a running container into an image (like docker commit)",
        description=(
            "Create a ContainerCommit of POD's container and follow it until the image is "
            "pushed. Ctrl-C stops following; the commit goes on in the cluster."
        ),
    )
    parser.add_argument("pod", metavar="POD")
    parser.add_argument("-c", "--container", help="container name (default: the pod's first)")
    parser.add_argument(
        "--to", required=True, metavar="REPO[:TAG]", help="where to push (tag default: latest)"
    )
    parser.add_argument("-n", "--namespace", default="default", help="namespace of the pod")
    parser.add_argument(
        "--no-pause",
        dest="pause",
        action="store_false",
        help="do not freeze the container while its writable layer is read",
    )
    parser.add_argument("-m", "--message", help="commit message (recorded in the image)")
    parser.add_argument("-a", "--author", help='author, e.g. "Jane <jane@example.com>"')
    parser.add_argument("--push-secret", help="kubernetes.io/dockerconfigjson Secret to push with")
    parser.add_argument("--insecure", action="store_true", help="the registry speaks plain HTTP")
    parser.add_argument(
        "--timeout",
        type=float,
        default=0.0,
        help="stop following after this many seconds (default: 0, follow until done)",
    )
    parser.set_defaults(run=run)


def split_target(target: str) -> tuple[str, str]:
    """``host:5000/team/app:v1`` -> (``host:5000/team/app``, ``v1``); no tag -> ``latest``."""
    repository, _, tag = target.rpartition(":")
    if not repository or "/" in tag:
        repository, tag = target, "latest"
    if not re.match(REPOSITORY_PATTERN, repository):
        raise ValueError(f"--to: {repository!r} is not a repository (host/path, lower case)")
    if not re.match(TAG_PATTERN, tag):
        raise ValueError(f"--to: {tag!r} is not a tag")
    return repository, tag


def commit_body(args: argparse.Namespace) -> dict[str, Any]:
    repository, tag = split_target(args.to)
    output: dict[str, Any] = {"repository": repository, "tag": tag}
    if args.insecure:
        output["insecure"] = True
    if args.push_secret:
        output["pushSecret"] = args.push_secret
    spec: dict[str, Any] = {"pod": args.pod, "output": output, "pause": args.pause}
    for key in ("container", "message", "author"):
        if getattr(args, key):
            spec[key] = getattr(args, key)
    # Commits are events: a generated name never collides with an earlier commit of the pod.
    return {
        "apiVersion": API_VERSION,
        "kind": "ContainerCommit",
        "metadata": {"generateName": f"{args.pod[:50].rstrip('-.')}-"},
        "spec": spec,
    }


def run(args: argparse.Namespace) -> int:
    try:
        body = commit_body(args)
    except ValueError as error:
        print(f"lamina commit: {error}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_create_and_follow(args, body))
    except KeyboardInterrupt:
        # asyncio.run re-raises the interrupt after cancelling the follow task.
        return EXIT_INTERRUPTED


async def _create_and_follow(args: argparse.Namespace, body: dict[str, Any]) -> int:
    from lamina.kube import Kube  # noqa: PLC0415 - only the commands that talk to the API pay
    from lamina.kube.client import describe_error  # noqa: PLC0415

    kube = await Kube.connect()
    try:
        try:
            created = await kube.create_returning("containercommits", args.namespace, body)
        except Exception as error:
            print(f"lamina commit: could not create the ContainerCommit: {describe_error(error)}")
            return EXIT_FAILED
        name = created["metadata"]["name"]
        target = f"{args.pod}" + (f", container {args.container}" if args.container else "")
        print(
            f"created ContainerCommit {args.namespace}/{name} ({target} -> {args.to})",
            flush=True,
        )
        try:
            return await follow(
                kube, args.namespace, name, give_up_after=args.timeout, out=sys.stdout
            )
        except (KeyboardInterrupt, asyncio.CancelledError):
            _still_running(args.namespace, name, "stopped following")
            raise KeyboardInterrupt from None
    finally:
        await kube.close()


def _still_running(namespace: str, name: str, why: str) -> None:
    print(
        f"{why}; the commit goes on in the cluster: "
        f"kubectl get containercommit {name} -n {namespace} -w",
        flush=True,
    )


async def follow(
    kube: Kube, namespace: str, name: str, *, give_up_after: float, out: TextIO
) -> int:
    """Print the commit's progress until it finishes (0, 1) or ``give_up_after`` passes (124)."""
    started = time.monotonic()
    shown: tuple[str, str, str, str] | None = None
    while True:
        found = await kube.get_object("containercommits", namespace, name)
        if found is None:
            print(f"ContainerCommit {namespace}/{name} was deleted", file=out, flush=True)
            return EXIT_FAILED
        status = found.get("status") or {}
        state = commit_state(status)
        elapsed = time.monotonic() - started
        if state != shown and (status or shown is None):
            print(commit_progress_line(elapsed, status), file=out, flush=True)
            shown = state
        if state[0] == "Succeeded":
            for line in commit_summary(status):
                print(line, file=out, flush=True)
            return 0
        if state[0] == "Failed":
            print(f"commit failed: {state[1]}: {state[2]}", file=out, flush=True)
            return EXIT_FAILED
        if give_up_after and elapsed >= give_up_after:
            print(
                f"timed out after {give_up_after:g}s, "
                f"still {state[0]} ({state[1] or 'no status yet'})",
                file=out,
                flush=True,
            )
            _still_running(namespace, name, "stopped following")
            return EXIT_TIMEOUT
        await asyncio.sleep(POLL_SECONDS)
