"""The running side of NPO: command line, reports, and (as they land) the Slack app, ingest and jobs."""
