"""Small registered models for the serving tests, logged as the workflow logs them.

A scikit-learn Pipeline (StandardScaler + LogisticRegression) on sklearn's bundled breast-cancer
data, with a signature, an input example and pinned pip requirements (fast to log), registered
as a model version; and a custom pyfunc ``PythonModel`` the fast path cannot take.
"""

from __future__ import annotations

import mlflow
import pandas as pd


def cancer_data() -> tuple[pd.DataFrame, pd.Series]:
    """The breast-cancer features (30 float columns) and target."""
    from sklearn.datasets import load_breast_cancer

    return load_breast_cancer(return_X_y=True, as_frame=True)


def fit_pipeline(X, y, C: float = 1.0, kind: str = "logreg"):
    """An unfitted-then-fitted Pipeline: scaler + logistic regression (or a small forest)."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "forest":
        est = RandomForestClassifier(n_estimators=100, random_state=0)
    else:
        est = LogisticRegression(C=C, max_iter=1000)
    return make_pipeline(StandardScaler(), est).fit(X, y)


def log_sklearn_version(client, name: str, pipe, X, tags: dict | None = None) -> str:
    """Log ``pipe`` in a run and register it as a new version of ``name``; return the version."""
    import sklearn
    from mlflow.models import infer_signature

    kwargs = {}
    steps = [pipe, *getattr(pipe, "named_steps", {}).values()]
    if any(hasattr(step, "estimators_") or hasattr(step, "transformers_") for step in steps):
        kwargs["serialization_format"] = "cloudpickle"
    with mlflow.start_run() as run:
        info = mlflow.sklearn.log_model(
            pipe,
            name="model",
            signature=infer_signature(X, pipe.predict(X)),
            input_example=X.head(2),
            pip_requirements=[f"scikit-learn=={sklearn.__version__}"],
            **kwargs,
        )
    try:
        client.get_registered_model(name)
    except mlflow.exceptions.MlflowException:
        client.create_registered_model(name)
    mv = client.create_model_version(name, info.model_uri, run.info.run_id, tags=tags or {})
    return str(mv.version)


class _Doubler(mlflow.pyfunc.PythonModel):
    """A custom model: ``2 * a + b`` per row (the fast path cannot take a PythonModel)."""

    def predict(self, context, model_input, params=None):
        return (2 * model_input["a"] + model_input["b"]).to_numpy()


def log_custom_pyfunc() -> str:
    """Log the custom model in a run; return its ``runs:/`` URI."""
    from mlflow.models import infer_signature

    example = pd.DataFrame({"a": [1.0, 2.0], "b": [0.5, 0.25]})
    with mlflow.start_run() as run:
        mlflow.pyfunc.log_model(
            name="model",
            python_model=_Doubler(),
            signature=infer_signature(example, _Doubler().predict(None, example)),
            pip_requirements=[f"mlflow=={mlflow.__version__}"],
        )
    return f"runs:/{run.info.run_id}/model"


def penguins_data() -> tuple[pd.DataFrame, pd.Series]:
    """palmerpenguins: two categorical columns, missing values in five columns; the species."""
    import palmerpenguins

    df = palmerpenguins.load_penguins()
    return df.drop(columns=["species"]), df["species"]


def fit_penguins(X, y):
    """Impute + one-hot the categoricals, impute + scale the numbers, logistic regression."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    cats = [c for c in X.columns if X[c].dtype.kind not in "fiub"]
    nums = [c for c in X.columns if c not in cats]
    prep = ColumnTransformer([
        ("cat", make_pipeline(SimpleImputer(strategy="most_frequent"),
                              OneHotEncoder(handle_unknown="ignore")), cats),
        ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), nums),
    ])
    return make_pipeline(prep, LogisticRegression(max_iter=1000)).fit(X, y)


def fit_diabetes_forest():
    """A regression forest on sklearn's bundled diabetes data; returns (model, X)."""
    from sklearn.datasets import load_diabetes
    from sklearn.ensemble import RandomForestRegressor

    X, y = load_diabetes(return_X_y=True, as_frame=True)
    return RandomForestRegressor(n_estimators=30, random_state=0).fit(X, y), X


class _Sleeper(mlflow.pyfunc.PythonModel):
    """A slow custom model: sleeps for the largest ``seconds`` of the request, returns them."""

    def predict(self, context, model_input, params=None):
        import time

        time.sleep(float(model_input["seconds"].max()))
        return model_input["seconds"].to_numpy()


def log_sleeper() -> str:
    """Log the slow model in a run; return its ``runs:/`` URI."""
    from mlflow.models import infer_signature

    example = pd.DataFrame({"seconds": [0.0, 0.5]})
    with mlflow.start_run() as run:
        mlflow.pyfunc.log_model(
            name="model",
            python_model=_Sleeper(),
            signature=infer_signature(example, example["seconds"].to_numpy()),
            pip_requirements=[f"mlflow=={mlflow.__version__}"],
        )
    return f"runs:/{run.info.run_id}/model"
