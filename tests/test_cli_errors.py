"""Which exceptions the hpc CLI shows as one message (a user's mistake) and which keep their traceback."""

from __future__ import annotations

import errno
import tomllib
from pathlib import Path

from components.cli_errors import load_error, user_message
from components.core.errors import ConfigError, Location


def test_an_os_error_on_a_path_names_it_and_what_to_do():
    text = user_message(NotADirectoryError(errno.ENOTDIR, "Not a directory", "/srv/data/x"))
    assert text.startswith("cannot use /srv/data/x: Not a directory") and "is a file" in text
    assert "permissions" in user_message(PermissionError(errno.EACCES, "Permission denied", "/srv/x"))


def test_invalid_toml_is_a_message_and_a_bug_is_not():
    try:
        tomllib.loads('a = "b\n')
    except tomllib.TOMLDecodeError as exc:
        assert "not valid" in user_message(exc) and "line 1" in user_message(exc)
    assert user_message(KeyError("x")) is None and user_message(OSError("no path")) is None


class ComponentTreeException(Exception):
    """Stands in for dagster's wrapper (matched by name, as dagster has two classes of that name)."""


def _wrapped(cause: Exception) -> Exception:
    try:
        try:
            raise cause
        except Exception as inner:
            raise ComponentTreeException("Error while loading component numbers[0]:\n(tree)") from inner
    except ComponentTreeException as outer:
        return outer


def test_a_load_failure_shows_its_cause_at_the_component(tmp_path):
    defs_file = tmp_path / "defs.yaml"
    placed = load_error(_wrapped(ConfigError("bad", location=Location(key="script"))), defs_file)
    assert placed.location.file == defs_file and placed.problem == "bad"
    other = load_error(_wrapped(RuntimeError("boom")), defs_file)
    assert "RuntimeError: boom" in other.problem and "raised at" in other.problem and "test_cli_errors.py:" in other.problem
    assert load_error(RuntimeError("not a load failure"), defs_file) is None
