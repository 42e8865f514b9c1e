"""Batched tails: several followers, one remote command per interval. The tail's command runs for
real in a local bash (tests/core/test_tail.py's local_run); followers in separate processes share
the lock and inbox files as step processes do."""

from __future__ import annotations

import multiprocessing
import time

import pytest

from components.core.shared_tail import SharedTail
from components.core.tail import ShortRead
from tests.core.test_tail import local_run


def _counting_run(counter: list):
    def run(command, check=False, timeout=None):
        counter.append(command)
        return local_run(command, check=check, timeout=timeout)
    return run


def test_one_round_serves_every_follower(tmp_path):
    (tmp_path / "a").write_text("a1\na2\n")
    (tmp_path / "b").write_text("b1\n")
    calls: list = []
    first = SharedTail(_counting_run(calls), tmp_path / "poll", {"out": str(tmp_path / "a")}, interval_s=60)
    second = SharedTail(_counting_run(calls), tmp_path / "poll", {"out": str(tmp_path / "b")}, interval_s=60)
    assert first.read().lines == {"out": ["a1", "a2"]}
    assert second.read().lines == {"out": ["b1"]}
    assert len(calls) == 1  # the second found the round fresh and read its inbox
    with (tmp_path / "b").open("a") as fh:
        fh.write("b2\n")
    assert second.read(final=True).lines == {"out": ["b2"]}  # final forces a round
    assert first.read().lines == {} and len(calls) == 2


def test_partial_lines_wait_for_the_end_and_nothing_repeats(tmp_path):
    f = tmp_path / "out"
    f.write_bytes(b"one\ntw")
    tail = SharedTail(local_run, tmp_path / "poll", {"out": str(f)}, interval_s=0)
    assert tail.read().lines == {"out": ["one"]}
    with f.open("ab") as fh:
        fh.write(b"o\nthree")
    assert tail.read().lines == {"out": ["two"]}
    assert tail.read(final=True).lines == {"out": ["three"]}
    assert tail.read(final=True).lines == {}


def test_a_failed_round_loses_nothing(tmp_path):
    f = tmp_path / "out"
    f.write_text("kept\n")
    broken = {"on": True}

    def flaky(command, check=False, timeout=None):
        result = local_run(command, check=check, timeout=timeout)
        if broken["on"]:
            result.stdout = result.stdout[: len(result.stdout) // 2]  # a short answer
        return result

    tail = SharedTail(flaky, tmp_path / "poll", {"out": str(f)}, interval_s=0)
    with pytest.raises(ShortRead):
        tail.read()
    broken["on"] = False
    assert tail.read().lines == {"out": ["kept"]}


def test_truncation_is_reported_to_its_follower(tmp_path):
    f = tmp_path / "out"
    f.write_text("first execution\n")
    tail = SharedTail(local_run, tmp_path / "poll", {"out": str(f)}, interval_s=0)
    assert tail.read().lines == {"out": ["first execution"]}
    f.write_text("again\n")
    read = tail.read()
    assert read.truncated == ["out"] and read.lines == {"out": ["again"]}


def test_a_closed_follower_leaves_nothing(tmp_path):
    tail = SharedTail(local_run, tmp_path / "poll", {"out": str(tmp_path / "none")}, interval_s=0)
    tail.read()
    tail.close()
    assert sorted(p.name for p in (tmp_path / "poll" / "tails").iterdir()) == ["round.json", "tails.lock"]


def _follow_in_process(directory, path, seconds, queue):
    tail = SharedTail(local_run, directory, {"out": path}, interval_s=0.5)
    got, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        got += tail.read().lines.get("out", [])
        time.sleep(0.1)  # each follower asks five times per interval
    got += tail.read(final=True).lines.get("out", [])
    tail.close()
    queue.put((path, got, tail.rounds))


def test_rounds_do_not_grow_with_the_number_of_followers(tmp_path):
    """8 processes reading every 0.1 s for 4 s: about 8 rounds in all (one per 0.5 s), not 8 x 40."""
    paths = []
    for i in range(8):
        path = tmp_path / f"job{i}.out"
        path.write_text("".join(f"job{i} line{n}\n" for n in range(50)))
        paths.append(str(path))
    queue = multiprocessing.get_context("spawn").Queue()
    procs = [multiprocessing.get_context("spawn").Process(target=_follow_in_process, args=(tmp_path / "poll", p, 4.0, queue))
             for p in paths]
    for proc in procs:
        proc.start()
    results = [queue.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
    rounds = sum(r[2] for r in results)
    for path, got, _ in results:
        name = path.rsplit("/", 1)[1].split(".")[0]
        assert got == [f"{name} line{n}" for n in range(50)]
    print(f"rounds: {rounds} for 8 followers x 40 reads")
    assert rounds <= 8 + 2 * 8 + 8, rounds  # interval rounds + start-up slack + each follower's final round
