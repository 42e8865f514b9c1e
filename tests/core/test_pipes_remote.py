"""The Pipes reader over a job directory, with its shell commands run by a local bash."""

import json
from types import SimpleNamespace

from components.core.pipes_remote import RemoteFileMessageReader
from tests.core.test_tail import local_run


class Handler:
    def __init__(self):
        self.messages = []

    def handle_message(self, message):
        self.messages.append(message)


def _msg(method, **params):
    return json.dumps({"__dagster_pipes_version": "0.1", "method": method, "params": params or None}) + "\n"


def _read_all(job_dir, job_id="7"):
    notes = []
    reader = RemoteFileMessageReader(SimpleNamespace(run=local_run), str(job_dir), interval_s=0.05, log=notes.append)
    reader.job_id = job_id
    handler = Handler()
    with reader.read_messages(handler):
        pass
    return reader, handler, notes


def test_a_requeued_job_keeps_its_logs_but_only_the_last_executions_results(tmp_path, capsys):
    (tmp_path / "pipes-messages.jsonl").write_text(
        _msg("opened") + _msg("log", message="execution 1", level="info")
        + _msg("report_asset_materialization", asset_key="a", metadata={"n": {"raw_value": 1, "type": "int"}}, data_version=None)
        + _msg("opened") + _msg("log", message="execution 2", level="info")
        + _msg("report_asset_materialization", asset_key="a", metadata={"n": {"raw_value": 2, "type": "int"}}, data_version=None)
        + _msg("closed")
    )
    (tmp_path / "slurm-7.out").write_text("first\n[hpc] job 7 requeued: execution 2 starts on n1\nlast words without newline")
    (tmp_path / "slurm-7.err").write_text("")
    reader, handler, notes = _read_all(tmp_path)
    methods = [m["method"] for m in handler.messages]
    assert methods == ["opened", "log", "log", "report_asset_materialization", "closed"]
    assert handler.messages[3]["params"]["metadata"]["n"]["raw_value"] == 2
    assert reader.drained and reader.executions == 2
    assert any("execution 2 opened Pipes; 1 result(s) reported by the earlier execution are dropped" in n for n in notes)
    assert capsys.readouterr().out.endswith("last words without newline\n")


def test_final_read_that_never_succeeds_is_not_drained(tmp_path):
    def down(command, **kwargs):
        raise OSError("no route to host")

    reader = RemoteFileMessageReader(SimpleNamespace(run=down), str(tmp_path), interval_s=0.05, final_patience_s=0, log=lambda _: None)
    with reader.read_messages(Handler()):
        pass
    assert reader.drained is False
