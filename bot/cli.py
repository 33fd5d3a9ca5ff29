"""The ``npo-bot`` command line: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bot.db_cli import add_db_parser, run_db
from bot.demo.cli import add_demo_parser, run_demo
from bot.evaluate.cli import add_evaluate_parser, output_folder, run_evaluate, seed_number, writable_folder
from bot.jobs.cli import add_report_parser, run_report
from bot.output import INTERRUPTED_EXIT, counted, print_result, run_printing
from bot.policy_cli import add_policy_parser, run_policy
from npo import __version__

if TYPE_CHECKING:
    from bot.config import Settings


ENV_FILE_HELP = "settings file, which must exist (default ./.env, read if there is one)"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="npo-bot",
        description="NPO: a Slack bot that learns from on-call "
        "engineers' clicks which fault recommendations to surface.",
    )
    parser.add_argument("--version", action="version", version=f"npo-bot {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    sim = sub.add_parser("simulate", help="reproduce the paper's experiments (metrics.json, plots, table)")
    sim.add_argument("--episodes", type=_positive_int, default=2000, help="episodes per run (default 2000)")
    sim.add_argument("--seeds", type=_positive_int, default=20, help="independent seeds (default 20)")
    sim.add_argument("--seed", type=seed_number, default=0, help="base random seed, an integer >= 0 (default 0)")
    sim.add_argument(
        "--out", type=output_folder, default=Path("simulation-out"), help="output folder (default ./simulation-out)"
    )
    sim.add_argument(
        "--no-plots", action="store_true", help="write no PNG plots (an earlier run's in --out are deleted)"
    )
    sim.add_argument("--quiet", action="store_true", help="print nothing but errors")

    serve = sub.add_parser("serve", help="run the Slack bot's HTTP service (settings from the environment / .env)")
    serve.add_argument("--env-file", type=Path, default=None, help=ENV_FILE_HELP)

    socket = sub.add_parser("socket", help="run the bot in Socket Mode (no public URL; needs SLACK_APP_TOKEN)")
    socket.add_argument("--env-file", type=Path, default=None, help=ENV_FILE_HELP)

    add_demo_parser(sub)

    replay = sub.add_parser("replay", help="decide every prediction in a JSONL or CSV file")
    replay.add_argument("file", type=Path, help="predictions, one JSON object per line, or CSV with a header")
    replay.add_argument("--format", choices=("jsonl", "csv"), help="default: from the file extension")
    replay.add_argument("--env-file", type=Path, default=None, help=ENV_FILE_HELP)

    add_db_parser(sub)
    add_report_parser(sub)
    add_evaluate_parser(sub)
    add_policy_parser(sub)
    return parser


def _settings(args: argparse.Namespace) -> Settings | None:
    from bot.config import ConfigError, NoSettingsFile, load_settings, settings_file  # noqa: PLC0415 - fast --help

    try:
        return load_settings(os.environ, settings_file(args.env_file))
    except NoSettingsFile as exc:
        print(f"npo-bot {args.command}: {exc}", file=sys.stderr)
        return None
    except ConfigError as exc:
        print(f"npo-bot {args.command}: {exc}", file=sys.stderr)
        return None


def cmd_serve(args: argparse.Namespace) -> int:
    import logging  # noqa: PLC0415

    from bot.serve import serve  # noqa: PLC0415

    settings = _settings(args)
    if settings is None:
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return serve(settings)


def cmd_socket(args: argparse.Namespace) -> int:
    import logging  # noqa: PLC0415

    from bot.socket_mode import socket_mode  # noqa: PLC0415

    settings = _settings(args)
    if settings is None:
        return 2
    if not settings.slack_app_token:
        print("npo-bot socket: SLACK_APP_TOKEN is required (an app-level token starting with xapp-)", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return socket_mode(settings)


def cmd_replay(args: argparse.Namespace) -> int:
    import time  # noqa: PLC0415

    from bot.app import build_store, load_policy  # noqa: PLC0415
    from bot.ingest.replay import UnreadableFile, conflict_lines, decide_in_chunks, read_predictions  # noqa: PLC0415
    from bot.service import NpoService  # noqa: PLC0415

    settings = _settings(args)
    if settings is None:
        return 2
    try:
        parsed = read_predictions(args.file, received_at=time.time(), fmt=args.format)
    except UnreadableFile as exc:  # missing, a folder, not UTF-8 (the line named): nothing is decided
        print(f"npo-bot replay: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("npo-bot replay: interrupted while reading the file; nothing was decided", file=sys.stderr)
        return INTERRUPTED_EXIT
    for error in parsed.errors:
        print(f"{args.file}: {error}", file=sys.stderr)
    policy = load_policy(settings)
    try:
        opened = build_store(settings, policy)  # creates or upgrades the schema: one transaction, undone if cut
    except KeyboardInterrupt:
        print("npo-bot replay: interrupted while opening the database; nothing was decided", file=sys.stderr)
        return INTERRUPTED_EXIT
    with opened as store:
        import numpy as np  # noqa: PLC0415

        service = NpoService(store, policy, rng=np.random.default_rng())
        run = decide_in_chunks(service.decide, parsed.predictions)
    results = run.results
    conflicts = conflict_lines(parsed, results)
    for conflict in conflicts:
        print(f"{args.file}: {conflict}", file=sys.stderr)
    verdicts: dict[str, int] = {}
    for r in results:
        name = "conflicting" if r.conflict else "duplicate" if r.duplicate else r.decision.verdict.value
        verdicts[name] = verdicts.get(name, 0) + 1
    summary = ", ".join(f"{n} {v}" for v, n in sorted(verdicts.items())) or "nothing decided"
    # The decisions are stored before the summary is printed: a reader gone away (141) or a full stdout (1) loses
    # the summary only, and an interruption still says how far the replay got.
    printed = print_result(f"{len(results)} decided ({summary}); {len(parsed.errors)} malformed line(s)", "replay")
    if run.failed is not None:
        print(
            f"npo-bot replay: the database refused a write ({run.failed}) after {len(results)} of "
            f"{len(parsed.predictions)} predictions were decided and stored; once it can be written, run the same "
            "command again to decide the rest (those already stored are recognised by id and counted as duplicates)",
            file=sys.stderr,
        )
        return 1
    if run.interrupted:
        print(
            f"npo-bot replay: interrupted after {len(results)} of {len(parsed.predictions)} predictions were decided "
            "and stored; run the same command again to decide the rest (those already stored are recognised by id "
            "and counted as duplicates, not decided twice)",
            file=sys.stderr,
        )
        return INTERRUPTED_EXIT
    return printed or (1 if parsed.errors or conflicts else 0)


# The largest array a simulation allocates per episode and seed, in bytes: the world's draw of scenario keys
# compares every episode with every key (npo.sim.world.make_world, 50 keys; one byte each), the rest are float64.
_SIMULATE_BYTES_PER_CELL = 64


def cmd_simulate(args: argparse.Namespace) -> int:
    """Run ``npo-bot simulate``: 0, 1 (a file in ``--out`` could not be written), 2 (an option refused, or more
    episodes than memory holds), ``INTERRUPTED_EXIT`` (Ctrl-C) or ``SIGPIPE_EXIT`` (the reader went away); every
    error one line on stderr."""
    from bot.progress import ProgressBar  # noqa: PLC0415 - keep `npo-bot --help` fast
    from bot.simulate import simulate, table  # noqa: PLC0415

    if args.episodes < 10:
        print("npo-bot simulate: --episodes must be at least 10", file=sys.stderr)
        return 2
    too_much = (
        f"npo-bot simulate: not enough memory for --episodes {args.episodes} × --seeds {args.seeds}; "
        "ask for fewer episodes or seeds"
    )
    if args.episodes * args.seeds * _SIMULATE_BYTES_PER_CELL > sys.maxsize:
        # Past what an array can address numpy refuses with a ValueError, not a MemoryError: the same line.
        print(too_much, file=sys.stderr)
        return 2
    problem = writable_folder(args.out, "--out")
    if problem is not None:
        print(f"npo-bot simulate: {problem}", file=sys.stderr)
        return 2
    progress = None if args.quiet else ProgressBar()
    try:
        result, elapsed = simulate(
            args.episodes, args.seeds, args.out, base_seed=args.seed, plots=not args.no_plots, progress=progress
        )
    except KeyboardInterrupt:
        lead = "\n" if progress is not None and progress.enabled else ""  # end the progress bar's line
        print(f"{lead}npo-bot simulate: interrupted; {args.out} does not hold this run's results", file=sys.stderr)
        return INTERRUPTED_EXIT
    except MemoryError:
        lead = "\n" if progress is not None and progress.enabled else ""
        print(f"{lead}{too_much}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file in --out: a folder in its place, the disk full, the folder removed meanwhile
        lead = "\n" if progress is not None and progress.enabled else ""
        where = next((f for f in (exc.filename2, exc.filename) if f is not None), args.out)  # a rename: its target
        print(f"{lead}npo-bot simulate: cannot write {where}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    if args.quiet:
        return 0
    return print_result(
        f"{args.episodes} episodes × {counted(args.seeds, 'seed')} in {elapsed:.1f} s; "
        f"drift at episode {result.drift_episode}; best fixed τ in hindsight: {result.best_fixed}\n"
        f"{table(result)}\n"
        f"\nwrote {args.out / 'metrics.json'}" + ("" if args.no_plots else " and PNG plots"),
        "simulate",
    )


_SERVICE_COMMANDS = {"serve": cmd_serve, "replay": cmd_replay, "socket": cmd_socket}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "simulate":
        return cmd_simulate(args)
    if args.command == "db":
        return run_db(args)
    if args.command == "report":
        return run_report(args)
    if args.command == "evaluate":
        return run_evaluate(args)
    if args.command == "policy":
        return run_policy(args)
    if args.command in _SERVICE_COMMANDS:
        from npo.policy import PolicyError  # noqa: PLC0415 - keep `npo-bot --help` fast
        from storage import StorageError  # noqa: PLC0415

        try:
            return _SERVICE_COMMANDS[args.command](args)
        except StorageError as exc:  # the database cannot be used (a missing folder, a read-only place, …)
            print(f"npo-bot {args.command}: {exc}", file=sys.stderr)
            return 2
        except PolicyError as exc:  # NPO_POLICY_FILE is refused at start-up (its field and line named)
            print(f"npo-bot {args.command}: the policy file is refused: {exc}", file=sys.stderr)
            return 2
    if args.command == "demo":
        return run_printing(lambda: run_demo(args), "demo")
    raise AssertionError(f"unhandled command {args.command}")  # argparse refuses unknown commands first


if __name__ == "__main__":
    raise SystemExit(main())
