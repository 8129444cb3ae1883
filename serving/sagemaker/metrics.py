"""The follow service's health in the Prometheus text format (``sagemaker follow --metrics-port``).

``python -m serving sagemaker follow`` is one long-running process: its metrics (rollouts by
outcome, the alias it sees, webhook deliveries) live in this process's registry and are answered
by a small HTTP server of their own (:func:`serve_follow_metrics`). The scoring server's metrics
are another matter (several workers, shared files): :mod:`serving.online.metrics`.
"""

from __future__ import annotations

FOLLOW_PREFIX = "mlops_sagemaker_follow_"
ROLLOUT_OUTCOMES = ("started", "succeeded", "reverted", "rolled_back")

_follow: FollowMetrics | None = None


class FollowMetrics:
    """The follow service's metrics: rollouts by outcome, the alias it sees, webhooks."""

    def __init__(self, registry=None) -> None:
        import prometheus_client as pc

        p = FOLLOW_PREFIX
        self.registry = registry = pc.REGISTRY if registry is None else registry
        rollouts = pc.Counter(p + "rollouts", "Rollouts the follower started, and how they "
                              "ended (succeeded, reverted: the alias moved back, rolled_back: "
                              "the alias left as it was).", ("outcome",), registry=registry)
        self._rollouts = {outcome: rollouts.labels(outcome) for outcome in ROLLOUT_OUTCOMES}
        self._alias_version = pc.Gauge(
            p + "alias_version", "The version the followed alias names, as last seen.",
            ("model_name", "alias"), registry=registry)
        self._alias_moved = pc.Gauge(
            p + "alias_moved_timestamp_seconds", "When the follower last saw the alias move "
            "(Unix time; 0: not since it started).", registry=registry)
        webhooks = pc.Counter(p + "webhook_deliveries", "Webhook deliveries received, by "
                              "result (accepted, refused: bad signature, body or size).",
                              ("result",), registry=registry)
        self._accepted = webhooks.labels("accepted")
        self._refused = webhooks.labels("refused")
        self._seen: str | None = None

    def rollout(self, outcome: str) -> None:
        """A rollout ``started``, ``succeeded``, was ``reverted`` or ``rolled_back``."""
        self._rollouts[outcome].inc()

    def alias_seen(self, name: str, alias: str, version: str | None) -> None:
        """The alias names ``version`` now (a change from the last pass is a move)."""
        if version is not None and version.isdigit():
            self._alias_version.labels(name, alias).set(int(version))
        if self._seen is not None and version != self._seen:
            self._alias_moved.set_to_current_time()
        self._seen = version

    def webhook(self, accepted: bool) -> None:
        """A webhook delivery was accepted or refused."""
        (self._accepted if accepted else self._refused).inc()


def serve_follow_metrics(port: int, host: str = "0.0.0.0") -> FollowMetrics:  # noqa: S104
    """Start the follow service's metrics and answer them on ``http://HOST:PORT/metrics``.

    Raises:
        OSError: the port cannot be listened on.
    """
    global _follow
    from prometheus_client import start_http_server

    if _follow is None:
        _follow = FollowMetrics()
    start_http_server(port, addr=host, registry=_follow.registry)
    return _follow


def follow_rollout(outcome: str) -> None:
    """Count a rollout's start or end (no-op without ``--metrics-port``)."""
    if _follow is not None:
        _follow.rollout(outcome)


def follow_alias_seen(name: str, alias: str, version: str | None) -> None:
    """Record the version the followed alias names (no-op without ``--metrics-port``)."""
    if _follow is not None:
        _follow.alias_seen(name, alias, version)


def follow_webhook(accepted: bool) -> None:
    """Count a webhook delivery (no-op without ``--metrics-port``)."""
    if _follow is not None:
        _follow.webhook(accepted)
