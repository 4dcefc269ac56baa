"""What a running cluster was started with: when `up` keeps it, switches its tier in place, or
restarts it, and which components it restarts."""

from __future__ import annotations

from typing import Any

import pytest

from harness.components import API_COMPONENTS, NODE_COMPONENTS
from harness.config.argv import ARGV
from harness.config.fingerprint import (
    fingerprint,
    first_to_restart,
    other_tier_same_control_plane,
)
from tests.unit.test_harness_settings import make_settings


def test_fingerprint_holds_every_command_line_of_the_tier() -> None:
    s = make_settings("node")
    fp = fingerprint(s, "node")
    assert fp["tier"] == "node"
    assert set(fp["argv"]) == set(NODE_COMPONENTS)
    assert fp["argv"]["kubelet"] == ARGV["kubelet"](s)
    assert "containerd/config.toml" in fp["configs"]
    api = fingerprint(make_settings("api"), "api")
    assert set(api["argv"]) == set(API_COMPONENTS)
    assert "configs" not in api


def test_same_settings_same_fingerprint_other_settings_another() -> None:
    assert fingerprint(make_settings("api"), "api") == fingerprint(make_settings("api"), "api")
    for env in ({"LAMINA_KCM_PORT": "17081"}, {"LAMINA_NETDEV": "other"}):
        assert fingerprint(make_settings("api", **env), "api") != fingerprint(
            make_settings("api"), "api"
        )


def test_the_tiers_of_one_control_plane_switch_in_place() -> None:
    api = fingerprint(make_settings("api"), "api")
    node = fingerprint(make_settings("node"), "node")
    assert other_tier_same_control_plane(api, node)
    assert other_tier_same_control_plane(node, api)
    # Same tier: not a switch (a change there is a restart).
    assert not other_tier_same_control_plane(api, api)


@pytest.mark.parametrize(
    "env",
    [
        {"LAMINA_ETCD_PORT": "24080"},
        {"LAMINA_APISERVER_PORT": "17080"},
        {"LAMINA_ADVERTISE_ADDRESS": "10.213.0.9"},
        {"LAMINA_SERVICE_CIDR": "10.100.0.0/16"},
    ],
)
def test_another_control_plane_is_restarted_not_switched(env: dict[str, str]) -> None:
    api = fingerprint(make_settings("api"), "api")
    node = fingerprint(make_settings("node", **env), "node")
    assert not other_tier_same_control_plane(api, node)


def healthy_until(bad: str | None) -> Any:
    asked: list[str] = []

    def healthy(name: str) -> bool:
        asked.append(name)
        return name != bad

    healthy.asked = asked  # type: ignore[attr-defined]
    return healthy


def test_the_first_unhealthy_component_restarts_and_later_ones_are_not_asked() -> None:
    healthy = healthy_until("kube-apiserver")
    assert first_to_restart(API_COMPONENTS, healthy, None, {}) == 1
    assert healthy.asked == ["etcd", "kube-apiserver"]
    assert first_to_restart(API_COMPONENTS, healthy_until(None), None, {}) is None


def test_a_tier_switch_restarts_from_the_first_changed_command_line() -> None:
    api, node = make_settings("api"), make_settings("node")
    running = fingerprint(api, "api")["argv"]
    wanted = fingerprint(node, "node")["argv"]
    # api -> node: the API server's flags change (bind address, kubelet client).
    assert first_to_restart(NODE_COMPONENTS, healthy_until("kube-scheduler"), running, wanted) == 1
    # node -> api: nothing of the control plane changes but the API server.
    back = fingerprint(api, "api")["argv"]
    assert first_to_restart(API_COMPONENTS, healthy_until(None), wanted, back) == 1
    # An unhealthy etcd comes first.
    assert first_to_restart(NODE_COMPONENTS, healthy_until("etcd"), running, wanted) == 0
