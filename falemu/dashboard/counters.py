"""Per-app figures counted as requests end, so readers never scan the history for them."""

from __future__ import annotations

import bisect

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class _AppCounts:
    __slots__ = ("latency", "latency_sum", "recent")

    def __init__(self) -> None:
        self.latency = [0] * (len(LATENCY_BUCKETS) + 1)  # cumulative bucket counts (+Inf last)
        self.latency_sum = 0.0
        self.recent: dict[int, list[int]] = {}  # second of receipt -> [finished, 2xx]


class Counters:
    """Per-app figures kept as requests end, so readers never scan the history for them.

    - the end-to-end latency histogram since falemu started (``/metrics``);
    - the last hour's finished requests and successes (2xx), in one-second buckets of their receipt
      time (the dashboard's "last hour" tiles): at most ``WINDOW`` + 60 buckets per app.
    """

    WINDOW = 3600

    def __init__(self) -> None:
        self._apps: dict[str, _AppCounts] = {}

    def observe(self, app: str, status: int, received_at: float, seconds: float) -> None:
        counts = self._apps.get(app)
        if counts is None:
            counts = self._apps[app] = _AppCounts()
        counts.latency[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        counts.latency_sum += seconds
        recent = counts.recent
        second = int(received_at)
        bucket = recent.get(second)
        if bucket is None:
            bucket = recent[second] = [0, 0]
            if len(recent) > self.WINDOW + 60:
                _prune(recent, second - self.WINDOW)
        bucket[0] += 1
        if 200 <= status < 300:
            bucket[1] += 1

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
        total = success = 0
        for second, (n, ok) in list(counts.recent.items()):  # one C call: safe against other threads
            if second >= first:
                total += n
                success += ok
        return total, success


def _prune(recent: dict[int, list[int]], before: int) -> None:
    for second in [s for s in recent if s < before]:
        del recent[second]
