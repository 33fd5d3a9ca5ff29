"""Scheduled work: the job runner with exactly-once claims (``runner``), the skip sweeper (``skips``), the weekly
summary (``report``, ``weekly``) and their wiring (``build``: :func:`bot.jobs.build.build_scheduler`).

The ``npo-bot report`` command is :func:`bot.jobs.cli.add_report_parser` / :func:`bot.jobs.cli.run_report`. Nothing
is re-exported here, so importing ``bot.jobs.cli`` (for ``npo-bot --help``) loads neither APScheduler nor NumPy.
"""
