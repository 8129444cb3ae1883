"""Serving: the champion behind the MLflow scoring protocol, locally and on SageMaker.

Four products, one subpackage each, layered (import-linter keeps it so; see pyproject.toml):

* :mod:`serving.online`: the scoring server (``python -m serving serve``): protocol, scorers,
  pool, micro-batching, the alias follower, webhooks, capture and the server's ``/metrics``.
* :mod:`serving.shadow`: a challenger scoring a sample of live requests, compared with the
  champion (the pure comparison apart from the process that runs it).
* :mod:`serving.batch`: ``python -m serving predict`` on one machine or on Spark.
* :mod:`serving.sagemaker`: ``python -m serving sagemaker ...`` (deploy, rollout, follow, ...).

:mod:`serving.cli` is the command line of all four. Drift monitoring is not serving: it is the
top-level ``monitoring`` package (``python -m serving monitor`` runs ``python -m monitoring``).
"""
