"""The data steps' runs: ingest, validate and prepare as MLflow runs of the step chain.

Each method wraps the step's pure functions (:mod:`projects.ingest`, :mod:`projects.validate`,
:mod:`projects.prepare`) in a cached step run: it reads the frames the previous step left,
calls them, and logs the frames, datasets, tags and metrics they return. Mixed into
:class:`projects.workflow.Workflow` (``self.settings``, ``self.frames``, ``_run_step`` ...).
"""

from __future__ import annotations

import logging

from core import names
from projects.errors import WorkflowError
from projects.result import StepOutcome

_logger = logging.getLogger(__name__)


class DataSteps:
    """ingest → validate → prepare, mixed into the step chain."""

    def ingest(self) -> StepOutcome:
        """Read the raw data; reused when the source's content is unchanged."""
        from projects.artifacts import dataset_source, log_dataset, log_frame
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
            log_frame(df, "data/raw.parquet", self._tmp.name)
            log_dataset(df, "raw", "raw", dataset_source(source), data.target)
            return (
                {names.DATA_DIGEST_TAG: digest, names.SOURCE_TAG: str(source)[:500]},
                {"rows": len(df), "columns": df.shape[1]},
                {"source": str(source)[:500], "source_kind": source.kind},
            )

        return self._run_step("ingest", self._key("ingest", fingerprint), compute)

    def validate(self) -> StepOutcome:
        """Profile, check and clean the raw data."""
        s = self.settings

        def compute(run_id):
            import mlflow

            from projects.artifacts import log_frame
            from projects.validate import (
                check_data,
                check_types,
                clean_data,
                infer_task,
                profile_data,
                profile_html,
            )

            raw = self._frame("raw", "ingest", "data/raw.parquet")
            profile = profile_data(raw)
            mlflow.log_table(profile, "profile/profile.json")
            declared = dict(s.data.columns)
            task, why = s.data.task, "set in data.task"
            try:
                check_data(raw, s.data.target, "auto", declared, s.clean.numeric_share,
                           coerce=True)  # the target exists, columns, declared types
                if task == "auto":
                    task, why = infer_task(raw[s.data.target])
                    why = f"auto: {why}"
                coerced = check_types(raw, s.data.target, declared, s.clean.numeric_share,
                                      s.clean.coerce)
                check_data(raw, s.data.target, task, declared, s.clean.numeric_share,
                           s.clean.coerce)
            except Exception as exc:
                mlflow.set_tag(names.FAILED_RULE_TAG, str(exc)[:500])
                raise
            _logger.info("task     %s (%s)", task, why)
            for column, count in coerced.items():
                _logger.warning("column %r: %d cell(s) are not numbers; they become missing "
                                "values (clean.coerce)", column, count)
            clean, report = clean_data(raw, s.data.target, s.clean.drop_duplicates)
            report.coerced_values = sum(coerced.values())
            for column, count in coerced.items():
                report.per_column.setdefault(column, {})["coerced"] = count
            dropped = 1 - report.rows_out / max(report.rows_in, 1)
            mlflow.log_text(profile_html(raw, profile, report), "profile/profile.html")
            mlflow.log_dict(report.per_column, "profile/cleaning.json")
            if dropped > s.clean.max_dropped_share:
                raise WorkflowError(
                    f"table: rule 'max_dropped_share' failed: cleaning dropped {dropped:.0%} "
                    f"of rows (limit {s.clean.max_dropped_share:.0%})"
                )
            # validation after cleaning: the clean table must still satisfy the rules
            check_data(clean, s.data.target, task, declared, s.clean.numeric_share,
                       s.clean.coerce)
            self.frames["clean"] = clean
            log_frame(clean, "data/clean.parquet", self._tmp.name)
            return ({names.TASK_TAG: task, names.TASK_REASON_TAG: why[:500]}, report.metrics(),
                    {"task": task})

        up = self.outcomes["ingest"].key
        outcome = self._run_step("validate", self._key("validate", up), compute)
        task = outcome.tags.get(names.TASK_TAG)
        if task in ("classification", "regression") and task != s.data.task:
            # the later steps (split, metrics, plots, selection) see the task decided here
            self.settings = s.with_task(task)
        return outcome

    def prepare(self) -> StepOutcome:
        """Split the clean data into train/validation/test."""
        s = self.settings

        def compute(run_id):
            import mlflow

            from projects.artifacts import log_dataset, log_frame
            from projects.prepare import SPLITS, drop_train_outliers, feature_types, split_data

            clean = self._frame("clean", "validate", "data/clean.parquet")
            splits = split_data(clean, s.data.target, s.data.task, s.split.test_size,
                                s.split.val_size, s.split.seed)
            outliers_dropped = 0
            if s.clean.outliers == "drop":  # fences of the train split, its rows only
                splits["train"], outliers_dropped = drop_train_outliers(
                    splits["train"], s.data.target, s.clean.outlier_iqr)
            types = feature_types(clean, s.data.target)
            contexts = {"train": "training", "val": "validation", "test": "testing"}
            for name in SPLITS:
                self.frames[name] = splits[name]
                log_frame(splits[name], f"splits/{name}.parquet", self._tmp.name)
                log_dataset(splits[name], name, contexts[name],
                            mlflow.get_artifact_uri(f"splits/{name}.parquet"), s.data.target)
            return (
                {names.NUMERIC_FEATURES_TAG: ",".join(types.numeric)[:5000],
                 names.CATEGORICAL_FEATURES_TAG: ",".join(types.categorical)[:5000]},
                {**{f"rows_{n}": len(splits[n]) for n in SPLITS},
                 "outlier_rows_dropped": outliers_dropped},
                {"test_size": s.split.test_size, "val_size": s.split.val_size,
                 "seed": s.split.seed},
            )

        up = self.outcomes["validate"].key
        return self._run_step("prepare", self._key("prepare", up), compute)
