"""Per-app figures counted as requests end, so readers never scan the history for them."""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

_SUCCESS = range(200, 300).__contains__


def _add_counts(counts: list[int], ordered: list[float], bounds: Sequence[float]) -> None:
    """Add how many of ``ordered`` fall in each bucket (value <= bound; the last: past every bound)."""
    total, done = len(ordered), 0
    for i, bound in enumerate(bounds):
        upto = bisect.bisect_right(ordered, bound, done)
        counts[i] += upto - done
        done = upto
        if done == total:
            return
    counts[-1] += total - done


def _add_seconds(counts: dict[int, int], also: dict[int, int] | None, ordered: list[float]) -> None:
    """Add how many of ``ordered`` (times) fall in each whole second (a batch's span a second or two)."""
    if not ordered:
        return
    done = 0
    for second in range(int(ordered[0]), int(ordered[-1]) + 1):
        upto = bisect.bisect_left(ordered, second + 1, done)
        if upto > done:
            counts[second] = counts.get(second, 0) + upto - done
            if also is not None:
                also[second] = also.get(second, 0) + upto - done
        done = upto


class _AppCounts:
    __slots__ = ("finished", "latency", "latency_sum", "succeeded")

    def __init__(self) -> None:
        self.latency = [0] * (len(LATENCY_BUCKETS) + 1)  # cumulative bucket counts (+Inf last)
        self.latency_sum = 0.0
        self.finished: dict[int, int] = {}  # second of receipt -> requests
        self.succeeded: dict[int, int] = {}  # second of receipt -> 2xx


class Counters:
    """Per-app figures kept as requests end, so readers never scan the history for them.

    - the end-to-end latency histogram since falemu started (``/metrics``);
    - the last hour's finished requests and successes (2xx), in one-second buckets of their receipt
      time (the dashboard's "last hour" tiles): at most ``WINDOW`` + 60 buckets per app.

    Requests are counted in batches (:meth:`count`), each figure from sorted values (no call per request).
    """

    WINDOW = 3600

    def __init__(self) -> None:
        self._apps: dict[str, _AppCounts] = {}

    def observe(self, app: str, status: int, received_at: float, seconds: float) -> None:
        self.count(app, [(status, received_at, seconds)])

    def count(self, app: str, ended: list[tuple[int, float, float]]) -> None:
        """Count ``app``'s requests that ended: (status, received_at, seconds) each."""
        statuses, received, seconds = (list(column) for column in zip(*ended, strict=True))
        self._count(app, statuses, received, seconds)

    def _count(self, app: str, statuses: list[int], received: list[float], seconds: list[float]) -> None:
        """Count one app's requests. Each figure comes from sorted values and where the bounds fall in
        them: no call per request."""
        counts = self._apps.get(app)
        if counts is None:
            counts = self._apps[app] = _AppCounts()
        _add_counts(counts.latency, sorted(seconds), LATENCY_BUCKETS)
        counts.latency_sum += sum(seconds)
        if statuses.count(200) == len(statuses):  # all 200: every one succeeded
            _add_seconds(counts.finished, counts.succeeded, sorted(received))
        else:
            _add_seconds(counts.finished, None, sorted(received))
            _add_seconds(counts.succeeded, None, sorted(itertools.compress(received, map(_SUCCESS, statuses))))
        if len(counts.finished) > self.WINDOW + 60:
            before = max(counts.finished) - self.WINDOW
            for second in [s for s in counts.finished if s < before]:
                del counts.finished[second]
                counts.succeeded.pop(second, None)

    def latency(self, app: str) -> tuple[list[int], float]:
        """``app``'s latency histogram: (count per bucket of LATENCY_BUCKETS and +Inf, sum of seconds)."""
        counts = self._apps.get(app)
        if counts is None:
            return [0] * (len(LATENCY_BUCKETS) + 1), 0.0
        return list(counts.latency), counts.latency_sum

    def recent(self, app: str, since: float) -> tuple[int, int]:
        """(finished, 2xx) of ``app``'s requests received since ``since`` (to the second; the last hour
        at most)."""
        counts = self._apps.get(app)
        if counts is None:
            return 0, 0
        first = int(since)
        finished = sum(n for second, n in list(counts.finished.items()) if second >= first)  # one C call to copy
        succeeded = sum(n for second, n in list(counts.succeeded.items()) if second >= first)
        return finished, succeeded
