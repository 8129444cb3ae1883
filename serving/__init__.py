"""Serving: the champion behind the MLflow scoring protocol, locally and on SageMaker."""
