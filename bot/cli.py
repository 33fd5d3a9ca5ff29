"""The ``npo-bot`` command line: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from bot.db_cli import add_db_parser, run_db
from npo import __version__


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
    sim.add_argument("--seed", type=int, default=0, help="base random seed (default 0)")
    sim.add_argument(
        "--out", type=Path, default=Path("simulation-out"), help="output folder (default ./simulation-out)"
    )
    sim.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    sim.add_argument("--quiet", action="store_true", help="print nothing but errors")

    add_db_parser(sub)
    return parser


def cmd_simulate(args: argparse.Namespace) -> int:
    from bot.progress import ProgressBar  # noqa: PLC0415 - keep `npo-bot --help` fast
    from bot.simulate import simulate, table  # noqa: PLC0415

    if args.episodes < 10:
        print("npo-bot simulate: --episodes must be at least 10", file=sys.stderr)
        return 2
    progress = None if args.quiet else ProgressBar()
    result, elapsed = simulate(
        args.episodes, args.seeds, args.out, base_seed=args.seed, plots=not args.no_plots, progress=progress
    )
    if not args.quiet:
        print(
            f"{args.episodes} episodes × {args.seeds} seeds in {elapsed:.1f} s; "
            f"drift at episode {result.drift_episode}; best fixed τ in hindsight: {result.best_fixed}"
        )
        print(table(result))
        print(f"\nwrote {args.out / 'metrics.json'}" + ("" if args.no_plots else " and PNG plots"))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "simulate":
        return cmd_simulate(args)
    if args.command == "db":
        return run_db(args)
    raise AssertionError(f"unhandled command {args.command}")  # argparse refuses unknown commands first


if __name__ == "__main__":
    raise SystemExit(main())
