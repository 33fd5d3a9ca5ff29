"""The demo's Safety Policy Engine rules: the defaults, loosened where they would hide the learning.

A demo surfaces dozens of recommendations a minute to one channel, so the hourly cap is raised (the default's
20 per hour would fold nearly everything into digests), and an override cools down its *target* for ten minutes
rather than its whole scenario key for an hour (otherwise one override would silence a key and the threshold
bandit and m(k) would have nothing left to learn from). ``--policy FILE`` replaces these rules.
"""

from __future__ import annotations

__all__ = ["DEMO_POLICY_TOML"]

DEMO_POLICY_TOML = """\
# NPO demo policy (written by `npo-bot demo`; see bot/demo/policy.py for why it differs from the default).
version = 1
name = "demo"

[rules.blast_radius]
max_concurrent = 2
disruptive_actions = ["drain", "reboot", "reimage", "power_cycle", "failover"]

[rules.override_cooldown]
seconds = 600
scope = "target"

[rules.channel_hourly_cap]
max_per_hour = 3000
"""
