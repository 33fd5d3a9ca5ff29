"""``npo-bot evaluate``: replay labelled real-world fault data through the NPO loop (adapters, runner, CLI)."""
