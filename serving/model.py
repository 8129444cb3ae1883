"""A scorer that answers scoring requests for a model version.

Which version a reference names is :func:`core.models.resolve_model`, the one resolver.

A scikit-learn model whose signature is a plain column signature gets the fast path: the body
is parsed with orjson/numpy/pandas, checked against the signature, and the loaded estimator's
own predict function is called directly. Any other model is scored by ``mlflow.pyfunc`` exactly
as ``mlflow models serve`` scores it.
"""

from __future__ import annotations

import logging

import pandas as pd

from core.models import ResolvedModel
from serving import protocol
from serving.microbatch import MicroBatcher, batches_identically
from serving.protocol import RequestError

_logger = logging.getLogger(__name__)

# Bodies up to this size are scored on the event loop (fastest); larger ones in a thread, so
# the request timeout applies and the loop keeps answering health checks.
INLINE_MAX_BYTES = 64 * 1024


# The one resolver lives in core; ``ModelVersionInfo`` is what the scoring app reports.
ModelVersionInfo = ResolvedModel


class Scorer:
    """Answers ``/invocations`` bodies for one loaded model."""

    kind = "base"

    def __init__(self, pyfunc_model):
        self.pyfunc_model = pyfunc_model

    # Whether :meth:`score_batched` may merge this scorer's requests (see serving.microbatch).
    batched = False

    def inline(self, nbytes: int) -> bool:
        """Whether a body of ``nbytes`` may be scored on the event loop."""
        return False

    async def score_batched(self, body: bytes, content_type: str | None) -> bytes:
        """Score one request body on the event loop, predicted together with concurrent ones.

        Raises:
            RequestError: a request the model cannot take (4xx).
        """
        return self.score(body, content_type)

    def score(self, body: bytes, content_type: str | None) -> bytes:
        """Score one request body; return the JSON response body.

        Raises:
            RequestError: a request the model cannot take (4xx).
        """
        raise NotImplementedError

    def predict_frame(self, frame: pd.DataFrame):
        """Predict a DataFrame (batch scoring); columns the model does not take are ignored."""
        raise NotImplementedError


class SklearnScorer(Scorer):
    """The fast path: signature check in numpy, the estimator's predict called directly."""

    kind = "sklearn"

    def __init__(
        self,
        pyfunc_model,
        predict_fn,
        columns: list[protocol.Column],
        as_array: bool = False,
        batch: bool = False,
    ):
        super().__init__(pyfunc_model)
        self._predict = predict_fn
        self.columns = columns
        self.as_array = as_array
        self.batched = batch
        self.batcher = MicroBatcher(predict_fn) if batch else None

    def inline(self, nbytes: int) -> bool:
        """Small bodies are scored on the event loop."""
        return nbytes <= INLINE_MAX_BYTES

    def score(self, body: bytes, content_type: str | None) -> bytes:
        """Parse, check, predict, serialize."""
        frame = self._parse(body, content_type)
        try:
            predictions = self._predict(frame)
        except Exception as exc:
            raise _cannot_score(exc) from exc
        return protocol.predictions_json(predictions)

    async def score_batched(self, body: bytes, content_type: str | None) -> bytes:
        """Parse and check this request alone; predict its rows with those of concurrent ones."""
        if self.batcher is None:
            return self.score(body, content_type)
        frame = self._parse(body, content_type)
        try:
            predictions = await self.batcher.predict(frame)
        except Exception as exc:
            raise _cannot_score(exc) from exc
        return protocol.predictions_json(predictions)

    def _parse(self, body: bytes, content_type: str | None):
        mime = protocol.split_content_type(content_type)
        return protocol.parse_frame(body, mime, self.columns, as_array=self.as_array)

    def predict_frame(self, frame: pd.DataFrame):
        """Check the batch against the signature and predict it."""
        return self._predict(protocol.check_frame(frame, self.columns, allow_extra=True))


def _cannot_score(exc: Exception) -> RequestError:
    return RequestError(400, f"the model could not score this input: {protocol._one_line(exc)}")


class PyfuncScorer(Scorer):
    """Any model: ``mlflow.pyfunc`` parsing, schema enforcement and predict, as stock serves."""

    kind = "pyfunc"

    def __init__(self, pyfunc_model):
        super().__init__(pyfunc_model)
        self._input_schema = pyfunc_model.metadata.get_input_schema()

    def score(self, body: bytes, content_type: str | None) -> bytes:
        """Delegate to mlflow's own scoring function; map its errors to 4xx/5xx."""
        from mlflow.exceptions import MlflowException
        from mlflow.pyfunc.scoring_server import invocations

        protocol.split_content_type(content_type)  # 415 for a missing/unsupported type
        try:
            result = invocations(body, content_type, self.pyfunc_model, self._input_schema)
        except MlflowException as exc:
            status = exc.get_http_status_code()
            # mlflow prefixes the whole input ("Failed to predict data '<frame>'. \nError: ...").
            message = exc.message.rsplit("\nError: ", 1)[-1]
            message = " ".join(message.split())[:500]
            code = exc.error_code if isinstance(exc.error_code, str) else "BAD_REQUEST"
            raise RequestError(status if 400 <= status < 600 else 400, message, code) from exc
        if result.status != 200:
            raise RequestError(result.status, str(result.response)[:500])
        return result.response.encode()

    def predict_frame(self, frame: pd.DataFrame):
        """Predict with pyfunc (it enforces the signature and ignores extra columns)."""
        return self.pyfunc_model.predict(frame)


def load_scorer(uri: str) -> Scorer:
    """Load the model at ``uri`` and pick the fast path when it can take the model."""
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(uri)
    scorer = _fast_scorer(model)
    if scorer is None:
        scorer = PyfuncScorer(model)
    _logger.info("model loaded", extra={"model_uri": uri, "scorer": scorer.kind})
    return scorer


def _fast_scorer(model) -> SklearnScorer | None:
    meta = model.metadata
    pyfunc_conf = meta.flavors.get("python_function", {})
    if "sklearn" not in meta.flavors or pyfunc_conf.get("loader_module") != "mlflow.sklearn":
        return None
    if meta.get_params_schema() is not None:
        return None
    columns = protocol.columns_from_schema(meta.get_input_schema())
    if not columns:
        return None
    raw = model.get_raw_model()
    predict_fn = getattr(raw, pyfunc_conf.get("predict_fn", "predict"), None)
    if predict_fn is None:
        return None
    as_array = _takes_arrays(raw, predict_fn, columns)
    return SklearnScorer(
        model,
        predict_fn,
        columns,
        as_array=as_array,
        batch=as_array and batches_identically(predict_fn, _probe(columns)),
    )


def _probe(columns: list[protocol.Column]):
    """Rows of made-up values for a single-type numeric signature (see :func:`_takes_arrays`)."""
    import numpy as np

    dtype = {"double": np.float64, "float": np.float32, "long": np.int64}[columns[0].type]
    probe = np.random.default_rng(0).normal(size=(16, len(columns))) * 10
    return probe.astype(dtype) if dtype != np.int64 else np.rint(probe).astype(dtype)


def _takes_arrays(raw, predict_fn, columns: list[protocol.Column]) -> bool:
    """Whether the estimator may be handed a plain 2-D array instead of a DataFrame.

    A fresh DataFrame per request costs more than the prediction itself (pandas' conversions
    and scikit-learn's feature-name checks, ~0.5 ms). An array is used only when the signature
    is one numeric type, the estimator was fitted on exactly these columns in this order, and a
    probe gives bit-identical predictions both ways; otherwise the DataFrame is kept.
    """
    import warnings

    import numpy as np

    names = [c.name for c in columns]
    if len({c.type for c in columns}) != 1 or columns[0].type not in ("double", "float", "long"):
        return False
    fitted = getattr(raw, "feature_names_in_", None)
    if fitted is None or list(fitted) != names:
        return False
    probe = _probe(columns)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            by_frame = predict_fn(pd.DataFrame(probe, columns=names))
            by_array = predict_fn(probe)
        except Exception:
            return False
    if not (isinstance(by_frame, np.ndarray) and isinstance(by_array, np.ndarray)):
        return False
    if by_frame.dtype != by_array.dtype or not np.array_equal(by_frame, by_array, equal_nan=True):
        return False
    # scikit-learn warns on every array call that the estimator was fitted with feature names;
    # the names were checked above, so that warning says nothing here.
    warnings.filterwarnings(
        "ignore", message="X does not have valid feature names", category=UserWarning
    )
    return True
