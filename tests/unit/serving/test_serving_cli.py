"""``python -m serving`` commands in-process: batch scoring, one-line errors."""

from __future__ import annotations

import mlflow
import pandas as pd
import pytest

from serving.cli import main
from tests.support.serving_models import cancer_data, fit_pipeline, log_sklearn_version


@pytest.fixture
def champion():
    X, y = cancer_data()
    pipe = fit_pipeline(X, y)
    client = mlflow.MlflowClient()
    version = log_sklearn_version(client, "cancer", pipe, X)
    client.set_registered_model_alias("cancer", "champion", version)
    return pipe, X, y


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_predict_scores_a_file_in_batches(champion, tmp_path, capsys, suffix):
    pipe, X, y = champion
    data = X.head(120).assign(id=range(120), target=y.head(120))
    src = tmp_path / f"in{suffix}"
    data.to_csv(src, index=False) if suffix == ".csv" else data.to_parquet(src)
    out = tmp_path / "out.parquet"
    code = main(["predict", "cancer@champion", "--input", str(src), "--output", str(out),
                 "--batch-size", "50"])
    assert code == 0
    result = pd.read_parquet(out)
    assert len(result) == 120
    assert result["id"].tolist() == list(range(120))  # extra columns pass through
    assert result["prediction"].tolist() == pipe.predict(X.head(120)).tolist()
    assert "scored 120 rows with cancer version 1" in capsys.readouterr().out


def test_predict_default_output_is_next_to_the_input(champion, tmp_path):
    _, X, _ = champion
    src = tmp_path / "batch.csv"
    X.head(5).to_csv(src, index=False)
    assert main(["predict", "cancer/1", "--input", str(src)]) == 0
    assert len(pd.read_csv(tmp_path / "batch-predictions.csv")) == 5




@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["serve", "cancer@nope"], 1, "error: model 'cancer' has no alias 'nope'"),
        (["serve", "nosuch@champion"], 1, "error: unknown model 'nosuch'"),
        (["serve", "not a ref!"], 2, "error: 'not a ref!' is not a model reference"),
        (["predict", "cancer@champion", "--input", "missing.csv"], 1,
         "error: missing.csv: no such"),
        (["predict", "cancer@champion", "--input", "x.txt"], 1, "error: x.txt: no such file"),
        (["serve"], 2, "error: Missing argument 'MODEL'"),
        (["serve", "cancer@champion", "--bogus"], 2, "error: No such option '--bogus'"),
    ],
)
def test_bad_input_is_one_error_line(champion, capsys, restore_logging, argv, code, message):
    # the exit codes of core.errors: 1 refused (unknown model, missing file), 2 bad usage
    assert main(argv) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [err[-1]] and err[-1].startswith(message), err


def test_predict_with_missing_columns_is_one_error_line(champion, tmp_path, capsys):
    _, X, _ = champion
    src = tmp_path / "narrow.csv"
    X.iloc[:5, :3].to_csv(src, index=False)
    assert main(["predict", "cancer@champion", "--input", str(src)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: input does not match the model signature: missing columns")


def test_help_lists_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "serve" in out and "predict" in out
