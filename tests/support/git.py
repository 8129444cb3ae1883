"""git in a test's own repository folder."""

from __future__ import annotations

import subprocess


def git(*args: str, cwd) -> subprocess.CompletedProcess:
    """Run ``git ARGS`` in ``cwd``; a failure raises with git's output captured."""
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True)
