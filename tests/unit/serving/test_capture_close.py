"""CaptureWriter.close never blocks on a full queue and never closes a file under the writer."""

from __future__ import annotations

import threading
import time

from serving.online.capture import CaptureWriter


def test_close_returns_in_time_with_a_full_queue_and_a_stuck_writer(tmp_path, monkeypatch):
    writer = CaptureWriter(str(tmp_path / "cap"), queue_size=5)
    release = threading.Event()
    real_write = writer._write

    def slow_write(item):  # a writer stuck on a slow disk
        release.wait(10)
        real_write(item)

    monkeypatch.setattr(writer, "_write", slow_write)
    for _ in range(20):
        writer.record(b"{}", "application/json", b'{"predictions": [1]}', "m", "1")
    assert writer.stats.dropped_queue_full > 0  # the queue is full
    start = time.monotonic()
    done = writer.close(timeout=0.5)
    elapsed = time.monotonic() - start
    release.set()
    writer._thread.join(10)
    assert elapsed < 7, elapsed  # the old close() blocked on put() into the full queue
    assert done is False
    assert not writer._thread.is_alive()
    # what was still queued is counted, not lost silently; every record is accounted for
    s = writer.stats
    assert s.written + s.dropped_queue_full == s.seen


def test_close_writes_everything_queued_and_refuses_later_records(tmp_path):
    writer = CaptureWriter(str(tmp_path / "cap"))
    for _ in range(200):
        writer.record(b'{"inputs": [[1]]}', "application/json", b'{"predictions": [1]}', "m", "1")
    assert writer.close() is True
    assert writer.stats.written == 200
    lines = sum(len(p.read_bytes().splitlines()) for p in (tmp_path / "cap").rglob("*.jsonl"))
    assert lines == 200
    writer.record(b"{}", "application/json", b"{}", "m", "1")
    assert writer.stats.written == 200 and writer.stats.dropped_queue_full == 1
