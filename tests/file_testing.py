"""Files a process cannot write, for tests of what NPO does on read-only media or with a file owned by another user."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def unwritable(path: Path) -> Iterator[None]:
    """``path`` made a file this process cannot open for writing, as on read-only media or a file owned by another
    user: read-only by mode, and immutable (``chattr +i``) where the mode does not bind (root); skipped when neither
    does. Writable again afterwards."""
    path.chmod(0o444)
    immutable = False
    try:
        if os.access(path, os.W_OK) and shutil.which("chattr"):
            immutable = subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False).returncode == 0
        if os.access(path, os.W_OK):
            pytest.skip("cannot make a file unwritable here (root without chattr +i)")
        yield
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        path.chmod(0o644)
