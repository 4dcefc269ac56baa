"""The PKI plan and the kubeconfigs: who gets which certificate, signed by which CA."""

from __future__ import annotations

import base64
import json

from harness.config.kubeconfig import kubeconfig_files, kubeconfig_text
from harness.config.pki import (
    CA,
    CLIENT_EXT,
    PKI_FILES,
    Cert,
    KeyPair,
    openssl_cnf,
    pki_plan,
    pki_spec,
    plan_files,
)
from tests.unit.test_harness_settings import STATE, make_settings


def certs(**env: str) -> dict[str, Cert]:
    return {i.name: i for i in pki_plan(make_settings(**env)) if isinstance(i, Cert)}


def test_the_plan_makes_exactly_the_files_a_complete_pki_has() -> None:
    files = plan_files(pki_plan(make_settings()))
    assert sorted(files) == sorted(PKI_FILES)
    assert len(files) == len(set(files))


def test_every_ca_comes_before_what_it_signs() -> None:
    made: set[str] = set()
    for item in pki_plan(make_settings()):
        if isinstance(item, Cert):
            assert item.ca in made, f"{item.name} signed by {item.ca} before it exists"
        if isinstance(item, CA):
            made.add(item.name)
    assert made == {"ca", "front-proxy-ca"}


def test_serving_certificate_names_every_address_clients_use() -> None:
    env = {"LAMINA_ADVERTISE_ADDRESS": "10.213.1.8", "LAMINA_SERVICE_CIDR": "10.100.0.0/16"}
    apiserver = certs(**env)["apiserver"]
    assert "extendedKeyUsage = serverAuth" in apiserver.ext
    san = next(e for e in apiserver.ext if e.startswith("subjectAltName = "))
    names = san.removeprefix("subjectAltName = ").split(", ")
    assert {"IP:127.0.0.1", "IP:10.100.0.1", "IP:10.213.1.8", "DNS:localhost"} <= set(names)
    assert "DNS:kubernetes.default.svc.cluster.local" in names
    assert pki_spec(make_settings(**env))["sans"] == names


def test_client_identities_are_the_ones_kubernetes_rbac_knows() -> None:
    c = certs(LAMINA_NODE_NAME="n1")
    assert (c["admin"].cn, c["admin"].org) == ("lamina-admin", "system:masters")
    assert (c["kubelet"].cn, c["kubelet"].org) == ("system:node:n1", "system:nodes")
    assert c["kube-controller-manager"].cn == "system:kube-controller-manager"
    assert c["kube-scheduler"].cn == "system:kube-scheduler"
    assert c["kube-proxy"].cn == "system:kube-proxy"
    assert c["front-proxy-client"].ca == "front-proxy-ca"
    for name in ("admin", "kubelet", "kube-proxy", "apiserver-kubelet-client"):
        assert c[name].ext == CLIENT_EXT
        assert c[name].ca == "ca"


def test_the_service_account_key_is_a_bare_key_pair() -> None:
    assert [i for i in pki_plan(make_settings()) if isinstance(i, KeyPair)] == [KeyPair("sa")]


def test_a_new_node_name_or_address_means_a_new_pki() -> None:
    base = pki_spec(make_settings())
    assert pki_spec(make_settings(LAMINA_NODE_NAME="other")) != base
    assert pki_spec(make_settings(LAMINA_ADVERTISE_ADDRESS="10.213.0.9")) != base
    assert pki_spec(make_settings(LAMINA_APISERVER_PORT="17080")) == base


def test_openssl_config_has_the_subject_and_the_extension_section() -> None:
    text = openssl_cnf("system:node:n1", "system:nodes", CLIENT_EXT)
    assert "prompt = no" in text
    dn = text.split("[dn]\n")[1].split("[ext]")[0]
    assert dn == "CN = system:node:n1\nO = system:nodes\n"
    assert text.split("[ext]\n")[1].splitlines() == list(CLIENT_EXT)
    assert "O = " not in openssl_cnf("kube-apiserver", None, ())


def test_kubeconfig_embeds_the_credentials_and_names_one_context() -> None:
    text = kubeconfig_text(
        "https://127.0.0.1:17080", "system:kube-proxy", ca=b"CA", cert=b"CERT", key=b"KEY"
    )
    cfg = json.loads(text)
    (cluster,) = cfg["clusters"]
    assert cluster["cluster"]["server"] == "https://127.0.0.1:17080"
    assert base64.b64decode(cluster["cluster"]["certificate-authority-data"]) == b"CA"
    (user,) = cfg["users"]
    assert user["name"] == "system:kube-proxy"
    assert base64.b64decode(user["user"]["client-certificate-data"]) == b"CERT"
    assert base64.b64decode(user["user"]["client-key-data"]) == b"KEY"
    assert cfg["current-context"] == "system:kube-proxy@lamina"
    assert cfg["contexts"][0]["context"] == {"cluster": "lamina", "user": "system:kube-proxy"}


def test_the_node_tier_adds_the_node_components_kubeconfigs() -> None:
    kc = STATE / "kubeconfig"
    api = kubeconfig_files(make_settings("api"))
    assert [(f.path, f.user, f.cert) for f in api] == [
        (kc / "admin.kubeconfig", "lamina-admin", "admin"),
        (
            kc / "kube-controller-manager.kubeconfig",
            "system:kube-controller-manager",
            "kube-controller-manager",
        ),
    ]
    node = kubeconfig_files(make_settings("node", LAMINA_NODE_NAME="n1"))
    assert node[:2] == api
    assert [(f.path.name, f.user) for f in node[2:]] == [
        ("kube-scheduler.kubeconfig", "system:kube-scheduler"),
        ("kube-proxy.kubeconfig", "system:kube-proxy"),
        ("kubelet.kubeconfig", "system:node:n1"),
    ]
