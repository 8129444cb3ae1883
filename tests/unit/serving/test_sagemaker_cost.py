"""``sagemaker preflight --cost``: the monthly cost of real-time, serverless and async hosting.

The formulas are checked against numbers worked out by hand for a fixed price table and a
fixed latency; the command itself runs on a real logged model (scored locally) with the
Pricing API unreachable, as it is here, so it must say it used the shipped table.
"""

from __future__ import annotations

import json

import botocore.exceptions
import mlflow
import pytest
from click.testing import CliRunner
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from serving.sagemaker import cost, prices
from serving.sagemaker.aws import SageMakerError
from serving.sagemaker.cli import main
from serving.sagemaker.target import Serverless

PRICES = cost.Prices("us-east-1", "test table", {"ml.m5.large": (0.115, 2),
                                                 "ml.c5.2xlarge": (0.408, 8)},
                     serverless_gb_second=0.00002, serverless_data_gb=0.016)
# 10 ms a request on average, 20 ms at p95; 1,000 bytes in, 200 out
LATENCY = cost.Latency(0.010, 0.020, 1000, 200, 30)


def by_config(result: cost.Estimate) -> dict[tuple[str, str], cost.Option]:
    return {(o.kind, o.config.split(" x ")[-1].split(" (")[0]): o for o in result.options}


def test_cost_table_is_the_formula_for_a_fixed_price_table_and_latency():
    result = cost.estimate(PRICES, LATENCY, rps=5, p95_ms=100,
                           serverless=Serverless(2048, 20))
    options = by_config(result)
    requests = 5 * 730 * 3600  # 13,140,000 a month
    assert requests == 13_140_000
    # real-time: an ml.m5.large answers 2 / 0.01 x 0.7 = 140 requests/s: one instance, always
    rt = options[("real-time", "ml.m5.large")]
    assert rt.config == "1 x ml.m5.large (autoscaling 1-1)"
    assert rt.monthly_usd == pytest.approx(0.115 * 730)  # 83.95
    assert (rt.p95_ms, rt.meets) == (pytest.approx(20), True)
    # serverless: 13.14e6 x 0.01 s x 2 GB x $0.00002 = $5.256, data 13.14e6 x 1,200 B = 15.768
    # GB x $0.016 = $0.2523
    sl = options[("serverless", "2048 MB, max concurrency 20")]
    assert sl.monthly_usd == pytest.approx(5.256 + 0.252288)
    assert sl.meets  # 5 x 0.01 = 0.05 requests at once
    # async: busy 13.14e6 x 0.01 / 2 vCPUs / 0.7 / 3600 = 26.07 h x $0.115
    asy = options[("async", "ml.m5.large")]
    assert asy.monthly_usd == pytest.approx(13_140_000 * 0.01 / 2 / 0.7 / 3600 * 0.115)
    assert asy.config == "0-1 x ml.m5.large"
    assert asy.p95_ms == pytest.approx(300_000 + 20) and not asy.meets  # minutes from zero
    assert result.cheapest == sl
    # without a p95 target, async (busy hours only) is cheapest
    assert cost.estimate(PRICES, LATENCY, rps=5).cheapest.kind == "async"


def test_high_rate_needs_more_instances_and_overflows_serverless_concurrency():
    result = cost.estimate(PRICES, cost.Latency(0.2, 0.3, 100, 10, 5), rps=500,
                           instance_types=["ml.c5.2xlarge"], serverless=Serverless(1024, 50))
    options = by_config(result)
    # an ml.c5.2xlarge answers 8 / 0.2 x 0.7 = 28 requests/s: ceil(500 / 28) = 18 instances
    assert options[("real-time", "ml.c5.2xlarge")].config == \
        "18 x ml.c5.2xlarge (autoscaling 1-18)"
    assert options[("real-time", "ml.c5.2xlarge")].monthly_usd == pytest.approx(18 * 0.408 * 730)
    serverless = options[("serverless", "1024 MB, max concurrency 50")]
    assert not serverless.meets_rps  # 500 x 0.2 = 100 at once > 50
    assert result.cheapest.kind == "async"
    assert [o.kind for o in result.options] == ["real-time", "serverless", "async"]


def test_unknown_instance_type_and_bad_rate_are_one_line():
    with pytest.raises(SageMakerError, match=r"^no price for ml.x9.huge in us-east-1; known: "):
        cost.estimate(PRICES, LATENCY, rps=1, instance_types=["ml.x9.huge"])
    with pytest.raises(SageMakerError, match="--rps 0: use a positive rate"):
        cost.estimate(PRICES, LATENCY, rps=0)


class _Pricing:
    """A stand-in for the AWS Pricing API (AWS cannot be reached here), in its answer shape."""

    def __init__(self, usd: dict[str, str]):
        self.usd = usd
        self.asked: list[dict] = []

    def get_products(self, ServiceCode, Filters, MaxResults):  # noqa: N803 - boto3's names
        self.asked.append({f["Field"]: f["Value"] for f in Filters} | {"service": ServiceCode})
        name = next(f["Value"] for f in Filters if f["Field"] == "instanceName")
        if name not in self.usd:
            return {"PriceList": []}
        product = {"product": {"attributes": {"instanceName": name}}, "terms": {"OnDemand": {
            "T1": {"priceDimensions": {"D1": {"unit": "Hrs",
                                              "pricePerUnit": {"USD": self.usd[name]}}}}}}}
        return {"PriceList": [json.dumps(product)]}


def test_pricing_api_prices_are_used_where_it_answers():
    pricing = _Pricing({"ml.m5.large": "0.1150000000", "ml.c5.large": "0.1020000000"})
    got = cost.load_prices("eu-west-1", pricing)
    assert got.instances == {"ml.c5.large": (0.102, 2), "ml.m5.large": (0.115, 2)}
    assert got.source.startswith("AWS Pricing API (AmazonSageMaker hosting, eu-west-1)")
    assert pricing.asked[0] == {"regionCode": "eu-west-1", "instanceName": "ml.t2.medium",
                                "component": "Hosting", "service": "AmazonSageMaker"}


def test_unreachable_pricing_api_falls_back_to_the_shipped_table_and_says_why():
    class Down:
        def get_products(self, **kwargs):
            raise botocore.exceptions.EndpointConnectionError(
                endpoint_url="https://api.pricing.us-east-1.amazonaws.com/")

    got = cost.load_prices("us-east-1", Down())
    assert got.instances == prices.INSTANCES
    assert got.source == (
        f"shipped price table of {prices.AS_OF} (us-east-1, {prices.SOURCE}); Pricing API not "
        'used: Could not connect to the endpoint URL: "https://api.pricing.us-east-1.'
        'amazonaws.com/"')


def test_preflight_cost_scores_the_model_locally_and_names_its_price_source(monkeypatch):
    X, y = load_iris(return_X_y=True, as_frame=True)
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(LogisticRegression(max_iter=300).fit(X, y), name="m",
                                        input_example=X.head(2),
                                        pip_requirements=["scikit-learn"],
                                        registered_model_name="iris")
    assert info.registered_model_version == 1
    # no AWS here: a port nothing answers on stands in for the unreachable Pricing API
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with CliRunner().isolation() as (out, err, _):
        code = main(["--region", "us-east-1", "preflight", "--cost", "iris/1", "--rps", "2",
                     "--p95-ms", "250", "--instance-type", "ml.m5.large", "--output", "json"])
    assert code == 0, err.getvalue().decode()
    doc = json.loads(out.getvalue().decode())
    assert doc["model"] == {"name": "iris", "version": "1"}
    assert doc["prices"]["source"].startswith(f"shipped price table of {prices.AS_OF} "
                                              "(us-east-1, ")
    assert "Pricing API not used: Could not connect" in doc["prices"]["source"]
    latency = doc["latency"]
    assert latency["source"] == "measured locally on the input example"
    assert latency["samples"] >= 1 and 0 < latency["mean_seconds"] < 1
    assert latency["request_bytes"] == len(json.dumps({"dataframe_split": json.loads(
        X.head(2).to_json(orient="split", index=False))}).encode())
    assert [o["kind"] for o in doc["options"]] == ["real-time", "serverless", "async"]
    # the table is the formula applied to what was measured
    again = cost.estimate(cost.Prices.shipped(), cost.Latency(**latency), rps=2, p95_ms=250,
                          instance_types=["ml.m5.large"])
    assert [o["monthly_usd"] for o in doc["options"]] == pytest.approx(
        [o.monthly_usd for o in again.options])
    assert doc["cheapest"]["kind"] == again.cheapest.kind
