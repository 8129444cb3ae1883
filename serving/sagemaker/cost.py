"""What an endpoint will cost a month, before deploying: real-time, serverless, asynchronous.

Inputs: unit prices (:class:`Prices`: the AWS Pricing API where reachable, else the shipped
table in :mod:`serving.sagemaker.prices`, each estimate naming which), the seconds one request
takes (:func:`measure_latency`: the model scored locally on its own input example), the
requests per second expected and the p95 latency wanted. The formulas (:func:`estimate`):

- real-time, per instance type: one worker per vCPU, so an instance answers
  ``vCPUs / mean seconds`` requests a second; it is sized to stay under
  :data:`TARGET_UTILIZATION` busy: ``instances = max(1, ceil(rps / (vCPUs / mean_s x 0.7)))``
  (the autoscaling range is 1 to that count), costing ``instances x hourly x 730`` a month.
- serverless: ``requests x mean seconds x memory GB x price per GB-second`` plus
  ``requests x (request + answer bytes) / 1e9 x price per GB processed``; it meets the rate
  when ``rps x mean seconds`` requests at once fit in its max concurrency. Cold starts are not
  in its p95.
- asynchronous, per instance type: scaled to zero when idle, it pays the instance-hours it is
  busy: ``requests x mean seconds / vCPUs / 0.7 / 3600 x hourly``; its p95 includes a scale up
  from zero (:data:`ASYNC_SCALE_FROM_ZERO_SECONDS`), so it meets only a p95 of minutes.

A month is :data:`HOURS_PER_MONTH` hours (AWS's own convention).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field

from serving.sagemaker import prices as shipped
from serving.sagemaker.aws import SageMakerError
from serving.sagemaker.target import SERVERLESS_MAX_CONCURRENCY, Serverless

_logger = logging.getLogger(__name__)

HOURS_PER_MONTH = 730
SECONDS_PER_MONTH = HOURS_PER_MONTH * 3600
TARGET_UTILIZATION = 0.7
ASYNC_SCALE_FROM_ZERO_SECONDS = 300
PRICING_REGION = "us-east-1"  # the Pricing API answers in us-east-1 (and two others)


@dataclass(frozen=True)
class Prices:
    """Unit prices of one region and where they came from."""

    region: str
    source: str
    instances: dict[str, tuple[float, int]]
    serverless_gb_second: float
    serverless_data_gb: float

    @classmethod
    def shipped(cls, why: str = "") -> Prices:
        """The shipped table (:mod:`serving.sagemaker.prices`); ``why`` the API was not used."""
        source = f"shipped price table of {shipped.AS_OF} ({shipped.REGION}, {shipped.SOURCE})"
        if why:
            source += f"; Pricing API not used: {why}"
        return cls(shipped.REGION, source, dict(shipped.INSTANCES), shipped.SERVERLESS_GB_SECOND,
                   shipped.SERVERLESS_DATA_GB)


def _on_demand_usd(product: dict) -> float | None:
    for term in (product.get("terms", {}).get("OnDemand") or {}).values():
        for dimension in (term.get("priceDimensions") or {}).values():
            usd = (dimension.get("pricePerUnit") or {}).get("USD")
            if usd is not None and float(usd) > 0:
                return float(usd)
    return None


def pricing_api_prices(pricing, region: str) -> Prices:
    """Instance-hour prices of SageMaker hosting in ``region`` from the AWS Pricing API.

    Only the instance types of the shipped table are asked for (their vCPUs come from it);
    serverless prices stay the table's (the source says so). Any error propagates: the
    caller falls back to :meth:`Prices.shipped` and names the error.
    """
    found: dict[str, tuple[float, int]] = {}
    for instance_type, (_, vcpus) in shipped.INSTANCES.items():
        answer = pricing.get_products(
            ServiceCode="AmazonSageMaker", MaxResults=20,
            Filters=[{"Type": "TERM_MATCH", "Field": field_name, "Value": value}
                     for field_name, value in (("regionCode", region),
                                               ("instanceName", instance_type),
                                               ("component", "Hosting"))],
        )
        for item in answer.get("PriceList", []):
            usd = _on_demand_usd(json.loads(item) if isinstance(item, str) else item)
            if usd is not None:
                found[instance_type] = (usd, vcpus)
                break
    if not found:
        raise SageMakerError(f"no SageMaker hosting prices for {region}")
    return Prices(region, f"AWS Pricing API (AmazonSageMaker hosting, {region}) for "
                          f"instances; serverless from the shipped table of {shipped.AS_OF}",
                  found, shipped.SERVERLESS_GB_SECOND, shipped.SERVERLESS_DATA_GB)


def load_prices(region: str, pricing_client=None) -> Prices:
    """The Pricing API's prices when it answers, else the shipped table saying why."""
    if pricing_client is None:
        return Prices.shipped("no Pricing API client")
    try:
        return pricing_api_prices(pricing_client, region)
    except Exception as exc:  # noqa: BLE001 - any failure means: use the table, and say why
        why = " ".join(str(exc).split())[:160] or type(exc).__name__
        _logger.info("Pricing API not reached: %s", why)
        return Prices.shipped(why)


@dataclass(frozen=True)
class Latency:
    """Seconds per request measured locally, and the bytes of one request and answer."""

    mean_seconds: float
    p95_seconds: float
    request_bytes: int
    response_bytes: int
    samples: int
    source: str = "given"


def measure_latency(model_uri: str, *, samples: int = 30, budget_seconds: float = 5.0,
                    clock=time.perf_counter) -> Latency:
    """Score the model on its own input example, as the endpoint would; time each call.

    Three warm-up calls, then up to ``samples`` timed calls within ``budget_seconds``.

    Raises:
        SageMakerError: the model was logged without an input example.
    """
    import mlflow.pyfunc
    import numpy as np

    model = mlflow.pyfunc.load_model(model_uri)
    example = model.input_example
    if example is None:
        raise SageMakerError(f"{model_uri} was logged without an input example; pass "
                             "--seconds-per-request (measured elsewhere) instead")
    request = _request_body(example)
    answer = None
    for _ in range(3):
        answer = model.predict(example)
    times: list[float] = []
    deadline = clock() + budget_seconds
    while len(times) < samples and (not times or clock() < deadline):
        start = clock()
        answer = model.predict(example)
        times.append(clock() - start)
    return Latency(float(np.mean(times)), float(np.percentile(times, 95)), len(request),
                   len(_answer_body(answer)), len(times), "measured locally on the input example")


def _request_body(example) -> bytes:
    import pandas as pd

    if isinstance(example, pd.DataFrame):
        return json.dumps({"dataframe_split": json.loads(
            example.to_json(orient="split", index=False))}).encode()
    return json.dumps({"inputs": example}, default=lambda v: getattr(v, "tolist", str)()).encode()


def _answer_body(answer) -> bytes:
    import pandas as pd

    if isinstance(answer, pd.DataFrame | pd.Series):
        answer = answer.to_dict(orient="records") if isinstance(answer, pd.DataFrame) \
            else answer.tolist()
    elif hasattr(answer, "tolist"):
        answer = answer.tolist()
    return json.dumps({"predictions": answer}, default=str).encode()


@dataclass(frozen=True)
class Option:
    """One way to host the model and what it costs a month."""

    kind: str
    config: str
    monthly_usd: float
    p95_ms: float
    meets_rps: bool
    meets_p95: bool
    how: str

    @property
    def meets(self) -> bool:
        """Whether it meets both the rate and the p95."""
        return self.meets_rps and self.meets_p95


@dataclass(frozen=True)
class Estimate:
    """The options, the cheapest one meeting the targets, and the inputs used."""

    rps: float
    p95_ms: float | None
    latency: Latency
    prices: Prices
    options: list[Option] = field(default_factory=list)

    @property
    def cheapest(self) -> Option | None:
        """The cheapest option meeting the rate and the p95 (None when none does)."""
        meeting = [o for o in self.options if o.meets]
        return min(meeting, key=lambda o: o.monthly_usd) if meeting else None

    def as_json(self) -> dict:
        """``preflight --cost --output json``: inputs, options and the cheapest."""
        cheapest = self.cheapest
        return {
            "rps": self.rps,
            "p95_ms": self.p95_ms,
            "requests_per_month": self.rps * SECONDS_PER_MONTH,
            "hours_per_month": HOURS_PER_MONTH,
            "latency": asdict(self.latency),
            "prices": {"region": self.prices.region, "source": self.prices.source},
            "options": [{**asdict(o), "meets": o.meets} for o in self.options],
            "cheapest": None if cheapest is None else {"kind": cheapest.kind,
                                                       "config": cheapest.config,
                                                       "monthly_usd": cheapest.monthly_usd},
        }


def estimate(prices: Prices, latency: Latency, *, rps: float, p95_ms: float | None = None,
             instance_types: list[str] | None = None,
             serverless: Serverless | None = None) -> Estimate:
    """Every option's monthly cost by the module's formulas; see the module docstring.

    Args:
        prices: unit prices.
        latency: seconds per request and bytes per request/answer.
        rps: requests per second expected (averaged over the month).
        p95_ms: p95 latency wanted (None: any).
        instance_types: the instance types to price (default every one the prices know).
        serverless: the serverless memory and concurrency to price (default 2048 MB, 20).
    """
    if rps <= 0:
        raise SageMakerError(f"--rps {rps:g}: use a positive rate")
    types = instance_types or list(prices.instances)
    unknown = [t for t in types if t not in prices.instances]
    if unknown:
        raise SageMakerError(f"no price for {', '.join(unknown)} in {prices.region}; known: "
                             + ", ".join(prices.instances))
    serverless = serverless or Serverless(2048)
    mean, p95 = latency.mean_seconds, latency.p95_seconds
    requests = rps * SECONDS_PER_MONTH
    local_p95_ms = p95 * 1000

    def fits(ms: float) -> bool:
        return p95_ms is None or ms <= p95_ms

    options: list[Option] = []
    for kind in types:
        hourly, vcpus = prices.instances[kind]
        per_instance = vcpus / mean * TARGET_UTILIZATION
        count = max(1, math.ceil(rps / per_instance))
        options.append(Option(
            "real-time", f"{count} x {kind} (autoscaling 1-{count})",
            count * hourly * HOURS_PER_MONTH, local_p95_ms, True, fits(local_p95_ms),
            f"{count} x ${hourly:g}/h x {HOURS_PER_MONTH} h"))
    gb = serverless.memory_mb / 1024
    compute = requests * mean * gb * prices.serverless_gb_second
    data = requests * (latency.request_bytes + latency.response_bytes) / 1e9 \
        * prices.serverless_data_gb
    concurrent = rps * mean
    options.append(Option(
        "serverless", f"{serverless.memory_mb} MB, max concurrency {serverless.max_concurrency}",
        compute + data, local_p95_ms,
        concurrent <= min(serverless.max_concurrency, SERVERLESS_MAX_CONCURRENCY),
        fits(local_p95_ms),
        f"{requests:,.0f} req x {mean:.4g} s x {gb:g} GB x "
        f"${prices.serverless_gb_second:.8f}".rstrip("0") + " "
        f"+ data ${data:.2f}; {concurrent:.3g} at once; cold starts not included"))
    for kind in types:
        hourly, vcpus = prices.instances[kind]
        busy_hours = requests * mean / vcpus / TARGET_UTILIZATION / 3600
        worst_ms = ASYNC_SCALE_FROM_ZERO_SECONDS * 1000 + local_p95_ms
        options.append(Option(
            "async", f"0-{max(1, math.ceil(rps / (vcpus / mean * TARGET_UTILIZATION)))} x "
                     f"{kind}", busy_hours * hourly, worst_ms, True, fits(worst_ms),
            f"{busy_hours:.4g} busy h x ${hourly:g}/h; up to "
            f"{ASYNC_SCALE_FROM_ZERO_SECONDS} s to scale up from zero"))
    return Estimate(rps, p95_ms, latency, prices, options)


def table(result: Estimate, title: str):
    """The options as a table (``core.output``): hosting, configuration, cost, p95, how."""
    from core.output import table as output_table

    out = output_table(f"{title}: monthly cost at {result.rps:g} requests/s", "hosting",
                       "configuration", "$ / month", "p95 ms", "meets", "how")
    for option in result.options:
        out.add_row(option.kind, option.config, f"{option.monthly_usd:,.2f}",
                    f"{option.p95_ms:,.0f}", "yes" if option.meets else "no", option.how)
    return out


def summary(result: Estimate) -> list[str]:
    """The lines under the table: latency used, price source, the cheapest option."""
    latency = result.latency
    calls = f", {latency.samples} calls" if latency.samples else ""
    lines = [f"seconds per request: mean {latency.mean_seconds * 1000:.3g} ms, p95 "
             f"{latency.p95_seconds * 1000:.3g} ms ({latency.source}{calls})",
             f"prices: {result.prices.source}"]
    wanted = f"{result.rps:g} requests/s" + (
        f" within p95 {result.p95_ms:g} ms" if result.p95_ms else "")
    cheapest = result.cheapest
    if cheapest is None:
        lines.append(f"no option meets {wanted}")
    else:
        lines.append(f"cheapest meeting {wanted}: {cheapest.kind}, {cheapest.config}, "
                     f"${cheapest.monthly_usd:,.2f} a month")
    return lines


def pricing_client(session):
    """A Pricing API client (us-east-1), quick to give up: the shipped table is the fallback."""
    from botocore.config import Config

    return session.client("pricing", region_name=PRICING_REGION, config=Config(
        connect_timeout=3, read_timeout=5, retries={"max_attempts": 1}))


def report(client, ref: str, region: str, session, *, rps: float, p95_ms: float | None,
           instance_types, seconds_per_request: float | None, output: str,
           serverless: Serverless | None) -> None:
    """Print what serving REF costs a month (a table, or one JSON document) and the cheapest."""
    import click

    from core.output import print_json, print_tables
    from serving.sagemaker.package import resolve_model

    source = resolve_model(client, ref)
    if seconds_per_request:
        latency = Latency(seconds_per_request, seconds_per_request, 0, 0, 0,
                          "given (--seconds-per-request)")
    else:
        latency = measure_latency(source.uri)
    result = estimate(load_prices(region, pricing_client(session)), latency, rps=rps,
                      p95_ms=p95_ms, instance_types=instance_types or None,
                      serverless=serverless)
    if output == "json":
        print_json({"model": {"name": source.name, "version": source.version}, **result.as_json()})
        return
    print_tables(table(result, f"{source.name} version {source.version}"))
    for line in summary(result):
        click.echo(line)
