"""Shadow traffic: a challenger scores a sample of live requests; its answers are compared.

:mod:`~serving.shadow.compare` is the comparison alone (pure: answers in, agreement out);
:mod:`~serving.shadow.run` scores queued samples and logs the totals to an MLflow run;
:mod:`~serving.shadow.process` is the plumbing: the pipe from the serving worker, the shadow's
own process, and :func:`~serving.shadow.process.shadow_for` that starts it.
"""
