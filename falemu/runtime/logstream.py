"""A container's log stream as lines, read in large blocks.

``GET /containers/{id}/logs?follow=1`` answers with a chunked HTTP body that carries Docker's
multiplexed frames (an 8-byte header: stream type, 3 zero bytes, big-endian payload size; then the
payload). The Docker SDK reads it two small reads per frame, each through urllib3's chunk parser: a
runner that logs a line per request (uvicorn's access log does) would cost falemu more CPU than the
gateway itself. :func:`follow_lines` reads whatever the socket has (up to 64 KiB at once) and
:class:`LogDemuxer` undoes the chunking and the framing in plain byte operations. Under a flood of
lines a follower reads at most every :data:`BATCH_SECONDS`, many lines at a time.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

READ_SIZE = 64 * 1024
# When following, after a read that emptied the socket the follower waits this long before reading
# again, so that a runner logging a line per request wakes it a hundred times a second at most, with
# many lines per read, instead of once per line. A line is delayed by this much at most; one that
# arrives at rest is delivered at once.
BATCH_SECONDS = 0.01
STREAMS = {0: "stdin", 1: "stdout", 2: "stderr"}


class LogDemuxer:
    """Bytes of a Docker log response body in, ``(stream, line)`` pairs out.

    ``chunked``: the bytes still carry HTTP chunked framing. ``multiplexed``: they carry Docker's
    8-byte frame headers (containers without a TTY); else the payload is the raw output.
    """

    def __init__(self, *, chunked: bool, multiplexed: bool = True) -> None:
        self.chunked = chunked
        self.multiplexed = multiplexed
        self.finished = False  # the chunked body's last chunk came
        self._http = b""  # chunked framing not parsed yet
        self._chunk_left = 0  # payload bytes left in the current chunk
        self._skip_crlf = False  # the CRLF after a chunk's payload is due
        self._frames = b""  # frame bytes not parsed yet
        self._lines: dict[int, list[bytes]] = {}  # stream -> the parts of its unfinished line

    def feed(self, data: bytes) -> list[tuple[str, str]]:
        payload = self._dechunk(data) if self.chunked else data
        if not payload:
            return []
        if not self.multiplexed:
            return self._split(1, payload)
        buf = self._frames + payload if self._frames else payload
        out: list[tuple[str, str]] = []
        pos, end = 0, len(buf)
        while end - pos >= 8:
            size = int.from_bytes(buf[pos + 4 : pos + 8], "big")
            if end - pos - 8 < size:
                break
            out += self._split(buf[pos], buf[pos + 8 : pos + 8 + size])
            pos += 8 + size
        self._frames = buf[pos:]
        return out

    def close(self) -> list[tuple[str, str]]:
        """The unfinished last lines, when the stream ends."""
        rest = [(STREAMS.get(kind, "stdout"), _text(b"".join(parts))) for kind, parts in self._lines.items() if parts]
        self._lines.clear()
        return rest

    def _split(self, kind: int, payload: bytes) -> list[tuple[str, str]]:
        pending = self._lines.setdefault(kind, [])
        if b"\n" not in payload:
            pending.append(payload)  # a long line is joined once, when it ends
            return []
        lines = payload.split(b"\n")
        if pending:
            pending.append(lines[0])
            lines[0] = b"".join(pending)
        last = lines.pop()  # what follows the last newline: the start of the next line
        self._lines[kind] = [last] if last else []
        stream = STREAMS.get(kind, "stdout")
        return [(stream, _text(line)) for line in lines]

    def _dechunk(self, data: bytes) -> bytes:
        buf = self._http + data if self._http else data
        out: list[bytes] = []
        pos, end = 0, len(buf)
        while pos < end and not self.finished:
            if self._chunk_left:
                take = min(self._chunk_left, end - pos)
                out.append(buf[pos : pos + take])
                pos += take
                self._chunk_left -= take
                if not self._chunk_left:
                    self._skip_crlf = True
                continue
            if self._skip_crlf:
                if end - pos < 2:
                    break
                pos += 2
                self._skip_crlf = False
                continue
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                break
            size = int(buf[pos:eol].split(b";", 1)[0].strip() or b"0", 16)
            pos = eol + 2
            if size == 0:
                self.finished = True  # trailers, if any, are of no interest
                break
            self._chunk_left = size
        self._http = buf[pos:] if not self.finished else b""
        return b"".join(out)


def follow_lines(response: Any, *, multiplexed: bool = True, pause: float = 0.0) -> Iterator[tuple[str, str]]:
    """The lines of a streamed ``requests`` response to a Docker logs call, as they arrive.

    ``pause``: after a read that took less than a full block, wait this long before the next one
    (:data:`BATCH_SECONDS` when following a running container).

    Reads the response's buffered socket directly (what it has, up to :data:`READ_SIZE` at once);
    falls back to urllib3's own reads where that reader is not there.
    """
    raw = response.raw
    chunked = bool(getattr(raw, "chunked", False))
    fp = getattr(getattr(raw, "_fp", None), "fp", None)
    read1 = getattr(fp, "read1", None) if chunked else None
    if read1 is None:  # a body with a length (or urllib3 internals changed): urllib3 reads and frames it
        read1 = raw.read1 if hasattr(raw, "read1") else raw.read
        chunked = False
    demux = LogDemuxer(chunked=chunked, multiplexed=multiplexed)
    try:
        while not demux.finished:
            try:
                data = read1(READ_SIZE)
            except (OSError, ValueError, AttributeError):  # closed under us: the container is gone
                break
            if not data:
                break
            yield from demux.feed(data)
            if pause and len(data) < READ_SIZE:
                time.sleep(pause)
        yield from demux.close()
    finally:
        response.close()


def _text(line: bytes) -> str:
    return line.decode(errors="replace").rstrip("\r")
