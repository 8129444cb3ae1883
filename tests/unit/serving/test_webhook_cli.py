"""The webhook flags of ``serve`` and ``sagemaker follow``: refused settings are one line."""

from __future__ import annotations

import pytest

from serving.cli import main


@pytest.mark.parametrize(("argv", "secret", "message"), [
    (["serve", "cancer@champion", "--webhook-insecure"], "s3cr3t",
     "error: --webhook-insecure accepts unsigned deliveries, but $MLOPS_WEBHOOK_SECRET is set: "
     "unset it or drop --webhook-insecure"),
    (["sagemaker", "follow", "cancer@champion", "--endpoint", "e", "--listen", "127.0.0.1:0"],
     None, "error: --listen needs $MLOPS_WEBHOOK_SECRET (the webhook's shared secret), or "
           "--webhook-insecure to accept unsigned deliveries"),
    (["sagemaker", "follow", "cancer@champion", "--endpoint", "e", "--webhook-url",
      "https://follow.internal/webhooks/mlflow"], None,
     "error: --webhook-url needs $MLOPS_WEBHOOK_SECRET"),
    (["sagemaker", "follow", "cancer@champion", "--endpoint", "e", "--listen", "127.0.0.1:0",
      "--webhook-insecure"], "s3cr3t", "error: --webhook-insecure accepts unsigned deliveries"),
])
def test_refused_webhook_settings_are_one_line(monkeypatch, capsys, restore_logging, argv,
                                               secret, message):
    if secret:
        monkeypatch.setenv("MLOPS_WEBHOOK_SECRET", secret)
    else:
        monkeypatch.delenv("MLOPS_WEBHOOK_SECRET", raising=False)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [err[-1]] and err[-1].startswith(message), err
