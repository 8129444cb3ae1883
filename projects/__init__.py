"""The training workflow: retrieve → explore & clean → prepare → train → evaluate → register.

Each step is a pure function in its own module (``ingest``, ``validate``, ``prepare``,
``train``, ``evaluate``, ``register``). ``workflow`` chains them as MLflow runs (its
``Workflow`` class; the steps' runs in ``data_steps``, ``model_steps``, ``crowning`` and
``run_summary``), ``cache_keys`` says when a step can be reused, ``artifacts`` writes what the
runs log, ``record`` what reproducing a run needs, and ``result`` the outcome (the JSON
document of ``--output json``). ``cli`` is the thin command line behind the MLproject entry
points.
"""

STEPS = ("ingest", "validate", "prepare", "train", "evaluate", "register")
