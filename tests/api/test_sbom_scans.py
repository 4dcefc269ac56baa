"""The operator's SBOM scans, against a real API server: which Images get a scan Job, what
the Job is, how many run at once, and that Ready never waits for one.

The API tier has no node, so a scan Job never runs here (the node tier runs them: a rebased,
a committed and a Buildah-built image get their SBOM in tests/e2e); what is checked is the
decision and the Job the API server took.  Images are committed ones (``spec.commit``), whose
status the test writes as the commit recording does.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import KubeCluster, start_operator, stop_operator, wait_for

pytestmark = pytest.mark.api

SPDX = "https://spdx.dev/Document"


def digest(char: str) -> str:
    return "sha256:" + char * 64


def committed(kube: KubeCluster, namespace: str, name: str, status: dict[str, Any]) -> None:
    body = {
        "apiVersion": "lamina.dev/v1alpha1",
        "kind": "Image",
        "metadata": {"name": name},
        "spec": {
            "parent": {"ref": f"registry.example/base@{digest('0')}"},
            "commit": {"name": name},
            "output": {"repository": f"registry.example/team/{name}", "tags": ["v1"]},
        },
    }
    assert kube.apply(json.dumps(body), namespace).returncode == 0
    kube.kubectl(
        "patch", "image", name, "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": status}), check=True,
    )  # fmt: skip


def scan_jobs(kube: KubeCluster, operator_ns: str) -> list[dict[str, Any]]:
    listed = kube.kubectl(
        "get", "jobs", "-n", operator_ns, "-l", "lamina.dev/purpose=scan", "-o", "json",
        check=True,
    )  # fmt: skip
    return json.loads(listed.stdout)["items"]  # type: ignore[no-any-return]


def conditions(kube: KubeCluster, namespace: str, name: str) -> dict[str, dict[str, Any]]:
    found = kube.kubectl("get", "image", name, "-n", namespace, "-o", "json", check=True)
    status = json.loads(found.stdout).get("status") or {}
    return {c["type"]: c for c in status.get("conditions") or []}


def test_images_without_an_sbom_get_one_scan_job_at_a_time_and_stay_ready(
    crds_installed: KubeCluster, namespace: str, tmp_path: Path
) -> None:
    kube = crds_installed
    operator_ns = f"lamina-{uuid.uuid4().hex[:6]}"
    kube.kubectl("create", "namespace", operator_ns, check=True)
    committed(kube, namespace, "first", {"digest": digest("a")})
    committed(kube, namespace, "second", {"digest": digest("b")})
    # An SPDX statement about its digest is recorded: nothing to scan.
    committed(
        kube,
        namespace,
        "has-sbom",
        {
            "digest": digest("c"),
            "indexDigest": digest("d"),
            "attestations": [
                {
                    "predicateType": SPDX,
                    "digest": digest("e"),
                    "manifestDigest": digest("f"),
                    "subject": digest("c"),
                }
            ],
        },
    )
    log = tmp_path / "operator.log"
    process = start_operator(
        kube.kubeconfig,
        log,
        "--metrics-port=0",
        "--health-port=0",
        env={
            "LAMINA_NAMESPACE": operator_ns,
            "LAMINA_NAMESPACES": namespace,
            "LAMINA_BUILD_POLL_SECONDS": "1",
            "LAMINA_SBOM_SCANNER_IMAGE": "syft:test",
            "LAMINA_MAX_CONCURRENT_SCANS": "1",
        },
    )
    try:
        (job,) = wait_for(lambda: scan_jobs(kube, operator_ns), what="a scan Job")
        annotations = job["metadata"]["annotations"]
        scanned = annotations["lamina.dev/image-name"]
        assert scanned in ("first", "second")
        wanted = digest("a") if scanned == "first" else digest("b")
        assert annotations["lamina.dev/scanned-digest"] == wanted
        pod = job["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["image"] == "syft:test"
        assert container["args"][:2] == [
            "scan",
            f"registry:registry.example/team/{scanned}@{wanted}",
        ]
        assert pod["automountServiceAccountToken"] is False
        assert container["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}

        def scanning() -> dict[str, Any] | None:
            found = conditions(kube, namespace, scanned)
            return found if found.get("SBOM", {}).get("reason") == "Scanning" else None

        found = wait_for(scanning, what=f"{scanned} says Scanning")
        assert found["SBOM"]["status"] == "False"
        assert job["metadata"]["name"] in found["SBOM"]["message"]
        # Ready does not wait for the SBOM: the image is committed and usable.
        assert found["Ready"]["status"] == "True"
        assert found["Ready"]["reason"] == "Committed"
        # The limit holds (the first scan never finishes here), and the Image with an SBOM
        # is never scanned.
        time.sleep(4)  # a few passes (LAMINA_BUILD_POLL_SECONDS=1) with a slot taken
        assert len(scan_jobs(kube, operator_ns)) == 1
        assert "SBOM" not in conditions(kube, namespace, "has-sbom")
    finally:
        stop_operator(process, log)
        kube.kubectl("delete", "namespace", operator_ns, "--wait=false")
    assert "Traceback" not in log.read_text()


def test_without_a_scanner_nothing_is_scanned(
    crds_installed: KubeCluster, namespace: str, tmp_path: Path
) -> None:
    kube = crds_installed
    operator_ns = f"lamina-{uuid.uuid4().hex[:6]}"
    kube.kubectl("create", "namespace", operator_ns, check=True)
    committed(kube, namespace, "plain", {"digest": digest("a")})
    log = tmp_path / "operator.log"
    process = start_operator(
        kube.kubeconfig,
        log,
        "--metrics-port=0",
        "--health-port=0",
        env={
            "LAMINA_NAMESPACE": operator_ns,
            "LAMINA_NAMESPACES": namespace,
            "LAMINA_BUILD_POLL_SECONDS": "1",
        },
    )
    try:
        wait_for(
            lambda: conditions(kube, namespace, "plain").get("Ready", {}).get("status") == "True",
            what="plain Ready",
        )
        assert scan_jobs(kube, operator_ns) == []
        assert "SBOM" not in conditions(kube, namespace, "plain")
    finally:
        stop_operator(process, log)
        kube.kubectl("delete", "namespace", operator_ns, "--wait=false")


def test_a_failed_scan_keeps_the_image_ready_says_why_and_is_tried_again(
    crds_installed: KubeCluster, namespace: str, tmp_path: Path
) -> None:
    """No node runs the scan here, so the Job controller fails it at its deadline (30 s, the
    least the setting takes): the Image stays Ready on its digest, says why there is no SBOM,
    and a new scan Job follows after the back-off."""
    kube = crds_installed
    operator_ns = f"lamina-{uuid.uuid4().hex[:6]}"
    kube.kubectl("create", "namespace", operator_ns, check=True)
    committed(kube, namespace, "doomed", {"digest": digest("a")})
    log = tmp_path / "operator.log"
    process = start_operator(
        kube.kubeconfig,
        log,
        "--metrics-port=0",
        "--health-port=0",
        env={
            "LAMINA_NAMESPACE": operator_ns,
            "LAMINA_NAMESPACES": namespace,
            "LAMINA_BUILD_POLL_SECONDS": "1",
            "LAMINA_SBOM_SCANNER_IMAGE": "syft:test",
            "LAMINA_SCAN_DEADLINE_SECONDS": "30",
        },
    )
    try:
        (first,) = wait_for(lambda: scan_jobs(kube, operator_ns), what="a scan Job")

        def failed() -> dict[str, dict[str, Any]] | None:
            found = conditions(kube, namespace, "doomed")
            return found if found.get("SBOM", {}).get("reason") == "ScanFailed" else None

        found = wait_for(failed, timeout=180, what="doomed says ScanFailed")
        message = found["SBOM"]["message"]
        assert message.startswith(f"{digest('a')} has no SBOM: the scan Job failed"), message
        assert "DeadlineExceeded" in message
        assert "scanned again in 30s (attempt 1)" in message
        assert found["Ready"]["status"] == "True" and found["Ready"]["reason"] == "Committed"
        image = json.loads(
            kube.kubectl("get", "image", "doomed", "-n", namespace, "-o", "json", check=True).stdout
        )
        assert image["status"]["digest"] == digest("a")
        assert "attestations" not in image["status"]

        def again() -> list[dict[str, Any]]:
            jobs = scan_jobs(kube, operator_ns)
            return [j for j in jobs if j["metadata"]["uid"] != first["metadata"]["uid"]]

        # The failed Job was collected and deleted; after the back-off, a new one scans.
        (second,) = wait_for(again, timeout=120, what="the scan tried again")
        assert second["metadata"]["name"] == first["metadata"]["name"]  # the same digest
    finally:
        stop_operator(process, log)
        kube.kubectl("delete", "namespace", operator_ns, "--wait=false")
    assert "Traceback" not in log.read_text()
