"""The Slack side: Bolt app factory, listeners (each with ``register(app, deps)``), Block Kit builders, parsers."""
