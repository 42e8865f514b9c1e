"""known_hosts files as sites ship them, and the decision whether to trust a presented host key.

Reads the OpenSSH format (sshd(8), SSH_KNOWN_HOSTS FILE FORMAT): `@cert-authority` and `@revoked`
markers, hashed names (`|1|salt|hash`), `[host]:port`, comma-separated patterns with `*`, `?` and
`!` negation, comments and blank lines. Nothing here opens a connection or a file: `ssh.py` reads
the file, hands over the key the server presented, and turns a refusal into its message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import struct
import time
from dataclasses import dataclass, field

import paramiko

CERT_SUFFIX = "-cert-v01@openssh.com"
# Host certificate algorithms, best first; offered ahead of plain keys only when a CA is trusted.
CERT_ALGORITHMS = (
    "ssh-ed25519-cert-v01@openssh.com",
    "ecdsa-sha2-nistp256-cert-v01@openssh.com",
    "ecdsa-sha2-nistp384-cert-v01@openssh.com",
    "ecdsa-sha2-nistp521-cert-v01@openssh.com",
    "rsa-sha2-512-cert-v01@openssh.com",
    "rsa-sha2-256-cert-v01@openssh.com",
)
# An RSA key is one entry in known_hosts but is negotiated under its SHA-2 signature names.
_ALGORITHMS_FOR_KEY = {"ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256")}
# How many SSH strings/mpints a certificate carries for the certified key, per plain key type.
_KEY_FIELDS = {
    "ssh-ed25519": 1, "ssh-rsa": 2, "ssh-dss": 4,
    "ecdsa-sha2-nistp256": 2, "ecdsa-sha2-nistp384": 2, "ecdsa-sha2-nistp521": 2,
    "sk-ssh-ed25519@openssh.com": 2, "sk-ecdsa-sha2-nistp256@openssh.com": 3,
}
_MARKERS = {"@cert-authority": "cert-authority", "@revoked": "revoked"}
_HOST_CERT = 2
_FOREVER = 2**64 - 1


@dataclass(frozen=True)
class Entry:
    """One usable line: `marker` is None, "cert-authority" or "revoked"; `key` the decoded blob."""

    marker: str | None
    patterns: tuple[str, ...]
    key_type: str
    key: bytes
    where: str  # "file:line", for messages

    def matches(self, name: str) -> bool:
        """Whether this line is for `name` (`host`, or `[host]:port` off port 22); a matching `!` pattern vetoes."""
        hit = False
        for pattern in self.patterns:
            negated = pattern.startswith("!")
            if _pattern_matches(pattern[1:] if negated else pattern, name):
                if negated:
                    return False
                hit = True
        return hit


@dataclass(frozen=True)
class KnownHosts:
    source: str
    entries: tuple[Entry, ...] = ()
    problems: tuple[str, ...] = ()  # "file:line: what is wrong", for lines that were skipped

    def for_host(self, host: str, port: int) -> list[Entry]:
        name = lookup_name(host, port)
        return [e for e in self.entries if e.matches(name)]


@dataclass(frozen=True)
class Certificate:
    """The fields of an OpenSSH certificate that a host check needs (PROTOCOL.certkeys)."""

    key_type: str  # e.g. "ssh-ed25519-cert-v01@openssh.com"
    key: bytes  # the certified plain public key blob
    serial: int
    kind: int  # 1 user, 2 host
    key_id: str
    principals: tuple[str, ...]
    valid_after: int
    valid_before: int
    critical_options: bytes
    ca_key: bytes
    signed: bytes  # everything the CA's signature covers
    signature: bytes


@dataclass(frozen=True)
class Verdict:
    """`accepted`, or why not: `kind` is one of "pinned", "certificate" (accepted) or "unknown",
    "changed", "revoked", "invalid", "unverifiable"; `reason` is a clause for the message, or for an
    accepted key the line that vouched for it ("pinned at file:line", "trusted by the @cert-authority line file:line")."""

    accepted: bool
    kind: str
    reason: str = ""
    key_type: str = ""
    fingerprint: str = ""
    notes: tuple[str, ...] = field(default=())

    def message(self, host: str, port: int, path: str, pin_hint: str) -> str:
        """One line for a refusal; `pin_hint` says how to pin the plain key (ssh-keyscan ...)."""
        label, got = f"{host}:{port}", f"{self.key_type} {self.fingerprint}"
        notes = "".join(f" ({n})" for n in self.notes)
        if self.kind == "changed":
            return (f"host key for {label} does not match {path} (got {got}){notes}; refusing to connect. "
                    f"If the host was reinstalled, {pin_hint} after removing the old entry")
        if self.kind == "unknown":
            return f"{label} is not in {path}{notes}; refusing an unknown host key. To trust it, {pin_hint}"
        if self.kind == "revoked":
            return f"{label}: {self.reason}{notes}; refusing to connect"
        return (f"{label}: {self.reason}{notes}; refusing to connect. "
                f"To trust the host's plain key instead, {pin_hint}")


def lookup_name(host: str, port: int) -> str:
    """The name known_hosts is searched for: `host` on port 22, else `[host]:port`, as OpenSSH does."""
    return host if port == 22 else f"[{host}]:{port}"


def fingerprint(blob: bytes) -> str:
    """`SHA256:...` as `ssh-keygen -l` prints it."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def parse(text: str, source: str = "known_hosts") -> KnownHosts:
    """Every line of a known_hosts file; lines that cannot be used are skipped and listed in `problems`
    as "source:line: reason" (OpenSSH skips them too). Raises nothing."""
    entries, problems = [], []
    for number, line in enumerate(text.splitlines(), 1):
        where = f"{source}:{number}"
        try:
            entry = _parse_line(line, where)
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
            continue
        if entry is not None:
            entries.append(entry)
    return KnownHosts(source, tuple(entries), tuple(problems))


def _parse_line(line: str, where: str) -> Entry | None:
    fields = line.split()
    if not fields or fields[0].startswith("#"):
        return None
    marker = None
    if fields[0].startswith("@"):
        if fields[0] not in _MARKERS:
            raise ValueError(f"unknown marker {fields[0]!r} (known: @cert-authority, @revoked)")
        marker = _MARKERS[fields[0]]
        fields = fields[1:]
    if len(fields) < 3:
        raise ValueError("expected host patterns, a key type and a base64 key")
    hosts, key_type, encoded = fields[:3]
    if key_type.isdigit():
        raise ValueError("an SSH-1 key (bits exponent modulus) is not supported")
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"the {key_type} key is not valid base64") from None
    try:
        embedded, _ = _string(key, 0)
    except ValueError:
        raise ValueError(f"the {key_type} key is truncated") from None
    if embedded.decode(errors="replace") != key_type:
        raise ValueError(f"the line says {key_type} but the key is {embedded.decode(errors='replace')!r}")
    if marker == "cert-authority" and key_type.endswith(CERT_SUFFIX):
        raise ValueError("@cert-authority needs the CA's public key, not a certificate")
    if hosts.startswith("|"):
        _hashed_parts(hosts)
        patterns: tuple[str, ...] = (hosts,)
    else:
        patterns = tuple(p for p in hosts.split(",") if p)
        if not patterns:
            raise ValueError("no host pattern")
    return Entry(marker, patterns, key_type, key, where)


def _hashed_parts(pattern: str) -> tuple[bytes, bytes]:
    # `ssh-keygen -H` writes |1|base64(salt)|base64(HMAC-SHA1(salt, name)); 1 is the only version.
    parts = pattern.split("|")
    try:
        if len(parts) != 4 or parts[0] or parts[1] != "1":
            raise ValueError
        salt, digest = base64.b64decode(parts[2], validate=True), base64.b64decode(parts[3], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"unreadable hashed host name {pattern[:24]}...") from None
    if len(digest) != 20:
        raise ValueError(f"unreadable hashed host name {pattern[:24]}...")
    return salt, digest


def _pattern_matches(pattern: str, name: str) -> bool:
    if pattern.startswith("|"):
        salt, digest = _hashed_parts(pattern)
        return hmac.compare_digest(hmac.new(salt, name.encode(), hashlib.sha1).digest(), digest)
    # Only `*` and `?` are special (no character classes), and host names compare without case.
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, name, re.IGNORECASE | re.DOTALL) is not None


def _string(blob: bytes, offset: int) -> tuple[bytes, int]:
    if offset + 4 > len(blob):
        raise ValueError("truncated")
    (length,) = struct.unpack_from(">I", blob, offset)
    end = offset + 4 + length
    if end > len(blob):
        raise ValueError("truncated")
    return blob[offset + 4:end], end


def _uint(blob: bytes, offset: int, size: int) -> tuple[int, int]:
    if offset + size > len(blob):
        raise ValueError("truncated")
    return int.from_bytes(blob[offset:offset + size], "big"), offset + size


def plain_type(cert_type: str) -> str:
    """"ssh-ed25519-cert-v01@openssh.com" -> "ssh-ed25519"; security-key types keep their @openssh.com."""
    base = cert_type.removesuffix(CERT_SUFFIX)
    return base + "@openssh.com" if base.startswith("sk-") else base


def parse_certificate(blob: bytes) -> Certificate:
    """An OpenSSH certificate from its wire blob. Raises ValueError for anything else or a truncated one."""
    raw_type, at = _string(blob, 0)
    key_type = raw_type.decode(errors="replace")
    if not key_type.endswith(CERT_SUFFIX):
        raise ValueError(f"{key_type} is not a certificate type")
    base = plain_type(key_type)
    if base not in _KEY_FIELDS:
        raise ValueError(f"unknown certificate type {key_type}")
    _, at = _string(blob, at)  # nonce
    start = at
    for _ in range(_KEY_FIELDS[base]):
        _, at = _string(blob, at)
    key = struct.pack(">I", len(base)) + base.encode() + blob[start:at]
    serial, at = _uint(blob, at, 8)
    kind, at = _uint(blob, at, 4)
    key_id, at = _string(blob, at)
    packed, at = _string(blob, at)
    principals, p = [], 0
    while p < len(packed):
        name, p = _string(packed, p)
        principals.append(name.decode(errors="replace"))
    valid_after, at = _uint(blob, at, 8)
    valid_before, at = _uint(blob, at, 8)
    critical, at = _string(blob, at)
    _, at = _string(blob, at)  # extensions: none are defined for host certificates
    _, at = _string(blob, at)  # reserved
    ca_key, at = _string(blob, at)
    signed = blob[:at]
    signature, at = _string(blob, at)
    return Certificate(key_type, key, serial, kind, key_id.decode(errors="replace"), tuple(principals),
                       valid_after, valid_before, critical, ca_key, signed, signature)


def certificate_problem(cert: Certificate, host: str, now: float) -> tuple[str, str] | None:
    """None when `cert` is a host certificate valid now for `host` with a good CA signature, else
    (kind, why): kind "invalid", or "unverifiable" when paramiko cannot check the CA's signature."""
    if cert.kind != _HOST_CERT:
        return "invalid", "its certificate is a user certificate, not a host certificate"
    if now < cert.valid_after:
        return "invalid", f"its host certificate is not valid before {_when(cert.valid_after)} (check the local clock)"
    if cert.valid_before != _FOREVER and now >= cert.valid_before:
        return "invalid", f"its host certificate expired at {_when(cert.valid_before)}"
    if not any(p.lower() == host.lower() for p in cert.principals):
        names = ", ".join(cert.principals) or "none"
        return "invalid", f"its host certificate is for {names}, not {host}"
    if cert.critical_options:
        return "invalid", "its host certificate carries critical options, which no host certificate may"
    try:
        ca_type = _string(cert.ca_key, 0)[0].decode(errors="replace")
        algorithm = _string(cert.signature, 0)[0].decode(errors="replace")
    except ValueError:
        return "invalid", "its host certificate has an unreadable CA key or signature"
    if algorithm == "ssh-rsa":
        return "invalid", "its host certificate is signed with ssh-rsa (SHA-1), which OpenSSH refuses too"
    try:
        ca = paramiko.PKey.from_type_string(ca_type, cert.ca_key)
    except Exception:  # noqa: BLE001 - any failure here means this paramiko cannot use the CA key
        return "unverifiable", f"its host certificate is signed by a {ca_type} CA, which paramiko cannot check"
    try:
        good = ca.verify_ssh_sig(cert.signed, paramiko.Message(cert.signature))
    except Exception:  # noqa: BLE001 - a malformed signature is a bad signature
        good = False
    return None if good else ("invalid", "the CA signature on its host certificate does not verify")


def _when(epoch: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(min(epoch, 2**37)))


def host_key_algorithms(known: KnownHosts, host: str, port: int) -> tuple[str, ...]:
    """Host key algorithms to ask for first: certificates when a @cert-authority line is for this host,
    then the types of its pinned keys (OpenSSH orders them the same way). Empty when nothing is known."""
    entries = known.for_host(host, port)
    first = list(CERT_ALGORITHMS) if any(e.marker == "cert-authority" for e in entries) else []
    for e in entries:
        if e.marker is None:
            first.extend(_ALGORITHMS_FOR_KEY.get(e.key_type, (e.key_type,)))
    return tuple(dict.fromkeys(first))


def check(known: KnownHosts, host: str, port: int, key: bytes, certificate: bytes | None = None,
          now: float | None = None) -> Verdict:
    """Whether to trust the plain key blob `key` that `host`:`port` proved it holds, presented inside
    the certificate blob `certificate` if the host sent one. As OpenSSH: a revoked key or CA is always
    refused; a valid certificate from a listed CA is accepted; otherwise the plain key must be pinned."""
    now = time.time() if now is None else now
    entries = known.for_host(host, port)
    revoked = {e.key: e for e in entries if e.marker == "revoked"}
    authorities = [e for e in entries if e.marker == "cert-authority"]
    pinned = [e for e in entries if e.marker is None]
    key_type = _string(key, 0)[0].decode(errors="replace")
    shown = {"key_type": key_type, "fingerprint": fingerprint(key)}
    if key in revoked:
        why = f"its host key {key_type} {fingerprint(key)} is marked @revoked at {revoked[key].where}"
        return Verdict(False, "revoked", why, **shown)
    cert_refusal: Verdict | None = None
    if certificate is not None:
        try:
            cert = parse_certificate(certificate)
        except ValueError as exc:
            cert_refusal = Verdict(False, "unverifiable", f"its host certificate cannot be read ({exc})", **shown)
        else:
            for blob, what in ((cert.ca_key, "the CA key that signed its host certificate"),
                               (certificate, "its host certificate")):
                if blob in revoked:
                    why = f"{what} ({revoked[blob].key_type} {fingerprint(blob)}) is marked @revoked at {revoked[blob].where}"
                    return Verdict(False, "revoked", why, **shown)
            authority = next((e for e in authorities if e.key == cert.ca_key), None)
            if authority is None:
                why = f"its host certificate is signed by a CA that no @cert-authority line lists ({fingerprint(cert.ca_key)})"
                cert_refusal = Verdict(False, "invalid", why, **shown)
            else:
                problem = certificate_problem(cert, host, now)
                if problem is None:
                    return Verdict(True, "certificate", f"trusted by the @cert-authority line {authority.where}", **shown)
                cert_refusal = Verdict(False, problem[0], problem[1], **shown)
    # As OpenSSH: a certificate that does not check out still leaves the plain key to be pinned.
    for e in pinned:
        if e.key == key:
            return Verdict(True, "pinned", f"pinned at {e.where}", **shown)
    notes = _notes(known, host, port, authorities)
    if cert_refusal is not None:
        return Verdict(False, cert_refusal.kind, cert_refusal.reason, notes=notes, **shown)
    if pinned:
        return Verdict(False, "changed", notes=notes, **shown)
    if authorities:
        why = (f"a @cert-authority line ({authorities[0].where}) is for this host, but it offered no host "
               f"certificate that paramiko can negotiate, only a plain {key_type} key {fingerprint(key)}")
        return Verdict(False, "unverifiable", why, notes=notes, **shown)
    return Verdict(False, "unknown", notes=notes, **shown)


def _notes(known: KnownHosts, host: str, port: int, authorities: list[Entry]) -> tuple[str, ...]:
    # The usual surprises: a CA line whose pattern misses this name (often the port), and skipped lines.
    notes = []
    name = lookup_name(host, port)
    others = [e for e in known.entries if e.marker == "cert-authority" and e not in authorities]
    if others and not authorities:
        e = others[0]
        notes.append(f"the @cert-authority line at {e.where} is for {','.join(e.patterns)}, which does not match {name}")
    if known.problems:
        more = f" and {len(known.problems) - 1} more" if len(known.problems) > 1 else ""
        notes.append(f"skipped {known.problems[0]}{more}")
    return tuple(notes)
