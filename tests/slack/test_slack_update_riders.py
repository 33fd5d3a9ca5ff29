"""An update claimed by the delivery worker but not yet sent carries the answers given meanwhile: the update they
queued (the first one looked in flight) is sent along with it, not as a second chat.update showing the same."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from slack_testing import ALICE, BOB, INCIDENT, make_settings, prediction, serving, wait_for

from bot.app import build_bot
from bot.slack.blocks import ACTION_LIKE, ACTION_NEUTRAL, recommendation_blocks
from bot.standin import StandIn


def test_an_answer_given_while_its_update_waits_in_the_pass_costs_no_second_chat_update(
    tmp_path: Path, standin: StandIn
) -> None:
    built = build_bot(make_settings(tmp_path, standin), seed=1, run_worker=False)
    with serving(built, standin) as bot:
        worker, store = built.worker, built.store

        def drain() -> None:  # passes until nothing is pending (a post a second per channel, paced updates)
            while store.outbox("pending"):
                worker.run_once()
                time.sleep(0.05)

        assert bot.ingest([prediction("p1"), prediction("p2", target="node-2")]).status_code == 200
        drain()
        slow, message = bot.posted("p2"), bot.posted("p1")
        assert bot.click(ALICE, ACTION_LIKE, slow).status_code == 200  # queued first: sent first in the pass
        assert bot.click(ALICE, ACTION_LIKE, message).status_code == 200
        standin.faults.delay("chat.update", 1.0, times=1)  # Slack slow to answer the first update of the pass
        passing = threading.Thread(target=worker.run_once)
        passing.start()
        # Both updates are claimed (in flight) at once; p1's waits behind p2's slow call while Bob answers p1.
        wait_for(lambda: not [i for i in store.outbox("pending") if i.attempts == 0])
        assert bot.click(BOB, ACTION_NEUTRAL, message).status_code == 200
        passing.join()
        drain()

        updates = [c for c in standin.calls("chat.update") if c.body.get("ts") == message[1]]
        assert len(updates) == 1, [c.body for c in updates]  # the one sent after Bob's answer shows it
        shown = standin.message(*message).blocks
        assert BOB in str(shown) and ALICE in str(shown)
        assert shown == recommendation_blocks(built.service.recommendation("p1"))  # as the database has it now
        assert not built.store.outbox("pending") and not built.store.outbox("failed")
        assert message[0] == slow[0] == standin.messages(INCIDENT)[0].channel
