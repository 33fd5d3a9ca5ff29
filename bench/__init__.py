"""NPO benchmarks: ``python -m bench`` runs every benchmark module and prints one table.

Module contract: a module ``bench.<name>`` has ``run()`` or ``run(quick: bool = False)`` returning a list of
``(name, value, unit)`` rows, and prints nothing. Two optional conventions let the runner show baselines and
targets:

* **groups**: a row named ``"<figure> | <variant>"`` belongs to ``<figure>``; the first row of a group whose
  variant starts with ``"baseline"`` (and has the same unit) is the plain baseline every other row of the group
  is compared with (``ratio = value / baseline``). Rows measured side by side in the same run belong in one
  group, because these machines are noisy (±30 % run to run): quote ratios, not absolute numbers across runs.
* **targets**: a module attribute ``TARGETS: Mapping[str, float]`` maps a row name to the minimum it must reach,
  and ``CEILINGS: Mapping[str, float]`` one to the maximum it may reach (a latency).

Register a new module by adding its name to :data:`bench.__main__.MODULES`.
"""

from __future__ import annotations

import os
from pathlib import Path

Row = tuple[str, float, str]

SEPARATOR = " | "
BASELINE_PREFIX = "baseline"


def row_name(figure: str, variant: str) -> str:
    """The name of a row in ``figure``'s group (see the module docstring)."""
    return f"{figure}{SEPARATOR}{variant}"


def split_name(name: str) -> tuple[str | None, str]:
    """``(figure, variant)`` of a grouped row name, ``(None, name)`` for an ungrouped one."""
    figure, sep, variant = name.partition(SEPARATOR)
    return (figure, variant) if sep else (None, name)


def is_baseline(name: str) -> bool:
    """Whether a grouped row is a baseline row."""
    figure, variant = split_name(name)
    return figure is not None and variant.startswith(BASELINE_PREFIX)


def unwritable_output(path: Path) -> str | None:
    """Why a ``--json FILE`` cannot be written, or None: checked before anything runs, so a long run does not end
    in a traceback with its results unwritten."""
    if path.is_dir():
        return f"{path} is a folder"
    folder = path.parent
    if not folder.is_dir():
        return f"the folder {folder} does not exist"
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        return f"{path} cannot be written"
    return None
