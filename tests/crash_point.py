"""``python -m tests.crash_point ARGS``: the exporter's command line, paused for good at one step
of the stop of one id (``CRASH_ON``) so that a test can SIGKILL it there. ``CRASH_AT`` names
the step, ``CRASH_MARKER`` the file written on arrival:

- ``before_call``: the ids are reserved in the ledger, the stop call has not left;
- ``after_answer``: the stop API has answered, its outcome is not yet in the ledger.

(Killing a call in flight needs no pause here: the lab's ``hang`` and ``stop_then_hang``.)
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

from exporter import stop_policy as remediation
from exporter.cli import main

POINT, MARKER = os.environ.get("CRASH_AT", ""), Path(os.environ.get("CRASH_MARKER", os.devnull))
TARGET = os.environ.get("CRASH_ON", "")


def pausing(step):
    """``step``, except for a decision sending the target id: there, it waits to be killed."""

    def paused(remediator, decision):
        if TARGET in decision.execution_ids:
            MARKER.write_text(POINT)
            threading.Event().wait()
        return step(remediator, decision)

    return paused


if POINT == "before_call":
    remediation.Remediator._stop = pausing(remediation.Remediator._stop)
elif POINT == "after_answer":
    remediation.Remediator._settle = pausing(remediation.Remediator._settle)
elif POINT:
    raise SystemExit(f"unknown CRASH_AT {POINT!r}")

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
