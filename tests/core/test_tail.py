"""The tail's shell command runs for real in a local bash; only short answers are simulated."""

import subprocess

import pytest

from components.core.ssh import CommandResult
from components.core.tail import RemoteTail, ShortRead, StderrTail, cap_line


def local_run(command, check=False, timeout=None):
    done = subprocess.run(["bash", "-c", command], capture_output=True, timeout=timeout)
    return CommandResult(done.returncode, done.stdout.decode(), done.stderr.decode())


def test_partial_lines_wait_and_the_final_read_delivers_them(tmp_path):
    f = tmp_path / "out"
    f.write_bytes(b"one\ntw")
    tail = RemoteTail(local_run, {"out": str(f)})
    assert tail.read().lines == {"out": ["one"]}
    assert tail.read().lines == {"out": []}
    with f.open("ab") as fh:
        fh.write(b"o\nthree")
    assert tail.read().lines == {"out": ["two"]}
    assert tail.read(final=True).lines == {"out": ["three"]}


def test_missing_file_reads_as_empty(tmp_path):
    tail = RemoteTail(local_run, {"out": str(tmp_path / "not-yet")})
    assert tail.read().lines == {"out": []} and tail.offsets == {"out": 0}


def test_truncated_file_is_read_again_from_the_start(tmp_path):
    f = tmp_path / "slurm-1.out"
    f.write_bytes(b"first execution, a long line\n")
    tail = RemoteTail(local_run, {"out": str(f)})
    tail.read()
    f.write_bytes(b"second\n")  # Slurm truncates the file when it requeues a job
    read = tail.read()
    assert read.truncated == ["out"] and read.lines == {"out": ["second"]}


def test_a_short_answer_changes_nothing(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"message\n" * 100)
    b.write_bytes(b"x" * 5000 + b"\n")
    tail = RemoteTail(local_run, {"messages": str(a), "stdout": str(b)})

    def cut(command, **kwargs):
        full = local_run(command)
        return CommandResult(full.exit_code, full.stdout[: len(full.stdout) - 3000], full.stderr)

    tail._run = cut
    with pytest.raises(ShortRead):
        tail.read()
    assert tail.offsets == {"messages": 0, "stdout": 0}
    tail._run = local_run
    read = tail.read()
    assert len(read.lines["messages"]) == 100 and read.lines["stdout"] == ["x" * 5000]


def test_reads_are_capped_and_continue(tmp_path):
    f = tmp_path / "big"
    f.write_bytes(b"0123456789\n" * 100)
    tail = RemoteTail(local_run, {"out": str(f)}, read_cap=256)
    lines, reads = [], 0
    while True:
        read = tail.read()
        lines += read.lines["out"]
        reads += 1
        if not read.more:
            break
    assert lines == ["0123456789"] * 100 and reads > 4


def test_a_line_longer_than_a_read_still_moves_on(tmp_path):
    f = tmp_path / "big"
    f.write_bytes(b"y" * 1000 + b"\nend\n")
    tail = RemoteTail(local_run, {"out": str(f)}, read_cap=256)
    got = []
    for _ in range(10):
        got += tail.read().lines["out"]
    assert "".join(got[:-1]) == "y" * 1000 and got[-1] == "end"


def test_paths_with_spaces_and_quotes(tmp_path):
    f = tmp_path / "it's a file"
    f.write_bytes(b"ok\n")
    assert RemoteTail(local_run, {"out": str(f)}).read().lines == {"out": ["ok"]}


def test_line_caps():
    assert cap_line("short") == "short"
    cut = cap_line("E" * 10_000_000, 1024)
    assert cut.startswith("E" * 1024) and cut.endswith("[... 9.5 MB cut]")
    tail = StderrTail(lines=3)
    for i in range(5):
        tail.append(f"line {i} " + "z" * 5000)
    assert len(tail) == 3 and tail.text().startswith("line 2") and len(tail.text()) < 3 * 2200
