"""The register step's run: the version, its lineage tags, and the alias moves that crown it.

Every new version becomes challenger; it also becomes champion when the auto-champion decision
(:func:`projects.register.auto_champion_decision`) is on and it beats the champion evaluate
scored on the same test set (:func:`projects.register.crown_decision`). Both moves go through
THE alias move (:func:`core.aliases.move_alias`: compare-and-set + history) against the state
read before deciding: a concurrent move (a release manager's promotion) wins, and the run
records that the crown was lost. The decisions are pure functions in :mod:`projects.register`;
this module carries them out. Mixed into :class:`projects.workflow.Workflow`.
"""

from __future__ import annotations

import logging

from core import names
from core.uris import run_uri
from projects.presentation import data_name, version_description
from projects.result import StepOutcome

_logger = logging.getLogger(__name__)


class RegisterStep:
    """register, mixed into the step chain."""

    def register(self) -> StepOutcome:
        """Register the model version with lineage tags and move its aliases (see module)."""
        from projects.register import auto_champion_decision, crown_decision

        s = self.settings
        ev = self.outcomes["evaluate"]
        test_metrics = {k: v for k, v in ev.metrics.items() if k.startswith("test_")}
        on, why_on = auto_champion_decision(s.register.auto_champion, s.profile,
                                            self._store_uris())
        kind = "retrain" if s.register.trigger == "retrain" else "auto"

        def compute(run_id):
            import mlflow

            from core.aliases import current_user, move_alias, read_state
            from core.errors import LostRace
            from projects.log_filters import quiet_unless_verbose
            from projects.register import lineage_tags

            name = s.register.model_name
            champion_alias = s.register.champion_alias
            challenger_alias = s.register.challenger_alias
            # the commit as the workflow run recorded it (projects.record.git_state), one meaning
            run_tags = self.client.get_run(self.run_id).data.tags
            tags = lineage_tags(
                data_digest=self.outcomes["ingest"].tags.get(names.DATA_DIGEST_TAG, ""),
                git_commit=run_tags.get(names.GIT_COMMIT_TAG, "unknown"),
                git_dirty=run_tags.get(names.GIT_DIRTY_TAG, ""),
                settings_hash=s.section_hash(),
                task=s.data.task,
                metric=s.metric,
                target=s.data.target,
                train_run_id=self.outcomes["train"].run_id,
                test_data_uri=run_uri(self.outcomes["prepare"].run_id, "splits/test.parquet"),
                train_data_uri=run_uri(self.outcomes["prepare"].run_id, "splits/train.parquet"),
                test_metrics=test_metrics,
                positive_class=self.outcomes["train"].tags.get(names.POSITIVE_CLASS_TAG),
            )
            from core.cards import creation_tags

            # the card's location and its Draft status are creation tags: after this, only the
            # tracking server moves the status (core.cards)
            tags.update(creation_tags(run_id))
            with quiet_unless_verbose():  # the summary names the version; MLflow prints too
                version = str(mlflow.register_model(self._model_uri(), name, tags=tags).version)
            # the states the moves compare against, read before anything is decided (and once
            # the model exists): the champion as evaluate saw it, the challenger as it is now
            challenger_state = read_state(self.client, name, challenger_alias)
            try:
                champion_state = read_state(self.client, name, champion_alias,
                                            expect=self._champion_seen or "none")
                champion_moved = None
            except LostRace as exc:
                champion_state, champion_moved = None, str(exc)
            by = current_user()
            out = {names.MODEL_NAME_TAG: name, names.MODEL_VERSION_TAG: version,
                   names.AUTO_CHAMPION_TAG: why_on}
            try:
                move_alias(self.client, name, version, challenger_alias, by=by, kind=kind,
                           reason=self._move_reason("new version"), state=challenger_state)
            except LostRace as exc:  # another workflow registered a newer one meanwhile
                out[names.CHALLENGER_LOST_TAG] = str(exc)[:500]
                _logger.warning("version %s is not %s: %s", version, challenger_alias, exc)
            crown, why = crown_decision(
                on, why_on, s.metric, test_metrics, champion=self._champion_seen,
                champion_is_this_model=self._champion_is_this_model,
                evaluated=ev.metrics, comparison=ev.tags.get(names.CHAMPION_COMPARISON_TAG))
            # not crowned for want of evidence, or preempted: said loudly, not just logged
            loud = (on and self._champion_seen is not None and not self._champion_is_this_model
                    and not any(k.startswith("champion_test_") for k in ev.metrics))
            if crown and champion_moved:
                crown, why, loud = False, f"a concurrent move won the race: {champion_moved}", True
            elif crown:
                try:
                    move_alias(self.client, name, version, champion_alias, by=by, kind=kind,
                               reason=self._move_reason(why), state=champion_state)
                except LostRace as exc:
                    crown, why, loud = False, f"a concurrent move won the race: {exc}", True
            if crown:
                _logger.info("register version %s: %s + %s: %s", version, challenger_alias,
                             champion_alias, why)
            elif loud:
                _logger.warning("version %s not crowned %s: %s", version, champion_alias, why)
            else:
                _logger.info("register version %s: %s only: %s", version, challenger_alias,
                             why)
            out.update({names.CROWNED_TAG: str(crown), names.CROWN_REASON_TAG: why[:5000]})
            card = self._card_markdown(run_id, name, version, test_metrics)
            self.client.update_model_version(name, version, description=self._describe_version(
                run_id, test_metrics, crown, why) + "\n" + card)
            return out, {}, {}

        def valid(hit) -> bool:  # a deleted version cannot be reused
            from mlflow.exceptions import MlflowException

            try:
                self.client.get_model_version(hit.data.tags[names.MODEL_NAME_TAG],
                                              hit.data.tags[names.MODEL_VERSION_TAG])
                return True
            except (MlflowException, KeyError):
                return False

        # register reads evaluate's metrics (and its champion), so it follows evaluate's key;
        # the auto-champion decision is part of its input (it decides what moves)
        up = f"{ev.key}|auto_champion={on}"
        return self._run_step("register", self._key("register", up), compute, valid)

    def _card_markdown(self, register_run: str, name: str, version: str,
                       test_metrics: dict) -> str:
        """Build the version's model card, log it (JSON and markdown); its markdown."""
        from core import cards
        from core.lineage import dataset_schema
        from core.redaction import redact_url

        s, out = self.settings, self.outcomes
        ingest, ev = out["ingest"], out["evaluate"]
        source = s.data.source
        if "://" in source and not source.startswith(("s3://", "file://")):
            source = f"{data_name(source, s.data.table)} (SQL)"  # the URL may hold a password
        schema = {}
        for item in (self.client.get_run(ingest.run_id).inputs.dataset_inputs or []):
            if any(t.key == "mlflow.data.context" and t.value == "raw" for t in item.tags):
                schema = dataset_schema(item.dataset)  # the data as read, before preparing
        per_class = None
        if s.data.task == "classification":
            test = self._frame("test", "prepare", "splits/test.parquet")
            X, y = test.drop(columns=[s.data.target]), test[s.data.target]
            per_class = cards.per_class_metrics(y, self._load_model().predict(X))
        champion_metrics = {k.removeprefix("champion_test_"): v for k, v in ev.metrics.items()
                            if k.startswith("champion_test_")}
        run_tags = self.client.get_run(self.run_id).data.tags
        card = cards.build_card(
            name, version, intended_use=s.card.intended_use, limitations=s.card.limitations,
            data={"source": redact_url(source), "digest": ingest.tags.get(names.DATA_DIGEST_TAG),
                  "rows": int(ingest.metrics["rows"]) if "rows" in ingest.metrics else None,
                  "schema": schema},
            test_metrics=test_metrics, per_class=per_class,
            champion={"version": self._champion_seen, "metrics": champion_metrics}
            if champion_metrics else None,
            lineage={"commit": run_tags.get(names.GIT_COMMIT_TAG, "unknown"),
                     "dirty": run_tags.get(names.GIT_DIRTY_TAG, ""),
                     "settings_hash": s.section_hash(), "workflow_run": self.run_id,
                     **{f"{step}_run": o.run_id for step, o in out.items()},
                     "register_run": register_run})
        markdown = cards.render_markdown(card)
        self.client.log_dict(register_run, card, cards.JSON_PATH)
        self.client.log_text(register_run, markdown, cards.MARKDOWN_PATH)
        return markdown

    def _store_uris(self) -> tuple[str, str]:
        import mlflow

        return mlflow.get_tracking_uri(), mlflow.get_registry_uri()

    def _move_reason(self, why: str) -> str:
        """The reason recorded with an alias move: what started the run, and why."""
        reg = self.settings.register
        if reg.trigger == "retrain":
            started = reg.trigger_reason or "retraining"
            return f"{started} (workflow run {self.run_id}): {why}"
        return f"workflow run {self.run_id}: {why}"

    def _describe_version(self, register_run: str, test_metrics: dict, crowned: bool,
                          why: str) -> str:
        """The version's markdown description from what the steps left behind."""
        s, out = self.settings, self.outcomes
        ev = out["evaluate"]
        source = s.data.source
        if "://" in source and not source.startswith(("s3://", "file://")):
            source = f"{data_name(source, s.data.table)} (SQL)"  # the URL may hold a password
        ingest = out["ingest"]
        data = {"source": source, "target": s.data.target,
                "rows": str(int(ingest.metrics["rows"])) if "rows" in ingest.metrics else "",
                "digest": ingest.tags.get(names.DATA_DIGEST_TAG, "")}
        runs = {"workflow run": self.run_id,
                **{f"{step} step": o.run_id for step, o in out.items()},
                "register step": register_run}
        return version_description(
            metric=s.metric,
            test_metrics=test_metrics,
            champion_version=self._champion_seen if not self._champion_is_this_model else None,
            champion_metrics={k.removeprefix("champion_"): v for k, v in ev.metrics.items()
                              if k.startswith("champion_test_")},
            champion_note=ev.tags.get(names.CHAMPION_COMPARISON_TAG),
            crowned=crowned,
            crown_reason=why,
            data=data,
            validation=dict(out["validate"].metrics) if "validate" in out else {},
            runs=runs,
            experiment_id=self.experiment_id,
        )
