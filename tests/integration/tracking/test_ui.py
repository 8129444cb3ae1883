"""`make ui` (``python -m tracking ui``) in headless Chromium: the runs table after a few runs."""

from __future__ import annotations

import re
import shutil
import sys
import time

import mlflow
import pytest
from selenium.webdriver.common.keys import Keys

from tests.support.processes import ARTIFACTS, free_port, running

pytestmark = [pytest.mark.integration, pytest.mark.ui]



def _driver(profile_dir):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                "--window-size=2400,1000", f"--user-data-dir={profile_dir}"):  # fmt: skip
        options.add_argument(arg)
    service = Service(shutil.which("chromedriver") or "/usr/bin/chromedriver")
    return webdriver.Chrome(service=service, options=options)


def _wait_text(driver, ready, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = driver.find_element("tag name", "body").text
        if ready(text) or time.monotonic() > deadline:
            assert ready(text), f"the runs are not shown:\n{text[:2000]}"
            return text
        time.sleep(0.5)


def _wait_cells(driver, wanted: set[str], timeout: float = 30) -> set[str]:
    deadline = time.monotonic() + timeout
    while True:
        cells = {c.text for c in driver.find_elements("css selector", ".ag-cell")}
        if wanted <= cells or time.monotonic() > deadline:
            return cells
        time.sleep(0.5)


@pytest.mark.skipif(not shutil.which("chromedriver"), reason="make chromium installs it")
def test_ui_runs_table_compares_workflow_runs_without_opening_one(isolated_tracking, tmp_path):
    """After two workflow runs with different parameters, `make ui` opens the experiment in
    the model-training layout and its runs table shows, for each workflow run: its name (data
    · estimator · metric), its test_roc_auc once the user adds the column, its datasets and
    its model — no run opened."""
    import subprocess

    from tests.support.processes import child_env

    env = {"MLFLOW_TRACKING_URI": isolated_tracking}
    for extra in (["--estimators", "random_forest"], ["--estimators", "linear"]):
        out = subprocess.run([sys.executable, "-m", "projects", "main", *extra], cwd=tmp_path,
                             env=child_env(env), capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        # quiet by default: MLflow's per-save pickle warning is not printed
        assert "cloudpickle format requires exercising caution" not in out.stderr
    client = mlflow.MlflowClient(tracking_uri=isolated_tracking)
    experiment = client.get_experiment_by_name("mlops-registry")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    experiment_id = experiment.experiment_id
    workflows = client.search_runs([experiment_id], "tags.`mlops.until` = 'register'")
    assert len(workflows) == 2
    names = {r.info.run_name for r in workflows}
    assert {n.split(" · ")[1] for n in names} == {"random_forest", "linear"}, names
    assert all(n.startswith("breast_cancer · ") and " · roc_auc 0." in n for n in names), names
    aucs = {f"{r.data.metrics['test_roc_auc']:.4g}"[:4] for r in workflows}

    port = free_port()
    cmd = [sys.executable, "-m", "tracking", "ui", "--port", str(port)]
    with running(cmd, f"http://127.0.0.1:{port}/health", "tracking-ui", env=env, cwd=tmp_path) as p:
        deadline = time.monotonic() + 60
        while not (m := re.search(r"^Runs table: (\S+)", p.log_path.read_text(), re.M)):
            assert time.monotonic() < deadline, p.log_path.read_text()[-2000:]
            time.sleep(0.2)
        runs_url = m.group(1)
        assert runs_url.startswith(f"http://127.0.0.1:{port}/#/experiments/{experiment_id}/runs")
        # 3.17's layout follows its GenAI / model-training selector (per browser, default
        # GenAI), which this query sets; the experiment's kind tag is set for the rest
        if "workflowType=" not in runs_url:
            runs_url += "?workflowType=machine_learning"

        driver = _driver(tmp_path / "chromium-profile")
        try:
            driver.get(runs_url)
            text = _wait_text(driver, lambda text: all(n in text for n in names))
            # the model-training layout: no GenAI side bar (Judges, Evaluation runs, Prompts)
            assert "Model training" in text and "Judges" not in text, text[:2000]
            # 3.17's runs table starts with attribute columns only; a user adds a metric
            # column from the "Columns" menu, which lists the experiment's metrics.
            driver.find_element("xpath", "//button[contains(., 'Columns')]").click()
            driver.find_element(
                "xpath", "//span[normalize-space(text())='test_roc_auc']").click()
            driver.find_element("tag name", "body").send_keys(Keys.ESCAPE)
            deadline = time.monotonic() + 30
            while True:
                rows = _workflow_rows(driver, names)
                shown = {c[:4] for cells in rows.values() for c in cells
                         if re.fullmatch(r"0\.\d+", c)}
                # Model column: the registered version of the model the train step logged
                models = {n: cells for n, cells in rows.items()
                          if any(c.startswith("mlops-registry-model\nv") for c in cells)}
                if (aucs <= shown and len(models) == 2) or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            text = driver.find_element("tag name", "body").text
            ARTIFACTS.mkdir(exist_ok=True)
            driver.save_screenshot(str(ARTIFACTS / "ui-runs-table.png"))
        finally:
            driver.quit()
    assert aucs <= shown, (aucs, rows)
    assert "test_roc_auc" in text, text[:2000]
    for name, cells in rows.items():
        joined = " | ".join(cells)
        # Dataset column: the splits the model was fitted and tested on
        assert "train (" in joined and "Training" in joined and "test (" in joined, (name, cells)
        assert name in models, (name, cells)
    assert {c for cells in models.values() for c in cells if c.startswith("mlops-registry-model")
            } == {"mlops-registry-model\nv1", "mlops-registry-model\nv2"}, models


def _workflow_rows(driver, names: set[str]) -> dict[str, list[str]]:
    """The cells of each workflow run's row, by run name (ag-grid splits pinned columns
    into separate row containers that share the ``row-index``)."""
    by_index: dict[str, list[str]] = {}
    for row in driver.find_elements("css selector", ".ag-row"):
        cells = [c.text for c in row.find_elements("css selector", ".ag-cell")]
        by_index.setdefault(row.get_attribute("row-index"), []).extend(cells)
    out = {}
    for cells in by_index.values():
        name = next((n for n in names if any(n in c for c in cells)), None)
        if name:
            out[name] = cells
    return out
