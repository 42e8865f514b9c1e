"""The session's ssh_config: every line from the profile, nothing a value could smuggle in, and
OpenSSH itself agreeing with what we meant (`ssh -G` prints the configuration it would use)."""

from __future__ import annotations

import subprocess

import pytest

from components.core.errors import ConfigError
from components.core.ssh_config import SessionPaths, alias, render
from components.core.ssh_target import Hop, SSHTarget

PATHS = SessionPaths(config="/s/vsc5-1.ssh_config", socket="/s/vsc5-1.sock", log="/s/vsc5-1.log")


def _target(**changes) -> SSHTarget:
    base = dict(login=Hop("vsc5.vsc.ac.at", 22, "alice"), auth="password_otp", known_hosts="/home/a/.ssh/known_hosts",
                cluster="vsc5", keepalive_s=120)
    return SSHTarget(**(base | changes))


def _effective(tmp_path, text: str, host: str) -> dict[str, str]:
    config = tmp_path / "config"
    config.write_text(text)
    out = subprocess.run(["ssh", "-G", "-F", str(config), host], capture_output=True, text=True, check=True).stdout
    return {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in out.splitlines() if " " in line}


def test_otp_login_is_strict_multiplexed_and_keyboard_interactive(tmp_path):
    seen = _effective(tmp_path, render(_target(), PATHS, lifetime_s=43200), alias("vsc5"))
    assert (seen["hostname"], seen["port"], seen["user"]) == ("vsc5.vsc.ac.at", "22", "alice")
    assert seen["stricthostkeychecking"] == "true"
    assert seen["userknownhostsfile"] == "/home/a/.ssh/known_hosts" and seen["globalknownhostsfile"] == "/dev/null"
    assert seen["controlpath"] == "/s/vsc5-1.sock" and seen["controlpersist"] == "43200"
    assert seen["preferredauthentications"] == "keyboard-interactive,password" and seen["pubkeyauthentication"] == "false"
    assert seen["serveraliveinterval"] == "120" and seen["forwardagent"] == "no"


def test_jump_hosts_are_chained_and_only_the_login_node_is_multiplexed(tmp_path):
    target = _target(jumps=(Hop("vmos.vsc.ac.at", 22, "alice"),), auth="certificate", key_file="/k/id", certificate_file="/k/id-cert.pub")
    text = render(target, PATHS, lifetime_s=60)
    login = _effective(tmp_path, text, alias("vsc5"))
    jump = _effective(tmp_path, text, alias("vsc5", 0))
    assert login["proxyjump"] == alias("vsc5", 0) and "controlpath" not in jump
    assert login["certificatefile"] == "/k/id-cert.pub" and login["identityfile"] == "/k/id"
    assert jump["stricthostkeychecking"] == "true" and jump["hostname"] == "vmos.vsc.ac.at"


def test_percent_in_a_path_stays_literal(tmp_path):
    seen = _effective(tmp_path, render(_target(known_hosts="/data/100%h/known"), PATHS, lifetime_s=60), alias("vsc5"))
    assert seen["userknownhostsfile"] == "/data/100%h/known"


@pytest.mark.parametrize("field,value,key", [
    ("login", Hop("evil\n  ProxyCommand touch /tmp/x", 22, "a"), "ssh.host"),
    ("login", Hop("host.org", 22, "a b"), "ssh.user"),
    ("login", Hop("host.org", 22, "-oProxyCommand=x"), "ssh.user"),
    ("known_hosts", '/tmp/"quoted"', "ssh.known_hosts"),
    ("key_file", "/tmp/k\nIdentityFile /etc/shadow", "ssh.key_file"),
])
def test_values_that_would_add_directives_are_refused(field, value, key):
    auth = {"key_file": "key"}.get(field, "password_otp")
    with pytest.raises(ConfigError) as info:
        render(_target(**{field: value, "auth": auth}), PATHS, lifetime_s=60)
    assert key in str(info.value) and "vsc5" in str(info.value)
