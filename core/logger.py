"""Batched logging: metrics, params and tags buffered and sent with ``log_batch``.

One ``log_metric`` call is one round trip to a tracking server (64–98/s measured here by
``benchmarks/bench_tracking_logging.py``); a batch carries up to 1,000 metrics in one request.
For series of your own (per-epoch losses, say) use this, or MLflow's asynchronous logging
(``mlflow.log_metrics(..., synchronous=False)``); the workflow itself logs each step's metrics
as one dict, which ``mlflow.log_metrics`` already sends as one batch.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

# MLflow's limits per log_batch request.
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100
MAX_TAGS_PER_BATCH = 100


class BatchLogger:
    """Buffer metrics/params/tags for one run and flush them in as few requests as possible.

    Use as a context manager; leaving the block flushes.
    """

    def __init__(self, client, run_id: str, flush_every: int = MAX_METRICS_PER_BATCH):
        from mlflow.entities import Metric, Param, RunTag

        self._client = client
        self.run_id = run_id
        self._flush_every = flush_every
        self._metric_cls, self._param_cls, self._tag_cls = Metric, Param, RunTag
        self._metrics: list = []
        self._params: list = []
        self._tags: list = []

    def log_metric(self, key: str, value: float, step: int = 0, timestamp: int | None = None):
        """Buffer one metric point."""
        ts = timestamp if timestamp is not None else int(time.time() * 1000)
        self._metrics.append(self._metric_cls(key, float(value), ts, int(step)))
        if len(self._metrics) >= self._flush_every:
            self.flush()

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0):
        """Buffer several metrics at one step."""
        ts = int(time.time() * 1000)
        for key, value in metrics.items():
            self.log_metric(key, value, step=step, timestamp=ts)

    def log_params(self, params: Mapping[str, object]):
        """Buffer params (values are stringified as MLflow stores them)."""
        self._params.extend(self._param_cls(k, str(v)) for k, v in params.items())

    def set_tags(self, tags: Mapping[str, object]):
        """Buffer tags."""
        self._tags.extend(self._tag_cls(k, str(v)) for k, v in tags.items())

    def flush(self):
        """Send everything buffered, in chunks within MLflow's per-request limits."""
        while self._metrics or self._params or self._tags:
            metrics, self._metrics = (
                self._metrics[:MAX_METRICS_PER_BATCH],
                self._metrics[MAX_METRICS_PER_BATCH:],
            )
            params, self._params = (
                self._params[:MAX_PARAMS_PER_BATCH],
                self._params[MAX_PARAMS_PER_BATCH:],
            )
            tags, self._tags = self._tags[:MAX_TAGS_PER_BATCH], self._tags[MAX_TAGS_PER_BATCH:]
            self._client.log_batch(self.run_id, metrics=metrics, params=params, tags=tags)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.flush()
        return False
