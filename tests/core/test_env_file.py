"""`.env` as dg reads it: its values win over the shell's for the command, names without a value are dropped."""

from __future__ import annotations

import os

from components.core.env_file import applied, read_env_file


def test_values_win_for_the_block_and_the_environment_comes_back(tmp_path, monkeypatch):
    monkeypatch.setenv("HPC_T_SHELL", "from-shell")
    monkeypatch.delenv("HPC_T_NEW", raising=False)
    (tmp_path / ".env").write_text("HPC_T_SHELL=from-file\nHPC_T_NEW='quoted value'\nHPC_T_BARE\n# comment\n")
    assert read_env_file(tmp_path) == {"HPC_T_SHELL": "from-file", "HPC_T_NEW": "quoted value"}
    with applied(tmp_path):
        assert (os.environ["HPC_T_SHELL"], os.environ["HPC_T_NEW"]) == ("from-file", "quoted value")
        assert "HPC_T_BARE" not in os.environ
    assert os.environ["HPC_T_SHELL"] == "from-shell" and "HPC_T_NEW" not in os.environ


def test_no_env_file_changes_nothing(tmp_path):
    before = dict(os.environ)
    with applied(tmp_path) as values:
        assert values == {} and dict(os.environ) == before
