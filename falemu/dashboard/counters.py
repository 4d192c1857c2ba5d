"""Per-app figures counted as requests end, so readers never scan the history for them."""

from __future__ import annotations

import bisect
import itertools
import operator
from collections.abc import Sequence
from typing import Any

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

_SUCCESS = range(200, 300).__contains__
_APP, _STATUS, _TS = operator.attrgetter("app"), operator.attrgetter("status_code"), operator.attrgetter("ts")
_SECONDS, _WAITED, _RUNNER = (
    operator.attrgetter("seconds"),
    operator.attrgetter("queue_wait"),
    operator.attrgetter("runner"),
)


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

    Requests are counted in batches (:meth:`observe_ended`), each figure in one pass of C code.
    """

    WINDOW = 3600

    def __init__(self) -> None:
        self._apps: dict[str, _AppCounts] = {}

    def observe(self, app: str, status: int, received_at: float, seconds: float) -> None:
        self._count(app, [status], [received_at], [seconds])

    def observe_ends(self, ended: Sequence[Any]) -> None:
        """Count requests that ended from their :class:`~falemu.events.RequestCompleted` events alone:
        a request took its ``seconds`` on a runner plus its ``queue_wait`` before (both the time it
        waited when it never reached one) and was received that long before its end."""
        seconds = list(map(operator.add, map(_SECONDS, ended), map(_WAITED, ended)))
        if "" in map(_RUNNER, ended):
            for i, event in enumerate(ended):
                if not event.runner:
                    seconds[i] = max(event.seconds, event.queue_wait)
        self.observe_ended(ended, list(map(operator.sub, map(_TS, ended), seconds)))

    def observe_ended(self, ended: Sequence[Any], received: Sequence[float]) -> None:
        """Count requests that ended: their :class:`~falemu.events.RequestCompleted` events (app,
        status_code, ts) and the times they were received, in the same order."""
        seconds = list(map(operator.sub, map(_TS, ended), received))
        if seconds and min(seconds) < 0.0:  # a clock that went back
            seconds = [max(s, 0.0) for s in seconds]
        statuses = list(map(_STATUS, ended))
        names = set(map(_APP, ended))
        if len(names) == 1:
            self._count(names.pop(), statuses, list(received), seconds)
            return
        apps = list(map(_APP, ended))
        for app in names:
            mine = list(map(app.__eq__, apps))
            self._count(
                app,
                list(itertools.compress(statuses, mine)),
                list(itertools.compress(received, mine)),
                list(itertools.compress(seconds, mine)),
            )

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
