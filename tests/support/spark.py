"""Local Spark for the tests that start one (``local[2]``, Debian's Java runtime)."""

from __future__ import annotations


def stop_with_jvm(session) -> None:
    """Stop Spark and its JVM: ``stop()`` alone keeps the JVM (~750 MB) for the rest of the run."""
    from pyspark import SparkContext

    gateway = SparkContext._gateway
    session.stop()
    if gateway is not None:
        proc = getattr(gateway, "proc", None)
        gateway.shutdown()
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        SparkContext._gateway = SparkContext._jvm = None
