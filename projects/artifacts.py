"""What the workflow writes as artifacts: data frames, datasets, and the model.

The model is logged with pinned requirements (:func:`pinned_requirements`: no ~5 s inference
subprocess) and an input example of real training rows (:func:`input_example`); its signature's
types come from :func:`schema_frame`.
"""

from __future__ import annotations

from pathlib import Path

#: What the model needs at load time, pinned to the installed versions.
PIP_PACKAGES = ("mlflow", "scikit-learn", "pandas", "numpy", "scipy", "cloudpickle", "skops")


def pinned_requirements() -> list[str]:
    """Exact versions of what the model needs at load time (no ~5 s inference subprocess)."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for pkg in PIP_PACKAGES:
        try:
            out.append(f"{pkg}=={version(pkg)}")
        except PackageNotFoundError:
            continue
    return out


def input_example(X, rows: int = 5):
    """Real training rows for the model's input example, one with missing values if any."""
    example = X.head(rows)
    gaps = X.isna().any(axis=1)
    if len(X) > rows and gaps.any() and not gaps.head(rows).any():
        example = X.head(rows - 1).copy()
        example.loc[gaps.idxmax()] = X.loc[gaps.idxmax()]
    return schema_frame(example)


def schema_frame(X):
    """``X`` with nullable pandas types as numpy ones (Int64 with gaps → float64)."""
    import pandas as pd

    changes = {}
    for name in X.columns:
        dtype = X[name].dtype
        if isinstance(dtype, pd.api.extensions.ExtensionDtype) and dtype.kind in "iuf":
            changes[name] = "float64" if X[name].isna().any() else dtype.numpy_dtype
        elif isinstance(dtype, pd.api.extensions.ExtensionDtype) and dtype.kind == "b":
            changes[name] = "object" if X[name].isna().any() else "bool"
        elif isinstance(dtype, pd.StringDtype):
            changes[name] = "object"
    return X.astype(changes) if changes else X


def log_frame(df, path: str, scratch: str | Path) -> None:
    """Log ``df`` as a Parquet artifact at ``path`` of the active run (written in ``scratch``)."""
    import mlflow

    local = Path(scratch) / Path(path).name
    df.to_parquet(local, index=False)
    mlflow.log_artifact(str(local), artifact_path=str(Path(path).parent))


def log_dataset(df, name: str, context: str, source: str, target: str | None) -> None:
    """Log ``df`` as a dataset input of the active run (``target``: its target column)."""
    import mlflow
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.exceptions import MlflowException

    target = target if target in df.columns else None
    try:
        dataset = mlflow.data.from_pandas(df, source=source, targets=target, name=name)
    except MlflowException:  # bundled:/SQL sources have no MLflow resolver
        dataset = mlflow.data.from_pandas(
            df, source=CodeDatasetSource({"source": source}), targets=target, name=name
        )
    mlflow.log_input(dataset, context=context)


def dataset_source(source) -> str:
    """What a dataset input names as its source: a file's or object's location, else the source."""
    if source.kind in ("file", "s3"):
        return source.location
    return str(source)


def log_model(model, example, signature, run_id: str | None, code_paths: list[str]):
    """Log the fitted pipeline as an MLflow model of ``run_id`` (cloudpickle, pinned packages).

    Args:
        model: the fitted scikit-learn pipeline.
        example: the input example (:func:`input_example`).
        signature: the model's signature.
        run_id: the run the model's source is (the workflow run: see :func:`link_model`).
        code_paths: the user's files the model needs (loaded without them here).

    Returns:
        MLflow's ``ModelInfo``.
    """
    import mlflow

    from projects.log_filters import quiet_pickle_warning

    with quiet_pickle_warning():
        return mlflow.sklearn.log_model(
            model,
            name="model",
            signature=signature,
            input_example=example,
            pip_requirements=pinned_requirements(),
            serialization_format="cloudpickle",
            code_paths=code_paths or None,
            run_id=run_id,
        )


def link_model(client, run_id: str, model_id: str | None) -> None:
    """List the logged model among ``run_id``'s outputs (the run page's Logged models)."""
    from mlflow.entities import LoggedModelOutput

    if model_id:
        client.log_outputs(run_id, [LoggedModelOutput(model_id, step=0)])
