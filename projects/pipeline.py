"""Chain the steps as MLflow runs, with step caching (the Kedro ``pipeline.py`` of the project).

Every step is a nested child run of the workflow run, tagged ``mlops.step``. A computed step
carries ``mlops.cache_key``: a hash of the step's code, its settings and its input (the data's
fingerprint for ``ingest``, the upstream step's key after that). When a finished run with the
same key exists in the experiment, the step is reused: a child run tagged ``mlops.reused_from``
records it and its outputs are read from that run. The cache is thus the tracking store: it
serves a whole team on a shared server, and a new store starts cold.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from core.runs import run_with_status
from core.settings import Settings
from core.uris import alias_uri, run_uri
from projects import STEPS
from projects.errors import WorkflowError

_logger = logging.getLogger(__name__)
_HERE = Path(__file__).resolve().parent

# Source files whose content is part of each step's cache key (pipeline.py glues them all).
CODE_FILES = {
    "ingest": ("ingest.py", "errors.py"),
    "validate": ("validate.py", "errors.py"),
    "prepare": ("prepare.py", "errors.py"),
    "train": ("train.py", "prepare.py"),
    "evaluate": ("evaluate.py", "train.py"),
    "register": ("register.py", "train.py"),
}
# Settings sections (dotted) each step's outputs depend on.
SETTINGS_KEYS = {
    "ingest": ("data.source", "data.query", "data.table", "data.target"),
    "validate": ("data", "clean"),
    "prepare": ("data.target", "data.task", "split"),
    "train": ("data.task", "data.target", "split.seed", "train.candidates", "metric"),
    "evaluate": ("data.task", "data.target", "metric", "register.model_name",
                 "register.champion_alias"),
    "register": ("register", "metric"),
}
CACHE_TAG = "mlops.cache_key"
REUSED_TAG = "mlops.reused_from"
STEP_TAG = "mlops.step"
PIP_PACKAGES = ("mlflow", "scikit-learn", "pandas", "numpy", "scipy", "cloudpickle", "skops")


def code_hash(step: str) -> str:
    """Hash of the source files a step runs (an edited step invalidates its cache)."""
    digest = hashlib.sha256()
    for name in (*CODE_FILES[step], "pipeline.py"):
        digest.update(name.encode())
        digest.update((_HERE / name).read_bytes())
    return digest.hexdigest()[:16]


def settings_hash(settings: Settings, step: str) -> str:
    """Hash of the settings a step depends on."""
    dumped = settings.model_dump(mode="json")
    dumped["metric"] = settings.metric
    picked = {}
    for dotted in SETTINGS_KEYS[step]:
        node = dumped
        for part in dotted.split("."):
            node = node[part]
        picked[dotted] = node
    return hashlib.sha256(repr(sorted(picked.items())).encode()).hexdigest()[:16]


def cache_key(step: str, settings: Settings, upstream: str) -> str:
    """The cache key of a step: its code, its settings and its input."""
    parts = f"{step}|{code_hash(step)}|{settings_hash(settings, step)}|{upstream}"
    return hashlib.sha256(parts.encode()).hexdigest()[:24]


def git_commit(cwd: Path | None = None) -> str:
    """The project's git commit (``+dirty`` when there are uncommitted changes), or unknown."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5
        )
        if head.returncode != 0:
            return os.environ.get("MLFLOW_GIT_COMMIT", "unknown")
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd, capture_output=True, text=True, timeout=5,
        ).stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


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


@dataclass
class StepOutcome:
    """What a step left behind: its run, its cache key, whether it was reused."""

    step: str
    run_id: str
    key: str
    reused: bool
    tags: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)


@dataclass
class WorkflowResult:
    """The outcome of a workflow run, for the CLI's summary."""

    run_id: str
    experiment_id: str
    steps: dict[str, StepOutcome]
    model_name: str | None = None
    model_version: str | None = None
    aliases: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


class Workflow:
    """Runs the steps up to ``until`` under one parent run, reusing cached steps."""

    def __init__(self, settings: Settings, client, s3_client_factory=None, project_dir=None):
        self.settings = settings
        self.client = client
        self._s3_factory = s3_client_factory
        self.project_dir = Path(project_dir or Path.cwd())
        self.frames: dict = {}
        self.model = None
        self.outcomes: dict[str, StepOutcome] = {}
        self.timings: dict[str, float] = {}
        self._tmp = tempfile.TemporaryDirectory(prefix="mlops-")
        self.experiment_id: str | None = None

    # ----------------------------------------------------------------- plumbing
    def _lookup(self, key: str):
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{CACHE_TAG}` = '{key}' and attributes.status = 'FINISHED'",
            max_results=1,
            order_by=["attributes.start_time DESC"],
        )
        return runs[0] if runs else None

    def _run_step(self, step: str, key: str, compute, valid=None) -> StepOutcome:
        import mlflow

        hit = self._lookup(key) if self.settings.cache else None
        if hit is not None and (valid is None or valid(hit)):
            with run_with_status(
                run_name=f"{step} (reused)",
                nested=True,
                tags={STEP_TAG: step, REUSED_TAG: hit.info.run_id, "mlops.reused_key": key},
            ):
                pass
            _logger.info(
                "%-8s reused: code, settings and input unchanged (run %s)", step, hit.info.run_id
            )
            outcome = StepOutcome(step, hit.info.run_id, key, True, dict(hit.data.tags),
                                  dict(hit.data.metrics), dict(hit.data.params))
        else:
            start = time.perf_counter()
            with run_with_status(run_name=step, nested=True, tags={STEP_TAG: step}) as run:
                tags, metrics, params = compute(run.info.run_id) or ({}, {}, {})
                mlflow.set_tags({CACHE_TAG: key, **tags})
                if metrics:
                    mlflow.log_metrics(metrics)
                if params:
                    mlflow.log_params(params)
            self.timings[step] = time.perf_counter() - start
            _logger.info("%-8s done in %.2fs (run %s)", step, self.timings[step],
                         run.info.run_id)
            outcome = StepOutcome(step, run.info.run_id, key, False, tags, metrics, params)
        self.outcomes[step] = outcome
        return outcome

    def _frame(self, name: str, step: str, path: str):
        if name not in self.frames:
            import mlflow
            import pandas as pd

            local = mlflow.artifacts.download_artifacts(
                run_id=self.outcomes[step].run_id, artifact_path=path, dst_path=self._tmp.name
            )
            self.frames[name] = pd.read_parquet(local)
        return self.frames[name]

    def _log_frame(self, df, path: str):
        import mlflow

        local = Path(self._tmp.name) / Path(path).name
        df.to_parquet(local, index=False)
        mlflow.log_artifact(str(local), artifact_path=str(Path(path).parent))

    def _log_dataset(self, df, name: str, context: str, source: str):
        import mlflow
        from mlflow.data.code_dataset_source import CodeDatasetSource
        from mlflow.exceptions import MlflowException

        target = self.settings.data.target if self.settings.data.target in df.columns else None
        try:
            dataset = mlflow.data.from_pandas(df, source=source, targets=target, name=name)
        except MlflowException:  # bundled:/SQL sources have no MLflow resolver
            dataset = mlflow.data.from_pandas(
                df, source=CodeDatasetSource({"source": source}), targets=target, name=name
            )
        mlflow.log_input(dataset, context=context)

    # -------------------------------------------------------------------- steps
    def ingest(self) -> StepOutcome:
        """Read the raw data; reused when the source's content is unchanged."""
        from projects.ingest import fingerprint_source, frame_digest, ingest_data, parse_source

        data = self.settings.data
        source = parse_source(data.source, data.query, data.table)
        s3 = self._s3_factory() if source.kind == "s3" and self._s3_factory else None
        fingerprint = fingerprint_source(source, s3)
        if fingerprint is None:  # SQL: only the rows tell whether the data changed
            self.frames["raw"] = ingest_data(source, data.target, s3)
            fingerprint = frame_digest(self.frames["raw"])

        def compute(run_id):
            df = self.frames.get("raw")
            if df is None:
                df = self.frames["raw"] = ingest_data(source, data.target, s3)
            digest = frame_digest(df)[:16]
            self._log_frame(df, "data/raw.parquet")
            self._log_dataset(df, "raw", "raw", _dataset_source(source))
            return (
                {"mlops.data_digest": digest, "mlops.source": str(source)[:500]},
                {"rows": len(df), "columns": df.shape[1]},
                {"source": str(source)[:500], "source_kind": source.kind},
            )

        return self._run_step("ingest", cache_key("ingest", self.settings, fingerprint), compute)

    def validate(self) -> StepOutcome:
        """Profile, check and clean the raw data."""
        s = self.settings

        def compute(run_id):
            import mlflow

            from projects.validate import check_data, clean_data, profile_data, profile_html

            raw = self._frame("raw", "ingest", "data/raw.parquet")
            profile = profile_data(raw)
            mlflow.log_table(profile, "profile/profile.json")
            try:
                check_data(raw, s.data.target, s.data.task, dict(s.data.columns))
            except Exception as exc:
                mlflow.set_tag("mlops.failed_rule", str(exc)[:500])
                raise
            clean, report = clean_data(
                raw, s.data.target, s.clean.drop_duplicates, s.clean.impute, s.clean.outliers,
                s.clean.outlier_iqr,
            )
            dropped = 1 - report.rows_out / max(report.rows_in, 1)
            mlflow.log_text(profile_html(raw, profile, report), "profile/profile.html")
            if dropped > s.clean.max_dropped_share:
                raise WorkflowError(
                    f"table: rule 'max_dropped_share' failed: cleaning dropped {dropped:.0%} "
                    f"of rows (limit {s.clean.max_dropped_share:.0%})"
                )
            # validation after cleaning: the clean table must still satisfy the rules
            check_data(clean, s.data.target, s.data.task, dict(s.data.columns))
            self.frames["clean"] = clean
            self._log_frame(clean, "data/clean.parquet")
            return {}, report.metrics(), {}

        up = self.outcomes["ingest"].key
        return self._run_step("validate", cache_key("validate", s, up), compute)

    def prepare(self) -> StepOutcome:
        """Split the clean data into train/validation/test."""
        s = self.settings

        def compute(run_id):
            import mlflow

            from projects.prepare import SPLITS, feature_types, split_data

            clean = self._frame("clean", "validate", "data/clean.parquet")
            splits = split_data(clean, s.data.target, s.data.task, s.split.test_size,
                                s.split.val_size, s.split.seed)
            types = feature_types(clean, s.data.target)
            contexts = {"train": "training", "val": "validation", "test": "testing"}
            for name in SPLITS:
                self.frames[name] = splits[name]
                self._log_frame(splits[name], f"splits/{name}.parquet")
                self._log_dataset(splits[name], name, contexts[name],
                                  mlflow.get_artifact_uri(f"splits/{name}.parquet"))
            return (
                {"mlops.numeric_features": ",".join(types.numeric)[:5000],
                 "mlops.categorical_features": ",".join(types.categorical)[:5000]},
                {f"rows_{n}": len(splits[n]) for n in SPLITS},
                {"test_size": s.split.test_size, "val_size": s.split.val_size,
                 "seed": s.split.seed},
            )

        up = self.outcomes["validate"].key
        return self._run_step("prepare", cache_key("prepare", s, up), compute)

    def train(self) -> StepOutcome:
        """Sweep the candidates and log the best model."""
        s = self.settings
        metric = s.metric

        def compute(run_id):
            import mlflow

            from projects.prepare import feature_types
            from projects.train import expand_candidates, pick_best, train_candidates

            train = self._frame("train", "prepare", "splits/train.parquet")
            val = self._frame("val", "prepare", "splits/val.parquet")
            types = feature_types(train, s.data.target)
            # the model's run names the data it was fitted on (monitoring compares against it)
            self._log_dataset(train, "train", "training", run_uri(
                self.outcomes["prepare"].run_id, "splits/train.parquet"))
            candidates = expand_candidates(s.train.candidates)
            start = time.perf_counter()
            results = train_candidates(s.data.task, types, candidates, train, val,
                                       s.data.target, s.split.seed, s.train.n_jobs)
            self.timings["fit_predict_sweep"] = time.perf_counter() - start
            for i, res in enumerate(results):
                with run_with_status(
                    run_name=f"{res.estimator}-{i}", nested=True,
                    tags={STEP_TAG: "train.candidate", "mlops.estimator": res.estimator},
                ):
                    mlflow.log_params({"estimator": res.estimator, **res.params})
                    mlflow.log_metrics({**{f"val_{k}": v for k, v in res.metrics.items()},
                                        "fit_seconds": res.fit_seconds})
            best = pick_best(results, metric)
            self.model = best.model
            start = time.perf_counter()
            info = self._log_model(best.model, train.drop(columns=[s.data.target]))
            self.timings["log_model"] = time.perf_counter() - start
            return (
                {"mlops.best_estimator": best.estimator, "mlops.model_uri": info.model_uri},
                {f"best_val_{k}": v for k, v in best.metrics.items()},
                {"best_estimator": best.estimator, "selection_metric": metric,
                 "candidates": len(results),
                 **{f"best_{k}": v for k, v in best.params.items()}},
            )

        up = self.outcomes["prepare"].key
        return self._run_step("train", cache_key("train", s, up), compute)

    def _log_model(self, model, X):
        import mlflow
        from mlflow.models import infer_signature

        example = X.head(5)
        # integer columns are declared double: a missing value turns ints into floats at
        # serving time, and int -> double is a safe conversion for schema enforcement
        as_float = {c: "float64" for c in example.columns if example[c].dtype.kind in "iu"}
        signature = infer_signature(example.astype(as_float), model.predict(example))
        return mlflow.sklearn.log_model(
            model,
            name="model",
            signature=signature,
            input_example=example,
            pip_requirements=pinned_requirements(),
            serialization_format="cloudpickle",
        )

    def _load_model(self):
        if self.model is None:
            import mlflow

            self.model = mlflow.sklearn.load_model(self._model_uri())
        return self.model

    def _model_uri(self) -> str:
        train = self.outcomes["train"]
        return train.tags.get("mlops.model_uri") or run_uri(train.run_id)

    def evaluate(self) -> StepOutcome:
        """Score the best model on the test split, plot, compare with the champion."""
        s = self.settings
        champion = self._champion()
        if champion is not None and champion.source == self._model_uri():
            champion = None  # the champion is this very model: nothing to compare

        def compute(run_id):
            import matplotlib.pyplot as plt
            import mlflow

            from projects.evaluate import compare_with_champion, evaluate_model, plot_evaluation

            test = self._frame("test", "prepare", "splits/test.parquet")
            model = self._load_model()
            start = time.perf_counter()
            metrics = evaluate_model(s.data.task, model, test, s.data.target)
            self.timings["evaluate_predict"] = time.perf_counter() - start
            figures = plot_evaluation(s.data.task, model, test, s.data.target)
            for name, fig in figures.items():
                mlflow.log_figure(fig, f"plots/{name}")
                plt.close(fig)
            tags = {"mlops.model_uri": self._model_uri()}
            if champion is not None:
                try:
                    champ_model = mlflow.sklearn.load_model(
                        alias_uri(s.register.model_name, s.register.champion_alias))
                    champ = evaluate_model(s.data.task, champ_model, test, s.data.target)
                    metrics.update(compare_with_champion(s.metric, metrics, champ))
                    tags["mlops.champion_version"] = champion.version
                except Exception as exc:  # noqa: BLE001 - an unscoreable champion is reported
                    tags["mlops.champion_comparison"] = f"not comparable: {exc}"[:500]
                    _logger.warning("champion v%s not comparable: %s", champion.version, exc)
            return tags, metrics, {}

        up = self.outcomes["train"].key + f"|champion={champion.version if champion else None}"
        return self._run_step("evaluate", cache_key("evaluate", s, up), compute)

    def _champion(self):
        from mlflow.exceptions import MlflowException

        s = self.settings.register
        try:
            return self.client.get_model_version_by_alias(s.model_name, s.champion_alias)
        except MlflowException:
            return None

    def register(self) -> StepOutcome:
        """Register the model version with lineage tags and set its aliases."""
        s = self.settings
        ev = self.outcomes["evaluate"]
        test_metrics = {k: v for k, v in ev.metrics.items() if k.startswith("test_")}

        def compute(run_id):
            import mlflow

            from projects.register import lineage_tags, should_crown

            tags = lineage_tags(
                data_digest=self.outcomes["ingest"].tags.get("mlops.data_digest", ""),
                git_commit=git_commit(self.project_dir),
                settings_hash=s.section_hash(),
                task=s.data.task,
                metric=s.metric,
                target=s.data.target,
                train_run_id=self.outcomes["train"].run_id,
                test_data_uri=run_uri(self.outcomes["prepare"].run_id, "splits/test.parquet"),
                train_data_uri=run_uri(self.outcomes["prepare"].run_id, "splits/train.parquet"),
                test_metrics=test_metrics,
            )
            name = s.register.model_name
            version = mlflow.register_model(self._model_uri(), name, tags=tags).version
            self.client.set_registered_model_alias(name, s.register.challenger_alias, version)
            champion = self._champion()
            champ_metrics = None
            if champion is not None:
                champ_metrics = {k.removeprefix("champion_"): v for k, v in ev.metrics.items()
                                 if k.startswith("champion_test_")}
            crown, why = should_crown(s.register.auto_champion, s.metric, test_metrics,
                                      champ_metrics if champion is not None else None)
            if crown:
                self.client.set_registered_model_alias(name, s.register.champion_alias, version)
                self.client.set_model_version_tag(name, version, "mlops.promoted_by",
                                                  "workflow (auto_champion)")
                self.client.set_model_version_tag(name, version, "mlops.promotion_reason", why)
            _logger.info("register version %s: %s%s", version, s.register.challenger_alias,
                         f" + {s.register.champion_alias} ({why})" if crown else f" ({why})")
            return ({"mlops.model_name": name, "mlops.model_version": str(version),
                     "mlops.crowned": str(crown), "mlops.crown_reason": why}, {}, {})

        def valid(hit) -> bool:  # a deleted version cannot be reused
            from mlflow.exceptions import MlflowException

            try:
                self.client.get_model_version(hit.data.tags["mlops.model_name"],
                                              hit.data.tags["mlops.model_version"])
                return True
            except (MlflowException, KeyError):
                return False

        up = self.outcomes["train"].key
        return self._run_step("register", cache_key("register", s, up), compute, valid)

    # ---------------------------------------------------------------- the chain
    def run(self, until: str = "register") -> WorkflowResult:
        """Run the steps in order up to ``until`` inside the workflow (parent) run."""
        import mlflow

        if until not in STEPS:
            raise WorkflowError(f"unknown step {until!r}; one of: {', '.join(STEPS)}")
        # started by `mlflow run`: log into its run; consumed here so that nested
        # start_run calls create children instead of resuming the parent
        active = os.environ.pop("MLFLOW_RUN_ID", None)
        if active:
            self.experiment_id = self.client.get_run(active).info.experiment_id
        else:
            exp = self.client.get_experiment_by_name(self.settings.experiment)
            self.experiment_id = (exp.experiment_id if exp else
                                  self.client.create_experiment(self.settings.experiment))
        mlflow.set_experiment(experiment_id=self.experiment_id)  # the nested runs go there too
        start = time.perf_counter()
        with run_with_status(
            run_id=active or None,
            experiment_id=None if active else self.experiment_id,
            run_name=None if active else f"workflow-{until}",
        ) as parent:
            mlflow.set_tags({"mlops.profile": self.settings.profile, "mlops.until": until})
            for step in STEPS[: STEPS.index(until) + 1]:
                getattr(self, step)()
            self._summarise()
            run_id = parent.info.run_id
        self.timings["total"] = time.perf_counter() - start
        self._tmp.cleanup()
        result = WorkflowResult(run_id, self.experiment_id, self.outcomes, timings=self.timings)
        reg = self.outcomes.get("register")
        if reg:
            result.model_name = reg.tags.get("mlops.model_name")
            result.model_version = reg.tags.get("mlops.model_version")
            mv = self.client.get_model_version(result.model_name, result.model_version)
            result.aliases = sorted(getattr(mv, "aliases", []) or [])
        return result

    def _summarise(self):
        """Put the figures a data scientist compares on the workflow run itself."""
        import mlflow

        params, metrics, tags = {"profile": self.settings.profile,
                                 "data_source": self.settings.data.source[:500]}, {}, {}
        for step, outcome in self.outcomes.items():
            tags[f"mlops.{step}_run"] = outcome.run_id
            tags[f"mlops.{step}_reused"] = str(outcome.reused).lower()
        if "train" in self.outcomes:
            params.update({k: v for k, v in self.outcomes["train"].params.items()})
            metrics.update(self.outcomes["train"].metrics)
        if "evaluate" in self.outcomes:
            metrics.update(self.outcomes["evaluate"].metrics)
        if "ingest" in self.outcomes:
            tags["mlops.data_digest"] = self.outcomes["ingest"].tags.get("mlops.data_digest", "")
        if "register" in self.outcomes:
            tags["mlops.model_version"] = self.outcomes["register"].tags.get(
                "mlops.model_version", "")
        existing = mlflow.get_run(mlflow.active_run().info.run_id).data.params
        mlflow.log_params({k: v for k, v in params.items() if k not in existing})
        if metrics:
            mlflow.log_metrics(metrics)
        mlflow.set_tags(tags)


def _dataset_source(source) -> str:
    if source.kind == "file":
        return source.location
    if source.kind == "s3":
        return source.location
    return str(source)
