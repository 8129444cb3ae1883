"""The price table shipped with the project: SageMaker hosting in one region, with its date.

``preflight --cost`` uses it when the AWS Pricing API (``AmazonSageMaker``) cannot be reached,
and says so. Prices are on-demand US dollars in ``us-east-1`` as AWS's SageMaker pricing page
listed them at ``AS_OF``; they were not re-checked since: with the Pricing API reachable the
command uses AWS's current instance prices instead. Other regions cost more or less; the
command prints the table's region next to every estimate made from it.
"""

from __future__ import annotations

AS_OF = "2025-01"
REGION = "us-east-1"
SOURCE = "https://aws.amazon.com/sagemaker/pricing/ (real-time inference, on-demand)"

#: Real-time and asynchronous inference: US dollars per instance-hour, and the instance's vCPUs
#: (the MLflow serving container runs one worker per vCPU).
INSTANCES: dict[str, tuple[float, int]] = {
    "ml.t2.medium": (0.056, 2),
    "ml.c5.large": (0.102, 2),
    "ml.m5.large": (0.115, 2),
    "ml.c5.xlarge": (0.204, 4),
    "ml.m5.xlarge": (0.23, 4),
    "ml.c5.2xlarge": (0.408, 8),
    "ml.m5.2xlarge": (0.461, 8),
}

#: Serverless inference: US dollars per GB of configured memory per second of compute.
SERVERLESS_GB_SECOND = 0.0000200
#: Serverless inference: US dollars per GB of data processed, in and out each.
SERVERLESS_DATA_GB = 0.016
