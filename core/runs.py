"""Run lifecycle: runs end FINISHED, FAILED or KILLED, never stay RUNNING.

A crashed step ends FAILED; Ctrl-C (SIGINT) or SIGTERM ends KILLED. Every run that is still
open when the signal arrives (parent and children) is closed with that status.

A SIGKILL (or a lost machine) closes nothing, so every run records where it runs: the host, the
process id and a start marker of that process (boot id + start time, which a reused pid does
not share), plus a heartbeat tag refreshed while the run is open. :func:`reap_dead_runs`
(called when a workflow starts) ends FAILED the RUNNING runs of this host whose process is gone;
:func:`find_stale_runs` + :func:`close_runs` (``python -m tracking runs reap``) also close runs
of other hosts not heard from for a given time.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import getpass
import logging
import os
import re
import signal
import socket
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from core import names

_logger = logging.getLogger(__name__)

HOST_TAG = names.HOST_TAG
PID_TAG = names.PID_TAG
# "<boot id>:<start time in clock ticks since boot>" of the process: a reused pid differs.
START_TAG = names.PID_START_TAG
# The pid namespace: two containers with one hostname do not share their pids.
PID_NS_TAG = names.PID_NS_TAG
# "<host>/<pid>/<start marker>" of the process that resumed a run it did not create (the
# workflow inside `mlflow run`): the run is open while either process lives.
RESUMED_BY_TAG = names.RESUMED_BY_TAG
HEARTBEAT_TAG = names.HEARTBEAT_TAG
REAPED_TAG = names.REAPED_TAG
NOTE_TAG = "mlflow.note.content"
# Set by `mlflow run` on the run it creates before starting the entry point's command.
PROJECT_BACKEND_TAG = "mlflow.project.backend"

# Seconds between heartbeats of the open runs (a background thread of the process).
HEARTBEAT_SECONDS = 300.0
SHELLS = frozenset({"bash", "sh", "dash", "zsh", "ksh", "fish"})
_PROC = Path("/proc")


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when SIGTERM arrives, so runs end KILLED."""


def _raise_terminated(signum, frame):  # noqa: ARG001
    raise Terminated(f"received signal {signum}")


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into an exception (like Ctrl-C) for the duration of the block."""
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# --------------------------------------------------------------------------- processes
@dataclass(frozen=True)
class ProcessMark:
    """Where a process runs and what tells it apart from a later one with the same pid."""

    host: str
    pid: int
    start: str = ""  # "<boot id>:<start ticks>", empty where /proc is missing
    pid_ns: str = ""

    def tags(self) -> dict[str, str]:
        """The run tags that record this process."""
        tags = {HOST_TAG: self.host, PID_TAG: str(self.pid), START_TAG: self.start}
        if self.pid_ns:
            tags[PID_NS_TAG] = self.pid_ns
        return tags

    def token(self) -> str:
        """One-string form, ``host/pid/start`` (the value of ``mlops.resumed_by``)."""
        return f"{self.host}/{self.pid}/{self.start}"


@functools.cache
def _boot_id() -> str:
    try:
        return (_PROC / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


@functools.cache
def _pid_ns() -> str:
    try:
        return os.readlink(_PROC / "self/ns/pid")
    except OSError:
        return ""


def _stat(pid: int) -> tuple[str, str, int, int] | None:
    """``(comm, state, ppid, start ticks)`` of ``pid`` from /proc, None if there is none."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # comm (field 2) is in parentheses and may itself hold spaces or parentheses
    comm = text[text.index("(") + 1 : text.rindex(")")]
    rest = text[text.rindex(")") + 2 :].split()
    return comm, rest[0], int(rest[1]), int(rest[19])  # fields 3, 4 and 22


def process_mark(pid: int | None = None) -> ProcessMark | None:
    """The mark of process ``pid`` (default: this one) on this host, None if it is gone."""
    pid = os.getpid() if pid is None else pid
    host = socket.gethostname()
    if not (_PROC / "self/stat").exists():  # no /proc (macOS): pid only
        return ProcessMark(host, pid) if _pid_exists(pid) else None
    stat = _stat(pid)
    if stat is None:
        return None
    boot = _boot_id()
    return ProcessMark(host, pid, f"{boot}:{stat[3]}" if boot else "", _pid_ns())


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def process_alive(pid: int, start: str) -> bool:
    """Whether process ``pid`` of this host still runs and is the one marked ``start``.

    A zombie counts as gone; so does a pid now held by a later process (other start marker,
    or another boot).
    """
    if pid <= 0:
        return False
    if not (_PROC / "self/stat").exists():
        return _pid_exists(pid)
    stat = _stat(pid)
    if stat is None or stat[1] in ("Z", "X"):
        return False
    return not start or start == f"{_boot_id()}:{stat[3]}"


def launcher_mark() -> ProcessMark | None:
    """The ``mlflow run`` process that started this one (through ``bash -c``), if alive."""
    stat = _stat(os.getpid())
    if stat is None:
        return None
    parent = _stat(stat[2])
    ppid = stat[2]
    if parent is not None and parent[0] in SHELLS:
        ppid = parent[2]
    return process_mark(ppid) if ppid > 1 else None


def _same_host(tags: dict) -> bool:
    """Whether the process a run records lives where this one does (its pids are ours)."""
    if tags.get(HOST_TAG) != socket.gethostname():
        return False
    ns = tags.get(PID_NS_TAG, "")
    return not ns or not _pid_ns() or ns == _pid_ns()


def _alive_token(token: str) -> bool | None:
    """Liveness of a ``host/pid/start`` token: None when it is not of this host."""
    try:
        host, pid, start = token.split("/", 2)
        pid_num = int(pid)
    except ValueError:
        return None
    if host != socket.gethostname():
        return None
    return process_alive(pid_num, start)


def dead_here(tags: dict) -> str | None:
    """Why a run with ``tags`` is dead on this host, or None (alive, or not ours to judge).

    Only runs recording a process of this host are judged; such a run is dead when its process
    and the one that resumed it (if any) are gone.
    """
    if not _same_host(tags):
        return None
    try:
        pid = int(tags.get(PID_TAG, ""))
    except ValueError:
        return None
    if process_alive(pid, tags.get(START_TAG, "")):
        return None
    resumer = tags.get(RESUMED_BY_TAG)
    if resumer:
        alive = _alive_token(resumer)
        if alive is None or alive:
            return None
        return f"process {pid} and {resumer.split('/')[1]} on {tags[HOST_TAG]} are gone"
    return f"process {pid} on {tags[HOST_TAG]} is gone"


# --------------------------------------------------------------------------- heartbeat
def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


class _Heartbeat:
    """Refreshes ``mlops.heartbeat`` of this process's open runs every HEARTBEAT_SECONDS.

    A daemon thread: it stops beating exactly when the process dies, whatever kills it, so a
    run of another host is "not heard from" only once its process is gone (or hung).
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._runs: dict[str, str] = {}  # run id -> tracking URI
        self._stop: threading.Event | None = None

    def add(self, run_id: str, uri: str) -> None:
        with self._lock:
            self._runs[run_id] = uri
            if self._stop is None:
                self._stop = threading.Event()
                threading.Thread(target=self._loop, args=(self._stop,), daemon=True,
                                 name="mlops-heartbeat").start()  # fmt: skip

    def remove(self, run_id: str) -> None:
        with self._lock:
            self._runs.pop(run_id, None)
            if not self._runs and self._stop is not None:
                self._stop.set()
                self._stop = None

    def _loop(self, stop: threading.Event) -> None:
        import mlflow

        clients: dict[str, object] = {}
        while not stop.wait(HEARTBEAT_SECONDS):
            with self._lock:
                runs = list(self._runs.items())
            for run_id, uri in runs:
                try:
                    client = clients.setdefault(uri, mlflow.MlflowClient(tracking_uri=uri))
                    client.set_tag(run_id, HEARTBEAT_TAG, _now_iso())
                except Exception as exc:  # a missed beat only makes the run look older
                    _logger.debug("heartbeat of run %s failed: %s", run_id, exc)


_heartbeat = _Heartbeat()


def _resume_tags(run) -> dict[str, str]:
    """Tags for a run this process resumes: its launcher if untagged, and who resumed it."""
    me = process_mark()
    tags = {HEARTBEAT_TAG: _now_iso()}
    if me is not None:
        tags[RESUMED_BY_TAG] = me.token()
    if HOST_TAG not in run.data.tags:
        # `mlflow run` created it and waits for us: it is the run's own process. Any other
        # creator is unknown, and then this process is the only one that will close the run.
        owner = launcher_mark() if PROJECT_BACKEND_TAG in run.data.tags else None
        owner = owner or me
        if owner is not None:
            tags.update(owner.tags())
    return tags


@contextlib.contextmanager
def run_with_status(**start_run_kwargs) -> Iterator:
    """``mlflow.start_run`` that ends FINISHED, KILLED (Ctrl-C/SIGTERM) or FAILED (error).

    MLflow's own context manager ends an interrupted run FAILED; an interrupt is not a failure
    of the code, so it is recorded as KILLED. The run is tagged with this host, process and a
    heartbeat (refreshed while it is open), so that a run whose process dies without closing
    it can be reaped.
    """
    import mlflow

    if start_run_kwargs.get("run_id"):
        tags = start_run_kwargs.pop("tags", None) or {}
        run = mlflow.start_run(**start_run_kwargs)
        mlflow.set_tags({**tags, **_resume_tags(run)})  # one write with the caller's tags
    else:
        me = process_mark()
        tags = {**(start_run_kwargs.pop("tags", None) or {}), HEARTBEAT_TAG: _now_iso(),
                **(me.tags() if me else {})}  # fmt: skip
        run = mlflow.start_run(tags=tags, **start_run_kwargs)
    run_id = run.info.run_id
    _heartbeat.add(run_id, mlflow.get_tracking_uri())
    try:
        yield run
    except KeyboardInterrupt as exc:
        _end_run(run, "KILLED", failure=exc)
        raise
    except BaseException as exc:
        _end_run(run, "FAILED", failure=exc)
        raise
    else:
        _end_run(run, "FINISHED")
    finally:
        _heartbeat.remove(run_id)


#: ``(run id, run name)`` of the runs this process could not close (its server was gone).
_unclosed: list[tuple[str, str]] = []


def unclosed_runs() -> list[tuple[str, str]]:
    """``(run id, run name)`` of the runs this process left RUNNING, innermost first.

    ``python -m tracking runs reap`` closes them once the server answers (their process is
    gone by then).
    """
    return list(_unclosed)


def _end_run(run, status: str, failure: BaseException | None = None) -> None:
    """End the active run ``run`` with ``status``; a server that is gone leaves it RUNNING.

    A run ending after a failure is closed if the server answers at once: when the failure
    was an unreachable server, the process gives up on it (one attempt per request from now
    on, :func:`core.connection.give_up_on_server`) instead of retrying each close for
    another minute. A close that fails is remembered (:func:`unclosed_runs`) and never hides
    the failure that ended the run. Without a failure (the run ends FINISHED), a close that
    fails is the error.
    """
    import mlflow

    from core.connection import give_up_on_server, unreachable

    if failure is not None and unreachable(failure):
        give_up_on_server()
    try:
        # MLflow takes the run off the active stack before it writes the status, so a
        # failed write leaves nothing active behind
        mlflow.end_run(status)
    except Exception as exc:
        _unclosed.append((run.info.run_id, run.data.tags.get("mlflow.runName")
                          or getattr(run.info, "run_name", "") or ""))
        gone = unreachable(exc)
        if gone:
            give_up_on_server()
        if failure is None:
            raise
        # a server that is gone is reported once, with every run left, by core.cli.run_group
        _logger.log(logging.DEBUG if gone else logging.WARNING, "run %s left RUNNING: %s",
                    run.info.run_id, str(exc).strip().splitlines()[0][:300])


# ------------------------------------------------------------------------------ reaping
@dataclass
class StaleRun:
    """A RUNNING run to close, and why."""

    run: object  # mlflow.entities.Run
    reason: str
    last_heard_ms: int
    silent: bool = False  # closed for its silence (another host), not for a dead process

    @property
    def run_id(self) -> str:
        """The run's id."""
        return self.run.info.run_id


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """Seconds in a duration such as ``90s``, ``30m``, ``2h``, ``1d``, ``1w`` or ``1h30m``.

    Raises:
        ValueError: the text is not such a duration, or it is zero.
    """
    compact = str(text).strip().lower()
    parts = _DURATION.findall(compact)
    if not parts or _DURATION.sub("", compact).strip():
        raise ValueError(f"{text!r} is not a duration: use e.g. 90s, 30m, 2h, 1d or 1h30m")
    seconds = sum(float(n) * _UNITS[unit] for n, unit in parts)
    if seconds <= 0:
        raise ValueError(f"{text!r}: the duration must be longer than zero")
    return seconds


def format_duration(seconds: float) -> str:
    """``3d 4h``, ``2h 5m``, ``12m``, ``40s``: the two largest units of a duration."""
    seconds = int(max(seconds, 0))
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size or (unit == "s" and not parts):
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return " ".join(parts[:2])


def last_heard_ms(run) -> int:
    """When the run last gave a sign of life: its start, a metric or its heartbeat (ms)."""
    times = [run.info.start_time or 0]
    times += [m.timestamp or 0 for m in getattr(run.data, "_metric_objs", None) or ()]
    beat = run.data.tags.get(HEARTBEAT_TAG)
    if beat:
        with contextlib.suppress(ValueError):
            times.append(int(dt.datetime.fromisoformat(beat).timestamp() * 1000))
    return max(times)


def _running_runs(client, experiment_ids: list[str], extra_filter: str = "") -> Iterator:
    flt = "attributes.status = 'RUNNING'" + (f" and {extra_filter}" if extra_filter else "")
    for i in range(0, len(experiment_ids), 100):
        token = None
        while True:
            page = client.search_runs(experiment_ids[i : i + 100], filter_string=flt,
                                      max_results=1000, page_token=token)  # fmt: skip
            yield from page
            token = page.token
            if not token:
                break


def find_stale_runs(
    client,
    experiment_ids: Iterable[str],
    older_than: float | None = None,
    now_ms: int | None = None,
    exclude: Iterable[str] = (),
) -> list[StaleRun]:
    """RUNNING runs to close: dead on this host, or (with ``older_than``) silent too long.

    A run recording a process of this host is judged by that process only: dead when it is
    gone, never closed while it lives, whatever its age. Any other run (another host, or no
    process recorded) is stale when not heard from for ``older_than`` seconds; with
    ``older_than`` None such runs are left alone.

    Args:
        client: an ``mlflow.MlflowClient``.
        experiment_ids: the experiments to look in.
        older_than: seconds of silence after which a run of another host is stale.
        now_ms: the current time in ms (default: now).
        exclude: run ids never to close.
    """
    import time

    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    # without an age limit only this host's runs can be stale: let the store filter them
    host_only = f"tags.`{HOST_TAG}` = '{socket.gethostname()}'" if older_than is None else ""
    skip = set(exclude)
    stale = []
    for run in _running_runs(client, [str(e) for e in experiment_ids], host_only):
        if run.info.run_id in skip:
            continue
        heard = last_heard_ms(run)
        tags = run.data.tags
        if _same_host(tags) and PID_TAG in tags:
            why = dead_here(tags)
            if why:
                stale.append(StaleRun(run, why, heard))
        elif older_than is not None and now_ms - heard > older_than * 1000:
            silent = format_duration((now_ms - heard) / 1000)
            host = tags.get(HOST_TAG, "an unrecorded host")
            why = f"not heard from for {silent} (limit {format_duration(older_than)}) on {host}"
            stale.append(StaleRun(run, why, heard, silent=True))
    return stale


def _who(context: str) -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        user = "unknown"
    return f"{context} ({user}@{socket.gethostname()}, pid {os.getpid()})"


def close_runs(client, stale: Iterable[StaleRun], context: str) -> tuple[list[str], list[str]]:
    """End each run FAILED, with why, who and when in ``mlops.reaped`` and the run's note.

    The end time is the run's last sign of life. A run that ended meanwhile is left as it is.

    Returns:
        The ids of the closed runs, and one line per run that could not be closed.
    """
    from mlflow.entities import RunTag
    from mlflow.exceptions import MlflowException

    closed, failed = [], []
    who = _who(context)
    for item in stale:
        try:
            run = client.get_run(item.run_id)
            if run.info.status != "RUNNING":
                continue
            when = _now_iso()
            reason = f"{item.reason}; closed FAILED by {who} at {when}"
            note = run.data.tags.get(NOTE_TAG, "")
            note = (note + "\n\n" if note else "") + f"**Reaped:** {reason}."
            client.log_batch(item.run_id, tags=[RunTag(REAPED_TAG, reason[:5000]),
                                                RunTag(NOTE_TAG, note)])  # fmt: skip
            end = max(item.last_heard_ms, run.info.start_time or 0)
            client.set_terminated(item.run_id, "FAILED", end_time=end)
        except MlflowException as exc:
            failed.append(f"run {item.run_id}: {str(exc).strip().splitlines()[0]}")
            continue
        closed.append(item.run_id)
    return closed, failed


def reap_dead_runs(client, experiment_id: str, exclude: Iterable[str] = ()) -> list[str]:
    """End FAILED the RUNNING runs of the experiment whose process is gone from this host.

    Called when a workflow starts. Runs of other hosts, runs without a recorded process and
    runs whose process lives (this one's included) are never touched. A failure to search or
    close is logged and does not stop the caller.

    Returns:
        The ids of the runs closed.
    """
    from mlflow.exceptions import MlflowException

    try:
        stale = find_stale_runs(client, [experiment_id], exclude=exclude)
    except MlflowException as exc:
        _logger.warning("could not look for runs left RUNNING: %s", str(exc).splitlines()[0])
        return []
    closed, failed = close_runs(client, stale, "workflow start")
    for item in stale:
        if item.run_id in closed:
            name = item.run.data.tags.get("mlflow.runName", "")
            _logger.info("reaped run %s (%s): %s; ended FAILED", item.run_id, name, item.reason)
    for line in failed:
        _logger.warning("could not reap %s", line)
    return closed
