"""Following an alias: when ``champion`` moves, load the new version and swap it in.

A daemon thread polls the registry. A new version is loaded next to the one serving (requests
keep being answered by the old one meanwhile) and swapped in with one assignment, so no
request fails or is dropped. A version that fails to load is logged and retried later; the
old version keeps serving.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from core.models import ModelNotFound, ResolvedModel, resolve_model
from core.uris import ModelRef
from serving.app import ModelHolder, Served
from serving.model import load_scorer

_logger = logging.getLogger(__name__)

DEFAULT_POLL_SECONDS = 10.0
# After a version failed to load, wait this long before trying it again.
RETRY_FAILED_SECONDS = 60.0


class AliasFollower:
    """Poll ``ref``'s alias every ``poll_seconds`` and swap ``holder`` to the version it names.

    Args:
        client: an ``MlflowClient`` for the registry.
        ref: a ``NAME@ALIAS`` reference.
        holder: the server's model holder.
        poll_seconds: polling interval.
        loader: loads a scorer from a model URI (tests and benchmarks may pass their own).
    """

    def __init__(
        self,
        client,
        ref: ModelRef,
        holder: ModelHolder,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
        loader: Callable = load_scorer,
    ):
        if not ref.alias:
            raise ValueError(f"{ref} names no alias to follow")
        self._client = client
        self._ref = ref
        self._holder = holder
        self._poll = poll_seconds
        self._loader = loader
        self._stop = threading.Event()
        self._failed: dict[str, float] = {}
        self._thread = threading.Thread(target=self._run, name="alias-follower", daemon=True)

    def start(self) -> AliasFollower:
        """Start polling in the background."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop polling (the model keeps serving)."""
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self._poll):
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
