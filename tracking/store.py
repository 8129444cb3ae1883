"""The runs search of the launcher's server: MLflow's SqlAlchemyStore, a faster ``_search_runs``.

MLflow's ``SqlAlchemyStore._search_runs`` selects ``DISTINCT`` whole runs ordered by the page's
sort keys. The DISTINCT makes the database sort every run of the experiment (all columns) before
it can return the first page, whatever index exists: ~0.5 s on PostgreSQL and ~0.3 s on SQLite
at 100,000 runs for the runs table newest first, ~1 s and ~2.4 s sorted by a metric
(``benchmarks/bench_tracking_scale.py``). :class:`SearchStore` answers the same question with the
same SQL expressions (filters, sort keys, page offsets: MLflow's own helpers build them) in two
steps:

1. the page's run ids, without DISTINCT. It changes nothing: every table a search joins (the
   filter and sort subqueries on ``tags``, ``params`` and ``latest_metrics``) holds at most one
   row per run and key (their primary key is ``(key, run_uuid)``), so each run appears once.
   A search that joins datasets (``dataset.*`` filters, several rows per run) is left to MLflow.
   Without DISTINCT the runs index of the launcher (:data:`tracking.indexes.SEARCH_INDEXES`)
   yields the newest runs first and the database stops after the page.
   Sorted by one metric, the runs that have it (not NaN) come first in MLflow's order (its sort
   key ranks them 0, NaN 1, missing 2); the page is read from them alone, walking the metric's
   index from the top, when they are enough to fill it. Otherwise the general query answers.
2. the page's runs with their metrics, params and tags, read as rows with the statements of
   MLflow's eager loading and built into the entities ``SqlRun.to_mlflow_entity`` builds, put
   back in step 1's order; datasets and model outputs, and the next page token, as MLflow does.

``tests/integration/tracking/test_search_store.py`` compares both stores on the same databases
(PostgreSQL and SQLite): the same runs in the same order and the same page tokens, with ties,
NaN, missing metrics, deleted runs, filters and every page.

The launcher's server uses it through its ``mlflow.app`` factories (:func:`create_app`, and
:func:`tracking.governance.create_app` with ``--auth``), which register it for PostgreSQL and
SQLite in the server's own store registry (:func:`install`): a stock ``mlflow server`` is
unchanged, and so are MySQL and SQL Server stores (not covered by the differential test).

It builds on MLflow's private helpers (``_get_orderby_clauses``,
``_get_sqlalchemy_filter_clauses``, ``_parse_experiment_ids``, the store's ``_get_run_inputs``
and ``_get_model_outputs_bulk``), which may change in any release. So :func:`install` registers
it only under an MLflow version the differential test passed on (:data:`TESTED_MLFLOW_VERSIONS`);
under any other the server keeps MLflow's own search and says so in one warning.
"""

from __future__ import annotations

import logging
import os

import sqlalchemy
from mlflow.entities import Metric, Param, Run, RunData, RunInfo, RunInputs, RunOutputs, RunTag
from mlflow.entities.lifecycle_stage import LifecycleStage
from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlParam, SqlRun, SqlTag
from mlflow.store.tracking.sqlalchemy_store import (
    SqlAlchemyStore,
    _get_orderby_clauses,
    _get_sqlalchemy_filter_clauses,
    _parse_experiment_ids,
)
from mlflow.utils.mlflow_tags import _get_run_name_from_tags
from mlflow.utils.search_utils import SearchUtils

_logger = logging.getLogger(__name__)

#: The databases the differential test compares this store with MLflow's on.
TESTED_DIALECTS = ("postgresql", "sqlite")

#: The MLflow versions the differential test (tests/integration/tracking/test_search_store.py)
#: passed on. Under any other, :func:`install` leaves MLflow's own search in place.
TESTED_MLFLOW_VERSIONS = ("3.17.2", "3.18.0")

# Set by the launcher in the server's environment once it has printed the fallback warning, so
# the server's workers (each builds the app) do not print it once more each.
FALLBACK_WARNED_ENV = "MLOPS_SEARCH_FALLBACK_WARNED"


def _literal_binds(clause):
    """``clause`` with its bound constants rendered inline (``CASE ... THEN 1 ELSE 0 END``).

    MLflow binds the ranks of its sort keys as parameters; written inline, the expression is the
    one an expression index holds, and SQLite (which plans before binding) can walk that index.
    """

    def replace(element):
        if (
            isinstance(element, sqlalchemy.sql.elements.BindParameter)
            and isinstance(element.value, int)
            and not isinstance(element.value, bool)
        ):
            return sqlalchemy.literal_column(str(int(element.value)))
        return None

    return sqlalchemy.sql.visitors.replacement_traverse(clause, {}, replace)


class SearchStore(SqlAlchemyStore):
    """MLflow's SQL tracking store; ``search_runs`` answers as MLflow does, faster at scale."""

    def _search_runs(
        self, experiment_ids, filter_string, run_view_type, max_results, order_by, page_token
    ):
        self._validate_max_results_param(max_results, allow_null=True)
        parsed_filters = SearchUtils.parse_search_filter(filter_string)
        if max_results is None or any(
            SearchUtils.is_dataset(f.get("type"), f.get("comparator", "").upper())
            for f in parsed_filters
        ):
            return super()._search_runs(
                experiment_ids, filter_string, run_view_type, max_results, order_by, page_token
            )
        stages = set(LifecycleStage.view_type_to_stages(run_view_type))

        with self.ManagedSessionMaker() as session:
            cases, clauses, sorting_joins = _get_orderby_clauses(order_by, session)
            attribute_filters, non_attribute_filters, _ = _get_sqlalchemy_filter_clauses(
                parsed_filters, session, self._get_dialect()
            )
            offset = SearchUtils.parse_start_offset_from_page_token(page_token)
            experiment_ids = self._filter_experiment_ids(
                session, _parse_experiment_ids(experiment_ids)
            )
            where = [
                SqlRun.experiment_id.in_(experiment_ids),
                SqlRun.lifecycle_stage.in_(stages),
                *attribute_filters,
            ]

            def filtered(stmt):
                for subquery in non_attribute_filters:
                    stmt = stmt.join(subquery)
                return stmt.where(*where)

            wanted = offset + max_results + 1
            run_ids = self._page_by_one_metric(
                session, order_by, sorting_joins, clauses, filtered, wanted
            )
            if run_ids is None:
                stmt = sqlalchemy.select(SqlRun.run_uuid, *(_literal_binds(c) for c in cases))
                stmt = filtered(stmt)
                for subquery in sorting_joins:
                    stmt = stmt.outerjoin(subquery)
                order = [
                    sqlalchemy.literal_column(c) if isinstance(c, str) else c for c in clauses
                ]
                stmt = stmt.order_by(*order).offset(offset).limit(max_results + 1)
                run_ids = list(session.execute(stmt).scalars())
            else:
                run_ids = run_ids[offset:]

            runs = _load_runs(session, run_ids)
            ids = [run.info.run_id for run in runs]
            inputs = self._get_run_inputs(run_uuids=ids, session=session)
            outputs = self._get_model_outputs_bulk(run_ids=ids, session=session)
            result = [
                Run(
                    run.info,
                    run.data,
                    RunInputs(dataset_inputs=inputs[i]),
                    RunOutputs(outputs[run.info.run_id]),
                )
                for i, run in enumerate(runs)
            ]

        next_page_token = None
        if len(run_ids) == max_results + 1:  # step 1's count: a run may be gone since
            next_page_token = SearchUtils.create_page_token(offset + max_results)
            result = result[:max_results]
        return result, next_page_token

    @staticmethod
    def _page_by_one_metric(session, order_by, sorting_joins, clauses, filtered, wanted):
        """The first ``wanted`` run ids when sorted by one metric and enough runs have it.

        MLflow's order is (rank, value, start time descending, run id) with rank 0 for a value,
        1 for NaN and 2 for a missing metric: while the runs of rank 0 fill ``wanted``, they are
        the page. ``None`` when the sort is not by one metric or they do not fill it.
        """
        if not order_by or len(order_by) != 1 or len(sorting_joins) != 1:
            return None
        key_type, _, _ = SearchUtils.parse_order_by_for_search_runs(order_by[0])
        if not SearchUtils.is_metric(key_type, "="):
            return None
        metric = sorting_joins[0]
        # clauses: [rank label, value (asc/desc), start time desc (unless sorted by it), run id]
        stmt = filtered(sqlalchemy.select(SqlRun.run_uuid))
        stmt = stmt.join(metric, SqlRun.run_uuid == metric.c.run_uuid).where(
            sqlalchemy.not_(metric.c.is_nan == sqlalchemy.true()), metric.c.value.is_not(None)
        )
        stmt = stmt.order_by(*clauses[1:]).limit(wanted)
        run_ids = list(session.execute(stmt).scalars())
        return run_ids if len(run_ids) == wanted else None


def _load_runs(session, run_ids: list[str]) -> list[Run]:
    """The runs ``run_ids`` still there, in that order, as ``SqlRun.to_mlflow_entity`` builds them.

    Read as rows, without ORM objects: the same statements MLflow's eager loading sends
    (``WHERE run_uuid IN (...)`` on ``runs``, ``latest_metrics``, ``params``, ``tags``), without
    the identity map and change tracking of ~2,600 objects per page of 100 runs.
    """
    if not run_ids:
        return []
    children: dict[str, dict[str, list]] = {run_id: {} for run_id in run_ids}
    tables = {
        "metrics": (SqlLatestMetric, lambda r: Metric(r.key, float("nan") if r.is_nan
                                                      else r.value, r.timestamp, r.step)),
        "params": (SqlParam, lambda r: Param(r.key, r.value)),
        "tags": (SqlTag, lambda r: RunTag(r.key, r.value)),
    }  # fmt: skip
    for kind, (model, entity) in tables.items():
        rows = session.execute(
            sqlalchemy.select(model.__table__).where(model.__table__.c.run_uuid.in_(run_ids))
        )
        for row in rows:
            children[row.run_uuid].setdefault(kind, []).append(entity(row))
    table = SqlRun.__table__
    found = {
        row.run_uuid: row
        for row in session.execute(sqlalchemy.select(table).where(table.c.run_uuid.in_(run_ids)))
    }
    runs = []
    for run_id in run_ids:
        if run_id not in found:  # deleted for good (``mlflow gc``) since its id was read
            continue
        row, data = found[run_id], children[run_id]
        info = RunInfo(
            run_id=row.run_uuid,
            run_name=row.name,
            experiment_id=str(row.experiment_id),
            user_id=row.user_id,
            status=row.status,
            start_time=row.start_time,
            end_time=row.end_time,
            lifecycle_stage=row.lifecycle_stage,
            artifact_uri=row.artifact_uri,
        )
        tags = data.get("tags", [])
        run_data = RunData(metrics=data.get("metrics", []), params=data.get("params", []),
                           tags=tags)  # fmt: skip
        if not info.run_name and (run_name := _get_run_name_from_tags(tags)):
            info._set_run_name(run_name)
        runs.append(Run(run_info=info, run_data=run_data))
    return runs


def _build_store(store_uri, artifact_uri):
    from mlflow.environment_variables import MLFLOW_ENABLE_WORKSPACES
    from mlflow.server.handlers import TrackingStoreRegistryWrapper

    if MLFLOW_ENABLE_WORKSPACES.get():  # MLflow's workspace-aware store: left as it is
        return TrackingStoreRegistryWrapper._get_sqlalchemy_store(store_uri, artifact_uri)
    from mlflow.server.constants import READ_REPLICA_BACKEND_STORE_URI_ENV_VAR

    read_db_uri = os.environ.get(READ_REPLICA_BACKEND_STORE_URI_ENV_VAR)
    return SearchStore(store_uri, artifact_uri, read_db_uri=read_db_uri)


def mlflow_version() -> str:
    """The version of the MLflow code this process runs (not of whichever metadata is found)."""
    from mlflow import version

    return version.VERSION


def fallback_reason() -> str | None:
    """Why the server keeps MLflow's own runs search; ``None`` when :class:`SearchStore` may answer.

    :class:`SearchStore` may answer under the MLflow versions of :data:`TESTED_MLFLOW_VERSIONS`.
    """
    installed = mlflow_version()
    if installed in TESTED_MLFLOW_VERSIONS:
        return None
    return (
        f"MLflow {installed} is not a version the faster runs search was tested with "
        f"({', '.join(TESTED_MLFLOW_VERSIONS)}): the server answers runs searches with "
        "MLflow's own search"
    )


def install() -> None:
    """Make this server process's tracking store a :class:`SearchStore` (PostgreSQL, SQLite).

    Under an MLflow version not in :data:`TESTED_MLFLOW_VERSIONS` nothing is registered: the
    store stays MLflow's, and one warning says so (unless the launcher already printed it).
    """
    from mlflow.server import handlers

    reason = fallback_reason()
    if reason is not None:
        if os.environ.get(FALLBACK_WARNED_ENV) != mlflow_version():
            _logger.warning(reason)
        return
    for scheme in TESTED_DIALECTS:  # MySQL and SQL Server keep MLflow's store (not compared)
        handlers._tracking_store_registry.register(scheme, _build_store)
    if handlers._tracking_store is not None and not isinstance(
        handlers._tracking_store, SearchStore
    ):
        handlers._tracking_store = None  # built before: the next request builds ours


def create_app():
    """The ``mlflow.app`` factory of ``python -m tracking server`` (without ``--auth``)."""
    install()
    from mlflow.server.fastapi_app import app

    return app
