import pytest

from components.core.contact import BACKOFF_S, ContactWatch, OutageTooLong


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def _watch(tolerance=60.0):
    clock, warnings, infos = Clock(), [], []
    return ContactWatch("vsc5", tolerance, warnings.append, infos.append, clock=clock), clock, warnings, infos


def test_one_failed_answer_is_silent():
    watch, clock, warnings, infos = _watch()
    assert watch.lost(RuntimeError("Socket timed out on send/recv operation")) == BACKOFF_S[0]
    clock.now += 1
    watch.restored()
    assert (warnings, infos, watch.outages) == ([], [], [])


def test_outage_is_logged_once_with_backoff_and_its_duration():
    watch, clock, warnings, infos = _watch()
    pauses = []
    for _ in range(7):
        pauses.append(watch.lost(OSError("cannot reach login.vsc.ac.at:22: Connection refused")))
        clock.now += pauses[-1]
    assert pauses == [1.0, 2.0, 4.0, 8.0, 15.0, 15.0, 15.0]
    assert len(warnings) == 1 and "lost contact with vsc5: cannot reach" in warnings[0] and "00:01:00" in warnings[0]
    watch.restored()
    assert infos == ["contact with vsc5 restored after 60s"] and watch.outages == [60.0]


def test_pause_never_shorter_than_the_polling_interval():
    watch, _, _, _ = _watch()
    assert watch.lost(OSError("x"), floor_s=10.0) == 10.0


def test_gives_up_after_the_tolerance():
    watch, clock, _, _ = _watch(tolerance=30.0)
    watch.lost(OSError("down"))
    clock.now += 31
    with pytest.raises(OutageTooLong, match="no contact with vsc5 for 31s"):
        watch.lost(OSError("still down"))
