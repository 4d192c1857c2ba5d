"""Docker's chunked, multiplexed log stream into lines (falemu.runtime.logstream)."""

from __future__ import annotations

from falemu.runtime.logstream import LogDemuxer


def frame(kind: int, payload: bytes) -> bytes:
    return bytes([kind, 0, 0, 0]) + len(payload).to_bytes(4, "big") + payload


def chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


BODY = chunked(
    frame(1, b"first line\n"),
    frame(2, b"an err"),  # stderr's line continues two frames later
    frame(1, b"second\r\nthird "),
    frame(2, b"or line\n") + frame(1, b"line\n"),
    frame(1, b"no newline at the end"),
)
EXPECTED = [
    ("stdout", "first line"),
    ("stdout", "second"),
    ("stderr", "an error line"),
    ("stdout", "third line"),
]


def test_whole_body_gives_lines_per_stream_and_the_unfinished_last_line_at_close() -> None:
    demux = LogDemuxer(chunked=True)
    assert demux.feed(BODY) == EXPECTED
    assert demux.finished
    assert demux.close() == [("stdout", "no newline at the end")]


def test_any_split_of_the_bytes_gives_the_same_lines() -> None:
    for size in (1, 2, 3, 7, 8, 9, 13, 64):
        demux = LogDemuxer(chunked=True)
        lines = []
        for start in range(0, len(BODY), size):
            lines += demux.feed(BODY[start : start + size])
        assert lines == EXPECTED, size
        assert demux.finished
        assert demux.close() == [("stdout", "no newline at the end")]


def test_chunk_extensions_and_bytes_after_the_last_chunk_are_ignored() -> None:
    body = b"%x;name=value\r\n%s\r\n0\r\nTrailer: x\r\n\r\n" % (len(frame(1, b"ok\n")), frame(1, b"ok\n"))
    demux = LogDemuxer(chunked=True)
    assert demux.feed(body) == [("stdout", "ok")]
    assert demux.finished
    assert demux.feed(frame(1, b"late\n")) == []


def test_unchunked_and_raw_streams() -> None:
    plain = LogDemuxer(chunked=False)
    assert plain.feed(frame(1, b"a\nb") + frame(1, b"c\n")) == [("stdout", "a"), ("stdout", "bc")]
    raw = LogDemuxer(chunked=False, multiplexed=False)
    assert raw.feed(b"tty line\nrest") == [("stdout", "tty line")]
    assert raw.close() == [("stdout", "rest")]


def test_invalid_utf8_is_replaced_not_raised() -> None:
    demux = LogDemuxer(chunked=False)
    assert demux.feed(frame(1, b"caf\xe9\n")) == [("stdout", "caf\ufffd")]


class _Response:
    """What follow_lines needs of a streamed requests response: ``raw`` (urllib3's) and ``close``."""

    def __init__(self, raw: object) -> None:
        self.raw = raw
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_follow_lines_reads_the_chunked_body_from_the_buffered_socket() -> None:
    import io
    from types import SimpleNamespace

    from falemu.runtime.logstream import follow_lines

    raw = SimpleNamespace(chunked=True, _fp=SimpleNamespace(fp=io.BufferedReader(io.BytesIO(BODY))))
    response = _Response(raw)
    assert list(follow_lines(response)) == [*EXPECTED, ("stdout", "no newline at the end")]
    assert response.closed


def test_follow_lines_lets_urllib3_read_a_body_with_a_length() -> None:
    import io
    from types import SimpleNamespace

    from falemu.runtime.logstream import follow_lines

    body = io.BytesIO(frame(1, b"a\n") + frame(2, b"b"))
    response = _Response(SimpleNamespace(chunked=False, read1=body.read1))
    assert list(follow_lines(response)) == [("stdout", "a"), ("stderr", "b")]
    assert response.closed


def test_a_follower_reads_a_flood_of_lines_in_batches() -> None:
    import socket
    import threading
    import time
    from types import SimpleNamespace

    from falemu.runtime.logstream import BATCH_SECONDS, follow_lines

    ours, theirs = socket.socketpair()
    reads = 0

    class CountingReader:
        def __init__(self) -> None:
            self.fp = ours.makefile("rb")

        def read1(self, size: int) -> bytes:
            nonlocal reads
            reads += 1
            return self.fp.read1(size)

    def runner() -> None:  # a line every millisecond, each in its own chunk and frame, as dockerd sends them
        with theirs:
            for i in range(200):
                theirs.sendall(chunked(frame(1, b"GET /health 200 %d\n" % i))[:-5])
                time.sleep(0.001)
            theirs.sendall(b"0\r\n\r\n")

    threading.Thread(target=runner, daemon=True).start()
    response = _Response(SimpleNamespace(chunked=True, _fp=SimpleNamespace(fp=CountingReader())))
    started = time.monotonic()
    lines = list(follow_lines(response, pause=BATCH_SECONDS))
    elapsed = time.monotonic() - started
    assert [line for _, line in lines] == [f"GET /health 200 {i}" for i in range(200)]
    # One read per BATCH_SECONDS at most (about 20 over the ~200 ms of lines), not one per line (201).
    assert reads <= elapsed / BATCH_SECONDS + 2
    ours.close()
