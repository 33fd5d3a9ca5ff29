"""Helper process for the crash test: records feedback forever, printing each request id once committed.

Usage: python crash_writer.py DB_PATH N_PREDICTIONS. The predictions p0…p{N-1} must already be surfaced.
"""

from __future__ import annotations

import sys

from npo.loop import LoopConfig, record_feedback
from npo.types import FeedbackEvent, FeedbackKind
from storage import SQLiteStore


def main() -> None:
    path, n = sys.argv[1], int(sys.argv[2])
    config = LoopConfig()
    store = SQLiteStore(path, config)
    i = 0
    while True:
        request_id = f"crash-{i}"
        event = FeedbackEvent(f"p{i % n}", f"op{i // n}", FeedbackKind.LIKE, float(i), request_id)
        with store.transaction() as tx:
            record_feedback(tx, event, config=config)
        print(request_id, flush=True)  # only after COMMIT returned
        i += 1


if __name__ == "__main__":
    main()
