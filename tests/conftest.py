"""Settings shared by every test folder.

Hypothesis draws the same examples on every run (``derandomize``): CI and a newcomer's run see the same results, and
a property that fails does so every time, never by chance on one machine. ``NPO_HYPOTHESIS=explore`` draws fresh
random examples instead, to look for new failures locally; a failure found that way becomes a fixed test.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("npo", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile("explore" if os.environ.get("NPO_HYPOTHESIS") == "explore" else "npo")
