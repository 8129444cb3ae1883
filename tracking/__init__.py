"""Settings, the MLflow connection and the tracking-server launcher.

The bottom layer: ``projects``, ``registry`` and ``serving`` depend on it; it depends on none
of them.
"""
