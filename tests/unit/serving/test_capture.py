"""--capture's writer: sampled, size-bounded, never blocking the request path."""

import time

from serving.online.capture import CaptureWriter


def test_capture_is_sampled_and_size_bounded(tmp_path):
    writer = CaptureWriter(str(tmp_path), sample_rate=0.0)
    writer.record(b"{}", "application/json", b"{}", "m", "1")
    writer.close()
    assert writer.stats.written == 0 and writer.stats.seen == 1
    small = CaptureWriter(str(tmp_path / "small"), max_file_bytes=400, max_total_bytes=1000)
    for _ in range(20):
        small.record(b'{"inputs": [[1, 2, 3]]}', "application/json", b'{"predictions": [1]}',
                     "m", "1")
    small.close()
    assert small.stats.bytes_written <= 1000
    assert small.stats.dropped_size_limit > 0
    assert small.stats.files >= 2


def test_record_never_blocks_the_caller(tmp_path):
    writer = CaptureWriter(str(tmp_path), queue_size=10)
    start = time.perf_counter()
    for _ in range(5000):
        writer.record(b'{"inputs": [[1]]}', "application/json", b'{"predictions": [1]}', "m", "1")
    per_call = (time.perf_counter() - start) / 5000
    writer.close()
    assert per_call < 1e-4  # well under the 1 ms budget, even when the queue overflows
    assert writer.stats.written + writer.stats.dropped_queue_full == 5000
