"""A scoring plan compiled from the fitted pipeline the workflow builds: the same answers, faster.

The workflow's model is a scikit-learn ``Pipeline``: the user's feature steps, its own frame
tidy-up (``tidy``: column kinds, clipping, date parts), a ``ColumnTransformer`` (``encode``:
imputers, scalers, one-hot or ordinal encoders) and an estimator. Called as it is, one row
costs milliseconds of pandas and input validation around a predict of a tenth of that.

:func:`compile_plan` reads the fitted steps once and returns a :class:`Plan` that does the same
arithmetic on NumPy arrays in float64: column selection resolved at fit time, imputing and
scaling with the fitted statistics (the same NumPy operations, so the same bits), encoders as
lookup tables read from the fitted encoder itself (each category, and one unseen value, sent
through the encoder once at compile time), and the estimator's own ``predict`` called on the
matrix the pipeline would hand it (dense or sparse as the fitted ``ColumnTransformer`` decided,
a DataFrame where the estimator takes pandas categories), inside scikit-learn's
``config_context(assume_finite=..., skip_parameter_validation=True)``. Steps before ``tidy`` (the
user's feature code) run as they are. A pipeline of another shape, or a step it does not know,
gets no plan (None, with the reason) and is scored as before.

scikit-learn's own fast paths (``set_config``) were chosen over ``skl2onnx``/``onnxruntime``:
those compute in float32 by default and do not give the same bits; the estimators' own predict
on the same matrix does.

A plan serves only once :func:`verify` has found it answering exactly as ``mlflow.pyfunc``
answers on the model's input example and on rows made from it (gaps, unseen categories,
extreme values, one row and many): labels equal and numbers equal to the last bit.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

_logger = logging.getLogger(__name__)

#: a category no fitted encoder has seen (compile time only: what an unseen value maps to)
_UNSEEN = "\x00unseen category\x00"
#: texts whose reading (true/false, a one-row date) is kept, at most
_CACHE_MAX = 10_000


class NotCompiled(Exception):
    """The pipeline has a step the plan does not know: it is scored as it is."""


@dataclass(frozen=True)
class _Column:
    """One column the tidy step reads: its name and kind (numeric, bool, datetime, category)."""

    name: str
    kind: str
    low: float | None
    high: float | None


class _Tidy:
    """The workflow's ``TidyFrame``, fitted: each kept column's kind and clipping fences."""

    def __init__(self, step):
        names = ("kinds_", "low_", "high_", "hours_")
        if type(step).__name__ != "TidyFrame" or not all(hasattr(step, n) for n in names):
            raise NotCompiled(f"{type(step).__name__} is not the workflow's TidyFrame")
        import inspect

        glob = inspect.unwrap(type(step).transform).__globals__
        try:
            self._true, self._false = glob["_TRUE"], glob["_FALSE"]
            self._parse_numbers = glob["parse_numbers"]
        except KeyError as exc:
            raise NotCompiled(f"TidyFrame without {exc}") from None
        self.step = step
        known = {"numeric", "bool", "datetime", "category", "drop"}
        if not set(step.kinds_.values()) <= known:
            raise NotCompiled(f"column kinds {sorted(set(step.kinds_.values()) - known)}")
        self.columns = [_Column(n, k, step.low_.get(n), step.high_.get(n))
                        for n, k in step.kinds_.items() if k != "drop"]
        self._truths: dict[str, float] = {}
        self._calendars: dict[tuple[str, str], dict[str, np.ndarray]] = {}

    def __call__(self, X, names: list[str] | None) -> dict[str, np.ndarray]:
        """The tidy step's output columns, by name (what ``TidyFrame.transform`` returns)."""
        if isinstance(X, np.ndarray):
            position = {n: i for i, n in enumerate(names or [])}
            out = {}
            for c in self.columns:
                i = position.get(c.name)
                if i is None or c.kind != "numeric" or X.dtype.kind not in "fiub":
                    return self(pd.DataFrame(X, columns=names), None)
                out[c.name] = self._fence(c, X[:, i].astype(np.float64))
            return out
        out = {}
        for c in self.columns:
            col = X[c.name] if c.name in X.columns else pd.Series(np.nan, index=X.index,
                                                                  dtype=object)
            numpy_dtype = isinstance(col.dtype, np.dtype)
            if c.kind == "numeric":
                if numpy_dtype and col.dtype.kind in "fiub":
                    values = col.to_numpy().astype(np.float64)
                else:
                    values = self._parse_numbers(col).to_numpy()
                out[c.name] = self._fence(c, values)
            elif c.kind == "bool":
                if pd.api.types.is_bool_dtype(col):
                    out[c.name] = col.astype(float).to_numpy()
                else:
                    out[c.name] = self._truth(col)
            elif c.kind == "datetime":
                out.update(self._dates(c.name, col))
            else:
                arr = col.to_numpy(dtype=object)
                if not all(type(v) is str for v in arr):
                    arr = col.astype(str).where(col.notna(), np.nan).to_numpy(dtype=object)
                out[c.name] = arr
        return out

    def _truth_of(self, col: pd.Series) -> np.ndarray:
        text = col.astype("string").str.strip().str.lower()
        return np.where(text.isin(self._true), 1.0, np.where(text.isin(self._false), 0.0, np.nan))

    def _truth(self, col: pd.Series) -> np.ndarray:
        """True/false text as 1/0 (else missing): cell by cell, so each text is read once."""
        arr = col.to_numpy(dtype=object)
        if not all(type(v) is str for v in arr):
            return self._truth_of(col)
        missing = [v for v in dict.fromkeys(arr) if v not in self._truths]
        if missing:
            if len(self._truths) > _CACHE_MAX:
                self._truths.clear()
            self._truths.update(zip(missing, self._truth_of(pd.Series(missing, dtype=object)),
                                    strict=True))
        try:
            return np.array([self._truths[v] for v in arr], dtype=np.float64)
        except KeyError:  # another request's reading emptied the cache meanwhile
            return self._truth_of(col)

    def _dates(self, name: str, col: pd.Series) -> dict[str, np.ndarray]:
        """The step's own calendar parts; a one-row text date read once (its format is its own).

        Across rows the format is inferred from the first date, so only single rows are kept.
        """
        value = col.iloc[0] if len(col) == 1 else None
        if type(value) is not str:
            return self.step._calendar(name, col)
        parts = self._calendars.get((name, value))
        if parts is None:
            if len(self._calendars) > _CACHE_MAX:
                self._calendars.clear()
            parts = self._calendars[(name, value)] = self.step._calendar(name, col)
        return {k: v.copy() for k, v in parts.items()}

    @staticmethod
    def _fence(c: _Column, values: np.ndarray) -> np.ndarray:
        return np.clip(values, c.low, c.high) if c.low is not None else values


def _is_nan(value) -> bool:
    return isinstance(value, float) and math.isnan(value)


class _Impute:
    """``SimpleImputer`` (missing = NaN, no indicator): the fitted fill values, as it fills."""

    def __init__(self, step):
        if getattr(step, "add_indicator", False) or not _is_nan(step.missing_values):
            raise NotCompiled("SimpleImputer with an indicator or other missing values")
        stats = np.asarray(step.statistics_)
        if step.strategy != "constant" and not step.keep_empty_features:
            valid = ~pd.isna(stats)
            self.keep = None if valid.all() else np.flatnonzero(valid)
            stats = stats[valid]
        else:
            self.keep = None
        self.stats = stats.astype(step._fill_dtype, copy=False)

    def __call__(self, X: np.ndarray) -> np.ndarray:
        mask = np.isnan(X) if X.dtype.kind == "f" else (X != X)
        if self.keep is not None:
            X, mask = X[:, self.keep], mask[:, self.keep]
        if mask.any():
            X = X.copy()
            X[mask] = np.broadcast_to(self.stats, X.shape)[mask]
        return X


class _Scale:
    """``StandardScaler`` on dense floats: minus the mean, over the scale, as it computes."""

    def __init__(self, step):
        self.mean = step.mean_ if step.with_mean else None
        self.scale = step.scale_ if step.with_std else None

    def __call__(self, X: np.ndarray) -> np.ndarray:
        if X.dtype.kind != "f":
            X = X.astype(np.float64)
        if self.mean is not None:
            X = X - self.mean
        if self.scale is not None:
            X = X / self.scale
        return X


class _Lookup:
    """An encoder (one-hot or ordinal) as lookup tables read from the fitted encoder.

    Every category of each column, and one unseen value, goes through the encoder's own
    ``transform`` once; a cell is then its category's row of that column's table.
    """

    def __init__(self, step, columns: list[str]):
        from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder

        if isinstance(step, OneHotEncoder):
            if step.handle_unknown not in ("ignore", "infrequent_if_exist"):
                raise NotCompiled(f"OneHotEncoder(handle_unknown={step.handle_unknown!r})")
            widths = list(step._n_features_outs)
        elif isinstance(step, OrdinalEncoder):
            if step.handle_unknown != "use_encoded_value":
                raise NotCompiled(f"OrdinalEncoder(handle_unknown={step.handle_unknown!r})")
            widths = [1] * len(step.categories_)
        else:
            raise NotCompiled(f"encoder {type(step).__name__}")
        self.sparse = bool(getattr(step, "sparse_output", False))
        self.indexes, self.tables = [], []
        cats = step.categories_
        if not all(isinstance(v, str) for c in cats for v in c):
            raise NotCompiled("categories that are not text")
        first = [c[0] for c in cats]
        start = 0
        for j, (categories, width) in enumerate(zip(cats, widths, strict=True)):
            probe = np.array([first] * (len(categories) + 1), dtype=object)
            probe[:, j] = [*categories, _UNSEEN]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = step.transform(pd.DataFrame(probe, columns=columns))
            out = out.toarray() if hasattr(out, "toarray") else np.asarray(out, dtype=np.float64)
            self.tables.append(np.ascontiguousarray(out[:, start:start + width]))
            self.indexes.append({v: i for i, v in enumerate(categories)})
            start += width
        self.step = step
        self.columns = columns
        self.width = start

    def __call__(self, X: np.ndarray) -> np.ndarray:
        blocks = []
        for j, (index, table) in enumerate(zip(self.indexes, self.tables, strict=True)):
            unseen = len(table) - 1
            col = X[:, j]
            codes = [index.get(v, unseen) for v in col]
            if unseen in codes and not all(type(v) is str for v in col):
                return self._own(X)  # a value that is not text: the encoder decides
            blocks.append(table[codes])
        return np.hstack(blocks)

    def _own(self, X):
        out = self.step.transform(pd.DataFrame(X, columns=self.columns))
        return out.toarray() if hasattr(out, "toarray") else np.asarray(out, dtype=np.float64)


def _is_as_categories(step) -> bool:
    from sklearn.preprocessing import FunctionTransformer

    func = getattr(step, "func", None)
    return (isinstance(step, FunctionTransformer) and getattr(func, "__name__", "") ==
            "as_categories" and step.inverse_func is None and not step.kw_args)


class _Block:
    """One group of the ``ColumnTransformer``: its columns (resolved at fit) and its steps."""

    def __init__(self, name: str, transformer, columns: list[str]):
        from sklearn.impute import SimpleImputer
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler

        self.name = name
        self.columns = list(columns)
        steps = transformer.steps if isinstance(transformer, Pipeline) else [("", transformer)]
        self.ops = []
        self.categories = False  # the output is typed as pandas categories
        self.sparse = False
        for i, (_, step) in enumerate(steps):
            if isinstance(step, SimpleImputer):
                self.ops.append(_Impute(step))
            elif isinstance(step, StandardScaler):
                self.ops.append(_Scale(step))
            elif i == len(steps) - 1 and _is_as_categories(step):
                self.categories = True
            elif type(step).__name__ in ("OneHotEncoder", "OrdinalEncoder"):
                lookup = _Lookup(step, self._names_before(steps[:i]))
                self.ops.append(lookup)
                self.sparse = lookup.sparse
            else:
                raise NotCompiled(f"{type(step).__name__}: a step the plan does not know")
        self.names_out = [str(n) for n in transformer.get_feature_names_out(self.columns)]

    def _names_before(self, steps) -> list[str]:
        names = self.columns
        for _, step in steps:
            names = [str(n) for n in step.get_feature_names_out(names)]
        return names

    def __call__(self, cols: dict[str, np.ndarray]):
        first = cols[self.columns[0]]
        if first.dtype == object:
            X = np.empty((len(first), len(self.columns)), dtype=object)
            for j, c in enumerate(self.columns):
                X[:, j] = cols[c]
        else:
            X = np.column_stack([cols[c] for c in self.columns]).astype(np.float64, copy=False)
        for op in self.ops:
            X = op(X)
        return X


class _Encode:
    """The workflow's ``ColumnTransformer``, fitted: its groups in order, stacked as it stacks."""

    def __init__(self, step):
        from sklearn.compose import ColumnTransformer

        if not isinstance(step, ColumnTransformer):
            raise NotCompiled(f"{type(step).__name__} is not a ColumnTransformer")
        self.blocks = []
        for name, transformer, columns in step.transformers_:
            if isinstance(transformer, str):
                if transformer == "drop":
                    continue
                raise NotCompiled(f"ColumnTransformer group {name!r}: {transformer}")
            if name == "remainder":
                raise NotCompiled("ColumnTransformer remainder")
            columns = list(np.asarray(columns, dtype=object).ravel())
            if not columns:
                continue  # an empty group adds nothing (the ColumnTransformer skips it too)
            if not all(isinstance(c, str) for c in columns):
                raise NotCompiled(f"ColumnTransformer group {name!r} selects by position")
            self.blocks.append(_Block(name, transformer, columns))
        if not self.blocks:
            raise NotCompiled("ColumnTransformer without columns")
        self.sparse = bool(step.sparse_output_)
        config = getattr(step, "_sklearn_output_config", {}) or {}
        self.pandas = config.get("transform") == "pandas"
        if self.pandas and self.sparse:
            raise NotCompiled("sparse pandas output")
        self.names_out = [n for b in self.blocks for n in b.names_out]
        self.categories = any(b.categories for b in self.blocks)

    def __call__(self, cols: dict[str, np.ndarray]):
        parts = [b(cols) for b in self.blocks]
        if self.sparse:
            # as the ColumnTransformer stacks: an encoder's sparse output with the dense groups
            from scipy import sparse

            return sparse.hstack([sparse.csr_matrix(X) if b.sparse else X
                                  for b, X in zip(self.blocks, parts, strict=True)]).tocsr()
        if self.pandas and self.categories:
            frame = {}
            for block, X in zip(self.blocks, parts, strict=True):
                for j, name in enumerate(block.names_out):
                    frame[name] = pd.Categorical(X[:, j]) if block.categories else X[:, j]
            return pd.DataFrame(frame)
        return np.hstack(parts)


class Plan:
    """The compiled pipeline: call it with a DataFrame (or a 2-D array in ``names`` order).

    Args:
        head: the pipeline's steps before ``tidy`` (the user's feature code), run as they are.
        tidy, encode: the compiled ``tidy`` and ``encode`` steps.
        estimator: the fitted estimator; ``method`` the name of its function pyfunc calls.
        names: the signature's column names (the order of a 2-D array input).
    """

    def __init__(self, head, tidy: _Tidy, encode: _Encode, estimator, method: str,
                 names: list[str]):
        self.head = head
        self.tidy = tidy
        self.encode = encode
        self.estimator = estimator
        self.method = getattr(estimator, method)
        self.names = names
        self.frame_input = encode.pandas and encode.categories
        #: the memory order of the pipeline's matrix (a BLAS product sums in its order)
        self.order = "C"
        if not self.frame_input and hasattr(estimator, "feature_names_in_"):
            # the matrix is the one the pipeline hands over, by position: only the names differ
            warnings.filterwarnings("ignore", message="X does not have valid feature names",
                                    category=UserWarning)

    def __call__(self, X):
        """The estimator's predictions for ``X``, as the pipeline's own ``predict`` gives them."""
        import sklearn

        if self.head:
            if isinstance(X, np.ndarray):
                X = pd.DataFrame(X, columns=self.names)
            for step in self.head:
                X = step.transform(X)
            X = X if isinstance(X, pd.DataFrame) else pd.DataFrame(np.asarray(X))
        Xt = self.encode(self.tidy(X, self.names))
        if isinstance(Xt, np.ndarray):
            Xt = np.asarray(Xt, order=self.order)
        with sklearn.config_context(assume_finite=_finite(Xt), skip_parameter_validation=True):
            return self.method(Xt)


def _finite(Xt) -> bool:
    """Whether every number is finite (scikit-learn may then skip its own check)."""
    if isinstance(Xt, pd.DataFrame):
        return False
    data = Xt.data if hasattr(Xt, "tocsr") else Xt
    return bool(np.isfinite(data).all())


def compile_plan(pipeline, method: str, names: list[str]) -> Plan:
    """The :class:`Plan` of a fitted workflow pipeline.

    Args:
        pipeline: the fitted ``Pipeline`` (``[feature steps...], tidy, encode, estimator``).
        method: the estimator's function pyfunc calls (``predict``, ``predict_proba``).
        names: the signature's column names.

    Raises:
        NotCompiled: a pipeline of another shape or with a step the plan does not know.
    """
    from sklearn.pipeline import Pipeline

    if not isinstance(pipeline, Pipeline) or len(pipeline.steps) < 3:
        raise NotCompiled(f"{type(pipeline).__name__} is not the workflow's pipeline")
    *head, (_, tidy), (_, encode), (_, estimator) = pipeline.steps
    if any(step in (None, "passthrough") for _, step in pipeline.steps):
        raise NotCompiled("a passthrough step")
    if not hasattr(estimator, method):
        raise NotCompiled(f"{type(estimator).__name__} has no {method}")
    return Plan([step for _, step in head], _Tidy(tidy), _Encode(encode), estimator, method,
                names)


def same_answers(expected, got) -> str | None:
    """Why two predictions differ (None: labels equal, numbers equal to the last bit).

    No tolerance, not even 1e-12: the plan hands the estimator the matrix the pipeline would
    (same values, dense or sparse, same memory order), so its BLAS path sums alike; where it
    would not, the plan is refused and the model scored as it is.
    """
    if type(expected) is not type(got):
        return f"a {type(got).__name__} where pyfunc gives a {type(expected).__name__}"
    if isinstance(expected, pd.DataFrame | pd.Series):
        if not expected.index.equals(got.index) or (
                isinstance(expected, pd.DataFrame) and not expected.columns.equals(got.columns)):
            return "other labels or columns"
        expected, got = expected.to_numpy(), got.to_numpy()
    a, b = np.asarray(expected), np.asarray(got)
    if a.shape != b.shape or a.dtype != b.dtype:
        return f"shape/dtype {b.shape} {b.dtype}, pyfunc's {a.shape} {a.dtype}"
    if a.dtype.kind != "f":
        return None if np.array_equal(a, b) else "other labels"
    if a.tobytes() == b.tobytes():
        return None
    return f"numbers differ by up to {np.nanmax(np.abs(a - b)):.3g}"


def probe_rows(example: pd.DataFrame, schema) -> list[pd.DataFrame]:
    """Inputs a plan must answer as pyfunc does, made from the model's input example.

    The example itself, its first row alone, and rows of it with gaps (each optional column
    missing in turn, then all of them), unseen categories, and extreme numbers (zero, huge,
    tiny, negative).
    """
    example = example.reset_index(drop=True)
    # many rows too: a BLAS product may sum a large matrix otherwise than a small one
    many = pd.concat([example] * max(1, 200 // len(example)), ignore_index=True)
    out = [example, example.head(1), many]
    specs = {s.name: s for s in schema.inputs} if schema is not None else {}
    optional = [n for n, s in specs.items() if not getattr(s, "required", True)
                and n in example.columns]
    texts = [n for n, s in specs.items() if getattr(getattr(s, "type", None), "name", "")
             == "string" and n in example.columns]
    doubles = [n for n, s in specs.items() if getattr(getattr(s, "type", None), "name", "")
               in ("double", "float") and n in example.columns]
    if optional:
        gaps = pd.concat([example.head(1)] * len(optional), ignore_index=True)
        for i, name in enumerate(optional):
            gaps.loc[i, name] = None
        out.append(gaps)
        out.append(example.head(2).drop(columns=optional))
    if texts:
        unseen = example.head(2).copy()
        unseen[texts] = "an unseen category"
        out.append(unseen)
    if doubles:
        extremes = pd.concat([example.head(1)] * 5, ignore_index=True)
        for i, value in enumerate((0.0, 1e300, -1e300, 1e-300, -7.5)):
            extremes[doubles] = extremes[doubles].astype(float)
            extremes.loc[i, doubles] = value
        out.append(extremes)
    return out


def verify(reference, candidate, inputs: list) -> str | None:
    """Why ``candidate`` does not answer as ``reference`` does on ``inputs`` (None: it does).

    Both are called on each input; an input the reference refuses must be refused by the
    candidate too.
    """
    for i, frame in enumerate(inputs):
        try:
            expected = reference(frame)
        except Exception:  # noqa: BLE001 - the reference refuses it: so must the candidate
            try:
                candidate(frame)
            except Exception:  # noqa: BLE001
                continue
            return f"input {i}: pyfunc refuses it, the plan answers"
        try:
            got = candidate(frame)
        except Exception as exc:  # noqa: BLE001
            return f"input {i}: the plan failed ({type(exc).__name__}: {exc})"[:300]
        why = same_answers(expected, got)
        if why is not None:
            return f"input {i}: {why}"
    return None


class _PlannedImpl:
    """What a ``PyFuncModel`` calls: the plan, under the name pyfunc calls (``predict``...)."""

    def __init__(self, plan: Plan, raw, method: str):
        self.plan = plan
        self.sklearn_model = raw
        self.method = method
        #: while the plan is proven, its own failures count (no fallback to the pipeline)
        self.strict = True
        setattr(self, method, self._predict)

    def _predict(self, data, params=None):
        try:
            return self.plan(data)
        except Exception:  # noqa: BLE001 - never an error of the plan's own: the pipeline decides
            if self.strict:
                raise
            return getattr(self.sklearn_model, self.method)(data)

    def get_raw_model(self):
        """The fitted pipeline (as ``mlflow.sklearn``'s wrapper gives it)."""
        return self.sklearn_model


def planned_model(pyfunc_model):
    """``(model, plan, why)``: a ``PyFuncModel`` that predicts with the verified plan.

    The model parses and enforces its signature as ``mlflow.pyfunc`` does, then calls the plan
    instead of the pipeline. ``model`` and ``plan`` are None, with ``why`` saying why, when the
    model is not a scikit-learn pipeline of the workflow's shape or when the plan does not
    answer exactly as pyfunc on the input example and the rows made from it.
    """
    from mlflow.pyfunc import PyFuncModel

    meta = pyfunc_model.metadata
    conf = meta.flavors.get("python_function", {})
    if "sklearn" not in meta.flavors or conf.get("loader_module") != "mlflow.sklearn":
        return None, None, "not a scikit-learn model"
    schema = meta.get_input_schema()
    if schema is None or not schema.has_input_names() or meta.get_params_schema() is not None:
        return None, None, "no column signature (or a params schema)"
    method = conf.get("predict_fn", "predict")
    raw = pyfunc_model.get_raw_model()
    try:
        example = pyfunc_model.input_example
    except Exception:  # noqa: BLE001 - an unreadable example: nothing to prove the plan on
        example = None
    if not isinstance(example, pd.DataFrame) or example.empty:
        return None, None, "no input example to prove the plan on"
    try:
        plan = compile_plan(raw, method, list(schema.input_names()))
    except NotCompiled as exc:
        return None, None, str(exc)
    except Exception as exc:  # noqa: BLE001 - anything unforeseen: scored as it is
        return None, None, f"cannot compile: {type(exc).__name__}: {exc}"[:300]
    if isinstance(example, pd.DataFrame) and len(example) > 1:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                matrix = raw[:-1].transform(example)
            except Exception:  # noqa: BLE001 - the proof below refuses the plan then
                matrix = None
        if isinstance(matrix, np.ndarray) and matrix.flags.f_contiguous:
            plan.order = "F"
    impl = _PlannedImpl(plan, raw, method)
    model = PyFuncModel(meta, impl, predict_fn=method,
                        model_id=getattr(pyfunc_model, "model_id", None))
    inputs = probe_rows(example, schema)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        why = verify(pyfunc_model.predict, model.predict, inputs)
    if why is not None:
        return None, None, f"the plan does not answer as pyfunc: {why}"
    impl.strict = False
    return model, plan, "verified on the input example and generated rows"
