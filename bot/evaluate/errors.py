"""The error every adapter raises for unreadable or malformed input: it names the file (and line) at fault."""

from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """A data folder or file that cannot be read as the chosen format."""

    def __init__(self, path: Path | str, message: str, line: int | None = None) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")
        self.path = Path(path)
        self.line = line
        self.message = message
