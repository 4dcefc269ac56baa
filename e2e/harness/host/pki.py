"""Makes the PKI of `harness.config.pki.pki_plan` with the openssl CLI."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from pathlib import Path

from harness.config.pki import CA, CA_EXT, PKI_FILES, KeyPair, openssl_cnf, pki_plan, pki_spec
from harness.errors import Fail
from harness.files import read_json, write_file
from harness.settings import Settings

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"


def _openssl(*args: str) -> None:
    r = subprocess.run([OPENSSL, *args], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise Fail(f"openssl {' '.join(args[:2])} failed: {r.stderr.strip()}")


def _new_key(path: Path) -> None:
    _openssl(
        "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path)
    )
    os.chmod(path, 0o600)


def _make_ca(pki: Path, item: CA) -> None:
    cnf = pki / f"{item.name}.cnf"
    cnf.write_text(openssl_cnf(item.cn, None, CA_EXT))
    _new_key(pki / f"{item.name}.key")
    _openssl(
        "req",
        "-x509",
        "-new",
        "-key",
        str(pki / f"{item.name}.key"),
        "-out",
        str(pki / f"{item.name}.crt"),
        "-days",
        str(item.days),
        "-sha256",
        "-config",
        str(cnf),
        "-extensions",
        "ext",
        "-set_serial",
        str(secrets.randbits(63)),
    )
    cnf.unlink()


def _sign(
    pki: Path, name: str, *, cn: str, org: str | None, ext: tuple[str, ...], days: int, ca: str
) -> None:
    cnf = pki / f"{name}.cnf"
    cnf.write_text(openssl_cnf(cn, org, ext))
    key, csr, crt = pki / f"{name}.key", pki / f"{name}.csr", pki / f"{name}.crt"
    _new_key(key)
    _openssl("req", "-new", "-key", str(key), "-out", str(csr), "-config", str(cnf))
    _openssl(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(pki / f"{ca}.crt"),
        "-CAkey",
        str(pki / f"{ca}.key"),
        "-set_serial",
        str(secrets.randbits(63)),
        "-days",
        str(days),
        "-sha256",
        "-extfile",
        str(cnf),
        "-extensions",
        "ext",
        "-out",
        str(crt),
    )
    csr.unlink()
    cnf.unlink()


def ensure_pki(s: Settings) -> bool:
    """Create the PKI unless a complete one made for the same SANs exists; True if made."""
    spec = pki_spec(s)
    if read_json(s.pki / "spec.json") == spec and all((s.pki / f).is_file() for f in PKI_FILES):
        return False
    if s.pki.exists():
        shutil.rmtree(s.pki)
    tmp = s.state / "pki.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    os.chmod(tmp, 0o700)
    for item in pki_plan(s):
        if isinstance(item, CA):
            _make_ca(tmp, item)
        elif isinstance(item, KeyPair):
            _new_key(tmp / f"{item.name}.key")
            _openssl(
                "pkey",
                "-in",
                str(tmp / f"{item.name}.key"),
                "-pubout",
                "-out",
                str(tmp / f"{item.name}.pub"),
            )
        else:
            _sign(
                tmp, item.name, cn=item.cn, org=item.org, ext=item.ext, days=item.days, ca=item.ca
            )
    write_file(tmp / "spec.json", json.dumps(spec) + "\n")
    os.replace(tmp, s.pki)
    return True
