"""Following an alias: when ``champion`` moves, load the new version and swap it in.

A daemon thread polls the registry, and looks at once when the registry's webhook announces a
move of the alias (:mod:`serving.webhooks`; the server's ``POST /webhooks/mlflow``). The
worker that receives the delivery also writes the announced version to a signal file that
every worker of the same server (same port) watches (a ``stat`` every 50 ms), so they all
look within a fraction of a second.

A new version is loaded next to the one serving (requests keep being answered by the old one
meanwhile) and swapped in with one assignment, so no request fails or is dropped. On a
webhook the announced version starts loading at once, while the registry is asked where the
alias points (the registry decides: a preload it does not confirm is discarded). A version
that fails to load is logged and retried later; the old version keeps serving.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from core.models import ModelNotFound, ResolvedModel, resolve_model
from core.uris import ModelRef, version_uri
from serving.app import ModelHolder, Served
from serving.model import load_scorer

_logger = logging.getLogger(__name__)

DEFAULT_POLL_SECONDS = 10.0
# Loads an announced version while the registry is asked (one at a time per process).
_PRELOADER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="alias-preload")
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
        self._hint: str | None = None  # the version the last webhook announced
        self._preloads: dict[str, Future] = {}
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
        self._hint = event.version
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
            try:
                self._hint = self._signal.read_text().strip() or None
            except OSError:
                pass
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
            if woken:
                self._preload(self._hint)
            try:
                self.check()
            except Exception:  # the registry may be briefly unreachable; keep serving
                _logger.warning("alias poll failed", exc_info=True, extra={"alias": str(self._ref)})
            self._preloads.clear()  # a preload the registry did not confirm is not kept

    def _preload(self, version: str | None) -> None:
        """Start loading the announced ``version`` while the registry is asked (a webhook)."""
        if not version or version == self._holder.current.info.version:
            return
        if version in self._failed or version in self._preloads:
            return
        uri = version_uri(self._ref.name, version)
        self._preloads[version] = _PRELOADER.submit(self._loader, uri)

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
        preload = self._preloads.pop(info.version, None)
        try:
            scorer = preload.result() if preload is not None else self._loader(info.uri)
        except Exception:
            self._failed[info.version] = time.monotonic()
            _logger.exception(
                "loading the new version failed; the old one keeps serving",
                extra={"to_version": info.version},
            )
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
