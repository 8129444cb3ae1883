"""Preflight: is this account ready to serve on SageMaker? Each failure comes with its fix.

Checks, in order: region, credentials (``sts:GetCallerIdentity``), execution role (exists and
trusts ``sagemaker.amazonaws.com``), bucket (exists, reachable, same region) and the serving
image (in ECR, same region). When credentials fail, the checks needing them are skipped.
"""

from __future__ import annotations

import json
import logging
import urllib.parse
from dataclasses import dataclass

from serving.sagemaker.aws import SageMakerError, client_error_code, client_error_message
from serving.sagemaker.target import (
    SERVERLESS_MAX_CONCURRENCY,
    SERVERLESS_MEMORY_MB,
    Serverless,
    default_bucket,
    default_image_url,
    parse_image_url,
)

_logger = logging.getLogger(__name__)

SAGEMAKER_PRINCIPAL = "sagemaker.amazonaws.com"
TRUST_POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": SAGEMAKER_PRINCIPAL},
                "Action": "sts:AssumeRole",
            }
        ],
    },
    separators=(",", ":"),
)
SAGEMAKER_POLICY = "arn:aws:iam::aws:policy/AmazonSageMakerFullAccess"
PUSH_IMAGE = "mlflow sagemaker build-and-push-container (needs Docker)"


@dataclass(frozen=True)
class Check:
    """One preflight check: ``status`` is ``ok``, ``fail`` or ``skip``; ``fix`` is one line."""

    name: str
    status: str
    detail: str
    fix: str = ""

    @property
    def ok(self) -> bool:
        """Whether the check passed."""
        return self.status == "ok"


@dataclass(frozen=True)
class Identity:
    """Who the credentials belong to."""

    account: str
    arn: str


def check_region(region: str | None, known_regions: list[str]) -> Check:
    """The region is set and offers SageMaker (``known_regions`` from botocore's data)."""
    if not region:
        return Check("region", "fail", "no region set",
                     "set AWS_DEFAULT_REGION (or pass --region), e.g. us-east-1")
    if known_regions and region not in known_regions:
        return Check("region", "fail", f"{region} has no SageMaker",
                     f"use a SageMaker region, e.g. {', '.join(sorted(known_regions)[:3])}")
    return Check("region", "ok", region)


def check_credentials(sts) -> tuple[Check, Identity | None]:
    """``sts:GetCallerIdentity`` answers: the credentials exist and are accepted."""
    try:
        who = sts.get_caller_identity()
    except Exception as exc:  # botocore NoCredentialsError/ClientError/connection errors
        name = type(exc).__name__
        if name in ("NoCredentialsError", "PartialCredentialsError"):
            return Check("credentials", "fail", "no AWS credentials found",
                         "configure them: aws configure, AWS_PROFILE, or "
                         "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"), None
        code = client_error_code(exc)
        if code:
            return Check("credentials", "fail", f"credentials rejected ({code})",
                         "refresh them: aws sso login, or new access keys"), None
        return Check("credentials", "fail", f"{name}: {exc}",
                     "check network access to AWS (or AWS_ENDPOINT_URL)"), None
    identity = Identity(account=who["Account"], arn=who["Arn"])
    return Check("credentials", "ok", f"{identity.arn} (account {identity.account})"), identity


def _policy(document) -> dict:
    if isinstance(document, str):
        document = json.loads(urllib.parse.unquote(document))
    return document or {}


def _trusts_sagemaker(document) -> bool:
    statements = _policy(document).get("Statement", [])
    if isinstance(statements, dict):
        statements = [statements]
    for stmt in statements:
        if stmt.get("Effect") != "Allow":
            continue
        actions = stmt.get("Action", [])
        actions = [actions] if isinstance(actions, str) else actions
        if not any(a in ("sts:AssumeRole", "sts:*", "*") for a in actions):
            continue
        services = (stmt.get("Principal") or {}).get("Service", [])
        services = [services] if isinstance(services, str) else services
        if SAGEMAKER_PRINCIPAL in services:
            return True
    return False


def check_role(iam, role_arn: str | None) -> Check:
    """The execution role exists and ``sagemaker.amazonaws.com`` may assume it."""
    if not role_arn:
        return Check("role", "fail", "no execution role given",
                     "pass --execution-role-arn or set MLOPS_SAGEMAKER_EXECUTION_ROLE_ARN")
    if ":role/" not in role_arn:
        return Check("role", "fail", f"{role_arn} is not a role ARN",
                     "use arn:aws:iam::ACCOUNT:role/NAME")
    name = role_arn.rsplit("/", 1)[-1]
    try:
        role = iam.get_role(RoleName=name)["Role"]
    except Exception as exc:  # botocore ClientError
        if client_error_code(exc) == "NoSuchEntity":
            return Check(
                "role", "fail", f"role {name} does not exist",
                f"create it: aws iam create-role --role-name {name} "
                f"--assume-role-policy-document '{TRUST_POLICY}' && aws iam attach-role-policy "
                f"--role-name {name} --policy-arn {SAGEMAKER_POLICY}",
            )
        if client_error_code(exc):
            return Check("role", "fail", f"cannot read role {name}: {client_error_message(exc)}",
                         "let the caller iam:GetRole, or check the ARN")
        raise
    if not _trusts_sagemaker(role.get("AssumeRolePolicyDocument")):
        return Check(
            "role", "fail", f"role {name} does not trust {SAGEMAKER_PRINCIPAL}",
            f"allow SageMaker to assume it: aws iam update-assume-role-policy --role-name {name} "
            f"--policy-document '{TRUST_POLICY}'",
        )
    return Check("role", "ok", f"{role['Arn']} (assumable by {SAGEMAKER_PRINCIPAL})")


def check_bucket(s3, bucket: str, region: str) -> Check:
    """The bucket exists, the caller reaches it, and it is in the endpoint's region."""
    try:
        resp = s3.head_bucket(Bucket=bucket)
    except Exception as exc:  # botocore ClientError
        code = client_error_code(exc)
        if code in ("404", "NoSuchBucket", "NotFound"):
            return Check("bucket", "fail", f"s3://{bucket} does not exist",
                         f"create it: aws s3 mb s3://{bucket} --region {region}")
        if code in ("403", "AccessDenied"):
            return Check("bucket", "fail", f"no access to s3://{bucket}",
                         "grant the caller s3:ListBucket, s3:GetObject and s3:PutObject on it")
        if code:
            return Check("bucket", "fail", f"s3://{bucket}: {client_error_message(exc)}",
                         "check the bucket name")
        raise
    headers = resp.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    where = resp.get("BucketRegion") or headers.get("x-amz-bucket-region") or region
    if where != region:
        return Check("bucket", "fail", f"s3://{bucket} is in {where}, not {region}",
                     f"use a bucket in {region}: aws s3 mb s3://BUCKET --region {region}")
    return Check("bucket", "ok", f"s3://{bucket} ({where})")


def check_image(ecr, image_url: str, region: str) -> Check:
    """The serving image is in ECR, in the endpoint's region."""
    try:
        account, image_region, repo, tag = parse_image_url(image_url)
    except SageMakerError as exc:
        return Check("image", "fail", str(exc),
                     f"push one with {PUSH_IMAGE} and pass its URI as --image-url")
    if image_region != region:
        return Check("image", "fail", f"{image_url} is in {image_region}, not {region}",
                     f"push it to {region}: AWS_DEFAULT_REGION={region} {PUSH_IMAGE}")
    try:
        found = ecr.describe_images(
            registryId=account, repositoryName=repo, imageIds=[{"imageTag": tag}]
        ).get("imageDetails", [])
    except Exception as exc:  # botocore ClientError
        code = client_error_code(exc)
        if code == "RepositoryNotFoundException":
            return Check("image", "fail", f"ECR repository {repo} does not exist",
                         f"push the image: {PUSH_IMAGE}")
        if code == "ImageNotFoundException":
            return Check("image", "fail", f"{repo}:{tag} is not in ECR",
                         f"push the image: {PUSH_IMAGE}")
        if code:
            return Check("image", "fail", f"{image_url}: {client_error_message(exc)}",
                         "let the caller ecr:DescribeImages, or check the URI")
        raise
    if not found:
        return Check("image", "fail", f"{repo}:{tag} is not in ECR",
                     f"push the image: {PUSH_IMAGE}")
    return Check("image", "ok", image_url)


_ACCELERATED = ("ml.g", "ml.p", "ml.inf", "ml.trn")


def check_serverless(serverless: Serverless, *, instance_type: str | None = None,
                     data_capture_uri: str | None = None, vpc: bool = False,
                     variants: int = 1) -> Check:
    """Serverless Inference's limits, checked before any AWS call.

    CPU only (no instance type, least of all a GPU or Inferentia one), memory 1,024-6,144 MB
    in 1 GB steps, at most 200 requests at once, no VPC, no data capture, one variant. The
    first limit crossed is the check's detail, with its one-line fix.
    """
    memory, concurrency = serverless.memory_mb, serverless.max_concurrency
    sizes = ", ".join(str(m) for m in SERVERLESS_MEMORY_MB)
    if instance_type:
        accelerated = instance_type.startswith(_ACCELERATED)
        return Check("serverless", "fail",
                     f"serverless endpoints run on CPU only; {instance_type} "
                     f"{'is an accelerator instance' if accelerated else 'is an instance type'}",
                     "drop --instance-type/--instance-count, or drop --serverless to run on "
                     "instances")
    if memory not in SERVERLESS_MEMORY_MB:
        nearest = min(SERVERLESS_MEMORY_MB, key=lambda m: (abs(m - memory), -m))
        return Check("serverless", "fail",
                     f"{memory} MB is not a serverless memory size ({sizes}: 1 GB steps)",
                     f"use --serverless {nearest}:{concurrency}")
    if not 1 <= concurrency <= SERVERLESS_MAX_CONCURRENCY:
        bounded = min(max(concurrency, 1), SERVERLESS_MAX_CONCURRENCY)
        return Check("serverless", "fail",
                     f"max concurrency {concurrency} is outside 1-{SERVERLESS_MAX_CONCURRENCY}",
                     f"use --serverless {memory}:{bounded}")
    if data_capture_uri:
        return Check("serverless", "fail", "serverless endpoints do not capture data",
                     "drop --data-capture, or deploy on instances to capture")
    if vpc:
        return Check("serverless", "fail", "serverless endpoints cannot run in a VPC",
                     "remove the model's VpcConfig, or deploy on instances")
    if variants > 1:
        return Check("serverless", "fail",
                     f"serverless endpoints have one variant; this one has {variants}",
                     "deploy to a new endpoint name, or delete the extra variants first")
    return Check("serverless", "ok", str(serverless))


def require_serverless(serverless: Serverless, **context) -> None:
    """:func:`check_serverless`, raising its failure as one line (``DETAIL; fix: FIX``)."""
    check = check_serverless(serverless, **context)
    if not check.ok:
        raise SageMakerError(f"{check.detail}; fix: {check.fix}")


def preflight(
    *,
    sts,
    iam,
    s3,
    ecr,
    region: str | None,
    known_regions: list[str],
    execution_role_arn: str | None,
    bucket: str | None = None,
    image_url: str | None = None,
) -> list[Check]:
    """Run every check; bucket and image default as for ``deploy`` (from the account).

    Args:
        sts: boto3 STS client.
        iam: boto3 IAM client.
        s3: boto3 S3 client.
        ecr: boto3 ECR client of ``region``.
        region: the endpoint's region.
        known_regions: regions offering SageMaker (botocore's data).
        execution_role_arn: the role SageMaker assumes.
        bucket: model-archive bucket (default ``mlflow-sagemaker-REGION-ACCOUNT``).
        image_url: serving image (default the ``mlflow-pyfunc`` image of this mlflow version).

    Returns:
        One :class:`Check` per item, in order.
    """
    checks = [check_region(region, known_regions)]
    cred, identity = check_credentials(sts)
    checks.append(cred)
    if identity is None:
        for name in ("role", "bucket", "image"):
            checks.append(Check(name, "skip", "needs working credentials"))
        return checks
    region = region or ""
    checks.append(check_role(iam, execution_role_arn))
    checks.append(check_bucket(s3, bucket or default_bucket(identity.account, region), region))
    checks.append(
        check_image(ecr, image_url or default_image_url(identity.account, region), region)
    )
    return checks
