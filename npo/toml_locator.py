"""Source lines of a TOML document's fields, found by scanning its text (``tomllib`` reports no positions): the
policy parser names the line of every field it refuses."""

from __future__ import annotations

import re
import tomllib

# One part of a dotted key: a basic string (escapes allowed), a literal string or a bare key.
_KEY_PART = r"""(?:"(?:[^"\\]|\\.)*"|'[^']*'|[A-Za-z0-9_\-]+)"""
_KEY_PART_RE = re.compile(_KEY_PART)
_HEADER_RE = re.compile(r"^\s*(\[\[?)\s*([^\[\]]+?)\s*\]\]?\s*(?:#.*)?$")
_KEY_LINE_RE = re.compile(rf"^\s*({_KEY_PART}(?:\s*\.\s*{_KEY_PART})*)\s*=")

_Path = tuple[str, ...]


def _key_part(token: str) -> str:
    """A key part as TOML reads it: a basic string unescaped, a literal string unquoted, a bare key as it is."""
    if token.startswith('"'):
        try:
            return str(tomllib.loads(f"k = {token}")["k"])
        except tomllib.TOMLDecodeError:
            return token[1:-1]
    if token.startswith("'"):
        return token[1:-1]
    return token


def _split_key(raw: str) -> _Path:
    """The parts of a dotted key or a table header's name; a dot inside quotes is part of its name."""
    return tuple(_key_part(token) for token in _KEY_PART_RE.findall(raw))


class _Locator:
    """Finds the source line of a field by scanning the text (tomllib reports no positions)."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        # (0-based line index, header path, is array-of-tables)
        self.headers: list[tuple[int, _Path, bool]] = []
        for i, line in enumerate(self.lines):
            match = _HEADER_RE.match(line)
            if match:
                self.headers.append((i, _split_key(match.group(2)), match.group(1) == "[["))

    def _section(self, path: _Path, index: int | None) -> tuple[int | None, range] | None:
        """The header line index (None for the root) and the body lines of a section, if it exists."""
        if not path:
            end = self.headers[0][0] if self.headers else len(self.lines)
            return None, range(end)
        seen = 0
        for n, (i, header, is_array) in enumerate(self.headers):
            if header != path or (index is not None) != is_array:
                continue
            if index is not None and seen < index:
                seen += 1
                continue
            end = self.headers[n + 1][0] if n + 1 < len(self.headers) else len(self.lines)
            return i, range(i + 1, end)
        return None

    def _key_line(self, body: range, key: str, *, prefix: bool = False) -> int | None:
        for i in body:
            match = _KEY_LINE_RE.match(self.lines[i])
            if match:
                parts = _split_key(match.group(1))
                if parts == (key,) or (prefix and parts[0] == key):
                    return i
        return None

    def _dotted_line(self, full: _Path) -> int | None:
        """The 0-based line of the key whose whole path (its table header's and its own dotted parts) is ``full``:
        ``rules.deny_targets.actions = …`` at the root, ``deny_targets.actions = …`` under ``[rules]``; else the
        line of the longest key that starts ``full`` (an inline table holding it); None when no line does. Lines
        under an array-of-tables header are not looked at."""
        starts = {i: (header, is_array) for i, header, is_array in self.headers}
        table: _Path | None = ()
        best: tuple[int, int] | None = None  # (length of the matched path, line)
        for i, line in enumerate(self.lines):
            if i in starts:
                header, is_array = starts[i]
                table = None if is_array else header
                continue
            match = _KEY_LINE_RE.match(line) if table is not None else None
            if match is None or table is None:
                continue
            whole = (*table, *_split_key(match.group(1)))
            if whole == full:
                return i
            if len(whole) < len(full) and full[: len(whole)] == whole and (best is None or len(whole) > best[0]):
                best = (len(whole), i)
        return None if best is None else best[1]

    def line_of(self, path: _Path, index: int | None, key: str | None) -> int | None:
        """1-based line of ``key`` in section ``path`` (the ``index``-th one for arrays of tables); falls
        back to the key written with dots (or the inline table holding it), to the section header, then to the
        line that names the section in its parent."""
        section = self._section(path, index)
        if section is not None and key is not None:
            found = self._key_line(section[1], key)
            if found is not None:
                return found + 1
        if section is None and key is not None and index is None:  # no [path] header: a dotted key or inline table
            found = self._dotted_line((*path, key))
            if found is not None:
                return found + 1
        if key is not None and index is None:
            # the field may itself be a table: [rules.unknown_rule] or [[rules.blast_radius]]
            for i, header, _ in self.headers:
                if header[: len(path) + 1] == (*path, key):
                    return i + 1
        if section is not None:
            return None if section[0] is None else section[0] + 1
        if not path:
            return None
        parent = self._section(path[:-1], None)
        if parent is not None:
            found = self._key_line(parent[1], path[-1], prefix=True)
            if found is not None:
                return found + 1
        return self.line_of(path[:-1], None, None)

    def field_at(self, line: int) -> str:
        """The dotted field named on a 1-based line (for TOML syntax errors), or its section."""
        i = line - 1
        section: _Path = ()
        array_index: dict[_Path, int] = {}
        label = ""
        for h, header, is_array in self.headers:
            if h > i:
                break
            section = header
            label = ".".join(header)
            if is_array:
                array_index[header] = array_index.get(header, -1) + 1
                label = f"{label}[{array_index[header]}]"
        if 0 <= i < len(self.lines):
            match = _KEY_LINE_RE.match(self.lines[i])
            if match and not _HEADER_RE.match(self.lines[i]):
                key = ".".join(_split_key(match.group(1)))
                return f"{label}.{key}" if section else key
        return label or "(document)"
