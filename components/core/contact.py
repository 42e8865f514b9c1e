"""Riding out lost contact with a cluster: a login node rebooting, a controller restarting.

While contact is lost nothing is concluded about the job: the step waits with a growing pause
(never shorter than its normal polling), says once that contact was lost and once that it came
back (with how long it took), and gives up only after the tolerance, saying the job may still run.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from components.core.units import format_time

# Pauses between tries while contact is lost (seconds); the last one repeats.
BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 15.0)


class OutageTooLong(RuntimeError):
    """Contact stayed lost longer than the tolerance; `lost_s` and `last_error` say how and why."""

    def __init__(self, cluster: str, lost_s: float, last_error: str):
        self.cluster, self.lost_s, self.last_error = cluster, lost_s, last_error
        super().__init__(f"no contact with {cluster} for {lost_s:.0f}s (last error: {last_error})")


class ContactWatch:
    """Tracks one step's contact with one cluster.

    tolerance_s: how long contact may stay lost before `lost` raises OutageTooLong (seconds).
    log_warning / log_info: where the loss and the return are reported (a Dagster logger's methods).
    """

    def __init__(self, cluster: str, tolerance_s: float, log_warning: Callable[[str], None], log_info: Callable[[str], None],
                 clock: Callable[[], float] = time.monotonic):
        self.cluster, self.tolerance_s = cluster, tolerance_s
        self._warn, self._info, self._clock = log_warning, log_info, clock
        self.since: float | None = None
        self._tries = 0
        self._announced = False
        self.outages: list[float] = []  # durations of the outages that ended, seconds

    def lost(self, error: Exception, floor_s: float = 0.0) -> float:
        """Note a failed contact; the pause before the next try (seconds). Raises OutageTooLong."""
        now = self._clock()
        if self.since is None:
            self.since, self._tries, self._announced = now, 0, False
        elif not self._announced:
            # One failed answer on a busy controller is no news worth a log line; two in a row are.
            self._announced = True
            self._warn(f"lost contact with {self.cluster}: {_one_line(error)}. Nothing is concluded about the job "
                       f"while contact is lost; retrying for up to {format_time(int(self.tolerance_s))}")
        elapsed = now - self.since
        if elapsed > self.tolerance_s:
            raise OutageTooLong(self.cluster, elapsed, _one_line(error))
        pause = max(BACKOFF_S[min(self._tries, len(BACKOFF_S) - 1)], floor_s)
        self._tries += 1
        return min(pause, max(0.5, self.tolerance_s - elapsed + 0.5))

    def restored(self) -> None:
        if self.since is None:
            return
        lost_s = self._clock() - self.since
        self.since = None
        if self._announced:
            self.outages.append(lost_s)
            self._info(f"contact with {self.cluster} restored after {lost_s:.0f}s")


def _one_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0][:300] if text else type(error).__name__
