"""``npo-bot demo``: the whole loop on one machine, no Slack workspace needed.

The local Slack stand-in, the bot (HTTP mode, its Web API pointed at the stand-in), a SQLite file, a fault
stream (built in, from the simulated data center of :mod:`npo.sim.world`, or a replayed file) and, with
``--auto``, simulated engineers who click. One URL shows the channels as Slack would, with a learning panel.
"""
