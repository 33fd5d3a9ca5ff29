"""Ctrl-C in a benchmark run: the terminal sends SIGINT to the run's whole process group (the runner, its client
processes, the servers it started). The run stops its servers (killed if they do not stop in time), removes its
temporary folders, says "interrupted" in one line and exits 130; it printed a ``KeyboardInterrupt`` traceback from
every process and exited 1. No speed is measured or asserted here."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from slack_testing import reaped_processes, wait_for

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the bench package lives at the repository root, beside the installed ones

import bench  # noqa: E402

# The command with the signal dispositions of a terminal, whatever the test runner's (an inherited SIG_IGN for
# SIGINT would hide what Ctrl-C does).
_LAUNCH = (
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "module = sys.argv[1]; sys.argv = [module, *sys.argv[2:]]; runpy.run_module(module, run_name='__main__')"
)


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    yield from reaped_processes()


def _stat(pid: int) -> tuple[int, str, str] | None:
    """(parent pid, state, start time) of ``pid``, None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[1]), fields[0], fields[19]


def _descendants(root: int) -> dict[int, str]:
    """Every live process below ``root``: pid → its start time (to tell it from a later process given its pid)."""
    children: dict[int, list[int]] = {}
    starts: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            children.setdefault(stat[0], []).append(int(entry.name))
            starts[int(entry.name)] = stat[2]
    found, todo = {}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found[child] = starts[child]
            todo.append(child)
    return found


def _alive(pid: int, start: str) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[2] == start and stat[1] != "Z"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process tree from /proc")
@pytest.mark.parametrize(
    "command",
    [["bench", "--only", "http", "--quick"], ["bench.load_bench", "--seconds", "1"]],
    ids=["python -m bench", "python -m bench.load_bench"],
)
@pytest.mark.parametrize(
    ("how", "code", "said"),
    [("ctrl-c", 130, "interrupted"), ("sigterm", 143, "terminated")],
    ids=["Ctrl-C to the group", "SIGTERM to the run alone"],
)
def test_ctrl_c_stops_a_benchmark_run_with_one_line_exit_130_and_nothing_left(
    command: list[str], how: str, code: int, said: str, tmp_path: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    """Ctrl-C reaches the whole process group; SIGTERM (``kill``, a CI job's time limit) only the run, whose
    servers live in process groups of their own: both stop the run cleanly (SIGTERM: exit 143, "terminated")."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out, err = tmp_path / "out.log", tmp_path / "err.log"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-c", _LAUNCH, *command],
            cwd=ROOT,
            env=os.environ | {"TMPDIR": str(tmp), "PYTHONPATH": str(ROOT)},
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,  # a process group of its own, as a terminal's foreground job
        )
    started.append(proc)
    # Under way: its server answers and its client processes are up.
    wait_for(
        lambda: (
            proc.poll() is None
            and any("--serve" in _cmdline(pid) for pid in _descendants(proc.pid))
            and sum("multiprocessing" in _cmdline(pid) for pid in _descendants(proc.pid)) >= 2
            and any(tmp.iterdir())
        ),
        timeout=120,
        interval=0.1,
    )
    time.sleep(0.5)  # the server's start-up awaited (not a timing assertion: any moment of the run will do)
    below = _descendants(proc.pid)
    if how == "ctrl-c":
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGTERM)
    status = proc.wait(120)
    error = err.read_text(errors="replace")
    assert status == code, (status, error[-3000:])
    assert "Traceback" not in error and "KeyboardInterrupt" not in error, error[-3000:]
    assert [line for line in error.splitlines() if line.strip()] == [f"python -m {command[0]}: {said}"], error
    wait_for(lambda: not [pid for pid, start in below.items() if _alive(pid, start)], timeout=10)
    assert list(tmp.iterdir()) == []  # its temporary folders removed


def test_a_process_that_does_not_stop_in_time_is_killed(started: list[subprocess.Popen[bytes]]) -> None:
    stubborn = subprocess.Popen(
        [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, "
         "flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    started.append(stubborn)
    assert stubborn.stdout is not None and stubborn.stdout.readline()  # SIGTERM ignored from here on
    bench.stop_process(stubborn, timeout=0.5)
    assert stubborn.returncode == -signal.SIGKILL
    stubborn.stdout.close()
