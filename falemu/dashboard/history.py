"""The request history and runner records behind the dashboard, fed by the event bus and the gateway.

:class:`History` subscribes to the :class:`~falemu.events.EventBus` (requests queued, started and
completed; runner states, readiness, failures and log lines) and is the gateway's
:class:`~falemu.events.BodyRecorder` for inputs and outputs. Everything is bounded:

- the last ``capacity`` requests (default 50,000) with their timings, status, runner and error type;
- their bodies, each capped at ``body_cap`` bytes (64 KiB) and all together at ``body_budget`` bytes
  (64 MiB): past the budget the oldest requests lose their bodies first and keep everything else;
- the last ``runner_capacity`` runners, each with its states over time, its start-up timeline and its
  last ``log_lines`` log lines (a request's logs are its runner's lines while it ran).

Recording is cheap by design (``bench/dashboard.py`` measures it). The gateway's calls do little and
take no lock: a request's events go into a journal, most of them without a call into Python
(:meth:`History.follow`); its bodies, capped and kept by reference (never copied, parsed or decoded:
that happens when a page shows them), wait under its id. The work is left to readers: when anything
reads the history, the journal is applied in one go (each request noted under its id, requests that
ended counted), and the :class:`RequestRecord` a page shows is built from a note when something
first reads it. With nobody reading, the journal grows to ``UNREAD`` times the capacity; past that
its oldest entries are let go unapplied as new ones come, their requests counted (they would have
left the history before anyone saw them): a request nobody looks at costs its journal entries and
its count. The first read after a long unread stretch applies up to that many entries at once.
Bodies waiting count against the body budget (past it the journal is applied), and past the budget a
walk from where the last one stopped takes the oldest bodies (down to 7/8 of the budget). Per-app
figures that pages show without scanning (the last hour's counts, the latency histogram) are counted
as requests end. ``X-Fal-Store-IO: 0`` keeps a request's bodies out, as on fal. Nothing here holds a
key or a secret: the gateway consumes fal keys before the headers reach the recorder, and only content
types are kept of the headers.
"""

from __future__ import annotations

import collections
import functools
import itertools
import operator
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from falemu.dashboard.counters import LATENCY_BUCKETS, Counters
from falemu.dashboard.records import AppInfo, Body, RequestRecord, RunnerRecord
from falemu.dashboard.runners import RUNNER_CAPACITY, RunnerHistory, activity_text
from falemu.events import (
    Event,
    EventBus,
    RequestCompleted,
    RequestQueued,
    RequestStarted,
    RunnerStateChanged,
)

__all__ = [  # the records and counters are their own modules; they are taken from here too
    "LATENCY_BUCKETS",
    "AppInfo",
    "Body",
    "Counters",
    "History",
    "RequestRecord",
    "RunnerRecord",
    "activity_text",
]

Headers = list[tuple[bytes, bytes]]

CAPACITY = 50_000
BODY_CAP = 64 * 1024
BODY_BUDGET = 64 * 1024 * 1024
JOURNAL_BATCH = 256  # while anything listens, or a streamed answer's parts come after a read: applied at once
UNREAD = 3  # journal entries kept unread, times ``capacity`` (a queued request has three), then the oldest go
LOG_GRACE = 1.0  # a runner's lines this long after a request ended still belong to it (log readers lag)


_CONTENT_TYPES: dict[bytes, str] = {}  # header value -> str: the few an app answers with, decoded once


def _content_type_text(value: bytes) -> str:
    text = value.decode("latin-1")
    if len(_CONTENT_TYPES) < 256:
        _CONTENT_TYPES[value] = text
    return text


_NOT_SENT: Any = object()  # no body yet
_JOURNALED = frozenset((RequestQueued, RequestStarted, RequestCompleted))  # applied when read
_APPENDED = (RequestQueued, RequestStarted)  # History.follow: into the journal by the bus itself
_REQUEST_ID = operator.attrgetter("request_id")
_IS_PART = functools.partial(type.__instancecheck__, tuple)  # a streamed answer's next part, in the journal
_POPLEFT = collections.deque.popleft
_INPUT, _OUTPUT = "input", "output"
Kept = tuple[str, bytes, int]  # a body: content type, its first body_cap bytes, every byte's count
_NO_STORE: Kept = ("", b"", 0)  # a note's input when the caller sent X-Fal-Store-IO: 0
# A request the history took but has not built a record of yet (a "note") is a list:
#   [seq, received_at, body bytes counted, input or None, output or None, its events in order...]
# with each body (content type, the first body_cap bytes, size). Its record is built when read.
_SEQ, _RECEIVED, _BYTES, _IN, _OUT, _EVENTS = range(6)
Note = list[Any]
Ended = dict[str, list[tuple[int, float, float]]]  # app -> (status, received_at, seconds) of requests that ended
_DATA = operator.itemgetter(1)  # a body's kept bytes


class History(RunnerHistory):
    """Requests and runners of one emulator, for the dashboard, ``falemu report`` and ``/metrics``.

    Call it with events (or let it :meth:`follow` a bus); hand it to the gateway as its body recorder.
    """

    def __init__(
        self,
        apps: Mapping[str, AppInfo] | None = None,
        *,
        capacity: int = CAPACITY,
        body_cap: int = BODY_CAP,
        body_budget: int = BODY_BUDGET,
        runner_capacity: int = RUNNER_CAPACITY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(apps, runner_capacity=runner_capacity)
        self.capacity = capacity
        self.body_cap = body_cap
        self.body_budget = body_budget
        self.clock = clock
        self.started_at = clock()
        self._counters = Counters()
        # insertion-ordered, oldest first; _order has the same ids for eviction (no per-entry node)
        self._requests: dict[str, RequestRecord | Note] = {}
        self._order: collections.deque[str] = collections.deque()
        # bodies handed over and not applied yet, by request id (None: X-Fal-Store-IO: 0)
        self._inputs: dict[str, Kept | None] = {}
        self._outputs: dict[str, Kept] = {}
        self._journal: collections.deque[Any] = collections.deque()  # see "feeding" below
        self._limit = max(16, UNREAD * capacity)
        self._waiting = 0  # bytes of the bodies waiting under their ids, about (recounted now and then)
        self._open: set[str] = set()  # requests the history noted or recorded that have not ended
        self._parts = False  # the journal may hold a streamed answer's parts
        self._shedding = False
        self._body_bytes = 0
        self._shed_from = 0  # requests at the front of the history whose bodies the budget took
        self._shed_seq = 0  # the newest of them
        self._seqs = itertools.count(1)  # a request's seq: the order in which the history took it
        self._built_seq = 0  # every request up to this seq has its record (see _build_all)

    # -- feeding -------------------------------------------------------------------------------------
    # The gateway calls these in the middle of each request, on its event loop, and they do little: a
    # request's events go into a journal (most of them without a call into Python, see follow); its
    # bodies, capped and kept by reference (never copied, parsed or decoded), wait under its id. No
    # lock is taken. When anything reads the history, the journal is applied in one go; with nobody
    # reading, it grows to UNREAD times the capacity and then lets its oldest entries go as new ones
    # come, counted (see the module's docstring).

    def follow(self, events: EventBus) -> Callable[[], None]:
        """Take ``events``' events from now on, as ``events.subscribe(history)`` does but for less: a
        request's queueing and start and a runner's state changes are noted without a call into
        Python; a request's end still comes here, which keeps the journal within its bound. Returns
        the unsubscribe."""
        stops = (
            events.subscribe(self._journal.append, kinds=_APPENDED),
            events.subscribe(self._states.append, kinds=(RunnerStateChanged,)),
            events.subscribe(self._journaled, kinds=(RequestCompleted,)),
            events.subscribe(self, kinds=tuple(self._handlers)),
        )

        def stop() -> None:
            for unsubscribe in stops:
                unsubscribe()

        return stop

    def __call__(self, event: Event) -> None:
        kind = type(event)
        if kind in _JOURNALED:
            self._journaled(event)
            return
        if kind is RunnerStateChanged:
            self._states.append(event)
            return
        handler = self._handlers.get(kind)
        if handler is not None:
            handler(event)

    def _journaled(self, event: Event) -> None:
        """Into the journal, within its bound (a followed bus hands a request's end straight here)."""
        journal = self._journal
        journal.append(event)
        if len(journal) >= self._limit:
            self._let_go_unread()

    def request_body(self, request_id: str, headers: Headers, body: bytes, store: bool) -> None:
        if not store:
            self._inputs[request_id] = None
            return
        if type(body) is not bytes:
            body = bytes(body)  # a buffer the caller may reuse: kept as a copy
        size = len(body)
        content_type = ""
        for name, value in headers:
            if name == b"content-type":
                content_type = _CONTENT_TYPES.get(value) or _content_type_text(value)
                break
        kept = body if size <= self.body_cap else body[: self.body_cap]
        self._inputs[request_id] = (content_type, kept, size)
        self._waiting += len(kept)
        if self._waiting > self.body_budget:
            self._bodies_over_budget()

    def response_body(self, request_id: str, headers: Headers, body: bytes) -> None:
        if type(body) is not bytes:
            body = bytes(body)
        size = len(body)
        kept = body if size <= self.body_cap else body[: self.body_cap]
        if headers:  # the answer's head, with its whole body or the first part of a stream
            content_type = ""
            for name, value in headers:
                if name == b"content-type":
                    content_type = _CONTENT_TYPES.get(value) or _content_type_text(value)
                    break
            self._outputs[request_id] = (content_type, kept, size)
        else:  # a streamed answer's next part
            first = self._outputs.get(request_id)
            if first is None:  # taken by a reader already: in order, after the first
                journal = self._journal
                journal.append((request_id, ("", kept, size)))
                self._parts = True
                if len(journal) >= JOURNAL_BATCH:
                    self.flush()
                return
            content_type, data, seen = first  # joins the first, kept up to the cap
            kept = kept[: self.body_cap - len(data)]
            self._outputs[request_id] = (content_type, data + kept, seen + size)
        self._waiting += len(kept)
        if self._waiting > self.body_budget:
            self._bodies_over_budget()

    def flush(self) -> None:
        """Apply the journal (readers call this first; it is cheap when it is empty)."""
        journal = self._journal
        if not journal and not self._states:
            return
        with self._flush_lock:
            self._apply_states()
            while journal:  # another thread may append meanwhile: deque's appends and pops are atomic
                n = len(journal)
                self._version += n  # first: ``version`` never goes back while these are applied
                self._apply(list(map(_POPLEFT, itertools.repeat(journal, n))))
            self._parts = False
            self._recount_waiting()

    def _let_go_unread(self) -> None:
        """Nobody read the history for ``UNREAD`` times its capacity in journal entries: the oldest
        JOURNAL_BATCH entries are let go without being applied (their requests would leave the history
        before anyone saw them), after counting the requests that ended in them (the journal slides:
        as many entries go as come, so the collector has no new objects to walk). Entries of requests the history
        already noted (someone read it meanwhile) are applied."""
        if self._listeners:  # they hear of every change: nothing is let go
            self.flush()
            return
        with self._flush_lock:
            self._apply_states()
            journal = self._journal
            n = min(len(journal), JOURNAL_BATCH, self._limit // 4)
            self._version += n
            events = list(map(_POPLEFT, itertools.repeat(journal, n)))
            if self._parts:  # a streamed answer's parts, after a read: they go
                self._parts = False
                events = list(itertools.filterfalse(_IS_PART, events))
            known = self._requests.keys() & set(map(_REQUEST_ID, events)) if self._open else ()
            if known:
                mine = list(map(known.__contains__, map(_REQUEST_ID, events)))
                self._apply(list(itertools.compress(events, mine)))
                events = list(itertools.compress(events, map(operator.not_, mine)))
            take_input, take_output = self._inputs.pop, self._outputs.pop
            ended: Ended = {}
            for event in events:  # in Python: an attribute of an event is quicker read here than in C
                if type(event) is RequestCompleted:
                    request_id = event.request_id
                    take_input(request_id, None)  # still counted in _waiting until a recount
                    take_output(request_id, None)
                    rows = ended.get(event.app)
                    if rows is None:
                        rows = ended[event.app] = []
                    # it never ran (no runner): its seconds and queue_wait are both the time it waited
                    seconds = event.seconds + event.queue_wait if event.runner else max(event.seconds, event.queue_wait)
                    rows.append((event.status_code, event.ts - seconds, seconds))
            if ended:
                collections.deque(itertools.islice(self._seqs, sum(map(len, ended.values()))), maxlen=0)
                self._count(ended)  # ...and their places in the order went with them

    def _count(self, ended: Ended) -> None:
        for app, rows in ended.items():
            self._counters.count(app, rows)

    def _bodies_over_budget(self) -> None:
        """The bodies waiting may pass the budget (those of requests let go are counted until now)."""
        self._recount_waiting()
        if self._waiting > self.body_budget:
            self.flush()  # the budget takes the oldest bodies as the journal is applied

    def _recount_waiting(self) -> None:
        """Count the bytes of the bodies still waiting; bodies no event came for are kept within bounds."""
        if len(self._open) > self.capacity:  # requests that never ended and left the history
            self._open.intersection_update(self._requests.keys())
        for waiting in (self._inputs, self._outputs):
            if len(waiting) > self._limit:
                for request_id in list(itertools.islice(waiting, len(waiting) - self._limit)):
                    waiting.pop(request_id, None)
        self._waiting = sum(map(len, map(_DATA, filter(None, [*self._inputs.values(), *self._outputs.values()]))))

    def _apply(self, entries: list[Any]) -> None:
        """Apply journal entries, in order (with the flush lock held).

        This runs for every request, so the common cases are written out here: a request's events
        and bodies are noted under its id (a new one evicts the oldest when the history is full);
        the rest takes the general way (:meth:`_apply_entry`).
        """
        requests = self._requests
        find = requests.get
        take_input = self._inputs.pop
        take_output = self._outputs.pop
        capacity, budget = self.capacity, self.body_budget
        noting = not self._listeners  # listeners hear of each change: they get records at once
        next_seq = self._seqs.__next__
        open_add, open_discard = self._open.add, self._open.discard
        order_append = self._order.append
        ended: Ended = {}
        for entry in entries:
            kind = type(entry)
            if kind is tuple:  # a streamed answer's next part
                self._apply_entry(entry, self._built(entry[0]), ended)
                continue
            request_id = entry.request_id
            note = find(request_id)
            if note is None and noting:  # a new request: noted with the input that came for it
                if kind is RequestStarted:
                    received = entry.ts - entry.queue_wait
                elif kind is RequestCompleted:
                    received = entry.ts - entry.seconds - entry.queue_wait
                else:
                    received = entry.ts
                if len(requests) >= capacity:  # the oldest goes
                    old = requests.pop(self._order.popleft())
                    if type(old) is list and not self._shed_from:
                        self._body_bytes -= old[_BYTES]
                    else:
                        self._let_go(old)
                seq = next_seq()
                kept = take_input(request_id, _NOT_SENT)
                if kept is _NOT_SENT:
                    note = requests[request_id] = [seq, received, 0, None, None, entry]  # one C call
                elif kept is None:
                    note = requests[request_id] = [seq, received, 0, _NO_STORE, None, entry]
                else:
                    size = len(kept[1])
                    note = requests[request_id] = [seq, received, size, kept, None, entry]
                    self._body_bytes += size
                    if self._body_bytes > budget:
                        self._shed_bodies(note)
                order_append(request_id)
                if kind is not RequestCompleted:
                    open_add(request_id)
                    continue
            elif type(note) is list:
                note.append(entry)
                if kind is not RequestCompleted:
                    continue
            else:
                self._apply_entry(entry, note, ended)  # type: ignore[arg-type]  # a record, or a new one
                continue
            open_discard(request_id)
            kept = take_output(request_id, None)  # a request's end, with its answer
            if kept is not None and note[_IN] is not _NO_STORE:
                if note[_OUT] is None:
                    note[_OUT] = kept
                    size = len(kept[1])
                    note[_BYTES] += size
                    self._body_bytes += size
                    if self._body_bytes > budget:
                        self._shed_bodies(note)
                else:  # answered twice: the second one as a next part
                    self._apply_entry((request_id, kept), self._built(request_id), ended)
            rows = ended.get(entry.app)
            if rows is None:
                rows = ended[entry.app] = []
            seconds = entry.ts - note[_RECEIVED]
            rows.append((entry.status_code, note[_RECEIVED], seconds if seconds > 0.0 else 0.0))
        self._count(ended)

    def _apply_entry(self, entry: Any, rec: RequestRecord | None, ended: Ended | None) -> None:
        """A journal entry for a built record (or a request to record at once), and the bodies that
        came for it; ``ended`` None: a request that ends is not counted."""
        if type(entry) is tuple:  # a streamed answer's next part: after the first
            if rec is not None:
                self._take_bodies(entry[0], rec)
                self._apply_body(rec, _OUTPUT, entry[1])
            return
        self._take_bodies(entry.request_id, self._apply_event(entry, rec, ended))

    def _apply_event(self, event: Any, rec: RequestRecord | None, ended: Ended | None) -> RequestRecord:
        kind = type(event)
        if kind is RequestCompleted:
            return self._completed(event, rec, ended)
        if kind is RequestStarted:
            return self._started(event, rec)
        return self._queued(event, rec)

    def _take_bodies(self, request_id: str, rec: RequestRecord) -> None:
        """Apply the bodies that came for ``rec`` since (the input first)."""
        kept = self._inputs.pop(request_id, _NOT_SENT)
        if kept is not _NOT_SENT:
            self._apply_body(rec, _INPUT, kept)
        kept = self._outputs.pop(request_id, None)
        if kept is not None:
            self._apply_body(rec, _OUTPUT, kept)

    def _built(self, request_id: str) -> RequestRecord | None:
        found = self._requests.get(request_id)
        if type(found) is list:
            return self._build(request_id, found)
        return found  # type: ignore[return-value]  # a record or None

    def _build(self, request_id: str, note: Note) -> RequestRecord:
        """The record of a noted request, in its place (with the flush lock held)."""
        first = note[_EVENTS]
        mode = "queue" if type(first) is RequestQueued else first.mode
        rec = RequestRecord(
            request_id, first.app, first.endpoint or "/", first.method, mode, note[_RECEIVED], note[_SEQ]
        )
        self._requests[request_id] = rec  # the same key: its place in the order stays
        self._body_bytes -= note[_BYTES]  # counted again as its bodies are applied
        for event in note[_EVENTS:]:
            self._apply_event(event, rec, None)  # counted already
        if note[_IN] is not None:
            self._apply_body(rec, _INPUT, None if note[_IN] is _NO_STORE else note[_IN])
        if note[_OUT] is not None:
            self._apply_body(rec, _OUTPUT, note[_OUT])
        self._take_bodies(request_id, rec)
        return rec

    def _build_all(self) -> None:
        """Build every noted request still kept, and apply the bodies waiting for built ones (with the
        flush lock held). Notes are among the requests taken since the last time: only those are seen."""
        requests = self._requests
        if requests:
            newest = next(reversed(requests.values()))
            newest_seq = newest[_SEQ] if type(newest) is list else newest.seq  # type: ignore[union-attr]
            for request_id in itertools.islice(reversed(self._order), newest_seq - self._built_seq):
                note = requests[request_id]
                if type(note) is list:
                    self._build(request_id, note)
            self._built_seq = newest_seq
        for request_id in [*self._inputs, *self._outputs]:
            rec = requests.get(request_id)
            if rec is not None:
                self._take_bodies(request_id, rec)  # type: ignore[arg-type]  # built above

    def _apply_body(self, rec: RequestRecord, what: str, kept: Kept | None) -> None:
        """A body for a built record: ``kept`` None is an input kept out (X-Fal-Store-IO: 0)."""
        if kept is None:
            rec.store_io = False
            return
        if rec.seq <= self._shed_seq:
            rec.bodies_dropped = True  # the budget took the bodies of requests up to this one already
            return
        if not rec.store_io:
            return
        content_type, data, size = kept
        if what is _INPUT:
            if rec.input_data is not None:  # sent again: the last one counts
                self._body_bytes -= len(rec.input_data)
            rec.input_type, rec.input_data, rec.input_size = content_type, data, size
            self._body_bytes += len(data)
        elif rec.output_data is None:
            rec.output_type, rec.output_data, rec.output_size = content_type, data, size
            self._body_bytes += len(data)
        else:  # a streamed answer's next part: counted, and kept up to the cap
            rec.output_size += size
            room = self.body_cap - len(rec.output_data)
            if room <= 0 or not data:
                return
            piece = data[:room]
            rec.output_data += piece
            self._body_bytes += len(piece)
        if self._body_bytes > self.body_budget:
            self._shed_bodies(rec)

    def _shed_bodies(self, newest: RequestRecord | Note) -> None:
        """Past the budget, the oldest requests lose their bodies (down to 7/8 of it, so this runs
        seldom): a walk from where the last one stopped."""
        if self._shedding:  # building a record on the way: its bodies were counted already
            return
        self._shedding = True
        try:
            self._shed_walk(newest)
        finally:
            self._shedding = False

    def _shed_walk(self, newest: RequestRecord | Note) -> None:
        target = self.body_budget - self.body_budget // 8
        passed = 0
        for request_id, old in itertools.islice(self._requests.items(), self._shed_from, None):
            if old is newest:  # the newest keeps its bodies (the budget is far above one request's)
                break
            passed += 1
            rec = self._build(request_id, old) if type(old) is list else old  # replaces a value, adds no key
            assert isinstance(rec, RequestRecord)
            self._shed_seq = rec.seq
            if rec.input_data is not None or rec.output_data is not None:
                self._drop_bodies(rec)
                if self._body_bytes <= target:
                    break
        self._shed_from += passed

    def _drop_bodies(self, rec: RequestRecord) -> None:
        dropped = False
        if rec.input_data is not None:
            self._body_bytes -= len(rec.input_data)
            rec.input_data = None
            dropped = True
        if rec.output_data is not None:
            self._body_bytes -= len(rec.output_data)
            rec.output_data = None
            dropped = True
        if dropped:
            rec.bodies_dropped = True

    # -- events -------------------------------------------------------------------------------------
    def _let_go(self, old: RequestRecord | Note) -> None:
        """The oldest request, taken out of the full history: its bodies no longer count."""
        if type(old) is list:
            self._body_bytes -= old[_BYTES]
        else:
            assert isinstance(old, RequestRecord)
            if old.input_data is not None:
                self._body_bytes -= len(old.input_data)
            if old.output_data is not None:
                self._body_bytes -= len(old.output_data)
        if self._shed_from:
            self._shed_from -= 1

    def _record(self, request_id: str, app: str, endpoint: str, method: str, mode: str, at: float) -> RequestRecord:
        """A new request's record, built at once (the caller checked that there is none)."""
        if len(self._requests) >= self.capacity:
            self._let_go(self._requests.pop(self._order.popleft()))  # first: the new record may reuse its memory
        rec = RequestRecord(request_id, app, endpoint or "/", method, mode, at, next(self._seqs))
        self._open.add(request_id)
        self._requests[request_id] = rec  # one C call: readers in other threads copy the dict in one too
        self._order.append(request_id)
        return rec

    def _queued(self, event: RequestQueued, rec: RequestRecord | None) -> RequestRecord:
        if rec is None:
            rec = self._record(event.request_id, event.app, event.endpoint, event.method, "queue", event.ts)
        rec.started_at = None  # a retry waits in the queue again
        if self._listeners:
            self._notify("request", rec)
        return rec

    def _started(self, event: RequestStarted, rec: RequestRecord | None) -> RequestRecord:
        if rec is None:
            received = event.ts - event.queue_wait
            rec = self._record(event.request_id, event.app, event.endpoint, event.method, event.mode, received)
        rec.runner = event.runner
        rec.started_at = event.ts
        rec.attempts += 1
        if self._listeners:
            self._notify("request", rec)
        return rec

    def _completed(self, event: RequestCompleted, rec: RequestRecord | None, ended: Ended | None) -> RequestRecord:
        ts = event.ts
        if rec is None:
            received = ts - event.seconds - event.queue_wait
            rec = self._record(event.request_id, event.app, event.endpoint, event.method, event.mode, received)
        runner = event.runner
        total = ts - rec.received_at
        if total < 0.0:
            total = 0.0
        if runner:
            rec.runner = runner
            rec.execution = event.seconds
            wait = ts - event.seconds - rec.received_at
            rec.queue_wait = wait if wait > 0.0 else 0.0
            if rec.started_at is None:
                rec.started_at = ts - event.seconds
        else:
            rec.execution = 0.0
            rec.queue_wait = total
        rec.finished_at = ts
        rec.status = event.status_code
        rec.error_type = event.error_type
        self._open.discard(rec.id)
        if ended is not None:
            ended.setdefault(event.app, []).append((event.status_code, rec.received_at, total))
        if self._listeners:
            self._notify("request", rec)
        return rec

    # -- listeners (live updates) ---------------------------------------------------------------------
    def listen(self, fn: Callable[[str, Any], None]) -> Callable[[], None]:
        """Call ``fn(kind, item)`` on every change ("request", "runner", "log"); returns the unsubscribe.

        While anything listens, requests get their records at once (a listener hears of each change)
        and the journal is applied every JOURNAL_BATCH entries."""
        self.flush()
        with self._flush_lock:
            self._build_all()
            with self._lock:
                self._listeners = (*self._listeners, fn)
                self._limit = JOURNAL_BATCH  # applied in batches while anything listens

        def stop() -> None:
            with self._lock:
                self._listeners = tuple(f for f in self._listeners if f is not fn)
                if not self._listeners:
                    self._limit = max(16, UNREAD * self.capacity)

        return stop

    # -- reading ----------------------------------------------------------------------------------------
    # Each reader applies the journal first, so it sees every request the gateway has handed over, and
    # builds the records it returns (under the flush lock: no other thread adds notes meanwhile).

    @property
    def version(self) -> int:
        """Bumped on every change a reader may want to see (those still in the journal included)."""
        return self._version + len(self._journal) + len(self._states)

    @property
    def counters(self) -> Counters:
        self.flush()
        return self._counters

    def request(self, request_id: str) -> RequestRecord | None:
        self.flush()
        with self._flush_lock:
            rec = self._built(request_id)
            if rec is not None:
                self._take_bodies(request_id, rec)
            return rec

    def requests(self) -> list[RequestRecord]:
        """Every kept request, oldest first (a snapshot)."""
        self.flush()
        with self._flush_lock:
            self._build_all()
            return list(self._requests.values())  # type: ignore[arg-type]  # all built

    def newest(self) -> Iterator[RequestRecord]:
        """Kept requests, newest first (a snapshot taken now)."""
        return reversed(self.requests())

    def latest(self, limit: int) -> list[RequestRecord]:
        """The ``limit`` newest requests, newest first, without copying (or building) the rest."""
        self.flush()
        with self._flush_lock:
            ids = list(itertools.islice(reversed(self._requests), max(0, limit)))
            found = [self._built(request_id) for request_id in ids]
            for request_id, rec in zip(ids, found, strict=True):
                if rec is not None:
                    self._take_bodies(request_id, rec)
            return [rec for rec in found if rec is not None]

    def recent(self, app: str, since: float) -> tuple[int, int]:
        """(finished, 2xx) of ``app``'s requests received since ``since`` (at most an hour back; counted
        as they end, so also those the history no longer keeps)."""
        return self.counters.recent(app, since)

    def request_logs(
        self, rec: RequestRecord, before: float = 0.0, after: float = LOG_GRACE
    ) -> list[tuple[float, str, str]]:
        """The log lines its runner wrote while it ran (``before``/``after`` widen the window)."""
        self.flush()
        runner = self._runners.get(rec.runner) if rec.runner else None
        if runner is None or rec.started_at is None:
            return []
        until = (rec.finished_at if rec.finished_at is not None else self.clock()) + after
        return runner.log_lines(rec.started_at - before, until)

    @property
    def body_bytes(self) -> int:
        self.flush()
        return self._body_bytes

    def __len__(self) -> int:
        self.flush()
        return len(self._requests)


def load(history: History, events: Iterable[Event]) -> History:
    """Feed ``events`` (a bus's history, say) into ``history``; returns it."""
    for event in events:
        history(event)
    return history
