"""Request/prediction capture for monitoring: opt-in, sampled, size-bounded, off the hot path.

A request handler only calls :meth:`CaptureWriter.record`, which samples and puts the raw bytes
on a bounded queue (microseconds; it never blocks: when the queue is full the record is
counted as dropped). A background thread turns them into JSON lines, one per request, in files
a person can open: the capture record of :mod:`core.capture`, which monitoring reads.

Files go to ``<dest>/<YYYY-MM-DD>/capture-<pid>-<n>.jsonl``, rotated at ``max_file_bytes``;
capture stops (and counts drops) once ``max_total_bytes`` were written. An ``s3://`` destination
is written locally and uploaded on rotation and on close.
"""
from __future__ import annotations

import logging
import os
import queue
import random
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from core import capture
from serving.online import metrics as _metrics

_logger = logging.getLogger(__name__)

DEFAULT_SAMPLE_RATE = 1.0
DEFAULT_MAX_FILE_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_TOTAL_BYTES = 1024 * 1024 * 1024
DEFAULT_QUEUE_SIZE = 100_000


@dataclass
class CaptureStats:
    """Counters a test or an operator can read."""

    seen: int = 0
    queued: int = 0
    written: int = 0
    dropped_queue_full: int = 0
    dropped_size_limit: int = 0
    files: int = 0
    bytes_written: int = 0


class CaptureWriter:
    """Writes sampled request/response pairs to JSON-lines files in the background.

    Args:
        destination: a local folder or an ``s3://bucket/prefix``.
        sample_rate: share of requests captured (0–1).
        max_file_bytes: rotate files at this size.
        max_total_bytes: stop capturing after this many bytes (per process).
        s3_client: boto3 S3 client for ``s3://`` destinations.
    """

    def __init__(
        self,
        destination: str,
        sample_rate: float = DEFAULT_SAMPLE_RATE,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        s3_client=None,
    ):
        if not 0 <= sample_rate <= 1:
            raise ValueError(f"capture sample rate must be between 0 and 1, got {sample_rate}")
        self.destination = destination
        self.sample_rate = sample_rate
        self.max_file_bytes = max_file_bytes
        self.max_total_bytes = max_total_bytes
        self.stats = CaptureStats()
        self._s3 = s3_client
        self._is_s3 = destination.startswith("s3://")
        self._root = Path(tempfile.mkdtemp(prefix="capture-")) if self._is_s3 else Path(destination)
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._handle = None
        self._path: Path | None = None
        self._size = 0
        self._seq = 0
        self._random = random.Random()
        self._closing = threading.Event()
        self._abort = threading.Event()
        self._thread = threading.Thread(target=self._drain, name="capture-writer", daemon=True)
        self._thread.start()

    def record(self, request: bytes, content_type: str, response: bytes, model: str,
               version: str, protocol: str | None = None,
               header_length: str | None = None) -> None:
        """Sample and enqueue one request/response pair; never blocks the caller.

        ``protocol``: ``"v2"`` for an Open Inference Protocol request (``header_length``: its
        ``Inference-Header-Content-Length``, when it carried binary tensors).
        """
        self.stats.seen += 1
        if self._closing.is_set():
            self.stats.dropped_queue_full += 1
            _metrics.capture_dropped("queue_full")
            return
        if self.sample_rate < 1 and self._random.random() >= self.sample_rate:
            return
        try:
            self._queue.put_nowait((time.time(), request, content_type, response, model,
                                    version, protocol, header_length))
            self.stats.queued += 1
        except queue.Full:
            self.stats.dropped_queue_full += 1
            _metrics.capture_dropped("queue_full")

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until everything queued so far is written and the file is flushed."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        if self._handle:
            self._handle.flush()

    def close(self, timeout: float = 30.0) -> bool:
        """Write what is queued and close the file (uploading it for ``s3://``).

        Never blocks longer than ``timeout``, even when the queue is full: new records are
        refused from now on, the writer thread drains the queue, closes its own file and
        exits. Only the writer thread touches the file, so nothing rotates under it. What is
        still queued when the time is up is counted as dropped.

        Returns:
            True when everything queued was written and the writer has stopped.
        """
        self._closing.set()
        self._thread.join(max(timeout, 0))
        if self._thread.is_alive():
            self._abort.set()
            self._thread.join(5)
        if self._thread.is_alive():
            _logger.warning("capture: the writer is still busy after %.0fs; leaving it", timeout)
            return False
        if self._is_s3:
            import shutil

            shutil.rmtree(self._root, ignore_errors=True)
        return self._abort.is_set() is False

    # ------------------------------------------------------------------ writer thread
    def _drain(self) -> None:
        try:
            while not self._abort.is_set():
                try:
                    item = self._queue.get(timeout=0.05)
                except queue.Empty:
                    if self._closing.is_set():
                        return
                    continue
                try:
                    self._write(item)
                except Exception:  # noqa: BLE001 - capture must never take the server down
                    _logger.exception("capture: could not write a record")
                finally:
                    self._queue.task_done()
        finally:
            while True:  # aborted: what is left was never written
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    break
                self.stats.dropped_queue_full += 1
                _metrics.capture_dropped("queue_full")
                self._queue.task_done()
            try:
                self._rotate()
            except Exception:  # noqa: BLE001 - e.g. the upload failed; reported, not raised
                _logger.exception("capture: could not close the capture file")

    def _write(self, item) -> None:
        ts, request, content_type, response, model, version, protocol, header_length = item
        line = capture.encode_record(ts, request, content_type, response, model, version,
                                     protocol, header_length)
        if self.stats.bytes_written + len(line) > self.max_total_bytes:
            self.stats.dropped_size_limit += 1
            _metrics.capture_dropped("size_limit")
            return
        if self._handle is None or self._size + len(line) > self.max_file_bytes:
            self._rotate()
            self._open(ts)
        self._handle.write(line)
        self._size += len(line)
        self.stats.bytes_written += len(line)
        self.stats.written += 1
        _metrics.captured()
        if self._queue.empty():
            self._handle.flush()

    def _open(self, ts: float) -> None:
        day = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")
        folder = self._root / day
        folder.mkdir(parents=True, exist_ok=True)
        self._seq += 1
        self._path = folder / f"capture-{os.getpid()}-{int(ts)}-{self._seq}{capture.SUFFIX}"
        self._handle = open(self._path, "ab")  # noqa: SIM115 - kept open across writes
        self._size = 0
        self.stats.files += 1

    def _rotate(self) -> None:
        if self._handle is None:
            return
        self._handle.close()
        self._handle = None
        if self._is_s3 and self._path is not None:
            bucket, _, prefix = self.destination.removeprefix("s3://").partition("/")
            rel = self._path.relative_to(self._root).as_posix()
            key = f"{prefix.rstrip('/')}/{rel}" if prefix else rel
            self._s3.upload_file(str(self._path), bucket, key)
            self._path.unlink()
