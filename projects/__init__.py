"""The training workflow: retrieve → explore & clean → prepare → train → evaluate → register.

Each step is a pure function in its own module (``ingest``, ``validate``, ``prepare``,
``train``, ``evaluate``, ``register``); ``pipeline`` chains them with MLflow runs and step
caching; ``cli`` is the thin command line behind the MLproject entry points.
"""

STEPS = ("ingest", "validate", "prepare", "train", "evaluate", "register")
