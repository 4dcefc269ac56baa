"""Node-tier steps before its components start: configuration files, host preparation, the
local registry and the offline images pushed to it."""

from __future__ import annotations

from harness.config.node_files import node_config_files
from harness.files import write_file
from harness.host.prepare import prepare_host
from harness.host.tools import push_images, registry_up
from harness.log import say
from harness.steps.base import UpContext


def node_config(ctx: UpContext) -> None:
    """containerd's config.toml and hosts.toml files, the CNI network, the kubelet's and
    kube-proxy's configurations, the pods' resolv.conf, Lamina's registries.yaml."""
    for path, text in node_config_files(ctx.s).items():
        write_file(path, text)


def host(ctx: UpContext) -> None:
    done = prepare_host(ctx.s)
    say("host: " + (", ".join(done) or "nothing to change"))


def registry(ctx: UpContext) -> None:
    registry_up(ctx.s)


def images(ctx: UpContext) -> None:
    took = push_images(ctx.s.registry)
    say(f"images ready in the registry ({took:.1f}s)")
