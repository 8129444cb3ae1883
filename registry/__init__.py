"""The registry for release managers: list, show, diff, validate, promote, roll back, copy.

Versions move between ``challenger`` and ``champion`` with aliases and tags only (never stages).
Every alias move goes through a compare-and-set (:mod:`core.ledger`) and is recorded on the
version and in the model's history (:mod:`registry.promotion`).
"""
