"""The foundation every other package builds on.

Settings (one base file, profiles, overrides), the MLflow connection, model references and
the one resolver, the run lifecycle, THE alias move (compare-and-set + history), THE metric
catalogue, and the one mapping of errors to exit codes. ``tracking``, ``projects``,
``registry`` and ``serving`` depend on it and never on each other; it depends on none of them.
"""
