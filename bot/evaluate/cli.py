"""``npo-bot evaluate``: replay a labelled real-world fault data set through the NPO loop and report the figures.

Wired into ``bot/cli.py`` by ``add_evaluate_parser(sub)`` in ``build_parser`` and ``run_evaluate(args)`` in ``main``;
the formats ``--format`` offers are ``FORMATS`` of ``bot/evaluate/formats.py``.

The data folder is ``--data``, else ``$NPO_DATA_DIR/<format>``, else, in a source checkout,
``<repository>/../shared/data/<format>``; an installed copy (a wheel in site-packages) has no repository, so no default.
``--json`` prints one object::

    {"npo": M, "fixed": {"0.5": M, …, "0.9": M}, "surface_all": M, "fixed_loop": {"0.5": M, …},
     "seeds": [...], "data": {...}, "settings": {...}}

``fixed`` is the static alerting rule (surface when confidence ≥ τ, no learning), ``surface_all`` every prediction,
``fixed_loop`` the ablation (NPO's loop with the bandit pinned to τ); see ``bot/evaluate/runner.py``.

where each ``M`` holds the mean over seeds of ``precision``, ``recall``, ``f1``, ``override_rate``, ``surfaced``,
``windows_caught``, ``lead_time_median_min``, ``early_share``, ``l_align_first_quarter``, ``l_align_last_quarter``,
``true_l_align_first_quarter``, ``true_l_align_last_quarter``, ``f_monitor``, ``monitor_triggers`` (proposals
raised), ``proposals_approved``, ``models_promoted`` (0 without ``--retrain``), the per-quarter lists
``l_align_quarters``, ``true_l_align_quarters``, ``tau_quarters``, and ``ci95`` / ``per_seed`` for every scalar.
``settings`` names every choice of the run, ``retrain`` and ``model_prior_strength`` among them.

``--retrain``: an approved proposal retrains the feature model as Approve does in production (fit on the latest
answers, promote only if it beats the current model and the base rate on the most recent ones, restart the keys'
step sizes on a promotion), and the monitor proposes as production's job does (L_align over the answers since its
last proposal), so ``monitor_triggers`` and ``f_monitor`` are counted that way too; a promoted model is the prior of
young keys with ``--model-prior-strength`` pseudo-answers (which needs retraining: without a model there is no
prior).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.output import print_result  # the one handling of stdout every npo-bot command shares

if TYPE_CHECKING:
    from npo.evaluate.data import Dataset

DATA_ENV = "NPO_DATA_DIR"
REPO_ROOT = Path(__file__).resolve().parents[2]


def source_checkout() -> Path | None:
    """The repository these modules run from (``REPO_ROOT`` holding NPO's ``pyproject.toml``), or None when they are
    installed: in site-packages the folder above ``bot/`` is site-packages itself, and its parent no data folder."""
    try:
        with (REPO_ROOT / "pyproject.toml").open("rb") as stream:
            project = tomllib.load(stream).get("project")
    except (OSError, tomllib.TOMLDecodeError):
        return None
    return REPO_ROOT if isinstance(project, dict) and project.get("name") == "npo" else None


def default_data_root() -> Path | None:
    """``$NPO_DATA_DIR``, else ``<repository>/../shared/data`` in a source checkout, else None (installed)."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env)
    checkout = source_checkout()
    return checkout.parent / "shared" / "data" if checkout is not None else None


def _unit(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {value}")
    return value


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


MAX_HORIZON_MIN = 7 * 24 * 60.0  # a week: far beyond any fault warning worth surfacing, and finite in seconds


def _horizon(text: str) -> float:
    value = _positive(text)
    if value > MAX_HORIZON_MIN:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_HORIZON_MIN:g} minutes (7 days), got {value:g}")
    return value


def _operator_share(text: str) -> float:
    from npo.evaluate.engineers import EngineerConfig, adversarial_share_fits  # noqa: PLC0415

    value = _unit(text)
    n = EngineerConfig().n_operators
    if not adversarial_share_fits(value, n):
        raise argparse.ArgumentTypeError(
            f"expected a multiple of 1/{n} (a share of the {n} simulated operators: 0, 0.1, …, 1), got {value:g}"
        )
    return value


def _integer_from(minimum: int, what: str, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in [``minimum``, ``maximum``], refused as "expected ``what``" otherwise."""

    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
        return value

    return convert


seed_number = _integer_from(0, "an integer >= 0")  # a random seed (numpy refuses negative seeds)
MAX_SEEDS = 10_000  # a typo's 1e9 would fill the memory with the per-seed figures before the first seed ran
_seed_count = _integer_from(1, f"a positive integer, at most {MAX_SEEDS}", MAX_SEEDS)


def output_folder(text: str) -> Path:
    """A folder to write into (created when missing): refused when it, or the nearest existing path above it, is
    not a folder."""
    path = Path(text)
    for at in (path, *path.parents):
        if at.exists():
            if not at.is_dir():
                where = "" if at == path else f"{path}: "
                raise argparse.ArgumentTypeError(f"{where}{at} is an existing file, not a folder")
            break
    return path


def data_folder(text: str) -> Path:
    """``--data``: an existing folder. A file or a path that does not exist is refused as every other option is
    (the command's usage, then one line)."""
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"no such folder: {path}")
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a file, not a folder")
    return path


def _pseudo_count(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 100], got {text!r}") from None
    if not (math.isfinite(value) and 0.0 <= value <= 100.0):
        raise argparse.ArgumentTypeError(f"expected a number in [0, 100], got {value}")
    return value


def add_evaluate_parser(subparsers: Any) -> None:
    """Register ``evaluate`` on the ``npo-bot`` subparsers object."""
    from bot.evaluate.formats import FORMATS  # noqa: PLC0415

    ev = subparsers.add_parser(
        "evaluate", help="replay a labelled real-world fault data set through the loop and report what was surfaced"
    )
    ev.add_argument(
        "--data",
        type=data_folder,
        default=None,
        help=f"data folder (default: ${DATA_ENV}/<format>, else <repository>/../shared/data/<format> from a checkout)",
    )
    ev.add_argument("--format", choices=sorted(FORMATS), default=None, help="adapter (default: from the layout, nab)")
    ev.add_argument("--noise", type=_unit, default=0.1, help="ε: share of answers flipped (default 0.1)")
    ev.add_argument("--skip-rate", type=_unit, default=0.3, help="q: share of recommendations nobody answers (0.3)")
    ev.add_argument(
        "--adversarial",
        type=_operator_share,
        default=0.0,
        help="share of the 10 simulated operators answering against the truth: a multiple of 0.1 (default 0)",
    )
    ev.add_argument("--seed", type=seed_number, default=0, help="first seed, an integer >= 0 (default 0)")
    ev.add_argument(
        "--seeds",
        type=_seed_count,
        default=5,
        help=f"number of seeds: --seed, --seed+1, …, at most {MAX_SEEDS} (default 5)",
    )
    ev.add_argument(
        "--horizon",
        type=_horizon,
        default=None,
        help=f"minutes a recommendation looks ahead, at most {MAX_HORIZON_MIN:g} (7 days) (default 60)",
    )
    ev.add_argument(
        "--db", type=output_folder, default=None, help="run against SQLite files in this folder (default: in memory)"
    )
    # The method's ablations, switches and numbers (a default of None leaves the loop's own default).
    for flag, default, text in (
        (
            "--full-information",
            None,
            "the bandit learns every τ arm from each answer through the known score (default: the loop's default)",
        ),
        (
            "--pool-keys",
            None,
            "partial pooling: a new or thin scenario key scores with its fault type's m (default: off)",
        ),
        (
            "--name-dimension",
            True,
            "a multivariate prediction's fault type names the dimension that deviated most (default: on)",
        ),
        (
            "--retrain",
            None,
            "an approved retraining proposal fits the feature model and promotes it only if it beats the current one"
            " and the base rate on the latest answers, as Approve does in production; the monitor then proposes as"
            " production's does, on the answers since its last proposal (default: off)",
        ),
    ):
        ev.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=text)
    for flag, kind, text in (
        (
            "--prior-events",
            _pseudo_count,
            "pseudo-predictions of unknown truth in the bandit's ignorance prior; 0 = flat Beta(1, 1) (default 2)",
        ),
        (
            "--pool-strength",
            _positive,
            "n₀: how many answers the fault type's m counts as at most in a key's pooled m; needs --pool-keys"
            " (default 2)",
        ),
        (
            "--model-prior-strength",
            _pseudo_count,
            "pseudo-answers the promoted feature model counts as in a young key's m; needs --retrain (default 5)",
        ),
    ):
        ev.add_argument(flag, type=kind, default=None, help=text)
    ev.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    ev.add_argument("--quiet", action="store_true", help="no progress on stderr")
    ev.set_defaults(evaluate_usage=ev.format_usage)  # printed before an option refused after parsing


def resolve_data(args: argparse.Namespace) -> tuple[Path | None, str | None]:
    """The data folder and format; no folder (None) when nothing names one: installed, without ``$NPO_DATA_DIR``."""
    if args.data is not None:
        return Path(args.data), args.format
    fmt = args.format or "nab"
    root = default_data_root()
    return (root / fmt if root is not None else None), fmt


INTERRUPTED_EXIT = 130  # 128 + SIGINT: what a shell reports for a command stopped with Ctrl-C
DATA_ERROR_EXIT = 1  # the data (or a file written during the run) refused; 2 is a command line argparse refuses


def writable_folder(path: Path, option: str) -> str | None:
    """Create ``path`` (a folder to write into) and check that a file can be created there; None, or the one-line
    reason naming ``option`` (``--db``, ``--out``)."""
    import tempfile  # noqa: PLC0415

    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"{option} {path}: cannot create the folder: {exc.strerror or exc}"
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        return f"{option} {path}: cannot write into the folder: {exc.strerror or exc}"
    return None


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies below it (symbolic links resolved, ``path`` need not exist)."""
    return path.resolve().is_relative_to(folder.resolve())


def _short_series_note(dataset: Dataset, min_history_s: float) -> str | None:
    """A note naming the series too short for the predictor to emit anything on (None: none is)."""
    short = [s for s in dataset.series if float(s.times[-1] - s.times[0]) < min_history_s]
    if not short:
        return None
    named = ", ".join(f"{s.name} ({(s.times[-1] - s.times[0]) / 3600:.1f} h)" for s in short[:5])
    more = f" and {len(short) - 5} more" if len(short) > 5 else ""
    span, them = ("spans", "it") if len(short) == 1 else ("span", "them")
    return (
        f"note: {len(short)} of {len(dataset.series)} series {span} less than the {min_history_s / 3600:g} h of "
        f"history the predictor needs before its first prediction, so nothing is predicted on {them}: {named}{more}"
    )


def _early_windows_note(data: dict[str, Any]) -> str | None:
    """A note on the labelled windows that close before the predictor can predict on their series (None: none):
    every condition misses them, and recall counts them."""
    count = data.get("windows_before_predictor_ready", 0)
    if not count:
        return None
    names = data.get("series_of_windows_before_predictor_ready", [])
    named = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return (
        f"note: {count} of {data['windows']} labelled windows close before the predictor has the history to predict "
        f"on their series (a day of scores, after its first baseline), so every condition misses them and recall "
        f"counts them: {named}"
    )


def _refused(args: argparse.Namespace, message: str) -> int:
    """An option refused once the command line is parsed (options that only together are wrong, a ``--db`` that
    cannot be used): the command's usage, then one line, exit 2 — as argparse refuses an option."""
    usage = getattr(args, "evaluate_usage", None)  # set by add_evaluate_parser
    if usage is not None:
        print(usage(), end="", file=sys.stderr)
    print(f"npo-bot evaluate: {message}", file=sys.stderr)
    return 2


def run_evaluate(args: argparse.Namespace) -> int:
    """Run ``npo-bot evaluate``; the exit code is 0, ``DATA_ERROR_EXIT`` (the data refused, a ``--db`` file failing
    during the run), 2 (an option refused), ``INTERRUPTED_EXIT`` (Ctrl-C) or ``SIGPIPE_EXIT``. Every error is one
    line on stderr (a refused option: the command's usage, then that line)."""
    try:
        return _run_evaluate(args)
    except KeyboardInterrupt:
        lead = "\n" if sys.stderr.isatty() else ""  # after the terminal's ^C or the progress line
        print(f"{lead}npo-bot evaluate: interrupted; nothing was printed", file=sys.stderr)
        return INTERRUPTED_EXIT


def _run_evaluate(args: argparse.Namespace) -> int:
    from bot.evaluate.errors import DataError  # noqa: PLC0415 - keep `npo-bot --help` fast
    from bot.evaluate.formats import read_dataset  # noqa: PLC0415
    from bot.evaluate.runner import (  # noqa: PLC0415
        POOL_KEYS,
        RETRAIN,
        EvaluationSettings,
        evaluate,
        evaluation_loop_config,
        finite,
    )
    from bot.evaluate.table import table  # noqa: PLC0415
    from npo.evaluate.engineers import EngineerConfig  # noqa: PLC0415
    from npo.evaluate.predictor import PredictorConfig  # noqa: PLC0415
    from npo.evaluate.replay import ReplaySettings  # noqa: PLC0415
    from npo.types import InvalidRecord  # noqa: PLC0415
    from storage import StorageError  # noqa: PLC0415

    retrain = RETRAIN if args.retrain is None else args.retrain
    if args.model_prior_strength is not None and not retrain:
        return _refused(args, "--model-prior-strength needs --retrain: without a promoted model there is no prior")
    if args.pool_strength is not None and not (POOL_KEYS if args.pool_keys is None else args.pool_keys):
        return _refused(args, "--pool-strength needs --pool-keys: without pooling no key weighs its fault type's m")
    folder, fmt = resolve_data(args)
    if folder is None:
        print(
            f"npo-bot evaluate: no data folder: pass --data DIR, or set ${DATA_ENV} to the folder holding "
            f"{fmt}/ (the default <repository>/../shared/data exists only in a source checkout)",
            file=sys.stderr,
        )
        return 2
    if not folder.exists():
        print(f"npo-bot evaluate: no data folder {folder} (pass --data or set ${DATA_ENV})", file=sys.stderr)
        return 2
    if not folder.is_dir():  # the default folder (argparse refuses a --data that is no folder)
        print(
            f"npo-bot evaluate: {folder} is a file, not a data folder (pass --data or set ${DATA_ENV})", file=sys.stderr
        )
        return 2
    try:
        engineers = EngineerConfig(noise=args.noise, skip_rate=args.skip_rate, adversarial=args.adversarial)
    except InvalidRecord as exc:
        return _refused(args, str(exc))
    if args.db is not None:
        if _inside(args.db, folder):
            return _refused(
                args,
                f"--db {args.db} is inside the data folder {folder}, which is only read: choose a folder outside it",
            )
        problem = writable_folder(args.db, "--db")
        if problem is not None:
            return _refused(args, problem)
    try:
        dataset = read_dataset(folder, fmt, horizon_s=None if args.horizon is None else args.horizon * 60.0)
    except (DataError, InvalidRecord) as exc:
        print(f"npo-bot evaluate: {exc}", file=sys.stderr)
        return DATA_ERROR_EXIT
    if "note" in dataset.notes:
        print(f"npo-bot evaluate: note: {dataset.notes['note']}", file=sys.stderr)
    predictor = PredictorConfig()
    note = _short_series_note(dataset, predictor.min_history_s)
    if note is not None:
        print(f"npo-bot evaluate: {note}", file=sys.stderr)
    seeds = tuple(range(args.seed, args.seed + args.seeds))
    settings = EvaluationSettings(
        engineers=engineers,
        predictor=predictor,
        seeds=seeds,
        db_dir=args.db,
        loop=evaluation_loop_config(
            full_information=args.full_information,
            prior_events=args.prior_events,
            pool_keys=args.pool_keys,
            pool_strength=args.pool_strength,
            model_prior_strength=args.model_prior_strength,
        ),
        replay=ReplaySettings(name_dimension=args.name_dimension, retrain=retrain),
    )

    show = not (args.quiet or args.json) and sys.stderr.isatty()

    def progress(message: str) -> None:
        print(f"\r{message:<40}", end="", file=sys.stderr, flush=True)

    try:
        result = evaluate(dataset, settings, progress=progress if show else None)
    except (OSError, StorageError) as exc:  # only --db writes files: one was taken, removed or refused mid-run
        if args.db is None:
            raise
        if show:
            print(file=sys.stderr)
        print(f"npo-bot evaluate: --db {args.db}: {_os_message(exc)}", file=sys.stderr)
        return DATA_ERROR_EXIT
    if show:
        print("\r" + " " * 40 + "\r", end="", file=sys.stderr)
    early = _early_windows_note(result["data"])
    if early is not None:
        print(f"npo-bot evaluate: {early}", file=sys.stderr)
    if args.json:
        return print_result(json.dumps(finite(result), indent=1, allow_nan=False), "evaluate")
    return print_result(table(result), "evaluate")


def _os_message(exc: Exception) -> str:
    """``[Errno 21] Is a directory: 'x'`` as ``x: Is a directory``; other errors as they print."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc)
