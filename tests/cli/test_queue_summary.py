"""What ``falemu up`` says about its queue when it stops and when it starts again (no Docker needed)."""

from __future__ import annotations

import io
import json

from falemu.cli.output import Renderer
from falemu.events import QueueResumed, QueueStopped


def rendered(event: QueueStopped | QueueResumed, json_lines: bool = False) -> str:
    out = io.StringIO()
    r = Renderer(stream=out, color=False, json_lines=json_lines)
    r(event)
    r.flush()
    return out.getvalue()


def test_the_stop_summary_is_one_line_saying_what_is_left_in_which_state() -> None:
    event = QueueStopped("", queued=48, requeued=0, failed=0, finished=4, results=4, folder="/q")
    assert rendered(event) == (
        "queue: 48 requests left queued (run at next start), 4 finished during the stop, 4 completed results kept\n"
    )
    cut = QueueStopped("", queued=3, requeued=2, failed=1, finished=0, results=1, folder="/q")
    assert rendered(cut) == (
        "queue: 3 requests left queued (run at next start; 2 of them cut off in flight), "
        "1 cut off in flight and not retried (completed with an error), 1 completed result kept\n"
    )
    empty = QueueStopped("", queued=0, requeued=0, failed=0, finished=0, results=0, folder="/q")
    assert rendered(empty) == "queue: 0 requests left queued, 0 completed results kept\n"


def test_the_summaries_are_events_in_json_mode() -> None:
    data = json.loads(
        rendered(QueueStopped("", queued=1, requeued=0, failed=0, finished=0, results=2, folder="/q"), True)
    )
    assert data["event"] == "QueueStopped"
    assert (data["queued"], data["results"], data["folder"]) == (1, 2, "/q")
    assert rendered(QueueResumed("", queued=5, failed=0, folder="/q")) == (
        "queue: 5 requests left from the last run queued again\n"
    )
