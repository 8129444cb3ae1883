"""``python -m serving sagemaker ...``: flags in, keyword calls out (API in the sibling modules).

Settings, most specific first: command-line flag, environment variable, the settings profile
(``conf/profiles/$MLOPS_PROFILE.yaml``, section ``sagemaker``), built-in default.

Errors: the commands raise; the exit code and the one ``error: ...`` line come from
:func:`core.errors.classify`, the mapping every command line shares (0 done, 1 refused or
failed, 2 bad usage, 3 lost a race for an alias, 130 interrupted), through
:func:`core.cli.run_group` (:func:`main`, or ``python -m serving``'s group when mounted
there). The only SageMaker-specific step is at the group's boundary: AWS's own errors
(botocore ``ClientError`` and the like) become one :class:`~serving.sagemaker.aws.SageMakerError`
line (exit 1).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from core.output import output_option, print_json, print_tables, short_id
from core.output import table as output_table
from serving.online.webhooks import INSECURE_FLAG, INSECURE_HELP
from serving.sagemaker import target as _target
from serving.sagemaker.options import (
    ENV_BUCKET,
    ENV_IMAGE,
    ENV_ROLE,
    _async_options,
    _guard_options,
    _target_options,
    _wait_options,
    endpoint_option,
    serverless_option,
)

_logger = logging.getLogger(__name__)




def _settings():
    from core.settings import load_settings

    return load_settings().sagemaker


class _Context:
    """What the group resolved: region and the boto3 clients built from it."""

    def __init__(self, region: str | None):
        from serving.sagemaker.aws import Aws

        self.aws = Aws(region)

    @property
    def region(self) -> str:
        return self.aws.region or _settings().region


def _mlflow_client():
    from core.connection import connect

    return connect()


def _resolve_target(ctx: _Context, *, execution_role_arn, bucket, image_url, instance_type,
                    instance_count, archive_prefix, data_capture_uri=None,
                    capture_percent=100) -> _target.Target:
    from serving.sagemaker.aws import SageMakerError

    settings = _settings()
    region = ctx.region
    if not execution_role_arn:
        raise SageMakerError(
            f"no execution role: pass --execution-role-arn or set {ENV_ROLE} "
            "(check the account with `python -m serving sagemaker preflight`)"
        )
    if not bucket or not image_url:
        account = ctx.aws.client("sts").get_caller_identity()["Account"]
        bucket = bucket or _target.default_bucket(account, region)
        image_url = image_url or _target.default_image_url(account, region)
    return _target.Target(
        region=region,
        execution_role_arn=execution_role_arn,
        bucket=bucket,
        image_url=image_url,
        instance_type=instance_type or settings.instance_type,
        instance_count=instance_count or settings.instance_count,
        archive_prefix=archive_prefix,
        data_capture_uri=data_capture_uri,
        capture_percent=capture_percent,
    )


class _AwsErrorsAsOneLine(click.Group):
    """Turns AWS's own errors into :class:`SageMakerError` as they leave a command.

    Nothing else: the exit code of every error is :func:`core.errors.classify`'s.
    """

    def invoke(self, ctx: click.Context):
        """Run the sub-command; re-raise an AWS error as one ``SageMakerError`` line."""
        try:
            return super().invoke(ctx)
        except Exception as exc:
            from serving.sagemaker.aws import as_sagemaker_error

            converted = as_sagemaker_error(exc)
            if converted is None:
                raise
            raise converted from None


@click.group("sagemaker", cls=_AwsErrorsAsOneLine)
@click.option("--region", envvar=["AWS_REGION", "AWS_DEFAULT_REGION"], default=None,
              help="AWS region [$AWS_REGION, $AWS_DEFAULT_REGION, settings sagemaker.region].")
@click.option("--verbose", "-v", is_flag=True, help="Log progress to stderr.")
@click.pass_context
def sagemaker(ctx: click.Context, region: str | None, verbose: bool) -> None:
    """Serve registered models on Amazon SageMaker: deploy, roll out safely, scale, batch."""
    if verbose:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if region is None:
        try:
            region = _settings().region
        except Exception as exc:  # settings errors are reported by the command that needs them
            _logger.debug("settings not loaded: %s", exc)
    ctx.obj = _Context(region)


@sagemaker.command()
@click.option("--execution-role-arn", envvar=ENV_ROLE, default=None,
              help=f"IAM role SageMaker assumes [${ENV_ROLE}].")
@click.option("--bucket", envvar=ENV_BUCKET, default=None,
              help=f"S3 bucket for model archives [${ENV_BUCKET}].")
@click.option("--image-url", envvar=ENV_IMAGE, default=None,
              help=f"ECR URI of the serving image [${ENV_IMAGE}].")
@serverless_option
@click.option("--cost", "cost_ref", metavar="NAME@ALIAS|NAME/VERSION", default=None,
              help="Instead of the account checks: what serving this version costs a month, "
                   "real-time, serverless and async, and the cheapest meeting --rps/--p95-ms.")
@click.option("--rps", type=click.FloatRange(min=0, min_open=True), default=1.0,
              show_default=True, help="With --cost: requests per second (monthly average).")
@click.option("--p95-ms", type=click.FloatRange(min=0, min_open=True), default=None,
              help="With --cost: the p95 latency wanted, in ms (default: any).")
@click.option("--instance-type", "instance_types", multiple=True,
              help="With --cost: instance types to price (repeatable; default every one in "
                   "the price table).")
@click.option("--seconds-per-request", type=click.FloatRange(min=0, min_open=True),
              default=None, help="With --cost: use this instead of scoring the model locally.")
@output_option
@click.pass_obj
def preflight(obj: _Context, execution_role_arn, bucket, image_url, serverless, cost_ref, rps,
              p95_ms, instance_types, seconds_per_request, output) -> None:
    """Check region, credentials, execution role, bucket and serving image; print fixes.

    With --serverless, its limits are checked too. With --cost REF, no account check: the
    monthly cost of each way to serve REF (see serving.sagemaker.cost for the formulas).
    """
    if cost_ref:
        _print_cost(obj, cost_ref, rps=rps, p95_ms=p95_ms, instance_types=list(instance_types),
                    serverless=serverless, seconds_per_request=seconds_per_request,
                    output=output)
        return
    from serving.sagemaker.preflight import check_serverless
    from serving.sagemaker.preflight import preflight as run

    aws = obj.aws
    checks = run(
        sts=aws.client("sts"), iam=aws.client("iam"), s3=aws.s3, ecr=aws.client("ecr"),
        region=aws.region, known_regions=aws.session.get_available_regions("sagemaker"),
        execution_role_arn=execution_role_arn, bucket=bucket, image_url=image_url,
    )
    if serverless is not None:
        checks.append(check_serverless(serverless))
    if output == "json":
        print_json({"checks": [{"name": c.name, "status": c.status, "detail": c.detail,
                                "fix": c.fix or None} for c in checks]})
    else:
        width = max(len(c.name) for c in checks)
        for check in checks:
            line = f"{check.status.upper():<4}  {check.name:<{width}}  {check.detail}"
            if check.fix:
                line += f" -- fix: {check.fix}"
            click.echo(line)
    failed = [c.name for c in checks if c.status == "fail"]
    if failed:
        from serving.sagemaker.aws import SageMakerError

        raise SageMakerError(f"{len(failed)} check(s) failed: {', '.join(failed)}")


def _print_cost(obj: _Context, ref: str, *, rps, p95_ms, instance_types, serverless,
                seconds_per_request, output) -> None:
    """``preflight --cost``: the estimate as a table (or JSON) and the cheapest option."""
    from serving.sagemaker import cost

    profile = _settings().serverless
    cost.report(_mlflow_client(), ref, obj.region, obj.aws.session, rps=rps, p95_ms=p95_ms,
                instance_types=instance_types, seconds_per_request=seconds_per_request,
                output=output, serverless=serverless or (_target.Serverless.parse(profile)
                                                         if profile else None))


@sagemaker.command()
@click.argument("ref", metavar="NAME@ALIAS|NAME/VERSION")
@endpoint_option
@serverless_option
@_async_options
@_target_options
@_wait_options(_target.DEFAULT_TIMEOUT_SECONDS, flag="--no-wait")
@click.pass_obj
def deploy(obj: _Context, ref, endpoint, serverless, async_uri, success_topic, error_topic,
           max_instances, run_async, timeout_seconds, **target) -> None:
    """Create the endpoint serving REF, or update it to REF (all at once).

    Flags change the endpoint's hosting (--serverless; --async; --instance-type/
    --instance-count); without them an endpoint keeps its own, and a new one follows the
    settings. Switching between serverless and instances replaces the fleet: the old one
    answers until the new one is InService.
    """
    given = [flag for flag, value in (("--success-topic", success_topic),
                                      ("--error-topic", error_topic),
                                      ("--max-instances", max_instances)) if value]
    if given and not async_uri:
        raise click.UsageError(f"{', '.join(given)} need --async S3URI")
    if serverless is not None and async_uri:
        raise click.UsageError("an endpoint is serverless or asynchronous, not both; drop "
                               "--serverless or --async")
    async_output = None
    if async_uri:
        from serving.sagemaker.aws import SageMakerError

        try:
            async_output = _target.AsyncOutput(async_uri, success_topic, error_topic)
        except SageMakerError as exc:
            raise click.BadParameter(str(exc), param_hint="'--async'") from None
    from serving.sagemaker.endpoints import deploy as run
    from serving.sagemaker.preflight import require_serverless

    instances_asked = bool(target["instance_type"] or target["instance_count"] or async_uri)
    profile = _settings().serverless
    requested = serverless or (None if instances_asked or not profile
                               else _target.Serverless.parse(profile))
    if requested is not None:  # Serverless Inference's limits, before any AWS call
        require_serverless(requested, data_capture_uri=target["data_capture_uri"],
                           instance_type=target["instance_type"] if serverless else None)
    resolved = _resolve_target(obj, **target)
    if profile and not instances_asked:
        import dataclasses

        resolved = dataclasses.replace(resolved, serverless=_target.Serverless.parse(profile))
    result = run(
        obj.aws.sagemaker, obj.aws.s3, _mlflow_client(), ref=ref, endpoint=endpoint,
        target=resolved, synchronous=not run_async,
        timeout_seconds=timeout_seconds, instance_type=target["instance_type"],
        instance_count=target["instance_count"], serverless=serverless,
        async_output=async_output, autoscaling=obj.aws.autoscaling,
    )
    src = result.source
    hosting = result.extra.get("hosting")
    if result.action == "already serving":
        click.echo(f"endpoint {endpoint} already serving {src.name} version {src.version} "
                   f"(run {src.run_id or '-'}); nothing changed")
        return
    action = result.action
    if "replaced" in result.extra:
        action += f" ({result.extra['replaced']} -> {hosting})"
    click.echo(
        f"endpoint {endpoint} {action}: {src.name} version {src.version} "
        f"(run {src.run_id or '-'}) {result.status} on {hosting}"
    )
    if result.extra.get("scaling_removed"):
        click.echo("instance autoscaling removed (serverless endpoints scale themselves): "
                   + ", ".join(result.extra["scaling_removed"]))
    if hosting is not None and hosting.kind == "async":
        if run_async:
            click.echo("not scaled to zero yet (--no-wait): deploy again without --no-wait "
                       "once it is InService")
            return
        from serving.sagemaker.scaling import scale_to_zero

        scaled = scale_to_zero(obj.aws.autoscaling, obj.aws.cloudwatch, endpoint,
                               max_capacity=max_instances or hosting.instance_count or 1)
        click.echo(f"scales 0-{scaled['max']} instances on its backlog (alarm "
                   f"{scaled['alarm']} scales up from zero)")


@sagemaker.command()
@click.argument("ref", metavar="NAME@ALIAS|NAME/VERSION")
@endpoint_option
@click.option("--alias", default=None,
              help="Registry alias set to the rolled-out version on success ('' for none) "
                   "[settings register.champion_alias: champion].")
@_guard_options
@_target_options
@_wait_options(0)
@click.pass_obj
def rollout(obj: _Context, ref, endpoint, canary, bake_minutes, alias, max_5xx, max_latency_ms,
            termination_wait_seconds, run_async, timeout_seconds, **target) -> None:
    """Update ENDPOINT to REF with canary traffic and alarm rollback; then move the alias.

    --timeout-seconds 0 (the default) waits for the update's own maximum plus 5 minutes.
    """
    from core.settings import load_settings
    from serving.sagemaker.rollout import rollout as run

    if alias is None:
        alias = load_settings().register.champion_alias
    result = run(
        obj.aws.sagemaker, obj.aws.s3, obj.aws.cloudwatch, _mlflow_client(), ref=ref,
        endpoint=endpoint, target=_resolve_target(obj, **target), canary_percent=canary,
        bake_minutes=bake_minutes, alias=alias or None, max_5xx=max_5xx,
        max_latency_ms=max_latency_ms, termination_wait_seconds=termination_wait_seconds,
        synchronous=not run_async, timeout_seconds=timeout_seconds or None,
    )
    src = result.source
    if result.action == "already serving":
        moved = {"promoted": f"; alias {alias} -> version {src.version}"}.get(
            result.extra.get("alias_outcome"), "")
        click.echo(f"endpoint {endpoint} already serving {src.name} version {src.version}; "
                   f"no update{moved}")
        return
    if run_async:
        click.echo(f"endpoint {endpoint} rolling out {src.name} version {src.version}; "
                   "alias not moved (--async): check `status`, then move it with the registry")
        return
    moved = {
        "promoted": f"; alias {alias} -> version {src.version}",
        "unchanged": f"; alias {alias} already on version {src.version}",
    }.get(result.extra["alias_outcome"], "")
    click.echo(f"endpoint {endpoint} rolled out: {src.name} version {src.version} "
               f"{result.status}{moved}")


@sagemaker.command()
@click.argument("ref", metavar="NAME@ALIAS")
@endpoint_option
@click.option("--once", is_flag=True,
              help="Bring the endpoint to the alias's version, then exit (for a scheduler); "
                   "exit 1 when the rollout rolled back.")
@click.option("--poll-seconds", type=click.FloatRange(min=0.1), default=30, show_default=True,
              help="How often the registry is checked (the fallback when no webhook comes).")
@click.option("--listen", default=None, metavar="HOST:PORT",
              help="Receive the registry's webhooks for alias moves here (POST "
                   "/webhooks/mlflow).")
@click.option("--webhook-url", default=None, metavar="URL",
              help="Register a webhook on the tracking server posting alias moves to URL "
                   "(the address the server reaches --listen at; https in production).")
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=None, metavar="PORT",
              help="Answer Prometheus metrics (rollouts, alias moves, webhook deliveries) on "
                   "http://0.0.0.0:PORT/metrics.")
@click.option(INSECURE_FLAG, "webhook_insecure", is_flag=True, help=INSECURE_HELP)
@_guard_options
@_target_options
@click.option("--timeout-seconds", type=click.FloatRange(min=0), default=0, show_default=True,
              help="How long to wait for one rollout (0: the update's maximum + 5 minutes).")
@click.pass_obj
def follow(obj: _Context, ref, endpoint, once, poll_seconds, listen, webhook_url, metrics_port,
           webhook_insecure, canary, bake_minutes, max_5xx, max_latency_ms,
           termination_wait_seconds, timeout_seconds, **target) -> None:
    """Keep ENDPOINT on the version NAME@ALIAS names; revert the alias when SageMaker rolls back.

    Each alias move runs the guarded rollout of `rollout` (canary, alarms, auto-rollback).
    When SageMaker rolls the update back, the alias moves back to the version that serves
    (kind revert, the alarm as the reason; `python -m registry history` shows both). The
    webhook's secret comes from $MLOPS_WEBHOOK_SECRET: --listen and --webhook-url need it (or
    --webhook-insecure); without webhooks the registry is polled.
    """
    from core.uris import parse_model_ref
    from serving.online import webhooks
    from serving.sagemaker import metrics
    from serving.sagemaker.aws import SageMakerError
    from serving.sagemaker.follow import Follower, RolloutSettings

    parsed = parse_model_ref(ref)
    if not parsed.alias:
        raise click.UsageError(f"{ref} names no alias to follow; use NAME@ALIAS")
    secret = webhooks.secret_from_env()
    webhooks.check_settings(secret, webhook_insecure)
    if (listen or webhook_url) and not once and not secret and not webhook_insecure:
        raise click.UsageError(f"{'--listen' if listen else '--webhook-url'} needs "
                               f"${webhooks.ENV_SECRET} (the webhook's shared secret), or "
                               f"{webhooks.INSECURE_FLAG} to accept unsigned deliveries")
    settings = RolloutSettings(canary, bake_minutes, max_5xx, max_latency_ms,
                               termination_wait_seconds, timeout_seconds or None)
    settings.check()
    from serving.sagemaker.rollout import refuse_unguarded_endpoint

    refuse_unguarded_endpoint(obj.aws.sagemaker, _target.check_name(endpoint), ref)
    client = _mlflow_client()
    follower = Follower(obj.aws.sagemaker, obj.aws.s3, obj.aws.cloudwatch, client,
                        parsed.name, parsed.alias, endpoint, _resolve_target(obj, **target),
                        settings)
    if once:
        for step in follower.once():
            click.echo(step.detail)
        return
    if metrics_port is not None:
        try:
            metrics.serve_follow_metrics(metrics_port)
        except OSError as exc:
            raise SageMakerError(
                f"cannot listen on port {metrics_port}: {exc.strerror or exc}") from None
    receiver = None
    if (listen or webhook_url) and webhook_insecure:
        click.echo(f"warning: {webhooks.startup_note(secret, webhook_insecure)}", err=True)
    if listen:
        host, _, port = listen.rpartition(":")
        if not port.isdigit():
            raise click.BadParameter(f"{listen}: use HOST:PORT", param_hint="'--listen'")
        try:
            receiver = webhooks.Receiver(host or "127.0.0.1", int(port), follower.on_event,
                                         secret, insecure=webhook_insecure,
                                         on_delivery=metrics.follow_webhook).start()
        except OSError as exc:
            raise SageMakerError(f"cannot listen on {listen}: {exc.strerror or exc}") from None
    if webhook_url:
        hook = webhooks.register(client, f"mlops-follow-{endpoint}", webhook_url, secret,
                                 description=f"sagemaker follow {ref} --endpoint {endpoint}")
        click.echo(f"webhook {hook} posts alias moves to {webhook_url}")
    click.echo(f"following {ref} on endpoint {endpoint} (poll every {poll_seconds:g} s"
               f"{', webhooks on ' + listen if listen else ''})")
    try:
        follower.run(poll_seconds, report=click.echo)
    finally:
        if receiver is not None:
            receiver.stop()


@sagemaker.command()
@endpoint_option
@output_option
@click.option("--json", "as_json", is_flag=True, hidden=True, help="Same as --output json.")
@click.pass_obj
def status(obj: _Context, endpoint, output, as_json) -> None:
    """Show what ENDPOINT serves: status, model version, variants, alarms.

    ``--output json`` prints one JSON document (keys: see
    :func:`serving.sagemaker.endpoints.status_json`).
    """
    from serving.sagemaker.endpoints import endpoint_status, status_json

    info = endpoint_status(obj.aws.sagemaker, endpoint, cloudwatch=obj.aws.cloudwatch)
    if as_json or output == "json":
        print_json(status_json(info))
        return
    table = output_table(f"SageMaker endpoint {endpoint}", "key", "value")
    table.show_header = False
    table.add_row("status", info["status"])
    table.add_row("model", f"{info['model_name']} version {info['model_version']}")
    table.add_row("run id", short_id(info["run_id"]))
    table.add_row("endpoint config", info["endpoint_config"])
    hosting = info.get("hosting") or {}
    if hosting:
        table.add_row("hosting", hosting["kind"])
    serverless = hosting.get("serverless")
    for variant in info["variants"]:
        size = (f"{serverless['memory_mb']} MB, up to {serverless['max_concurrency']} at once"
                if serverless else f"{variant['instances']} instance(s)")
        table.add_row(f"variant {variant['name']}", f"{size}, weight {variant['weight']}")
    if hosting.get("async"):
        table.add_row("async answers", hosting["async"]["output"])
        table.add_row("async failures", hosting["async"]["failure"])
    routing = info["last_deployment"].get("BlueGreenUpdatePolicy", {}).get(
        "TrafficRoutingConfiguration", {})
    if routing:
        table.add_row("last rollout", json.dumps(routing))
    for name, state in info["alarms"].items():
        table.add_row(f"alarm {name}", state)
    if info["failure_reason"]:
        table.add_row("failure reason", info["failure_reason"])
    print_tables(table)


def _read_frame(path: Path):
    import pandas as pd

    suffix = path.suffix.lower()
    if suffix == ".csv":
        return pd.read_csv(path)
    if suffix in (".parquet", ".pq"):
        return pd.read_parquet(path)
    raise click.BadParameter(f"{path}: use a .csv, .parquet or .json file", param_hint="--input")


@sagemaker.command()
@endpoint_option
@click.option("--input", "input_path", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="CSV or Parquet rows (sent as dataframe_split), or a JSON scoring request.")
@click.option("--output", "output_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the JSON answer here instead of stdout.")
@click.option("--async", "run_async", is_flag=True,
              help="An asynchronous endpoint: upload the input to its S3 prefix, invoke, wait "
                   "for the answer (progress on stderr), download it.")
@click.option("--timeout-seconds", type=click.FloatRange(min=0), default=900, show_default=True,
              help="With --async: how long to wait for the answer.")
@click.pass_obj
def predict(obj: _Context, endpoint, input_path: Path, output_path: Path | None, run_async,
            timeout_seconds) -> None:
    """Score a file on ENDPOINT (InvokeEndpoint, or InvokeEndpointAsync) and print the answer."""
    from serving.sagemaker.endpoints import invoke

    if input_path.suffix.lower() == ".json":
        body = input_path.read_bytes()
    else:
        frame = _read_frame(input_path)
        body = json.dumps(
            {"dataframe_split": json.loads(frame.to_json(orient="split", index=False))}
        ).encode()
    if run_async:
        from serving.sagemaker.asynchronous import predict_async

        got = predict_async(obj.aws.sagemaker, obj.aws.runtime, obj.aws.s3, endpoint, body,
                            timeout_seconds=timeout_seconds,
                            progress=lambda line: click.echo(line, err=True))
        click.echo(f"answered in {got.waited_seconds:.1f}s: {got.output_location}", err=True)
        text = got.body.decode()
    else:
        answer = invoke(obj.aws.runtime, endpoint, body)
        _logger.info("answered by variant %s", answer.variant)
        text = answer.body.decode()
    if output_path:
        output_path.write_text(text)
    else:
        click.echo(text)


@sagemaker.command()
@endpoint_option
@click.option("--min", "min_capacity", type=click.IntRange(min=1), required=True,
              help="Fewest instances.")
@click.option("--max", "max_capacity", type=click.IntRange(min=1), required=True,
              help="Most instances.")
@click.option("--target-invocations", type=click.FloatRange(min=0, min_open=True), required=True,
              help="Invocations per instance per minute to hold (target tracking).")
@click.option("--scale-in-cooldown", type=click.IntRange(min=0), default=300, show_default=True,
              help="Seconds between scale-in steps.")
@click.option("--scale-out-cooldown", type=click.IntRange(min=0), default=60, show_default=True,
              help="Seconds between scale-out steps.")
@click.pass_obj
def autoscale(obj: _Context, endpoint, min_capacity, max_capacity, target_invocations,
              scale_in_cooldown, scale_out_cooldown) -> None:
    """Scale ENDPOINT's instances on invocations per instance (Application Auto Scaling)."""
    from serving.sagemaker.scaling import autoscale as run

    done = run(
        obj.aws.autoscaling, obj.aws.sagemaker, endpoint, min_capacity=min_capacity,
        max_capacity=max_capacity, target_invocations=target_invocations,
        scale_in_cooldown=scale_in_cooldown, scale_out_cooldown=scale_out_cooldown,
    )
    for item in done:
        click.echo(f"{item['resource_id']}: {item['min']}-{item['max']} instances, "
                   f"target {target_invocations:g} invocations/instance/min")


@sagemaker.command()
@click.argument("ref", metavar="NAME@ALIAS|NAME/VERSION", required=False)
@click.option("--input", "input_uri", help="s3://BUCKET/PREFIX of the input [required].")
@click.option("--output", "output_uri", help="s3://BUCKET/PREFIX for answers [required].")
@click.option("--content-type", default="text/csv", show_default=True,
              help="Content type of the input objects (text/csv, application/json).")
@click.option("--split-type", type=click.Choice(["None", "Line"]), default="None",
              show_default=True, help="Send objects whole (None) or line by line (Line).")
@click.option("--job-name", default=None, help="Transform job name (default generated).")
@click.option("--wait", "wait_job", default=None, metavar="JOB",
              help="Instead of starting a job: wait for JOB (started with --async, or whose "
                   "wait timed out) to end, then delete its model.")
@_target_options
@_wait_options(3600)
@click.pass_obj
def batch(obj: _Context, ref, input_uri, output_uri, content_type, split_type, job_name,
          wait_job, run_async, timeout_seconds, **target) -> None:
    """Score every object under an s3:// prefix with REF (a SageMaker transform job).

    The job's SageMaker model is deleted when the job ends: at once when batch waits, else by
    `batch --wait JOB`, or by any later batch (it first deletes the models of ended jobs).
    """
    if wait_job is not None:
        given = [name for name, value in (("REF", ref), ("--input", input_uri),
                                          ("--output", output_uri), ("--async", run_async))
                 if value]
        if given:
            raise click.UsageError(f"--wait JOB takes no {', '.join(given)}")
        from serving.sagemaker.batch import wait_batch

        result = wait_batch(obj.aws.sagemaker, wait_job, timeout_seconds=timeout_seconds)
        removed = f"; model {result['model']} deleted" if result["model"] else ""
        click.echo(f"transform job {result['job']} {result['status']}: answers in "
                   f"{result['output']}{removed}")
        return
    for name, value in (("REF", ref), ("--input", input_uri), ("--output", output_uri)):
        if not value:
            raise click.UsageError(f"missing {name} (or pass --wait JOB)")
    from serving.sagemaker.batch import batch as run

    result = run(
        obj.aws.sagemaker, obj.aws.s3, _mlflow_client(), ref=ref, input_uri=input_uri,
        output_uri=output_uri, target=_resolve_target(obj, **target),
        content_type=content_type, split_type=split_type, job_name=job_name,
        synchronous=not run_async, timeout_seconds=timeout_seconds,
    )
    if result["swept"]:
        click.echo(f"deleted {len(result['swept'])} model(s) of ended transform jobs: "
                   + ", ".join(result["swept"]))
    click.echo(f"transform job {result['job']} {result['status']}: answers in {result['output']}")
    if run_async:
        click.echo(f"model {result['model']} stays until the job ends; "
                   f"`python -m serving sagemaker batch --wait {result['job']}` waits and "
                   "deletes it, or the next batch deletes it once the job has ended")


@sagemaker.command()
@endpoint_option
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@_wait_options(_target.DEFAULT_TIMEOUT_SECONDS)
@click.pass_obj
def delete(obj: _Context, endpoint, yes, run_async, timeout_seconds) -> None:
    """Delete ENDPOINT with its configs, models, guardrail alarms and scaling."""
    from serving.sagemaker.endpoints import delete as run

    if not yes and not click.confirm(f"Delete SageMaker endpoint {endpoint}?", default=False):
        from serving.sagemaker.aws import SageMakerError

        raise SageMakerError("not confirmed; nothing deleted (pass --yes to skip the question)")
    deleted = run(
        obj.aws.sagemaker, endpoint, cloudwatch=obj.aws.cloudwatch,
        autoscaling=obj.aws.autoscaling, synchronous=not run_async,
        timeout_seconds=timeout_seconds,
    )
    click.echo(
        f"endpoint {endpoint} deleted with {len(deleted['configs'])} config(s), "
        f"{len(deleted['models'])} model(s), {len(deleted['alarms'])} alarm(s), "
        f"{len(deleted['scaling'])} scaling target(s)"
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``python -m serving.sagemaker``; returns the exit code.

    ``python -m serving sagemaker`` runs the same group mounted in ``python -m serving``.
    """
    from core.cli import run_group

    return run_group(sagemaker, argv, "python -m serving sagemaker")
