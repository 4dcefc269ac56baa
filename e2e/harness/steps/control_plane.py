"""Steps shared by both tiers before any component starts: PKI, kubeconfigs, the advertise
address's device."""

from __future__ import annotations

from harness.config.kubeconfig import kubeconfig_files, kubeconfig_text
from harness.files import write_file
from harness.host.netdev import ensure_netdev
from harness.host.pki import ensure_pki
from harness.host.procs import load_records, stop_process
from harness.log import say
from harness.steps.base import UpContext


def pki(ctx: UpContext) -> None:
    s = ctx.s
    if ensure_pki(s):
        say("made the PKI (CA, serving and client certificates, service-account key)")
        # New certificates: nothing started with the old ones may stay.
        for rec in reversed(load_records(s)):
            stop_process(s, rec)


def kubeconfigs(ctx: UpContext) -> None:
    s = ctx.s
    ca = (s.pki / "ca.crt").read_bytes()
    for f in kubeconfig_files(s):
        text = kubeconfig_text(
            s.apiserver_url,
            f.user,
            ca=ca,
            cert=(s.pki / f"{f.cert}.crt").read_bytes(),
            key=(s.pki / f"{f.cert}.key").read_bytes(),
        )
        write_file(f.path, text, 0o600)


def netdev(ctx: UpContext) -> None:
    say("advertise address: " + ensure_netdev(ctx.s))
