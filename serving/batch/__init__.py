"""Batch scoring: ``python -m serving predict`` on one machine or on Spark.

:mod:`~serving.batch.local` streams a file through the model; :mod:`~serving.batch.spark`
spreads the same job over a Spark cluster; :mod:`~serving.batch.outputs` is the rule both
follow for where an output may be written (and what an earlier output may be replaced).
"""
