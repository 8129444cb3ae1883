"""A scorer that answers scoring requests for a model version.

Which version a reference names is :func:`core.models.resolve_model`, the one resolver.

A scikit-learn model whose signature is a plain column signature gets the fast path: the body
is parsed with orjson/numpy/pandas, checked against the signature, and the loaded estimator's
own predict function is called directly. Any other model is scored by ``mlflow.pyfunc`` exactly
as ``mlflow models serve`` scores it.

The pipeline the workflow trains is first compiled into a scoring plan (:mod:`core.plan`), kept
only when it answers exactly as pyfunc on the model's input example and rows made from it; the
plan then scores every path: the fast path, pyfunc's parsing (``scoring_model``), batch frames.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from core.models import ResolvedModel
from serving.online import metrics as _metrics
from serving.online import protocol
from serving.online.microbatch import MicroBatcher, batches_identically
from serving.online.protocol import Handoff, RequestError

_logger = logging.getLogger(__name__)

# Bodies up to this size, of models whose one-row predict was measured at most
# INLINE_MAX_PREDICT_SECONDS, are scored on the event loop (fastest); everything else in the
# scoring pool, under the request timeout, so the loop keeps answering health checks.
INLINE_MAX_BYTES = 64 * 1024
INLINE_MAX_PREDICT_SECONDS = 0.0005


# Signature column types the typed-columns fast path takes, and the dtype a column must have.
_EXACT_DTYPES = {"double": np.dtype(np.float64), "long": np.dtype(np.int64),
                 "boolean": np.dtype(bool)}

# The one resolver lives in core; ``ModelVersionInfo`` is what the scoring app reports.
ModelVersionInfo = ResolvedModel


class Scorer:
    """Answers ``/invocations`` bodies for one loaded model.

    Every scorer answers as ``mlflow.pyfunc`` answers (:meth:`score_pyfunc`); a scorer with a
    fast path answers the requests it can prove it would answer identically itself
    (:meth:`score_fast`), and hands the others to pyfunc.
    """

    kind = "pyfunc"
    # Whether :meth:`score_fast_batched` may merge this scorer's requests (online.microbatch).
    batched = False

    #: ``plan`` when the model's compiled scoring plan (core.plan) predicts, else ``model``
    path = "model"
    #: why the scoring plan serves, or why not
    path_reason = ""

    def __init__(self, pyfunc_model, scoring_model=None):
        self.pyfunc_model = pyfunc_model
        # what predicts after mlflow's own parsing and schema enforcement: the model, or the
        # same pyfunc model predicting with its verified scoring plan
        self.scoring_model = scoring_model if scoring_model is not None else pyfunc_model
        meta = getattr(pyfunc_model, "metadata", None)
        self._input_schema = meta.get_input_schema() if meta is not None else None
        self._columns = protocol.columns_from_schema(self._input_schema)

    @property
    def input_columns(self) -> list[protocol.Column] | None:
        """The signature's columns, when it is a plain column signature."""
        return self._columns

    @property
    def input_schema(self):
        """The model's MLflow input schema (None: the model has no signature)."""
        return self._input_schema

    def predict_columns(self, columns: dict[str, np.ndarray], rows: int):
        """The fast path's predictions for these named columns, or None: pyfunc's to answer.

        For a protocol that hands over typed columns (Open Inference V2): only a scorer that
        can prove pyfunc's answer gives one.
        """
        return None

    def inline(self, nbytes: int) -> bool:
        """Whether a body of ``nbytes`` may be scored on the event loop (measured fast only)."""
        return False

    def batches(self, nbytes: int) -> bool:
        """Whether a body of ``nbytes`` goes through the micro-batcher."""
        return False

    def score_fast(self, body: bytes, content_type: str | None) -> bytes:
        """Score a body on the fast path.

        Raises:
            Handoff: the fast path cannot prove pyfunc's answer; call :meth:`score_pyfunc`.
            RequestError: a request no path can take (415).
        """
        raise Handoff("no fast path")

    async def score_fast_batched(
        self, body: bytes, content_type: str | None, offload=None
    ) -> bytes:
        """:meth:`score_fast`, predicted together with concurrent requests when batched.

        ``offload``: an async ``(fn, x) -> fn(x)`` that predicts in the scoring pool (for a
        model too slow for the event loop); None predicts on the loop.
        """
        return self.score_fast(body, content_type)

    def score(self, body: bytes, content_type: str | None) -> bytes:
        """Score one request body by whichever path can; return the JSON response body.

        Raises:
            RequestError: a request the model cannot take (4xx).
        """
        try:
            return self.score_fast(body, content_type)
        except Handoff as handoff:
            return self.score_pyfunc(body, content_type, handoff.error)

    def score_pyfunc(
        self, body: bytes, content_type: str | None, hint: RequestError | None = None
    ) -> bytes:
        """Parse, enforce the signature and predict with mlflow's own scoring function.

        Errors are 4xx, never 5xx: ``hint`` (what the fast path found wrong) is the message
        when there is one, otherwise mlflow's, without the dump of the whole input.
        """
        from mlflow.exceptions import MlflowException
        from mlflow.pyfunc.scoring_server import invocations

        mime = protocol.split_content_type(content_type)  # 415 as stock answers it
        if mime == protocol.CONTENT_TYPE_CSV:
            try:
                protocol.check_csv_fields(body)
            except RequestError:
                raise
            except Exception:  # not text: mlflow's own message below
                pass
        try:
            result = invocations(body, content_type, self.scoring_model, self._input_schema)
        except MlflowException as exc:
            if hint is not None:
                raise hint from exc
            status = exc.get_http_status_code()
            code = exc.error_code if isinstance(exc.error_code, str) else "BAD_REQUEST"
            raise RequestError(
                status if 400 <= status < 500 else 400, _mlflow_message(exc.message), code
            ) from exc
        except Exception as exc:  # stock answers 500; the request is what the model refused
            if hint is not None:
                raise hint from exc
            raise _cannot_score(exc) from exc
        if result.status != 200:
            raise RequestError(
                result.status if 400 <= result.status < 500 else 400, str(result.response)[:500]
            )
        if (m := _metrics.current()) is not None:
            m.pyfunc(_metrics.rows_in_answer(result.response))
        return result.response.encode()

    def predict_frame(self, frame: pd.DataFrame):
        """Predict a DataFrame (batch scoring) as ``mlflow models predict`` does: with pyfunc.

        Columns the model does not take are ignored; pyfunc converts what it safely can. When
        pyfunc refuses the batch, the error names the column, row and value it could not take.
        """
        if self._columns:
            protocol.check_frame(frame, self._columns, allow_extra=True, values=False)
        try:
            return self.scoring_model.predict(frame)
        except Exception as exc:
            if self._columns:
                protocol.check_frame(frame, self._columns, allow_extra=True)
            from mlflow.exceptions import MlflowException

            if isinstance(exc, MlflowException):
                raise RequestError(400, _mlflow_message(exc.message)) from exc
            raise _cannot_score(exc) from exc


def _mlflow_message(message: str) -> str:
    """Mlflow's message without the dump of the input it prefixes ("Failed to predict ...")."""
    message = message.rsplit("\nError: ", 1)[-1]
    return " ".join(message.split())[:500]


class SklearnScorer(Scorer):
    """The fast path: signature check in numpy, the estimator's predict called directly.

    Args:
        predict_seconds: measured time of one one-row predict call (None: not measured); only
            models well under a millisecond are scored on the event loop.
    """

    kind = "sklearn"

    def __init__(
        self,
        pyfunc_model,
        predict_fn,
        columns: list[protocol.Column],
        as_array: bool = False,
        batch: bool = False,
        predict_seconds: float | None = None,
        scoring_model=None,
    ):
        super().__init__(pyfunc_model, scoring_model)
        self._predict = predict_fn
        self.columns = columns
        self.as_array = as_array
        self.predict_seconds = predict_seconds
        self.batched = batch
        self.batcher = MicroBatcher(predict_fn) if batch else None

    def batches(self, nbytes: int) -> bool:
        """Whether a body of ``nbytes`` is parsed on the event loop and micro-batched.

        Its predict runs on the loop when :meth:`inline`, else in the pool.
        """
        return self.batched and nbytes <= INLINE_MAX_BYTES

    def inline(self, nbytes: int) -> bool:
        """Small bodies of a model measured well under a millisecond go on the event loop."""
        return (
            nbytes <= INLINE_MAX_BYTES
            and self.predict_seconds is not None
            and self.predict_seconds <= INLINE_MAX_PREDICT_SECONDS
        )

    def score_fast(self, body: bytes, content_type: str | None) -> bytes:
        """Parse, check, predict, serialize."""
        frame = self._parse(body, content_type)
        try:
            predictions = self._predict(frame)
        except Exception as exc:
            raise Handoff("the estimator refused the input", _cannot_score(exc)) from exc
        if (m := _metrics.current()) is not None:
            m.fast(len(predictions))
        return protocol.predictions_json(predictions)

    async def score_fast_batched(
        self, body: bytes, content_type: str | None, offload=None
    ) -> bytes:
        """Parse and check this request alone; predict its rows with those of concurrent ones."""
        if self.batcher is None:
            return self.score_fast(body, content_type)
        frame = self._parse(body, content_type)
        try:
            predictions = await self.batcher.predict(frame, offload)
        except RequestError:
            raise  # the pool's 503/504
        except Exception as exc:
            raise Handoff("the estimator refused the input", _cannot_score(exc)) from exc
        if (m := _metrics.current()) is not None:
            m.fast(len(predictions))
        return protocol.predictions_json(predictions)

    def _parse(self, body: bytes, content_type: str | None):
        mime = protocol.split_content_type(content_type)
        return protocol.parse_frame(body, mime, self.columns, as_array=self.as_array)

    def predict_columns(self, columns: dict[str, np.ndarray], rows: int):
        """The fast path on typed columns, under ``/invocations``' rule, else None.

        The rule of :func:`serving.online.protocol.parse_frame`: exactly the signature's
        columns, each of its type's own dtype, no missing value, at least one row.
        """
        if rows == 0 or len(columns) != len(self.columns):
            return None
        ordered = []
        for c in self.columns:
            arr = columns.get(c.name)
            if arr is None:
                return None
            if c.type == "string":
                if arr.dtype != object or not all(type(v) is str for v in arr):
                    return None
            elif _EXACT_DTYPES.get(c.type) != arr.dtype:
                return None
            ordered.append(arr)
        if self.as_array:
            x = np.column_stack(ordered)
            if x.dtype.kind == "f" and np.isnan(x).any():
                return None
        elif any(a.dtype.kind == "f" and np.isnan(a).any() for a in ordered):
            return None
        else:
            x = pd.DataFrame({c.name: a for c, a in zip(self.columns, ordered, strict=True)},
                             copy=False)
        try:
            return self._predict(x)
        except Exception:  # pyfunc answers, and says why
            return None


def _cannot_score(exc: Exception) -> RequestError:
    return RequestError(400, f"the model could not score this input: {protocol._one_line(exc)}")


class PyfuncScorer(Scorer):
    """Any model: ``mlflow.pyfunc`` parsing, schema enforcement and predict, as stock serves."""

    kind = "pyfunc"


def load_scorer(uri: str, online: bool = True) -> Scorer:
    """Load the model at ``uri`` and pick the fast path when it can take the model.

    The workflow's pipeline gets its scoring plan (:func:`core.plan.planned_model`) when the
    plan answers as pyfunc does; the log line says which path scores and why. ``online=False``
    (batch scoring: whole frames, no requests) skips what only the server's micro-batching and
    inline scoring use: the check that rows batch identically and the one-row timing (dozens
    of predict calls at load, seconds for a large forest).
    """
    import mlflow.pyfunc

    from core.plan import planned_model

    model = mlflow.pyfunc.load_model(uri)
    scoring_model, plan, why = planned_model(model)
    scorer = _planned_scorer(model, scoring_model, plan, online) if plan is not None else None
    if scorer is None:
        scorer = _fast_scorer(model, online)
    if scorer is None:
        scorer = PyfuncScorer(model, scoring_model)
        if plan is not None:
            scorer.path = "plan"
    scorer.path_reason = why
    _logger.info("model loaded", extra={"model_uri": uri, "scorer": scorer.kind,
                                        "scoring_path": scorer.path,
                                        "scoring_path_reason": scorer.path_reason})
    return scorer


def _planned_scorer(model, scoring_model, plan, online: bool = True) -> SklearnScorer | None:
    """The fast path predicting with the model's verified scoring plan (None: no such path)."""
    from core.plan import verify

    columns = protocol.columns_from_schema(model.metadata.get_input_schema())
    if not columns:
        return None
    # a one-type numeric signature is parsed into one array: the plan reads it by position
    as_array = len({c.type for c in columns}) == 1 and columns[0].type in ("double", "long")
    example = model.input_example[plan.names]
    if as_array:
        dtype = np.float64 if columns[0].type == "double" else np.int64
        rows = [example, example.head(1)]
        # the same answers from the parsed array as from the frame, or the frame is kept
        as_array = verify(plan, lambda f: plan(f.to_numpy().astype(dtype)), rows) is None
    row = example.head(1)
    if as_array:
        row = row.to_numpy().astype(dtype)
    scorer = SklearnScorer(
        model, plan, columns, as_array=as_array,
        batch=online and as_array and batches_identically(plan, _probe(columns)),
        predict_seconds=_measure(plan, row) if online else None, scoring_model=scoring_model)
    scorer.path = "plan"
    return scorer


def _fast_scorer(model, online: bool = True) -> SklearnScorer | None:
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
        batch=online and as_array and batches_identically(predict_fn, _probe(columns)),
        predict_seconds=_measure(predict_fn, _probe(columns)[:1]) if online and as_array
        else None,
    )


def _measure(predict_fn, row) -> float | None:
    """The time of a one-row predict call (seconds), or None if it fails.

    The fastest of 20 calls: other load on the machine only ever adds to a call's time, so
    the minimum is the model's own cost (a busy machine at start must not send a fast model
    to the pool for good).
    """
    import time

    times = []
    try:
        for _ in range(20):
            start = time.perf_counter()
            predict_fn(row)
            times.append(time.perf_counter() - start)
    except Exception:
        return None
    return min(times)


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
