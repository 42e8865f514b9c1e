"""YAML loading with line numbers: errors name file and line; each file version is parsed once."""

from __future__ import annotations

import os

import pytest

from components.core.errors import ConfigError
from components.core.yamlio import load_yaml


def test_not_utf8_names_the_line_and_the_fix(tmp_path):
    path = tmp_path / "defs.yaml"
    path.write_bytes(b"type: x\nattributes:\n  script: caf\xe9.py\n")
    with pytest.raises(ConfigError) as caught:
        load_yaml(path)
    message = str(caught.value)
    assert "defs.yaml:3" in message and "not UTF-8" in message and "0xe9" in message
    assert "fix: save the file as UTF-8" in message


def test_duplicate_key_names_both_lines(tmp_path):
    path = tmp_path / "profile.yaml"
    path.write_text("name: a\nscheduler: slurm\nname: b\n")
    with pytest.raises(ConfigError, match=r"profile.yaml:3: .*duplicate key 'name' \(first defined on line 1\)"):
        load_yaml(path)


def test_each_caller_gets_its_own_copy(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("slurm:\n  partitions: {cpu: {name: c}}\nlist: [1, 2]\n")
    first, lines = load_yaml(path)
    first["slurm"]["partitions"]["cpu"]["name"] = "changed"
    first["list"].append(3)
    second, again = load_yaml(path)
    assert second == {"slurm": {"partitions": {"cpu": {"name": "c"}}}, "list": [1, 2]}
    assert lines.line_of(("slurm", "partitions", "cpu")) == again.line_of(("slurm", "partitions", "cpu")) == 2


def test_an_edited_file_is_read_again(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("a: 1\n")
    assert load_yaml(path)[0] == {"a": 1}
    path.write_text("b: 2\n")  # same size
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # a coarse clock may not move
    data, lines = load_yaml(path)
    assert data == {"b": 2} and lines.line_of(("b",)) == 1
