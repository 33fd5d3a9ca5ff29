"""``python -m bench``: run every benchmark module in :data:`MODULES` and print one table.

Each module is imported lazily; a module that is missing or fails to import is skipped with a note. Options:
``--quick`` (fewer iterations, CI smoke), ``--json FILE`` (also write the results), ``--only NAME`` (run only that
module; repeatable; ``core``, ``core_bench`` and ``bench.core_bench`` all name the same module).
Exit status 1 when a module's ``run()`` raised; a missed target is reported, not an error (timings are noisy);
130 when stopped by Ctrl-C (one line, no traceback; the servers it started stopped, its temporary folders removed).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

from bench import Row, interrupted, is_baseline, split_name, stop_on_sigterm, unwritable_output

#: Benchmark modules under ``bench/``, run in this order. Add a new one (e.g. an HTTP bench) here.
MODULES: tuple[str, ...] = ("core_bench", "storage_bench", "http_bench", "load_bench")


@dataclass(frozen=True, slots=True)
class Result:
    module: str
    name: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_name: str | None = None
    ratio: float | None = None
    target: float | None = None
    passed: bool | None = None
    at_most: bool = False  # the target is a ceiling (``CEILINGS``): value ≤ target


@dataclass
class Report:
    environment: dict[str, object]
    quick: bool
    results: list[Result]
    notes: list[str]
    failed: list[str]


# -- environment -----------------------------------------------------------------------------------------------
def environment() -> dict[str, object]:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "numpy": np.__version__,
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "platform": f"{platform.system()} {platform.machine()}",
    }


def environment_line(env: Mapping[str, object]) -> str:
    return (
        f"Python {env['python']} ({env['implementation']}), numpy {env['numpy']}, "
        f"{env['cpu_count']} CPUs ({env['cpus_usable']} usable), {env['platform']}"
    )


# -- running modules -------------------------------------------------------------------------------------------
def module_short_name(name: str) -> str:
    """``bench.core_bench``, ``core_bench`` and ``core`` → ``core_bench``."""
    short = name.removeprefix("bench.")
    return short if short.endswith("_bench") else f"{short}_bench"


def load(short: str) -> tuple[ModuleType | None, str | None]:
    """Import ``bench.<short>``; on failure return a note instead (a missing module is not an error)."""
    qualified = f"bench.{short}"
    try:
        return importlib.import_module(qualified), None
    except ModuleNotFoundError as exc:
        if exc.name == qualified:
            return None, f"{short}: not present, skipped"
        return None, f"{short}: failed to import ({exc}), skipped"
    except Exception as exc:
        return None, f"{short}: failed to import ({type(exc).__name__}: {exc}), skipped"


def call_run(module: ModuleType, quick: bool) -> tuple[list[Row], str | None]:
    """Call ``module.run`` (with ``quick`` when it takes it) and check the rows' shape."""
    run = module.run
    note = None
    if "quick" in inspect.signature(run).parameters:
        rows = run(quick=quick)
    else:
        rows = run()
        if quick:
            note = f"{module.__name__}: run() takes no quick flag, ran at full size"
    checked: list[Row] = []
    for row in rows:
        name, value, unit = row
        if not isinstance(name, str) or not isinstance(unit, str):
            raise TypeError(f"{module.__name__}.run() returned a malformed row {row!r}")
        checked.append((name, float(value), unit))
    return checked, note


def attach_baselines(
    module: str, rows: Sequence[Row], targets: Mapping[str, float], ceilings: Mapping[str, float] | None = None
) -> list[Result]:
    """Pair each grouped row with its group's first baseline row (same unit); apply targets (minima) and ceilings
    (maxima)."""
    ceilings = ceilings or {}
    baselines: dict[tuple[str, str], tuple[str, float]] = {}
    for name, value, unit in rows:
        figure, _ = split_name(name)
        if figure is not None and is_baseline(name):
            baselines.setdefault((figure, unit), (name, value))
    results: list[Result] = []
    for name, value, unit in rows:
        figure, _ = split_name(name)
        base = None if figure is None or is_baseline(name) else baselines.get((figure, unit))
        at_most = name not in targets and name in ceilings
        target = ceilings[name] if at_most else targets.get(name)
        passed = None if target is None else value <= target if at_most else value >= target
        results.append(
            Result(
                module=module,
                name=name,
                value=value,
                unit=unit,
                baseline=base[1] if base else None,
                baseline_name=base[0] if base else None,
                ratio=value / base[1] if base and base[1] > 0 else None,
                target=target,
                passed=passed,
                at_most=at_most,
            )
        )
    return results


def run_module(short: str, quick: bool, report: Report) -> None:
    module, note = load(short)
    if module is None:
        report.notes.append(note or short)
        print(f"note: {note}", flush=True)
        return
    print(f"running {short} …", flush=True)
    start = time.perf_counter()
    try:
        rows, note = call_run(module, quick)
    except Exception:
        report.failed.append(short)
        print(f"error: {short}.run() raised:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
        return
    if note:
        report.notes.append(note)
        print(f"note: {note}", flush=True)
    targets, ceilings = getattr(module, "TARGETS", {}), getattr(module, "CEILINGS", {})
    report.results.extend(attach_baselines(short, rows, targets, ceilings))
    print(f"  {short}: {len(rows)} rows in {time.perf_counter() - start:.1f} s", flush=True)


# -- printing --------------------------------------------------------------------------------------------------
def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"


def _target_cell(result: Result) -> str:
    if result.target is None:
        return ""
    return f"{_bound(result)} {'PASS' if result.passed else 'MISS'}"


def _bound(result: Result) -> str:
    return f"{'≤' if result.at_most else '≥'}{_fmt(result.target)}"


def format_table(results: Sequence[Result]) -> str:
    header = f"{'name':<92} {'value':>12} {'unit':<14} {'baseline':>12} {'ratio':>7}  target"
    lines = [header, "-" * len(header)]
    module = figure = None
    for r in results:
        if r.module != module:
            module, figure = r.module, None
            lines.append(f"[{module}]")
        group, variant = split_name(r.name)
        if group is not None and group != figure:
            lines.append(f"{group}")
        figure = group
        label = f"  {variant}" if group is not None else r.name
        ratio = f"{r.ratio:.2f}×" if r.ratio is not None else ""
        cells = f"{_fmt(r.value):>12} {r.unit:<14} {_fmt(r.baseline):>12} {ratio:>7}  {_target_cell(r)}"
        lines.append(f"{label:<92} {cells}".rstrip())
    return "\n".join(lines)


def format_summary(report: Report) -> str:
    checked = [r for r in report.results if r.target is not None]
    lines = [f"targets: {sum(bool(r.passed) for r in checked)} of {len(checked)} met"]
    lines += [f"  {'PASS' if r.passed else 'MISS'} {r.name}: {_fmt(r.value)} {r.unit} ({_bound(r)})" for r in checked]
    lines += [f"note: {n}" for n in report.notes]
    lines += [f"FAILED: {m}" for m in report.failed]
    return "\n".join(lines)


# -- entry point -----------------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description="Run NPO's benchmarks; print one table.")
    parser.add_argument("--quick", action="store_true", help="fewer iterations (CI smoke, < 30 s)")
    parser.add_argument("--json", metavar="FILE", type=Path, help="also write the results as JSON to FILE")
    parser.add_argument(
        "--only",
        metavar="NAME",
        action="append",
        help=f"run only this module (repeatable); one of {', '.join(MODULES)}",
    )
    args = parser.parse_args(argv)
    if args.json is not None and (problem := unwritable_output(args.json)):
        parser.error(f"--json: {problem}")
    if args.only:
        args.only = [module_short_name(n) for n in args.only]
        unknown = [n for n in args.only if n not in MODULES]
        if unknown:
            parser.error(f"unknown module(s) {', '.join(unknown)}; known: {', '.join(MODULES)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    stop_on_sigterm()
    try:
        return run_all(args)
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: the modules' servers and temporary folders are gone by now
        return interrupted("python -m bench", exc)


def run_all(args: argparse.Namespace) -> int:
    report = Report(environment(), args.quick, [], [], [])
    print(environment_line(report.environment), f"— {'quick' if args.quick else 'full'} run", flush=True)
    started = time.perf_counter()
    for short in MODULES:
        if not args.only or short in args.only:
            run_module(short, args.quick, report)
    print()
    print(format_table(report.results))
    print()
    print(format_summary(report))
    print(f"total {time.perf_counter() - started:.1f} s")
    if args.json:
        payload = {**asdict(report), "results": [asdict(r) for r in report.results]}
        args.json.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
