"""The serverless and asynchronous configs are the shapes botocore's own validation accepts.

MLflow's SageMaker target documents ``serverless_config`` and ``async_inference_config``
wrapped in an outer key; botocore's validator (the one every boto3 call runs) refuses those
and accepts the inner dicts this project sends. No AWS call is made: the validator is local.
"""

from __future__ import annotations

import botocore.session
import pytest
from botocore.exceptions import ParamValidationError
from botocore.validate import ParamValidator
from click.testing import CliRunner

from serving.sagemaker.aws import SageMakerError
from serving.sagemaker.cli import main
from serving.sagemaker.preflight import check_serverless, require_serverless
from serving.sagemaker.target import AsyncOutput, Serverless


def _validate(**params) -> None:
    model = botocore.session.get_session().get_service_model("sagemaker")
    report = ParamValidator().validate(params, model.operation_model(
        "CreateEndpointConfig").input_shape)
    if report.has_errors():
        raise ParamValidationError(report=report.generate_report())


def _variant(**extra) -> dict:
    return {"VariantName": "AllTraffic", "ModelName": "m", "InitialVariantWeight": 1.0, **extra}


def test_our_configs_pass_botocore_and_mlflows_wrapped_ones_do_not():
    serverless = Serverless.parse("3072:7").config()
    asynchronous = AsyncOutput("s3://b/p/", "arn:aws:sns:us-east-1:1:ok").config()
    _validate(EndpointConfigName="c", ProductionVariants=[_variant(ServerlessConfig=serverless)])
    _validate(EndpointConfigName="c", AsyncInferenceConfig=asynchronous, ProductionVariants=[
        _variant(InstanceType="ml.m5.large", InitialInstanceCount=1)])
    with pytest.raises(ParamValidationError, match="Unknown parameter in ProductionVariants"):
        _validate(EndpointConfigName="c", ProductionVariants=[
            _variant(ServerlessConfig={"ServerlessConfig": serverless})])
    with pytest.raises(ParamValidationError, match="Unknown parameter in AsyncInferenceConfig"):
        _validate(EndpointConfigName="c", AsyncInferenceConfig={
            "AsyncInferenceConfig": asynchronous}, ProductionVariants=[
            _variant(InstanceType="ml.m5.large", InitialInstanceCount=1)])


def test_serverless_checks_name_the_fix():
    assert check_serverless(Serverless(6144, 200)).ok
    vpc = check_serverless(Serverless(2048), vpc=True)
    assert (vpc.detail, vpc.fix) == ("serverless endpoints cannot run in a VPC",
                                     "remove the model's VpcConfig, or deploy on instances")
    with pytest.raises(SageMakerError, match=r"^serverless endpoints have one variant; this one "
                                             r"has 2; fix: deploy to a new endpoint name"):
        require_serverless(Serverless(2048), variants=2)
    cpu = check_serverless(Serverless(2048), instance_type="ml.m5.large")
    assert cpu.detail == "serverless endpoints run on CPU only; ml.m5.large is an instance type"
    assert check_serverless(Serverless(7000)).fix == "use --serverless 6144:20"


@pytest.mark.parametrize(("flags", "message"), [
    (["--serverless", "big"], "Invalid value for '--serverless': 'big': use "
     "MEMORY_MB[:MAX_CONCURRENCY], e.g. 2048 or 2048:10"),
    (["--max-instances", "3"], "--max-instances need --async S3URI"),
    (["--serverless", "2048", "--async", "s3://b/p/"], "an endpoint is serverless or "
     "asynchronous, not both; drop --serverless or --async"),
    (["--async", "bucket/prefix"], "Invalid value for '--async': 'bucket/prefix' is not an "
     "s3:// URI"),
])
def test_bad_hosting_flags_are_usage_errors(flags, message):
    with CliRunner().isolation() as (out, err, _):
        code = main(["--region", "us-east-1", "deploy", "m/1", "--endpoint", "e", *flags])
    assert code == 2
    assert message in err.getvalue().decode()


def test_flags_change_the_hosting_settings_pick_a_new_endpoints():
    from serving.sagemaker.endpoints import Hosting, LiveVariant, choose_hosting
    from serving.sagemaker.target import Target

    plain = Target("us-east-1", "arn:role", "b", "img")
    profile = Target("us-east-1", "arn:role", "b", "img", serverless=Serverless(3072, 10))
    lean = LiveVariant("m", None, None, None, serverless=Serverless(2048, 5))
    fleet = LiveVariant("m", "ml.c5.xlarge", 3, None)
    queue = AsyncOutput("s3://b/q/")
    # a new endpoint: the settings' serverless unless instances are asked for
    assert choose_hosting(None, profile) == Hosting(serverless=Serverless(3072, 10))
    assert choose_hosting(None, profile, instance_count=2) == Hosting("ml.m5.large", 2)
    assert choose_hosting(None, plain) == Hosting("ml.m5.large", 1)
    # an existing endpoint keeps its own hosting, whatever the settings say
    assert choose_hosting(lean, plain) == lean.hosting
    assert choose_hosting(fleet, profile) == Hosting("ml.c5.xlarge", 3)
    assert choose_hosting(LiveVariant("m", "ml.m5.large", 0, None, async_output=queue),
                          plain) == Hosting("ml.m5.large", 1, async_output=queue)
    # flags switch it
    assert choose_hosting(lean, plain, instance_type="ml.m5.xlarge") == \
        Hosting("ml.m5.xlarge", 1)
    assert choose_hosting(fleet, plain, serverless=Serverless(1024)).kind == "serverless"
    with pytest.raises(SageMakerError, match="serverless or asynchronous, not both"):
        choose_hosting(None, plain, serverless=Serverless(1024), async_output=queue)
