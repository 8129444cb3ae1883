"""Online scoring: ``python -m serving serve`` answers the MLflow scoring protocol.

:mod:`~serving.online.server` runs the workers (one port, N processes) and assembles each
worker's app: :mod:`~serving.online.app` (routes), :mod:`~serving.online.protocol` (request
parsing, answers), :mod:`~serving.online.model` (the scorers: fast path and pyfunc),
:mod:`~serving.online.pool` and :mod:`~serving.online.microbatch` (where scoring runs),
:mod:`~serving.online.follow` and :mod:`~serving.online.webhooks` (an alias's moves),
:mod:`~serving.online.capture` (``--capture``), :mod:`~serving.online.metrics` (``/metrics``)
and :mod:`~serving.online.logs` (JSON log lines).
"""
