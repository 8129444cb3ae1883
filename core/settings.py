"""Settings: one base file plus profiles, validated once into a frozen typed object.

Order of precedence (last wins): ``conf/base.yaml`` < ``conf/profiles/<profile>.yaml`` <
command-line overrides (``key.sub=value``). Unknown keys and wrong types fail with one line
naming the key.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

PROFILES = ("local", "team", "aws")
DEFAULT_PROFILE = "local"
PROFILE_ENV = "MLOPS_PROFILE"
CONF_DIR_ENV = "MLOPS_CONF_DIR"
#: A user's settings file (as ``--settings``), read by every process that loads the settings.
SETTINGS_FILE_ENV = "MLOPS_SETTINGS_FILE"


class SettingsError(ValueError):
    """Settings that cannot be loaded; the message is one line naming the key."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DataSettings(_Frozen):
    """Where the data comes from and what to predict."""

    source: str = "bundled:breast_cancer"
    query: str | None = None
    table: str | None = None
    target: str = "target"
    # auto: a numeric target with many distinct values is regression, else classification
    task: Literal["auto", "classification", "regression"] = "auto"
    columns: dict[str, Literal["int", "float", "str", "bool"]] = Field(default_factory=dict)
    # the class f1 and roc_auc score in a binary task (its text, e.g. "yes" or "1");
    # None: the minority class of the training target
    positive_class: str | None = None

    @field_validator("positive_class", mode="before")
    @classmethod
    def _class_text(cls, value: Any) -> Any:
        # a YAML 1 or true names the class "1" / "True"; empty means the default
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        return str(value)

    @field_validator("source")
    @classmethod
    def _source_reference(cls, value: str) -> str:
        # a loader of the user's, path/to/file.py:function (not a URL, not a data file)
        return _check_reference(value) if ".py:" in value and "://" not in value else value


class CleanSettings(_Frozen):
    """Data rules: what validate checks and drops, what the model's pipeline fits.

    Imputation, clipping and encoding are fitted on the train split inside the logged model
    (no leakage, no training/serving skew); validate only checks, profiles and drops rows.
    """

    drop_duplicates: bool = True
    impute: Literal["none", "mean", "median", "most_frequent"] = "median"
    outliers: Literal["none", "clip", "drop"] = "clip"
    outlier_iqr: float = Field(3.0, gt=0)
    max_dropped_share: float = Field(0.5, ge=0, le=1)
    # unparsable cells of a mostly-numeric column: false fails validation, true makes them missing
    coerce: bool = False
    # share of parsable cells above which a text column is read as numeric (or fails/coerces)
    numeric_share: float = Field(0.9, gt=0, le=1)
    # datetime columns: calendar features inside the model, or dropped with a warning
    datetimes: Literal["calendar", "drop"] = "calendar"
    # text columns with more distinct values than this share of rows (free text, ids): dropped
    max_distinct_share: float = Field(0.5, gt=0, le=1)
    # categories kept per text column by the one-hot encoder (the rest: "infrequent")
    max_categories: int = Field(30, ge=2)


class SplitSettings(_Frozen):
    """The prepare step's split."""

    test_size: float = Field(0.2, gt=0, lt=1)
    val_size: float = Field(0.2, gt=0, lt=1)
    seed: int = 42


BUILTIN_ESTIMATORS = ("linear", "random_forest", "gradient_boosting")


def _check_reference(value: str) -> str:
    """A ``path/to/file.py:function`` reference, checked for form only (loaded when used)."""
    from core import usercode

    if not usercode.is_reference(value):
        raise ValueError(f"{value!r}: expected path/to/file.py:function")
    return value.strip()


class SearchDimension(_Frozen):
    """One parameter's search space for ``train.tuning``.

    Exactly one of ``int: [low, high]``, ``float: [low, high]`` (``log: true`` samples on a
    log scale) or ``categorical: [choices]``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True,
                              serialize_by_alias=True)

    int_: tuple[int, int] | None = Field(None, alias="int")
    float_: tuple[float, float] | None = Field(None, alias="float")
    # sample int or float bounds on a log scale (both bounds above 0)
    log: bool = False
    categorical: tuple[Any, ...] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> SearchDimension:
        kinds = [self.int_, self.float_, self.categorical]
        if sum(kind is not None for kind in kinds) != 1:
            raise ValueError("expected one of int: [low, high], float: [low, high] or "
                             "categorical: [choices]")
        bounds = self.int_ if self.int_ is not None else self.float_
        if bounds is not None and bounds[0] > bounds[1]:
            raise ValueError(f"low {bounds[0]} > high {bounds[1]}")
        if self.log and (bounds is None or bounds[0] <= 0):
            raise ValueError("log: true needs int or float bounds above 0")
        if self.categorical is not None and not self.categorical:
            raise ValueError("categorical needs at least one choice")
        return self


class Candidate(_Frozen):
    """One estimator of the sweep: its parameter grid, and its search space when tuning.

    ``estimator`` is a built-in (linear, random_forest, gradient_boosting) or the user's
    factory, ``path/to/file.py:function``, returning an unfitted scikit-learn-compatible
    estimator; the grid's parameters are set on it with ``set_params``. ``space`` is used
    instead of ``grid`` when ``train.tuning`` is set (empty: the project's default space of a
    built-in, the grid's values as choices for the user's estimator).
    """

    estimator: str
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    space: dict[str, SearchDimension] = Field(default_factory=dict)

    @field_validator("estimator")
    @classmethod
    def _known_estimator(cls, value: str) -> str:
        if value in BUILTIN_ESTIMATORS:
            return value
        if ":" in value:
            return _check_reference(value)
        raise ValueError(f"unknown estimator {value!r}; one of: {', '.join(BUILTIN_ESTIMATORS)}"
                         " or path/to/file.py:function")


class FeatureSettings(_Frozen):
    """The user's feature code and the columns always used as features.

    A plain list (``features: [a.py:f]``) is read as ``features.code``.
    """

    # path/to/file.py:function, applied in order inside the model pipeline (before
    # imputation and encoding)
    code: tuple[str, ...] = ()
    # columns used as features even when they look like identifiers or free text
    keep: tuple[str, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _list_is_code(cls, data: Any) -> Any:
        return {"code": data} if isinstance(data, list | tuple) else data

    @field_validator("code")
    @classmethod
    def _references(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_check_reference(v) for v in value)


class CustomMetric(_Frozen):
    """The user's metric: a function of ``(y_true, y_pred)`` and its direction."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    function: str
    greater_is_better: bool
    task: Literal["classification", "regression"]
    needs_proba: bool = False

    @field_validator("function")
    @classmethod
    def _reference(cls, value: str) -> str:
        return _check_reference(value)


class TuningSettings(_Frozen):
    """``train.tuning``: an Optuna study over the candidates' spaces instead of the grid."""

    # trials of the study (a resumed study runs only the ones it lacks)
    n_trials: int = Field(20, ge=1)
    # seconds after which no new trial starts (null: no limit)
    timeout: float | None = Field(None, gt=0)
    # local: trials over train.n_jobs processes; spark: on the Spark cluster (MlflowSparkStudy)
    engine: Literal["local", "spark"] = "local"
    # tpe (seeded from split.seed) or random
    sampler: Literal["tpe", "random"] = "tpe"
    # median pruner on the estimators that report intermediate scores (forests, boosting)
    pruning: bool = True
    # the Spark master of engine spark (null: SPARK_REMOTE, spark-submit's, else local[*])
    spark_master: str | None = None


class TrainSettings(_Frozen):
    """The train step's sweep."""

    metric: str = "auto"
    n_jobs: int = -1
    candidates: tuple[Candidate, ...] = (Candidate(estimator="linear"),)
    # null: the grid sweep; set: an Optuna study over the candidates' search spaces
    tuning: TuningSettings | None = None

    @field_validator("candidates")
    @classmethod
    def _non_empty(cls, value: tuple[Candidate, ...]) -> tuple[Candidate, ...]:
        if not value:
            raise ValueError("at least one candidate is needed")
        return value


class RegisterSettings(_Frozen):
    """Where versions are registered and which aliases they get."""

    # empty: named after the data (projects.presentation.model_name_for_data)
    model_name: str = ""
    challenger_alias: str = "challenger"
    champion_alias: str = "champion"
    # None: automatic (on only for the embedded store with the local profile; the workflow
    # decides, see projects.register.auto_champion_decision); True/False: set explicitly.
    auto_champion: bool | None = None
    # What started the run; recorded as the kind of its alias moves (auto or retrain).
    trigger: Literal["workflow", "retrain"] = "workflow"
    # Why it was started (e.g. the monitoring run that crossed a threshold), for the history.
    trigger_reason: str = ""

    @field_validator("auto_champion", mode="before")
    @classmethod
    def _automatic(cls, value: Any) -> Any:
        # "auto" (or an empty value) spells out the default: the workflow decides
        if isinstance(value, str) and value.strip().lower() in ("", "auto", "none", "null"):
            return None
        return value


class CardSettings(_Frozen):
    """What the model card of every registered version says in the user's own words."""

    # what the model is for and who may rely on it (core.cards; empty: "not stated")
    intended_use: str = ""
    # known limitations, one sentence each
    limitations: list[str] = Field(default_factory=list)


class ServerSettings(_Frozen):
    """Defaults of ``python -m tracking server``."""

    host: str = "127.0.0.1"
    port: int = Field(5000, ge=0, le=65535)
    workers: int = Field(1, ge=1)
    backend_store_uri: str = "sqlite:///mlflow.db"
    artifacts_destination: str = "./mlartifacts"
    allowed_hosts: tuple[str, ...] = ("localhost", "127.0.0.1")


class SageMakerSettings(_Frozen):
    """Defaults of ``python -m serving sagemaker``."""

    region: str = "us-east-1"
    instance_type: str = "ml.m5.large"
    instance_count: int = Field(1, ge=1)
    # MEMORY_MB[:MAX_CONCURRENCY]: new endpoints are serverless (preflight checks the limits)
    serverless: str | None = Field(None, pattern=r"^\d+(:\d+)?$")


# "register" shadows ABCMeta.register on the model class; harmless for a settings section.
warnings.filterwarnings("ignore", message='Field name "register"', category=UserWarning)


class MonitorSettings(_Frozen):
    """Thresholds of ``python -m serving monitor`` (crossing one exits non-zero)."""

    psi_threshold: float = Field(0.2, gt=0)
    p_value: float = Field(0.001, gt=0, lt=1)
    max_drifted_features: int = Field(0, ge=0)
    prediction_psi_threshold: float = Field(0.2, gt=0)
    max_metric_drop: float = Field(0.05, ge=0)
    min_rows: int = Field(50, ge=1)
    experiment: str = "mlops-registry-monitoring"


class CaptureSettings(_Frozen):
    """Request/prediction capture of ``python -m serving serve --capture``."""

    sample_rate: float = Field(1.0, ge=0, le=1)
    max_file_mb: float = Field(16, gt=0)
    max_total_mb: float = Field(1024, gt=0)


class GovernanceSettings(_Frozen):
    """What the tracking server of ``python -m tracking server --auth`` enforces."""

    # Aliases only a release manager or an admin may set or delete (services follow them).
    protected_aliases: tuple[str, ...] = ("champion",)
    # Approvals a move of each alias needs on the server where its model's policy file does not
    # say (aliases.<alias>.approvals): release managers other than the requester and the
    # version's author. The team profile asks one for champion.
    approvals: dict[str, int] = Field(default_factory=dict)


class Settings(_Frozen):
    """The validated settings of one profile."""

    profile: str = DEFAULT_PROFILE
    experiment: str = "mlops-registry"
    cache: bool = True
    # the user's own metrics (core.metrics.register_declared adds them to the catalogue)
    metrics: tuple[CustomMetric, ...] = ()
    data: DataSettings = DataSettings()
    # the user's feature code, and the columns always used as features
    features: FeatureSettings = FeatureSettings()
    clean: CleanSettings = CleanSettings()
    split: SplitSettings = SplitSettings()
    train: TrainSettings = TrainSettings()
    register: RegisterSettings = RegisterSettings()
    card: CardSettings = CardSettings()
    server: ServerSettings = ServerSettings()
    sagemaker: SageMakerSettings = SageMakerSettings()
    monitor: MonitorSettings = MonitorSettings()
    capture: CaptureSettings = CaptureSettings()
    governance: GovernanceSettings = GovernanceSettings()

    @model_validator(mode="after")
    def _metric_names(self) -> Settings:
        # the declared metrics are data here: the command that loads the settings registers them
        # (core.metrics.register_declared); train.metric may name a built-in or a declared one
        from pydantic_core import PydanticCustomError

        from core import metrics

        declared: list[str] = []
        for entry in self.metrics:
            if entry.name in metrics.BUILT_IN or entry.name in declared:
                what = "a built-in metric" if entry.name in metrics.BUILT_IN else "declared twice"
                raise PydanticCustomError("metric_name", "metric {name} is {what}; pick another "
                                          "name", {"name": repr(entry.name), "what": what,
                                                   "key": "metrics"})
            declared.append(entry.name)
        known = ("auto", *metrics.BUILT_IN, *declared)
        if self.train.metric not in known:
            # one line, as "setting train.metric: unknown metric 'x'; known: auto, roc_auc, ..."
            raise PydanticCustomError("unknown_metric", "unknown metric {value}; known: {known}",
                                      {"value": repr(self.train.metric),
                                       "known": ", ".join(known), "key": "train.metric"})
        return self

    @property
    def metric(self) -> str:
        """The selection metric, with ``auto`` resolved for the task (``auto`` while unknown)."""
        from core import metrics

        if self.train.metric != "auto":
            return self.train.metric
        if self.data.task == "auto":
            return "auto"
        return metrics.auto_metric(self.data.task)

    def with_task(self, task: str) -> Settings:
        """These settings with ``data.task`` resolved (``auto`` decided from the data)."""
        return self.model_copy(update={"data": self.data.model_copy(update={"task": task})})

    def user_code(self, step: str | None = None) -> tuple[str, ...]:
        """The ``file.py:function`` references a step runs (every one when ``step`` is None).

        ingest: the loader; train: features, estimators, metrics; evaluate and register:
        metrics (their values decide the comparison and the policy gates).
        """
        from core import usercode

        ingest = (self.data.source,) if usercode.is_reference(self.data.source) else ()
        estimators = tuple(c.estimator for c in self.train.candidates if ":" in c.estimator)
        custom = tuple(m.function for m in self.metrics)
        features = self.features.code
        by_step = {"ingest": ingest, "train": (*features, *estimators, *custom),
                   "evaluate": custom, "register": custom}
        if step is None:
            return tuple(dict.fromkeys((*ingest, *features, *estimators, *custom)))
        return by_step.get(step, ())

    def section_hash(self, *sections: str) -> str:
        """Stable hash of some sections (used in cache keys and lineage tags)."""
        dumped = self.model_dump(mode="json")
        payload = {name: dumped[name] for name in sections} if sections else dumped
        payload.pop("profile", None)
        text = json.dumps(payload, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def conf_dir() -> Path:
    """Folder of the settings files (``MLOPS_CONF_DIR`` or the project's ``conf/``)."""
    env = os.environ.get(CONF_DIR_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[1] / "conf"


def _deep_merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_yaml_mapping(path: Path, what: str = "settings") -> dict:
    """A YAML file that holds a mapping (settings, a policy, a users file), or one-line error.

    Raises:
        SettingsError: not valid YAML (with the parser's first line), or not a mapping.
    """
    try:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise SettingsError(f"{path}: not valid YAML ({first})") from None
    if not isinstance(loaded, dict):
        raise SettingsError(f"{path}: expected a mapping of {what} at the top level")
    return loaded


def _read_yaml(path: Path) -> dict:
    return read_yaml_mapping(path, "settings")


def _is_text(annotation) -> bool:
    """Whether a settings field holds text: ``str``, a Literal of strings, or ``str | None``."""
    import types
    import typing

    origin = typing.get_origin(annotation)
    if annotation is str:
        return True
    if origin is Literal:
        return all(isinstance(arg, str) for arg in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return bool(args) and all(_is_text(a) for a in args)
    return False


def _annotation(parts: list[str]):
    """The type of the setting at ``parts`` (a dotted key split), or None if unknown."""
    import typing

    model: type[BaseModel] | None = Settings
    annotation = None
    for part in parts:
        if model is None:
            # inside a mapping field (e.g. data.columns.NAME): its value type
            if typing.get_origin(annotation) is dict:
                annotation = typing.get_args(annotation)[1]
                continue
            return None
        info = model.model_fields.get(part)
        if info is None:
            return None
        annotation = info.annotation
        model = annotation if isinstance(annotation, type) and issubclass(
            annotation, BaseModel) else None
    return annotation


def parse_overrides(items: list[str] | tuple[str, ...]) -> dict:
    """Turn ``["train.metric=f1", "cache=false"]`` into a nested mapping.

    Values keep the type of their setting: a text setting takes the text as written
    (``data.target=no`` stays ``"no"``, ``data.target=1e3`` stays ``"1e3"``); numbers, flags,
    lists and mappings are read as YAML (``false``, ``3``, ``[1, 2]``) and then validated.
    """
    nested: dict = {}
    for item in items:
        if "=" not in item:
            raise SettingsError(f"override {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if _is_text(_annotation(parts)):
            value = raw
        else:
            try:
                value = yaml.safe_load(raw) if raw.strip() else ""
            except yaml.YAMLError:
                value = raw
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return nested


def _one_line(exc: ValidationError) -> str:
    first = exc.errors()[0]
    # a check across sections names its key in the error's context
    where = (".".join(str(p) for p in first["loc"]) or first.get("ctx", {}).get("key")
             or "settings")
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    extra = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"setting {where}: {message}{extra}"


def load_settings(
    profile: str | None = None,
    overrides: list[str] | tuple[str, ...] | dict = (),
    directory: Path | None = None,
    settings_file: Path | str | None = None,
) -> Settings:
    """Load base + profile + overrides into a frozen :class:`Settings`.

    Args:
        profile: ``local``, ``team`` or ``aws``; defaults to ``$MLOPS_PROFILE`` or ``local``.
        overrides: ``key.sub=value`` strings (or an already nested mapping); they win.
        directory: folder holding ``base.yaml`` and ``profiles/``; defaults to :func:`conf_dir`.
        settings_file: the user's own YAML settings (``--settings``), over base and profile,
            under the overrides; defaults to ``$MLOPS_SETTINGS_FILE``.

    Raises:
        SettingsError: unknown profile, unknown key, wrong type; one line naming the key.
    """
    profile = profile or os.environ.get(PROFILE_ENV) or DEFAULT_PROFILE
    directory = directory or conf_dir()
    profile_file = directory / "profiles" / f"{profile}.yaml"
    if not profile_file.exists():
        known = sorted(p.stem for p in (directory / "profiles").glob("*.yaml"))
        raise SettingsError(f"unknown profile {profile!r}; known profiles: {', '.join(known)}")
    merged = _deep_merge(_read_yaml(directory / "base.yaml"), _read_yaml(profile_file))
    settings_file = settings_file or os.environ.get(SETTINGS_FILE_ENV) or None
    if settings_file:
        path = Path(settings_file).expanduser()
        if not path.is_file():
            raise SettingsError(f"settings file {path}: no such file")
        merged = _deep_merge(merged, _read_yaml(path))
    extra = overrides if isinstance(overrides, dict) else parse_overrides(list(overrides))
    merged = _deep_merge(merged, extra)
    merged["profile"] = profile
    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        raise SettingsError(_one_line(exc)) from None
