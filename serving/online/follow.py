"""Following an alias: when ``champion`` moves, load the new version and swap it in.

A daemon thread polls the registry, and looks at once when the registry's webhook announces a
move of the alias (:mod:`serving.online.webhooks`; the server's ``POST /webhooks/mlflow``). The
worker that receives the delivery also writes the announced version to a signal file that
every worker of the same server (same port) watches (a ``stat`` every 50 ms), so they all
look within a fraction of a second.

A delivery only wakes the follower: the registry decides what is loaded. The follower asks it
where the alias points before a load starts, and again when the load is done; a version the
registry no longer names then is dropped, never served. One thread does the asking and the
loading, and deliveries arriving meanwhile are one pending wake-up, so a burst of deliveries
(forged or not) leaves at most one load pending, always of the version the registry names.

A new version is loaded next to the one serving (requests keep being answered by the old one
meanwhile) and swapped in with one assignment, so no request fails or is dropped. A version
that fails to load is logged and retried later; the old version keeps serving.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from core.models import ModelNotFound, ResolvedModel, alias_holder, resolve_model
from core.uris import ModelRef
from serving.online.app import ModelHolder, Served
from serving.online.model import load_scorer

_logger = logging.getLogger(__name__)

DEFAULT_POLL_SECONDS = 10.0
# After a version failed to load, wait this long before trying it again.
RETRY_FAILED_SECONDS = 60.0
# How often the other workers' signal file is looked at between polls (a webhook received by
# this worker wakes it at once).
WAKE_CHECK_SECONDS = 0.05


def signal_path(port: int) -> Path:
    """The file the workers of the server on ``port`` share to wake each other."""
    return Path(tempfile.gettempdir()) / f"mlops-serve-{port}.alias-moved"


class AliasFollower:
    """Poll ``ref``'s alias every ``poll_seconds`` and swap ``holder`` to the version it names.

    Args:
        client: an ``MlflowClient`` for the registry.
        ref: a ``NAME@ALIAS`` reference.
        holder: the server's model holder.
        poll_seconds: polling interval.
        loader: loads a scorer from a model URI (tests and benchmarks may pass their own).
        signal: a file whose change wakes this follower (shared by a server's workers).
    """

    def __init__(
        self,
        client,
        ref: ModelRef,
        holder: ModelHolder,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
        loader: Callable = load_scorer,
        signal: Path | None = None,
    ):
        if not ref.alias:
            raise ValueError(f"{ref} names no alias to follow")
        self._client = client
        self._ref = ref
        self._holder = holder
        self._poll = poll_seconds
        self._loader = loader
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._signal = signal
        self._signal_seen = self._signal_stamp()
        self._failed: dict[str, float] = {}
        self._thread = threading.Thread(target=self._run, name="alias-follower", daemon=True)

    def start(self) -> AliasFollower:
        """Start polling in the background."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop polling (the model keeps serving)."""
        self._stop.set()
        self._wake.set()

    def on_event(self, event) -> None:
        """A webhook delivery: if it moves the followed alias, look now (every worker)."""
        if event.name != self._ref.name or event.alias != self._ref.alias:
            return
        _logger.info("webhook: alias moved", extra={"alias": str(self._ref),
                                                    "to_version": event.version})
        self._wake.set()
        if self._signal is not None:
            try:
                self._signal.write_text(event.version or "")
                os.utime(self._signal)  # a new mtime even within the same clock tick
            except OSError as exc:  # another user's file: this worker still looks
                _logger.warning("cannot signal the other workers: %s", exc)

    def _signal_stamp(self) -> int | None:
        if self._signal is None:
            return None
        try:
            return self._signal.stat().st_mtime_ns
        except OSError:
            return None

    def _woken(self) -> bool:
        if self._wake.is_set():
            self._wake.clear()
            return True
        stamp = self._signal_stamp()
        if stamp != self._signal_seen:
            self._signal_seen = stamp
            return True
        return False

    def _run(self) -> None:
        next_poll = time.monotonic() + self._poll
        while True:
            self._wake.wait(min(WAKE_CHECK_SECONDS, self._poll))
            if self._stop.is_set():
                return
            woken = self._woken()
            if not woken and time.monotonic() < next_poll:
                continue
            next_poll = time.monotonic() + self._poll
            try:
                self.check()
            except Exception:  # the registry may be briefly unreachable; keep serving
                _logger.warning("alias poll failed", exc_info=True, extra={"alias": str(self._ref)})

    def check(self) -> bool:
        """Poll once; load and swap in the alias's version if it moved. Return whether it did."""
        try:
            info = resolve_model(self._client, self._ref)
        except ModelNotFound as exc:
            _logger.warning("alias gone; keeping the current version", extra={"error": str(exc)})
            return False
        current = self._holder.current.info
        if info.version == current.version:
            return False
        failed_at = self._failed.get(info.version)
        if failed_at is not None and time.monotonic() - failed_at < RETRY_FAILED_SECONDS:
            return False
        return self._switch(info, current)

    def _switch(self, info: ResolvedModel, current: ResolvedModel) -> bool:
        _logger.info(
            "alias moved; loading",
            extra={
                "alias": str(self._ref),
                "from_version": current.version,
                "to_version": info.version,
            },
        )
        start = time.perf_counter()
        try:
            scorer = self._loader(info.uri)
        except Exception:
            self._failed[info.version] = time.monotonic()
            _logger.exception(
                "loading the new version failed; the old one keeps serving",
                extra={"to_version": info.version},
            )
            return False
        if not self._confirmed(info.version):
            return False
        self._holder.swap(Served(info, scorer))
        _logger.info(
            "switched",
            extra={
                "alias": str(self._ref),
                "from_version": current.version,
                "to_version": info.version,
                "load_seconds": round(time.perf_counter() - start, 3),
            },
        )
        return True

    def _confirmed(self, version: str) -> bool:
        """Whether the registry still names ``version`` now that it is loaded (else dropped)."""
        try:  # one round trip: the alias itself (resolving the reference again takes more)
            now = alias_holder(self._client, self._ref.name, self._ref.alias)
        except Exception as exc:  # noqa: BLE001 - unreachable: not confirmed
            now = f"unknown ({type(exc).__name__})"
        if now == version:
            return True
        _logger.info("loaded version dropped: the alias moved meanwhile",
                     extra={"alias": str(self._ref), "dropped_version": version,
                            "alias_version": now})
        self._wake.set()  # look again now: the alias names another version
        return False
