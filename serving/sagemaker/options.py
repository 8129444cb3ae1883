"""The SageMaker commands' shared options: target, waiting, guarded rollouts, hosting."""

from __future__ import annotations

import click

from serving.sagemaker import target as _target

ENV_ROLE = "MLOPS_SAGEMAKER_EXECUTION_ROLE_ARN"
ENV_BUCKET = "MLOPS_SAGEMAKER_BUCKET"
ENV_IMAGE = "MLFLOW_SAGEMAKER_DEPLOY_IMG_URL"  # mlflow's own variable for the same thing
ENV_PREFIX = "MLOPS_SAGEMAKER_ARCHIVE_PREFIX"


def _target_options(func):
    """Options shared by every command that creates SageMaker resources."""
    options = [
        click.option("--execution-role-arn", envvar=ENV_ROLE, default=None,
                     help=f"IAM role SageMaker assumes to pull the image and model [${ENV_ROLE}]."),
        click.option("--bucket", envvar=ENV_BUCKET, default=None,
                     help="S3 bucket for model archives [$" + ENV_BUCKET + "; default "
                          "mlflow-sagemaker-REGION-ACCOUNT]."),
        click.option("--image-url", "--image", "image_url", envvar=ENV_IMAGE, default=None,
                     help=f"ECR URI of the serving image, e.g. one `python -m serving image` "
                          f"built (it serves V2 too) [${ENV_IMAGE}; default "
                          "ACCOUNT.dkr.ecr.REGION.amazonaws.com/mlflow-pyfunc:MLFLOW_VERSION]."),
        click.option("--instance-type", default=None,
                     help="Instance type [settings sagemaker.instance_type]."),
        click.option("--instance-count", type=click.IntRange(min=1), default=None,
                     help="Initial instance count [settings sagemaker.instance_count]."),
        click.option("--data-capture", "data_capture_uri", default=None, metavar="S3URI",
                     help="Capture requests and predictions to this s3:// prefix (SageMaker "
                          "data capture; `python -m serving monitor --captured` reads it)."),
        click.option("--capture-percent", type=click.IntRange(1, 100), default=100,
                     show_default=True, help="Share of requests captured with --data-capture."),
        click.option("--archive-prefix", envvar=ENV_PREFIX,
                     default=_target.DEFAULT_ARCHIVE_PREFIX, show_default=True,
                     help=f"S3 key prefix of model archives [${ENV_PREFIX}]."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _wait_options(default_timeout: int, flag: str = "--async"):
    def decorate(func):
        func = click.option("--timeout-seconds", type=click.FloatRange(min=0),
                            default=default_timeout, show_default=True,
                            help="How long to wait for the outcome.")(func)
        return click.option(flag, "run_async", is_flag=True,
                            help="Start the operation and return without waiting.")(func)

    return decorate


def _guard_options(func):
    """The guarded rollout's options, shared by ``rollout`` and ``follow``."""
    options = [
        click.option("--canary", type=click.IntRange(1, 100), default=10, show_default=True,
                     callback=lambda ctx, param, value: _check_canary(value),
                     help="Percent of the new fleet's capacity that takes traffic first: 1-50 "
                          "(SageMaker's limit), or 100 for all at once."),
        click.option("--bake-minutes", type=click.FloatRange(0, 60), default=10,
                     show_default=True, help="Minutes the canary takes traffic, watched by the "
                                             "alarms, before the rest."),
        click.option("--max-5xx", type=click.IntRange(min=1), default=1, show_default=True,
                     help="5xx errors per minute that roll the update back."),
        click.option("--max-latency-ms", type=click.FloatRange(min=0, min_open=True),
                     default=1000, show_default=True,
                     help="p99 model latency (ms) per minute that rolls back."),
        click.option("--termination-wait-seconds", type=click.IntRange(0, 3600), default=120,
                     show_default=True,
                     help="Keep the old fleet (still guarded) this long after."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _check_canary(value: int) -> int:
    """``--canary``: 1-50 (SageMaker's largest canary) or 100 (all at once)."""
    from serving.sagemaker.rollout import MAX_CANARY_PERCENT

    if value is not None and not (value <= MAX_CANARY_PERCENT or value == 100):
        raise click.BadParameter(
            f"{value}: use 1 to {MAX_CANARY_PERCENT} (SageMaker's largest canary), or 100 for "
            "all at once", param_hint="'--canary'")
    return value


endpoint_option = click.option("--endpoint", "-e", required=True, help="SageMaker endpoint name.")


def _parse_serverless(ctx, param, value):
    if value is None:
        return None
    from serving.sagemaker.aws import SageMakerError

    try:
        return _target.Serverless.parse(value)
    except SageMakerError as exc:
        raise click.BadParameter(str(exc).removeprefix("serverless "), ctx, param) from None


serverless_option = click.option(
    "--serverless", metavar="MEMORY_MB[:MAX_CONCURRENCY]", callback=_parse_serverless,
    default=None, help="Serverless Inference instead of instances: memory 1024-6144 MB in 1 GB "
                       "steps, up to MAX_CONCURRENCY (1-200, default "
                       f"{_target.DEFAULT_SERVERLESS_CONCURRENCY}) requests at once "
                       "[settings sagemaker.serverless].")


def _async_options(func):
    options = [
        click.option("--async", "async_uri", metavar="S3URI", default=None,
                     help="An asynchronous endpoint: answers under S3URI/output, failures under "
                          "S3URI/failure (predict --async uploads inputs under S3URI/input); "
                          "scales to zero when idle."),
        click.option("--success-topic", metavar="SNS_ARN", default=None,
                     help="With --async: SNS topic told of each answer."),
        click.option("--error-topic", metavar="SNS_ARN", default=None,
                     help="With --async: SNS topic told of each failure."),
        click.option("--max-instances", type=click.IntRange(min=1), default=None,
                     help="With --async: most instances when busy (default the instance "
                          "count); 0 when idle."),
    ]
    for option in reversed(options):
        func = option(func)
    return func
