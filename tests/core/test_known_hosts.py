"""known_hosts as sites ship it: parsing, host matching and the trust decision, on keys and
certificates made by ssh-keygen (no server needed)."""

from __future__ import annotations

import base64
import subprocess
import time
from pathlib import Path

import pytest

from components.core import known_hosts as kh


def _keygen(*args: str) -> None:
    subprocess.run(["ssh-keygen", "-q", *args], check=True, capture_output=True)


def _pub(path: Path) -> tuple[str, str, bytes]:
    kind, b64 = path.read_text().split()[:2]
    return kind, b64, base64.b64decode(b64)


class Keys:
    """Host keys, CAs and certificates, made once for the module."""

    def __init__(self, d: Path):
        self.d, self.certs = d, 0
        for name, kind in (("host", "ed25519"), ("other", "ed25519"), ("ca", "ed25519"), ("ca2", "ed25519"),
                           ("rsaca", "rsa"), ("ecdsa_host", "ecdsa")):
            _keygen("-t", kind, "-N", "", "-C", name, "-f", str(d / name))

    def line(self, name: str) -> str:
        return " ".join(_pub(self.d / f"{name}.pub")[:2])

    def blob(self, name: str) -> bytes:
        return _pub(self.d / f"{name}.pub")[2]

    def cert(self, host: str = "host", ca: str = "ca", *extra: str, principals: str = "login.example.org") -> bytes:
        self.certs += 1
        copy = self.d / f"cert{self.certs}"
        (self.d / f"cert{self.certs}.pub").write_text((self.d / f"{host}.pub").read_text())
        args = ["-s", str(self.d / ca), "-I", "test", *extra]
        if principals:
            args += ["-n", principals]
        _keygen(*args, f"{copy}.pub")
        return _pub(self.d / f"cert{self.certs}-cert.pub")[2]


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Keys:
    return Keys(tmp_path_factory.mktemp("keys"))


# --- parsing -----------------------------------------------------------------------------------

def test_comments_blank_lines_markers_and_lists(keys):
    known = kh.parse(
        "# a comment\n\n   \n"
        f"login1.example.org,login2.example.org,[gw.example.org]:2222 {keys.line('host')} a trailing comment\n"
        f"@cert-authority *.example.org {keys.line('ca')}\n"
        f"\t@revoked  * {keys.line('other')}\n",
        "kh",
    )
    assert known.problems == ()
    plain, ca, revoked = known.entries
    assert (plain.marker, plain.patterns, plain.key_type, plain.where) == (
        None, ("login1.example.org", "login2.example.org", "[gw.example.org]:2222"), "ssh-ed25519", "kh:4")
    assert plain.key == keys.blob("host")
    assert (ca.marker, ca.patterns, ca.where) == ("cert-authority", ("*.example.org",), "kh:5")
    assert (revoked.marker, revoked.key) == ("revoked", keys.blob("other"))


@pytest.mark.parametrize("line, problem", [
    ("@trusted * {host}", "unknown marker '@trusted'"),
    ("login.example.org ssh-ed25519", "expected host patterns, a key type and a base64 key"),
    ("@revoked {host}", "expected host patterns"),
    ("login.example.org ssh-ed25519 AAAA!not-base64", "not valid base64"),
    ("login.example.org ssh-rsa {host_b64}", "the line says ssh-rsa but the key is 'ssh-ed25519'"),
    ("login.example.org ssh-ed25519 AAAA", "truncated"),
    ("login.example.org 2048 65537 1234567", "SSH-1"),
    ("|1|bad|hash {host}", "unreadable hashed host name"),
    ("@cert-authority * {cert}", "needs the CA's public key, not a certificate"),
])
def test_malformed_lines_are_skipped_and_named(keys, line, problem):
    cert = base64.b64encode(keys.cert()).decode()
    text = line.format(host=keys.line("host"), host_b64=keys.line("host").split()[1],
                       cert="ssh-ed25519-cert-v01@openssh.com " + cert)
    known = kh.parse(f"# first\n{text}\nlogin.example.org {keys.line('host')}\n", "/etc/ssh/known_hosts")
    assert len(known.entries) == 1 and known.entries[0].where == "/etc/ssh/known_hosts:3"
    assert len(known.problems) == 1 and known.problems[0].startswith("/etc/ssh/known_hosts:2: ")
    assert problem in known.problems[0]


def test_the_musica_line_parses(keys):
    # The documented MUSICA set-up; paramiko's own loader fails on it with "Incorrect padding".
    known = kh.parse(f"@cert-authority *.asc.ac.at {keys.line('ca')}\n")
    assert known.problems == () and known.entries[0].marker == "cert-authority"
    assert known.for_host("login.musica.asc.ac.at", 22) and not known.for_host("login.musica.asc.ac.at", 2222)


# --- matching ----------------------------------------------------------------------------------

def _matches(patterns: str, host: str, port: int = 22) -> bool:
    entry = kh.parse(f"{patterns} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPaJ55e7e9VFJ1gJY4c0z8TAIi55fyGucfrYTTh93LO3").entries[0]
    return entry.matches(kh.lookup_name(host, port))


@pytest.mark.parametrize("patterns, host, port, expected", [
    ("login.example.org", "login.example.org", 22, True),
    ("LOGIN.Example.org", "login.example.ORG", 22, True),
    ("login.example.org", "login.example.org", 2222, False),  # off port 22 only [host]:port counts
    ("[login.example.org]:2222", "login.example.org", 2222, True),
    ("[login.example.org]:2222", "login.example.org", 22, False),
    ("[login.example.org]:2222", "login.example.org", 2223, False),
    ("a.example.org,login.example.org", "login.example.org", 22, True),
    ("*.example.org", "login.example.org", 22, True),
    ("*.example.org", "example.org", 22, False),
    ("*.example.org", "login.example.org.evil", 22, False),
    ("login?.example.org", "login1.example.org", 22, True),
    ("login?.example.org", "login12.example.org", 22, False),
    ("[127.0.0.?]:2222", "127.0.0.1", 2222, True),
    ("*.example.org,!bad.example.org", "bad.example.org", 22, False),
    ("!bad.example.org,*.example.org", "good.example.org", 22, True),
    ("!bad.example.org", "good.example.org", 22, False),  # a negation alone matches nothing
    ("login[1].example.org", "login1.example.org", 22, False),  # no character classes
])
def test_host_patterns(patterns, host, port, expected):
    assert _matches(patterns, host, port) is expected


def test_hashed_names_as_ssh_keygen_writes_them(keys, tmp_path):
    path = tmp_path / "known_hosts"
    path.write_text(f"login.example.org {keys.line('host')}\n[127.0.0.1]:2222 {keys.line('other')}\n")
    _keygen("-H", "-f", str(path))
    text = path.read_text()
    assert "login.example.org" not in text and text.startswith("|1|")
    known = kh.parse(text)
    assert known.problems == ()
    assert [e.key for e in known.for_host("login.example.org", 22)] == [keys.blob("host")]
    assert [e.key for e in known.for_host("127.0.0.1", 2222)] == [keys.blob("other")]
    assert known.for_host("login.example.org", 2222) == [] and known.for_host("127.0.0.1", 22) == []


# --- certificates ------------------------------------------------------------------------------

def test_certificate_fields(keys):
    cert = kh.parse_certificate(keys.cert("host", "ca", "-h", "-V", "-5m:+1h", "-z", "42"))
    assert cert.key_type == "ssh-ed25519-cert-v01@openssh.com" and cert.key == keys.blob("host")
    assert (cert.kind, cert.serial, cert.key_id, cert.principals) == (2, 42, "test", ("login.example.org",))
    assert cert.valid_after < time.time() < cert.valid_before
    assert cert.ca_key == keys.blob("ca") and cert.critical_options == b""
    ecdsa = kh.parse_certificate(keys.cert("ecdsa_host", "ca", "-h"))
    assert ecdsa.key == keys.blob("ecdsa_host")
    with pytest.raises(ValueError, match="not a certificate type"):
        kh.parse_certificate(keys.blob("host"))
    with pytest.raises(ValueError, match="truncated"):
        kh.parse_certificate(keys.cert("host", "ca", "-h")[:-10])


def _check(text: str, key: bytes, cert: bytes | None = None, host: str = "login.example.org", port: int = 22):
    return kh.check(kh.parse(text, "kh"), host, port, key, cert)


def test_a_valid_host_certificate_from_a_listed_ca_is_accepted(keys):
    for ca in ("ca", "rsaca"):  # an RSA CA signs with rsa-sha2-512
        verdict = _check(f"@cert-authority *.example.org {keys.line(ca)}\n", keys.blob("host"),
                         keys.cert("host", ca, "-h"))
        assert (verdict.accepted, verdict.kind) == (True, "certificate"), verdict
    ecdsa = _check(f"@cert-authority *.example.org {keys.line('ca')}\n", keys.blob("ecdsa_host"),
                   keys.cert("ecdsa_host", "ca", "-h"))
    assert ecdsa.accepted


@pytest.mark.parametrize("extra, principals, why", [
    ((), "login.example.org", "user certificate, not a host certificate"),
    (("-h", "-V", "-2h:-1h"), "login.example.org", "expired at"),
    (("-h", "-V", "+1h:+2h"), "login.example.org", "not valid before"),
    (("-h",), "other.example.org,localhost", "is for other.example.org, localhost, not login.example.org"),
    (("-h",), "", "is for none"),
])
def test_an_unfit_certificate_is_refused_with_the_reason(keys, extra, principals, why):
    text = f"@cert-authority *.example.org {keys.line('ca')}\n"
    verdict = _check(text, keys.blob("host"), keys.cert("host", "ca", *extra, principals=principals))
    assert (verdict.accepted, verdict.kind) == (False, "invalid") and why in verdict.reason
    # As OpenSSH: the plain key, when pinned, is still good.
    assert _check(text + f"login.example.org {keys.line('host')}\n", keys.blob("host"),
                  keys.cert("host", "ca", *extra, principals=principals)).kind == "pinned"


def test_a_forged_or_foreign_certificate_is_refused(keys):
    text = f"@cert-authority *.example.org {keys.line('ca')}\n"
    good = keys.cert("host", "ca", "-h")
    forged = bytearray(good)
    forged[-5] ^= 1  # inside the signature
    verdict = _check(text, keys.blob("host"), bytes(forged))
    assert verdict.kind == "invalid" and "does not verify" in verdict.reason
    foreign = _check(text, keys.blob("host"), keys.cert("host", "ca2", "-h"))
    assert foreign.kind == "invalid" and "no @cert-authority line lists" in foreign.reason


def test_revoked_keys_and_cas_are_refused_even_when_pinned(keys):
    pinned = f"login.example.org {keys.line('host')}\n@cert-authority *.example.org {keys.line('ca')}\n"
    key = _check(pinned + f"@revoked * {keys.line('host')}\n", keys.blob("host"))
    assert (key.accepted, key.kind) == (False, "revoked") and "host key ssh-ed25519" in key.reason
    ca = _check(pinned + f"@revoked *.example.org {keys.line('ca')}\n", keys.blob("host"), keys.cert("host", "ca", "-h"))
    assert (ca.accepted, ca.kind) == (False, "revoked") and "CA key" in ca.reason and "kh:3" in ca.reason
    # A revocation for another host does not apply.
    assert _check(pinned + f"@revoked other.example.org {keys.line('host')}\n", keys.blob("host")).accepted


def test_pinned_changed_and_unknown_keys(keys):
    assert _check(f"*.example.org {keys.line('host')}\n", keys.blob("host")).kind == "pinned"
    changed = _check(f"login.example.org {keys.line('other')}\n", keys.blob("host"))
    assert (changed.kind, changed.fingerprint) == ("changed", kh.fingerprint(keys.blob("host")))
    assert _check(f"login.example.org {keys.line('host')}\n", keys.blob("host"), port=2222).kind == "unknown"


def test_a_ca_for_another_name_is_pointed_out(keys):
    verdict = _check(f"@cert-authority *.asc.ac.at {keys.line('ca')}\nbroken\n", keys.blob("host"),
                     host="login.asc.ac.at", port=2222)
    assert verdict.kind == "unknown"
    assert verdict.notes == ("the @cert-authority line at kh:1 is for *.asc.ac.at, which does not match [login.asc.ac.at]:2222",
                             "skipped kh:2: expected host patterns, a key type and a base64 key")


def test_a_plain_key_where_only_a_ca_is_listed_says_so(keys):
    verdict = _check(f"@cert-authority *.example.org {keys.line('ca')}\n", keys.blob("host"))
    assert verdict.kind == "unverifiable" and "offered no host certificate" in verdict.reason
    message = verdict.message("login.example.org", 22, "~/.ssh/known_hosts", "pin: ssh-keyscan -p 22 login.example.org >> x")
    assert "\n" not in message and message.endswith("To trust the host's plain key instead, pin: ssh-keyscan -p 22 login.example.org >> x")


def test_messages_keep_their_wording(keys):
    changed = _check(f"login.example.org {keys.line('other')}\n", keys.blob("host"))
    assert changed.message("login.example.org", 22, "kh", "HINT") == (
        f"host key for login.example.org:22 does not match kh (got ssh-ed25519 {kh.fingerprint(keys.blob('host'))}); "
        "refusing to connect. If the host was reinstalled, HINT after removing the old entry")
    unknown = _check("", keys.blob("host"))
    assert unknown.message("h", 2222, "kh", "HINT") == "h:2222 is not in kh; refusing an unknown host key. To trust it, HINT"


def test_certificates_are_asked_for_only_when_a_ca_is_listed(keys):
    text = (f"@cert-authority *.example.org {keys.line('ca')}\nlogin.example.org {keys.line('rsaca')}\n"
            f"[login.example.org]:2222 {keys.line('ecdsa_host')}\n")
    known = kh.parse(text)
    assert kh.host_key_algorithms(known, "login.example.org", 22) == (*kh.CERT_ALGORITHMS, "rsa-sha2-512", "rsa-sha2-256")
    assert kh.host_key_algorithms(known, "login.example.org", 2222) == ("ecdsa-sha2-nistp256",)
    assert kh.host_key_algorithms(known, "elsewhere.org", 22) == ()
