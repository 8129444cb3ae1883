"""Monitoring, the workflow's "update" stage: is the champion still right for the traffic?

``python -m monitoring MODEL --captured PATH`` (also ``python -m serving monitor``) reads the
requests the scoring server captured (:mod:`monitoring.capture`, in the format of
:mod:`core.capture`), compares them with the version's training data (:mod:`monitoring.drift`),
logs a monitoring run with a report (:mod:`monitoring.monitor`, :mod:`monitoring.report`) and,
when a threshold is crossed, can retrain (:mod:`monitoring.retrain`, the training workflow's
public interface). Like every package it depends on ``core`` only.
"""
