"""Where batch scoring writes, and the one rule for what it may replace there.

Both engines of ``python -m serving predict`` (:mod:`serving.batch.local`,
:mod:`serving.batch.spark`) call this module before they write and after they have written,
so the rule holds once for both, for local paths and ``s3://`` alike:

* an output that overlaps the input (the same path, a folder holding it, or a path inside it)
  is refused, whatever the spelling (``s3://`` or ``s3a://``, a trailing slash, a relative or
  ``file:`` path, a symbolic link);
* an existing output is replaced only if the project wrote it: each successful write ends with
  a completion marker (:data:`MARKER`, a JSON file naming every file of the output with its
  size), and an output holding any file the marker does not list, or no marker at all, is
  refused with one line naming such a file. Spark's own ``_SUCCESS`` does not count: any Spark
  job writes one;
* an output folder is replaced by deleting the files its marker lists (the marker last, so an
  interrupted deletion still leaves an output the project recognises), never the folder.

The local engine writes one file, so its marker sits beside it (``.NAME._MLOPS_SUCCESS``);
Spark writes a folder, and its marker is inside (``FOLDER/_MLOPS_SUCCESS``). Readers of Parquet
folders (Spark, pyarrow, pandas) skip files whose names start with ``_`` or ``.``.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from core.errors import MlopsError

MARKER = "_MLOPS_SUCCESS"
WRITER = "python -m serving predict"  # what the marker says wrote the output
_S3 = re.compile(r"^s3[an]?://", re.IGNORECASE)


class OutputError(MlopsError):
    """The output cannot be written without harming what is there; one line (exit 1)."""


@dataclass(frozen=True)
class Location:
    """A file or folder, local or on S3, in one spelling per place.

    Attributes:
        text: as the user wrote it (for messages).
        scheme: ``file`` or ``s3``.
        path: an absolute local path, or ``bucket/key`` without a trailing slash (the form
            pyarrow's file systems take).
    """

    text: str
    scheme: str
    path: str

    @property
    def is_s3(self) -> bool:
        """Whether the location is on S3."""
        return self.scheme == "s3"

    def filesystem(self):
        """The pyarrow file system for the location (S3 with the environment's endpoint)."""
        if self.is_s3:
            return s3_filesystem()
        from pyarrow import fs

        return fs.LocalFileSystem()

    def name(self, path: str) -> str:
        """``path`` (a file system path under this location) as the user would write it."""
        return f"s3://{path}" if self.is_s3 else path


def locate(text: str) -> Location:
    """The :class:`Location` ``text`` names.

    Raises:
        OutputError: a scheme other than local paths, ``file:`` and ``s3://``.
    """
    text = str(text)
    if _S3.match(text):
        return Location(text, "s3", _S3.sub("", text).strip("/"))
    if text.lower().startswith("file:"):
        local = unquote(urlsplit(text).path)
    elif re.match(r"^[a-zA-Z][\w+.-]+://", text):
        raise OutputError(f"{text}: only local paths and s3:// are supported")
    else:
        local = text
    # resolve(): symbolic links and '..' followed, so two spellings of one place compare equal
    return Location(text, "file", str(Path(local).expanduser().resolve()))


def s3_filesystem():
    """The S3 client of pyarrow, with the environment's endpoint (moto, MinIO) and region."""
    from pyarrow import fs

    kwargs = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        kwargs["endpoint_override"] = endpoint
        kwargs["scheme"] = "https" if endpoint.startswith("https") else "http"
    region = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION")
    if region:
        kwargs["region"] = region
    return fs.S3FileSystem(**kwargs)


def overlaps(a: Location, b: Location) -> bool:
    """Whether ``a`` and ``b`` are the same place, or one holds the other."""
    if a.scheme != b.scheme:
        return False
    return a.path == b.path or _inside(a.path, b.path) or _inside(b.path, a.path)


def _inside(child: str, parent: str) -> bool:
    return child.startswith(parent.rstrip("/") + "/")


def marker_path(output: Location, folder: bool) -> str:
    """Where the completion marker of ``output`` is (inside a folder, beside a file)."""
    if folder:
        return f"{output.path}/{MARKER}"
    parent, name = posixpath.split(output.path)
    return posixpath.join(parent, f".{name}.{MARKER}")


def check_output(output: Location, inputs: Location, folder: bool) -> dict[str, int]:
    """Refuse an output that would harm the input or files the project did not write.

    Call it before anything is written. Nothing is changed here.

    Args:
        output: where the job will write.
        inputs: what the job reads.
        folder: the output is a folder of files (Spark) rather than one file (local engine).

    Returns:
        The files (file system paths, with their sizes) of a previous output the project
        wrote there, to be replaced; empty when there is no output yet.

    Raises:
        OutputError: the output overlaps the input, is of the other kind (a file where a
            folder goes, or the reverse), or holds a file the project's marker does not list.
    """
    from pyarrow import fs

    if overlaps(output, inputs):
        raise OutputError(
            f"{output.text}: the output would overlap the input {inputs.text}; "
            "name an output outside it"
        )
    filesystem = output.filesystem()
    found = filesystem.get_file_info(output.path)
    if found.type == fs.FileType.NotFound:
        return {}
    if folder:
        if found.type == fs.FileType.File:
            raise OutputError(f"{output.text}: is a file, not an output folder; name a new output")
        selector = fs.FileSelector(output.path, recursive=True, allow_not_found=True)
        files = {
            f.path: f.size for f in filesystem.get_file_info(selector)
            if f.type == fs.FileType.File
        }  # fmt: skip
    else:
        if found.type != fs.FileType.File:
            raise OutputError(f"{output.text}: is a folder, not a file; name a new output")
        files = {found.path: found.size}
    marker = marker_path(output, folder)
    listed = _read_marker(filesystem, marker)
    # a data file is the more telling name than Spark's bookkeeping (_SUCCESS, .crc files)
    for path in sorted(files, key=lambda p: (posixpath.basename(p)[:1] in "_.", p)):
        if path != marker and (listed is None or listed.get(path) != files[path]):
            why = f"no {MARKER}" if listed is None else f"not listed in {MARKER}"
            raise OutputError(
                f"{output.name(path)}: not written by {WRITER} ({why}); nothing was changed: "
                "move it away or name a new output"
            )
    return files


def _read_marker(filesystem, marker: str) -> dict[str, int] | None:
    """The files (file system paths) and sizes a marker lists; None if no marker of ours."""
    from pyarrow import fs

    if filesystem.get_file_info(marker).type != fs.FileType.File:
        return None
    base = posixpath.dirname(marker)
    try:
        with filesystem.open_input_stream(marker) as stream:
            content = json.loads(stream.read(1 << 24))
        if content.get("written_by") != WRITER:
            return None  # another tool's file of that name
        return {posixpath.join(base, name): int(size) for name, size in content["files"].items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def remove_previous(output: Location, previous: dict[str, int]) -> None:
    """Delete the files of a previous output folder that :func:`check_output` found ours.

    Only those files: one that appeared since stays (and a later check names it). The marker
    goes last, so an interrupted deletion leaves an output still listed by it. (A one-file
    output needs none of this: the new file is moved over it.)
    """
    from pyarrow import fs

    filesystem = output.filesystem()
    marker = marker_path(output, folder=True)
    for path in sorted(previous, key=lambda p: p == marker):
        # a file rewritten since the check (another size) is not the one the marker listed
        info = filesystem.get_file_info(path)
        if info.type == fs.FileType.File and (path == marker or info.size == previous[path]):
            filesystem.delete_file(path)


def write_marker(output: Location, folder: bool) -> None:
    """Record the output just written as the project's: every file it holds, with its size."""
    from pyarrow import fs

    filesystem = output.filesystem()
    marker = marker_path(output, folder)
    base = posixpath.dirname(marker)
    if folder:
        selector = fs.FileSelector(output.path, recursive=True, allow_not_found=True)
        infos = filesystem.get_file_info(selector)
    else:
        infos = [filesystem.get_file_info(output.path)]
    files = {
        posixpath.relpath(f.path, base): f.size
        for f in infos
        if f.type == fs.FileType.File and f.path != marker
    }
    body = json.dumps({"written_by": WRITER, "files": files}, indent=1, sort_keys=True)
    with filesystem.open_output_stream(marker) as out:
        out.write(body.encode())
