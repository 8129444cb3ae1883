"""What differs between a version and its re-run: packages, machine, predictions, and why.

The comparison half of ``registry reproduce`` (:mod:`registry.reproduce` checks out and re-runs
the recorded code): the installed packages and this machine against the recorded ones, both
models' predictions on the version's test split bit for bit (they predict in a child without
credentials, :mod:`core.sandbox`), and the causes to suspect, in order, when they differ.
"""

from __future__ import annotations

from pathlib import Path

from registry.errors import RegistryError
from registry.lineage import Lineage
from registry.versions import download

#: Steps whose cache parts are compared when the predictions differ.
MODEL_STEPS = ("ingest", "validate", "prepare", "train")
#: Differing rows shown.
SHOWN_ROWS = 5


def package_changes(recorded: dict[str, str]) -> list[tuple[str, str, str]]:
    """``(package, recorded, installed)`` for every recorded package installed differently."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for name, was in sorted(recorded.items()):
        try:
            now = version(name)
        except PackageNotFoundError:
            now = "not installed"
        if now != was:
            out.append((name, was, now))
    return out


def describe_library(lib: dict) -> str:
    """``0.3.30, SkylakeX, 2 threads`` for one native library of :func:`core.lineage.machine`."""
    parts = [lib.get("version"), lib.get("architecture"),
             f"{lib['num_threads']} threads" if lib.get("num_threads") else None]
    return ", ".join(str(p) for p in parts if p) or "-"


def machine_changes(recorded: dict, here: dict) -> list[str]:
    """How this machine differs from the recorded one in what can change a float's last bits."""
    if not recorded:
        return []
    out = []
    for key, what in (("machine", "CPU type"), ("cpus", "CPUs")):
        if recorded.get(key) != here.get(key):
            out.append(f"{what} {recorded.get(key)} recorded, {here.get(key)} here")
    was = [f"{lib.get('internal_api')} {describe_library(lib)}"
           for lib in recorded.get("libraries") or []]
    now = [f"{lib.get('internal_api')} {describe_library(lib)}"
           for lib in here.get("libraries") or []]
    if was != now:
        out.append(f"native libraries {'; '.join(was) or '-'} recorded, "
                   f"{'; '.join(now) or '-'} here")
    return out


def _artifact_location(local, model_uri: str) -> str:
    """Where a logged model (``models:/<model id>``) of the throwaway store keeps its files.

    MLflow resolves a ``models:/`` URI through the process's default tracking store, which is
    the registry's here, not the re-run's.
    """
    model_id = model_uri.removeprefix("models:/")
    if model_uri.startswith("models:/") and "/" not in model_id and "@" not in model_id:
        return local.get_logged_model(model_id).artifact_location
    return model_uri


def predict_both(client, local, lin: Lineage, model_uri: str, X, where: Path) -> tuple:
    """Labels and probabilities of the registered and the re-run model on ``X``.

    Both models are the version's code: they predict in a child without credentials
    (:mod:`core.sandbox`); this process only downloads their files.

    Raises:
        RegistryError: a model cannot be downloaded, loaded, or cannot predict.
    """
    from core.sandbox import SandboxError, predict_models
    from registry.scoring import download_model

    where.mkdir(parents=True, exist_ok=True)
    data = where / "test.parquet"
    X.to_parquet(data)
    models = {"registered": download_model(client, lin.name, lin.version, where / "registered"),
              "reproduced": download(local, _artifact_location(local, model_uri),
                                     where / "reproduced")}
    jobs = [{"model": key, "data": str(data), "columns": None, "proba": True}
            for key in models]
    try:
        answers = predict_models(models, jobs, where / "child")
    except SandboxError as exc:
        raise RegistryError(str(exc)) from None
    out = []
    for key, answer in zip(models, answers, strict=True):
        if answer["error"]:
            raise RegistryError(f"the {key} model cannot predict: {answer['error']}")
        out.append((answer["labels"], answer["proba"]))
    return tuple(out)


def compare_predictions(old: tuple, new: tuple, index) -> tuple[list[dict], int, float | None]:
    """Rows whose label or probabilities differ in any bit, the first :data:`SHOWN_ROWS` of them.

    Returns:
        The first differing rows (``row``, ``registered``, ``reproduced``, ``proba_delta``),
        how many rows differ, and the largest absolute probability difference.
    """
    import numpy as np

    old_labels, old_proba = old
    new_labels, new_proba = new
    differs = np.asarray(old_labels != new_labels).reshape(len(old_labels), -1).any(axis=1)
    delta = None
    per_row = None
    if old_proba is not None and new_proba is not None and old_proba.shape == new_proba.shape:
        per_row = np.abs(old_proba - new_proba).reshape(len(old_proba), -1).max(axis=1)
        differs |= np.asarray(old_proba != new_proba).reshape(len(old_proba), -1).any(axis=1)
        delta = float(per_row.max()) if len(per_row) else 0.0
    elif (old_proba is None) != (new_proba is None):
        differs[:] = True
    rows = []
    for i in np.flatnonzero(differs)[:SHOWN_ROWS]:
        rows.append({"row": int(index[i]) if hasattr(index[i], "__int__") else str(index[i]),
                     "registered": old_labels[i].item() if hasattr(old_labels[i], "item")
                     else old_labels[i],
                     "reproduced": new_labels[i].item() if hasattr(new_labels[i], "item")
                     else new_labels[i],
                     "proba_delta": None if per_row is None else float(per_row[i])})
    return rows, int(differs.sum()), delta


def diagnose(lin: Lineage, rerun: Lineage, changes: list[tuple[str, str, str]],
             machine: list[str] = ()) -> list[str]:
    """What differs between the original and the re-run, in the order to suspect it.

    Data digest first (the rows), then the code of each step that shapes the model, then the
    package versions, then the settings each step read, then the machine (CPU type and count,
    BLAS/OpenMP libraries: last bits); nothing: the training is not deterministic under these
    settings.
    """
    causes = []
    if lin.data.digest and rerun.data.digest and lin.data.digest != rerun.data.digest:
        causes.append(f"data digest: {lin.data.digest} recorded, {rerun.data.digest} re-read")
    for part, what in (("code", "code"), ("packages", "package versions"),
                       ("settings", "settings")):
        if part == "packages" and changes:
            causes.append("package versions: " + ", ".join(
                f"{n} {was} recorded, {now} installed" for n, was, now in changes))
            continue
        for step in MODEL_STEPS:
            a, b = lin.step(step), rerun.step(step)
            if a and b and a.cache.get(part) and b.cache.get(part) \
                    and a.cache[part] != b.cache[part]:
                causes.append(f"{what} of step {step}: {a.cache[part]} recorded, "
                              f"{b.cache[part]} in the re-run")
                break
    causes.extend(f"machine: {change}" for change in machine)
    return causes
