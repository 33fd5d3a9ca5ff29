"""The ASGI service: Slack events, the ingest API, health and metrics (see :mod:`bot.http.asgi`)."""
