"""Amazon SageMaker: push a registered model to an endpoint, roll it out safely, scale it.

The API lives in plain modules that take boto3 and MLflow clients as arguments
(:mod:`~serving.sagemaker.aws` builds them, in the CLI only); :mod:`~serving.sagemaker.cli`
parses flags and delegates. Nothing here imports boto3 at import time.
"""
