"""The Helm chart on a real API server: it lints, its schema refuses typos, everything it renders
is accepted by the API server (``helm template | kubectl apply --dry-run=server``), it installs
under the "restricted" Pod Security profile, its RBAC is enough for the operator to work and no
more, and ``helm uninstall`` leaves users' objects and the CRDs.

The operator here runs outside the cluster but with the chart's ServiceAccount token, so every
request it makes is authorised exactly as it would be in its pod.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from lamina.domain.sbom_scan import SCAN_PURPOSE
from tests.conftest import (
    REPO,
    KubeCluster,
    require_setup,
    service_account_kubeconfig,
    start_operator,
    stop_operator,
    wait_for,
)

pytestmark = pytest.mark.api

CHART = REPO / "charts" / "lamina"
IMAGE = ["--set", "image.repository=localhost:5000/lamina", "--set", "image.tag=dev"]


@pytest.fixture(scope="module")
def helm() -> str:
    """The harness's helm (built from Go modules by e2e/setup, cached like the cluster's)."""
    require_setup("binaries")
    script = (
        f'source {REPO}/e2e/lib/versions.sh && echo "$LAMINA_CACHE/bin/helm-$HELM_VERSION/helm"'
    )
    path = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert Path(path).is_file(), path
    return path


def run_helm(
    helm: str, kube: KubeCluster, *args: str, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [helm, *args, "--kubeconfig", kube.kubeconfig],
        input=input,
        capture_output=True,
        text=True,
        check=False,
    )


def restricted_namespace(kube: KubeCluster) -> str:
    namespace = f"lamina-{uuid.uuid4().hex[:6]}"
    kube.kubectl("create", "namespace", namespace, check=True)
    kube.kubectl(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted", check=True
    )
    return namespace


@pytest.fixture(scope="module")
def release(crds_installed: KubeCluster, helm: str) -> Iterator[tuple[str, str]]:
    namespace = restricted_namespace(crds_installed)
    installed = run_helm(
        helm, crds_installed, "install", "lamina", str(CHART), "-n", namespace, *IMAGE
    )
    assert installed.returncode == 0, installed.stderr
    yield namespace, "lamina"
    run_helm(helm, crds_installed, "uninstall", "lamina", "-n", namespace)
    crds_installed.kubectl("delete", "namespace", namespace, "--wait=false")


def test_chart_lints(helm: str) -> None:
    result = subprocess.run(
        [helm, "lint", "--strict", str(CHART), *IMAGE], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_values_schema_refuses_what_the_chart_does_not_know(helm: str) -> None:
    for setting, complaint in (
        ("image.tagg=1", "additional properties 'tagg' not allowed"),
        ("metricsPort=0", "/metricsPort"),
        ("watchNamespaces[0]=Not_A_Namespace", "/watchNamespaces/0"),
        ("metrics.serviceMonitor.interval=soon", "/metrics/serviceMonitor/interval"),
    ):
        result = subprocess.run(
            [helm, "template", "x", str(CHART), "--set", setting],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode != 0, setting
        assert "values don't meet the specifications of the schema" in result.stderr, result.stderr
        assert complaint in result.stderr, result.stderr


def test_rendered_chart_is_accepted_by_the_api_server(
    crds_installed: KubeCluster, helm: str
) -> None:
    """Every object the chart renders (cluster-wide, and with watchNamespaces: one Role per
    namespace) passes the API server's validation and admission, without being stored."""
    namespace = restricted_namespace(crds_installed)
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    crds_installed.kubectl("create", "namespace", tenant, check=True)
    try:
        for extra in ([], ["--set", f"watchNamespaces={{{tenant}}}"]):
            rendered = subprocess.run(
                [helm, "template", "lamina", str(CHART), "-n", namespace, *IMAGE, *extra],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            kinds = sorted({doc["kind"] for doc in yaml.safe_load_all(rendered) if doc})
            assert {"Deployment", "Service", "ClusterRole", "Role"} <= set(kinds), kinds
            assert "ServiceMonitor" not in kinds  # off by default
            applied = crds_installed.kubectl("apply", "--dry-run=server", "-f", "-", input=rendered)
            assert applied.returncode == 0, applied.stderr
            assert "(server dry run)" in applied.stdout, applied.stdout
        # Nothing was stored.
        assert crds_installed.get("deployment", "lamina", namespace) is None
    finally:
        crds_installed.kubectl("delete", "namespace", namespace, tenant, "--wait=false")


def test_service_monitor_is_rendered_only_when_enabled(helm: str) -> None:
    rendered = subprocess.run(
        [
            helm,
            "template",
            "lamina",
            str(CHART),
            "-n",
            "ops",
            *IMAGE,
            "--set",
            "metrics.serviceMonitor.enabled=true",
            "--set",
            "metrics.serviceMonitor.labels.release=prom",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    docs = {doc["kind"]: doc for doc in yaml.safe_load_all(rendered) if doc}
    monitor, service = docs["ServiceMonitor"], docs["Service"]
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["ops"]}
    # It selects the metrics Service by its labels, and scrapes its named port.
    for key, value in monitor["spec"]["selector"]["matchLabels"].items():
        assert service["metadata"]["labels"][key] == value
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    refused = subprocess.run(
        [
            helm,
            "template",
            "lamina",
            str(CHART),
            *IMAGE,
            "--set",
            "metrics.serviceMonitor.enabled=true",
            "--set",
            "metrics.service.enabled=false",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode != 0
    assert "metrics.serviceMonitor.enabled needs metrics.service.enabled" in refused.stderr


NETWORK_POLICY = [
    "--set", "buildNetworkPolicy.enabled=true",
    "--set", "buildNetworkPolicy.egress[0].cidr=10.20.0.0/24",
    "--set", "buildNetworkPolicy.egress[0].ports={443,5000}",
    "--set", "buildNetworkPolicy.egress[1].cidr=0.0.0.0/0",
    "--set", "buildNetworkPolicy.egress[1].except={169.254.0.0/16,10.0.0.0/8}",
    "--set", "buildNetworkPolicy.egress[1].ports={443}",
]  # fmt: skip


def _build_pod_labels() -> dict[str, str]:
    """The labels of a real build pod, as the operator makes its Job."""
    from lamina.api.image import ImageSpec  # noqa: PLC0415
    from lamina.domain.build_job import BuildSettings, build_job  # noqa: PLC0415

    spec = ImageSpec.model_validate(
        {
            "parent": {"ref": "registry.example/base:1"},
            "build": {"steps": ["RUN true"]},
            "output": {"repository": "registry.example/app"},
        }
    )
    job = build_job(
        namespace="team",
        name="app",
        uid="u",
        inputs="0" * 16,
        spec=spec,
        parent="registry.example/base@sha256:" + "1" * 64,
        settings=BuildSettings(
            namespace="ops", builder_image="moby/buildkit:test", deadline_seconds=600
        ),
        context_config_map="ctx",
        push_secret_copy=None,
    )
    return dict(job["spec"]["template"]["metadata"]["labels"])


def test_the_build_network_policy_confines_build_pods_when_enabled(
    crds_installed: KubeCluster, helm: str
) -> None:
    """Off by default; on, it selects the operator's build pods (the labels of a Job the
    operator makes, not a copy of them), takes all ingress, and lets egress out only to the
    listed CIDRs and ports and to DNS; the API server accepts it."""
    default = subprocess.run(
        [helm, "template", "lamina", str(CHART), *IMAGE], capture_output=True, text=True, check=True
    ).stdout
    assert "NetworkPolicy" not in {doc["kind"] for doc in yaml.safe_load_all(default) if doc}

    namespace = restricted_namespace(crds_installed)
    try:
        rendered = subprocess.run(
            [helm, "template", "lamina", str(CHART), "-n", namespace, *IMAGE, *NETWORK_POLICY],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        (policy,) = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "NetworkPolicy"]
        assert policy["metadata"]["namespace"] == namespace
        spec = policy["spec"]
        labels = _build_pod_labels()
        assert spec["podSelector"]["matchLabels"].items() <= labels.items()
        # Build pods and SBOM scan pods (a crafted file in the scanned image may own syft).
        (purpose,) = spec["podSelector"]["matchExpressions"]
        assert purpose["key"] == "lamina.dev/purpose" and purpose["operator"] == "In"
        assert labels["lamina.dev/purpose"] in purpose["values"]
        assert SCAN_PURPOSE in purpose["values"]
        assert spec["policyTypes"] == ["Ingress", "Egress"] and spec["ingress"] == []
        registries, world, dns = spec["egress"]
        assert registries == {
            "to": [{"ipBlock": {"cidr": "10.20.0.0/24"}}],
            "ports": [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 5000}],
        }
        assert world["to"] == [
            {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.0.0/16", "10.0.0.0/8"]}}
        ]
        assert dns["ports"] == [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
        assert dns["to"][0]["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}
        applied = crds_installed.kubectl("apply", "--dry-run=server", "-f", "-", input=rendered)
        assert applied.returncode == 0, applied.stderr
        assert "networkpolicy.networking.k8s.io/lamina-builds created (server dry run)" in (
            applied.stdout
        )
    finally:
        crds_installed.kubectl("delete", "namespace", namespace, "--wait=false")

    for extra, complaint in (
        (["--set", "buildNetworkPolicy.enabled=true"], "needs buildNetworkPolicy.egress"),
        (
            ["--set", "buildNetworkPolicy.egress[0].cidr=everywhere"],
            "/buildNetworkPolicy/egress/0/cidr",
        ),
        (
            ["--set", "buildNetworkPolicy.egress[0].cidr=10.0.0.0/8",
             "--set", "buildNetworkPolicy.egress[0].ports={0}"],
            "/buildNetworkPolicy/egress/0/ports/0",
        ),
    ):  # fmt: skip
        refused = subprocess.run(
            [helm, "template", "lamina", str(CHART), *IMAGE, *extra],
            capture_output=True,
            text=True,
            check=False,
        )
        assert refused.returncode != 0, extra
        assert complaint in refused.stderr, refused.stderr


def test_operator_pod_is_admitted_under_restricted(
    crds_installed: KubeCluster, release: tuple[str, str]
) -> None:
    namespace, _ = release

    # The ReplicaSet controller creates the Pod only if Pod Security admission accepts it.
    def pods() -> list[dict[str, object]]:
        listed = crds_installed.kubectl("get", "pods", "-n", namespace, "-o", "json", check=True)
        return json.loads(listed.stdout)["items"]  # type: ignore[no-any-return]

    created = wait_for(pods, what="operator pod created by the Deployment")
    container = created[0]["spec"]["containers"][0]  # type: ignore[index]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["image"] == "localhost:5000/lamina:dev"
    assert container["resources"]["limits"]["memory"] == "512Mi"


def can(kube: KubeCluster, account: str, verb: str, resource: str, *where: str) -> bool:
    result = kube.kubectl("auth", "can-i", verb, resource, "--as", account, *(where or ("-A",)))
    return result.stdout.strip() == "yes"


def test_rbac_is_least_privilege(crds_installed: KubeCluster, release: tuple[str, str]) -> None:
    namespace, name = release
    account = f"system:serviceaccount:{namespace}:{name}"
    here = ("-n", namespace)
    elsewhere = ("-n", "default")

    assert can(crds_installed, account, "watch", "images.lamina.dev")
    assert can(crds_installed, account, "patch", "images.lamina.dev", "--subresource=status", "-A")
    assert can(crds_installed, account, "watch", "pods")  # commit targets, in any namespace
    # Push Secrets are read by name, never listed; copies are created only in its namespace.
    assert can(crds_installed, account, "get", "secrets")
    assert not can(crds_installed, account, "list", "secrets")
    assert not can(crds_installed, account, "create", "secrets", *elsewhere)
    assert can(crds_installed, account, "create", "secrets", *here)
    # Jobs: only in the operator's namespace, for every verb (it watches them nowhere else).
    for verb in ("get", "list", "watch", "create", "delete"):
        assert can(crds_installed, account, verb, "jobs", *here), verb
        assert not can(crds_installed, account, verb, "jobs", *elsewhere), verb
        assert not can(crds_installed, account, verb, "jobs"), verb
    # A scan Job's log (its SBOM): only in the operator's namespace, never a tenant's pods'.
    assert can(crds_installed, account, "get", "pods", "--subresource=log", *here)
    assert not can(crds_installed, account, "get", "pods", "--subresource=log", *elsewhere)
    assert not can(crds_installed, account, "get", "pods", "--subresource=log")
    assert not can(crds_installed, account, "delete", "images.lamina.dev")
    assert not can(crds_installed, account, "delete", "layers.lamina.dev")
    assert not can(crds_installed, account, "create", "pods")
    assert not can(crds_installed, account, "create", "pods", *here)
    assert not can(crds_installed, account, "update", "containercommits.lamina.dev")
    assert not can(crds_installed, account, "patch", "images.lamina.dev")


def test_watch_namespaces_confines_tenant_access_to_them(
    crds_installed: KubeCluster, helm: str, tmp_path: Path
) -> None:
    """With watchNamespaces, Pods, Secrets and ConfigMaps are granted only there, and the
    operator (watching only there) works with that."""
    namespace = restricted_namespace(crds_installed)
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    crds_installed.kubectl("create", "namespace", tenant, check=True)
    release = f"scoped-{uuid.uuid4().hex[:4]}"
    installed = run_helm(
        helm,
        crds_installed,
        "install",
        release,
        str(CHART),
        "-n",
        namespace,
        *IMAGE,
        "--set",
        f"watchNamespaces={{{tenant}}}",
    )
    assert installed.returncode == 0, installed.stderr
    try:
        account = f"system:serviceaccount:{namespace}:{release}-lamina"
        for verb, resource in (("get", "secrets"), ("get", "configmaps"), ("watch", "pods")):
            assert can(crds_installed, account, verb, resource, "-n", tenant), resource
            assert not can(crds_installed, account, verb, resource, "-n", "default"), resource
            assert not can(crds_installed, account, verb, resource), resource
        assert can(crds_installed, account, "create", "jobs", "-n", namespace)

        kubeconfig = service_account_kubeconfig(
            crds_installed, namespace, f"{release}-lamina", tmp_path / "sa.kubeconfig"
        )
        log = tmp_path / "operator.log"
        process = start_operator(
            str(kubeconfig),
            log,
            "--metrics-port=0",
            "--health-port=0",
            env={"LAMINA_NAMESPACE": namespace, "LAMINA_NAMESPACES": tenant},
        )
        try:
            crds_installed.apply(
                "apiVersion: lamina.dev/v1alpha1\nkind: ContainerCommit\nmetadata: {name: snap}\n"
                "spec: {pod: web, output: {repository: localhost:5000/x}}\n",
                tenant,
            )

            def reason() -> str | None:
                found = crds_installed.get("containercommit", "snap", tenant) or {}
                for condition in (found.get("status") or {}).get("conditions") or []:
                    if condition["type"] == "Ready":
                        return str(condition["reason"])
                return None

            wait_for(lambda: reason() == "PodNotFound", what="commit status")
        finally:
            stop_operator(process, log)
        assert "Forbidden" not in log.read_text()
    finally:
        run_helm(helm, crds_installed, "uninstall", release, "-n", namespace)
        crds_installed.kubectl("delete", "namespace", namespace, tenant, "--wait=false")


@pytest.fixture(scope="module")
def chart_operator(
    crds_installed: KubeCluster,
    release: tuple[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, Path]]:
    """``lamina operator`` under the chart's ServiceAccount token, its namespace the release's;
    yields that namespace and the operator's (verbose) log."""
    namespace, name = release
    work = tmp_path_factory.mktemp("chart-operator")
    kubeconfig = service_account_kubeconfig(crds_installed, namespace, name, work / "sa.kubeconfig")
    log = work / "operator.log"
    process = start_operator(
        str(kubeconfig),
        log,
        "--metrics-port=0",
        "--health-port=0",
        env={"LAMINA_NAMESPACE": namespace},
    )
    try:
        yield namespace, log
    finally:
        stop_operator(process, log)
        assert "Forbidden" not in log.read_text()


def test_operator_works_with_the_charts_service_account(
    crds_installed: KubeCluster, chart_operator: tuple[str, Path], namespace: str
) -> None:
    crds_installed.apply(
        "apiVersion: lamina.dev/v1alpha1\nkind: Image\nmetadata: {name: orphan}\n"
        "spec: {parent: {image: nobody}, build: {steps: ['RUN true']},"
        " output: {repository: localhost:5000/x}}\n",
        namespace,
    )
    crds_installed.apply(
        "apiVersion: lamina.dev/v1alpha1\nkind: ContainerCommit\nmetadata: {name: snap}\n"
        "spec: {pod: web, output: {repository: localhost:5000/x}}\n",
        namespace,
    )

    def reason(kind: str, obj: str) -> str | None:
        found = crds_installed.get(kind, obj, namespace) or {}
        for condition in (found.get("status") or {}).get("conditions") or []:
            if condition["type"] == "Ready":
                return str(condition["reason"])
        return None

    wait_for(lambda: reason("image", "orphan") == "ParentNotFound", what="image status")
    wait_for(lambda: reason("containercommit", "snap") == "PodNotFound", what="commit status")


def lamina_job(name: str, namespace: str, labels: dict[str, str]) -> str:
    return json.dumps(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "c", "image": "localhost:5000/none"}],
                    },
                }
            },
        }
    )


def test_a_tenants_job_with_laminas_labels_is_ignored(
    crds_installed: KubeCluster, chart_operator: tuple[str, Path], namespace: str
) -> None:
    """Anyone may create a Job carrying Lamina's labels in their own namespace; the operator
    watches Jobs only in its namespace, so such a Job is never taken for a build's or a
    commit's, and its labels never make the operator act.  The same Job in the operator's
    namespace is seen (the control), so the log would show the tenant's if it were."""
    operator_ns, log = chart_operator
    labels = {
        "app.kubernetes.io/managed-by": "lamina",
        "lamina.dev/purpose": "commit",
        "lamina.dev/commit-namespace": namespace,
        "lamina.dev/commit-name": "victim",
    }
    tenant_job = f"forged-{uuid.uuid4().hex[:6]}"
    own_job = f"control-{uuid.uuid4().hex[:6]}"
    crds_installed.kubectl(
        "apply", "-f", "-", input=lamina_job(tenant_job, namespace, labels), check=True
    )
    time.sleep(1)  # the tenant's Job exists first: any watch that could see it sees it first
    crds_installed.kubectl(
        "apply", "-f", "-", input=lamina_job(own_job, operator_ns, labels), check=True
    )
    try:
        wait_for(
            lambda: f"own Job {operator_ns}/{own_job} (commit) changed" in log.read_text(),
            what="the operator to see the Job in its own namespace",
        )
        text = log.read_text()
        assert tenant_job not in text
        assert "Forbidden" not in text
    finally:
        crds_installed.kubectl("delete", "job", own_job, "-n", operator_ns, "--wait=false")


def test_uninstall_leaves_users_objects_and_the_crds(
    crds_installed: KubeCluster, helm: str, namespace: str
) -> None:
    system = restricted_namespace(crds_installed)
    installed = run_helm(helm, crds_installed, "install", "gone", str(CHART), "-n", system, *IMAGE)
    assert installed.returncode == 0, installed.stderr
    crds_installed.apply(
        "apiVersion: lamina.dev/v1alpha1\nkind: Image\nmetadata: {name: kept}\n"
        "spec: {parent: {ref: 'localhost:5000/base:1'}, build: {steps: ['RUN true']},"
        " output: {repository: localhost:5000/kept}}\n",
        namespace,
    )
    try:
        removed = run_helm(helm, crds_installed, "uninstall", "gone", "-n", system, "--wait")
        assert removed.returncode == 0, removed.stderr
        assert crds_installed.get("deployment", "gone-lamina", system) is None
        assert crds_installed.kubectl("get", "clusterrole", "gone-lamina").returncode != 0
        assert crds_installed.get("image", "kept", namespace) is not None
        for crd in ("images", "layers", "containercommits"):
            found = crds_installed.kubectl("get", "crd", f"{crd}.lamina.dev")
            assert found.returncode == 0, found.stderr
    finally:
        crds_installed.kubectl("delete", "namespace", system, "--wait=false")
