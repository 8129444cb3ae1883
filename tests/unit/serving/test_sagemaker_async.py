"""``predict --async``'s wait: progress while waiting, and a timeout that says where the answer
will appear. AWS cannot exist here: the clients are small fakes of boto3's, and the clock is
a fake so no test sleeps.
"""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from serving.sagemaker.asynchronous import predict_async
from serving.sagemaker.aws import SageMakerError

CONFIG = {"AsyncInferenceConfig": {"OutputConfig": {"S3OutputPath": "s3://b/q/output",
                                                    "S3FailurePath": "s3://b/q/failure"}}}


class _SageMaker:
    def __init__(self, config):
        self.config = config

    def describe_endpoint(self, EndpointName):  # noqa: N803 - boto3's names
        return {"EndpointConfigName": "cfg", "EndpointStatus": "InService"}

    def describe_endpoint_config(self, EndpointConfigName):  # noqa: N803
        return self.config


class _S3:
    def __init__(self):
        self.objects: dict[tuple[str, str], bytes] = {}

    def put_object(self, Bucket, Key, Body, ContentType=None):  # noqa: N803
        self.objects[(Bucket, Key)] = Body

    def get_object(self, Bucket, Key):  # noqa: N803
        if (Bucket, Key) not in self.objects:
            raise ClientError({"Error": {"Code": "NoSuchKey", "Message": "none"}}, "GetObject")
        import io

        return {"Body": io.BytesIO(self.objects[(Bucket, Key)])}


class _Runtime:
    def __init__(self):
        self.calls = []

    def invoke_endpoint_async(self, **kwargs):
        self.calls.append(kwargs)
        return {"InferenceId": "inf-1", "OutputLocation": "s3://b/q/output/inf-1.out",
                "FailureLocation": "s3://b/q/failure/inf-1-error.out"}


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_waits_with_progress_and_times_out_naming_where_the_answer_will_be():
    s3, runtime, clock, said = _S3(), _Runtime(), _Clock(), []
    with pytest.raises(SageMakerError) as raised:
        predict_async(_SageMaker(CONFIG), runtime, s3, "e", b'{"inputs": 1}',
                      timeout_seconds=30, progress=said.append, sleep=clock.sleep, clock=clock)
    assert str(raised.value) == (
        "endpoint e has not answered request inf-1 after 30s (it may be scaling up from zero); "
        "the answer will be at s3://b/q/output/inf-1.out, a failure at "
        "s3://b/q/failure/inf-1-error.out")
    uploaded = runtime.calls[0]["InputLocation"]
    assert uploaded.startswith("s3://b/q/input/") and uploaded.endswith(".json")
    assert s3.objects[("b", uploaded[len("s3://b/"):])] == b'{"inputs": 1}'
    assert said[:2] == [f"uploaded the request to {uploaded}",
                        "queued as inf-1; the answer will be at s3://b/q/output/inf-1.out"]
    assert said[2].startswith("waiting for s3://b/q/output/inf-1.out (")
    assert clock.now == pytest.approx(30)


def test_answer_is_read_back_and_a_real_time_endpoint_is_refused():
    s3, runtime, clock = _S3(), _Runtime(), _Clock()
    s3.objects[("b", "q/output/inf-1.out")] = b'{"predictions": [1]}'
    got = predict_async(_SageMaker(CONFIG), runtime, s3, "e", b"{}", sleep=clock.sleep,
                        clock=clock)
    assert (got.body, got.inference_id) == (b'{"predictions": [1]}', "inf-1")
    with pytest.raises(SageMakerError, match=r"^endpoint e is not asynchronous; predict "
                                             r"without --async"):
        predict_async(_SageMaker({}), runtime, s3, "e", b"{}")
